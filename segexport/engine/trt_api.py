"""The one module that imports ``tensorrt``: every other module goes through it.

It answers three questions without a traceback: does ``tensorrt`` import (and which wheel to
install when it does not), which version is it, and can TensorRT actually create a
``Builder`` and a ``Runtime`` here. The last one catches setups that import fine but cannot
run: a driver too old for the CUDA major the wheel was built for, or a GPU this TensorRT no
longer supports. There pybind11 raises ``TypeError: pybind11::init(): factory function
returned nullptr`` and TensorRT only says why in its log, so the probe keeps the log's errors
(:func:`make_logger`) and puts the first one in its one-line answer.

Wheels: ``tensorrt-cu12`` is built for CUDA 12, ``tensorrt-cu13`` for CUDA 13; the bare
``tensorrt`` package installs the CUDA 13 variant in current releases, so a CUDA 12 build of
torch needs ``tensorrt-cu12`` (:func:`install_hint` names the one matching ``torch.version.cuda``).
"""

from __future__ import annotations

import functools
import re
import sys
from typing import Any

from segexport.errors import MissingDependencyError

CUDA_WHEELS = {11: "tensorrt-cu11", 12: "tensorrt-cu12", 13: "tensorrt-cu13"}


def install_hint(torch_cuda: str | None) -> str:
    """The pip line for the tensorrt wheel matching torch's CUDA version (``torch.version.cuda``)."""
    match = re.match(r"(\d+)", torch_cuda or "")
    wheel = CUDA_WHEELS.get(int(match[1])) if match else None
    return f"pip install {wheel}" if wheel else "pip install tensorrt"


def torch_cuda_version() -> str | None:
    """``torch.version.cuda``: the CUDA version torch was built for, None for a CPU-only build."""
    import torch

    return torch.version.cuda


def _import_tensorrt() -> tuple[Any, str | None]:
    """(the module, None), or (None, one line saying why it does not import and what to install)."""
    hint = install_hint(torch_cuda_version())
    try:
        import tensorrt
    except ImportError as exc:
        if getattr(exc, "name", None) == "tensorrt":
            return None, f"the tensorrt package is not installed ({hint})"
        return None, f"the tensorrt package does not import ({_first_line(exc)}); reinstall it ({hint})"
    except OSError as exc:  # a wheel without its CUDA libraries fails in dlopen
        return None, f"the tensorrt package cannot load its libraries ({_first_line(exc)}); reinstall it ({hint})"
    except Exception as exc:  # noqa: BLE001  (a broken install can raise anything from its bindings)
        return None, f"the tensorrt package is broken ({type(exc).__name__}: {_first_line(exc)}); reinstall it ({hint})"
    return tensorrt, None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def import_problem() -> str | None:
    """None when ``tensorrt`` imports; else one line naming the problem and the pip line that fixes it."""
    return _import_tensorrt()[1]


def tensorrt_module() -> Any:
    """The ``tensorrt`` module.

    Raises:
        MissingDependencyError: it does not import (one line, naming the wheel to install).
    """
    module, problem = _import_tensorrt()
    if problem:
        raise MissingDependencyError(problem)
    return module


def tensorrt_version() -> str | None:
    """``tensorrt.__version__``, or None when it does not import (for any reason)."""
    module, _ = _import_tensorrt()
    return None if module is None else str(module.__version__)


def version_tuple(version: str) -> tuple[int, int, int]:
    """``"10.13.0.35"`` -> ``(10, 13, 0)``; missing parts are 0."""
    major, minor, patch = ([int(p) for p in re.findall(r"\d+", version)] + [0, 0, 0])[:3]
    return major, minor, patch


def make_logger(trt: Any, *, echo: bool = True) -> Any:
    """A ``trt.ILogger`` that keeps TensorRT's error messages in ``.errors``.

    With ``echo`` it also prints warnings and errors to stderr, as ``trt.Logger(WARNING)`` does.
    The logger must outlive every object created with it (TensorRT's rule).
    """
    error_level = int(trt.ILogger.Severity.ERROR)
    warning_level = int(trt.ILogger.Severity.WARNING)

    class _KeepingLogger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # the pattern TensorRT documents for Python loggers
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)
            if level <= error_level:
                self.errors.append(str(msg))
            if echo and level <= warning_level:
                print(f"[TensorRT] {getattr(severity, 'name', level)}: {msg}", file=sys.stderr)

    return _KeepingLogger()


def first_error(logger: Any, default: str = "TensorRT logged no reason") -> str:
    """The first error TensorRT logged through ``logger`` (from :func:`make_logger`), on one line."""
    errors = getattr(logger, "errors", None) or [default]
    return " ".join(str(errors[0]).split())


def _create(factory: Any, logger: Any) -> tuple[Any, str | None]:
    try:
        made = factory(logger)
    except Exception as exc:  # noqa: BLE001  (pybind11 raises TypeError when TensorRT returns nullptr)
        return None, first_error(logger, _first_line(exc))
    return (made, None) if made is not None else (None, first_error(logger))


def runtime_problem(trt: Any) -> str | None:
    """Why TensorRT cannot create a ``Builder`` or a ``Runtime`` here, on one line; None when both work.

    Args:
        trt: the ``tensorrt`` module (or a stand-in with ``Builder``, ``Runtime``, ``ILogger``).
    """
    logger = make_logger(trt, echo=False)
    for name in ("Builder", "Runtime"):
        made, reason = _create(getattr(trt, name), logger)
        del made  # only whether it can be made matters; a builder holds a CUDA context
        if reason is not None:
            hint = install_hint(torch_cuda_version())
            return (f"TensorRT {trt.__version__} cannot create a trt.{name} ({reason}); update the NVIDIA driver "
                    f"for the wheel's CUDA version or install the wheel matching torch's CUDA ({hint}), "
                    "on a GPU this TensorRT supports")
    return None


@functools.lru_cache(maxsize=1)
def probe_runtime() -> str | None:
    """:func:`runtime_problem` for the installed ``tensorrt`` (checked once per process: it costs a CUDA context)."""
    module, problem = _import_tensorrt()
    return problem if module is None else runtime_problem(module)
