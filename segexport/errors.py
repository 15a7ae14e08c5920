"""Typed errors. Each carries the process exit code the CLI turns it into (in one place)."""

from __future__ import annotations


class SegexportError(Exception):
    """Base class: a problem the user can fix. Exit code 2 (bad input) unless a subclass says otherwise."""

    exit_code = 2


class InputError(SegexportError):
    """A user's file, folder, model or data set is missing, unreadable or malformed."""


class ConfigError(SegexportError):
    """An option or recipe value is invalid or inconsistent."""


class UnknownNameError(SegexportError):
    """An architecture, backbone or data set name that is not registered."""


class CheckpointError(InputError):
    """A checkpoint that is corrupt, truncated or does not fit the architecture."""


class MissingDependencyError(SegexportError):
    """An optional package (or device) needed for this command is not available."""


class CheckFailed(SegexportError):
    """A verification ran and found a broken budget. Exit code 1."""

    exit_code = 1
