"""Option texts shared by several commands, declared once."""

from __future__ import annotations

FORCE_HELP = ("Write even where the output holds files segexport did not write, or another model's "
              "artifacts (segexport's own files are replaced atomically; nothing else is deleted).")


def _backend_help() -> str:
    from segexport.runners.registry import BACKENDS

    return ("Backend for the artifacts it runs (default: the artifact kind's first): "
            + "; ".join(f"{b.name} ({', '.join(k if k != 'checkpoint' else 'checkpoint folders' for k in b.kinds)})"
                        for b in BACKENDS.values()) + ".")


BACKEND_HELP = _backend_help()
