"""Option texts shared by several commands, declared once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

FORCE_HELP = ("Write even where the output holds files segexport did not write, or another model's "
              "artifacts (segexport's own files are replaced atomically; nothing else is deleted).")


def _backend_help() -> str:
    from segexport.runners.registry import BACKENDS

    return ("Backend for the artifacts it runs (default: the artifact kind's first): "
            + "; ".join(f"{b.name} ({', '.join(k if k != 'checkpoint' else 'checkpoint folders' for k in b.kinds)})"
                        for b in BACKENDS.values()) + ".")


BACKEND_HELP = _backend_help()


MODEL_HELP = ("A network of your own instead of ARCH: MODULE:CALLABLE, imported from the current folder "
              "or PYTHONPATH; the callable returns the nn.Module.")
MODEL_KWARGS_HELP = "Keyword arguments for --model's callable, a JSON object, e.g. '{\"width\": 16}'."


def pick_model(arch: str | None, model: str | None, model_kwargs: str | None,
               recipe: str | Path | None = None) -> tuple[str, dict[str, Any] | None]:
    """The network a command works on, ``(ARCH or MODULE:CALLABLE, keyword arguments or None)``,
    from its ARCH argument, ``--model``, ``--model-kwargs`` and (when neither names one) the
    ``--recipe`` file's ``arch`` or ``[model]`` table.

    Raises:
        ConfigError: both or neither named, a ``--model`` not of the form MODULE:CALLABLE, or
            ``--model-kwargs`` that is not a JSON object or goes with a registered architecture.
    """
    from segexport.errors import ConfigError
    from segexport.models.foreign import is_module_spec

    if arch is not None and model is not None:
        raise ConfigError(f"give ARCH or --model, not both (got {arch!r} and --model {model!r})")
    if model is not None and not is_module_spec(model):
        raise ConfigError(f"--model must be MODULE:CALLABLE, e.g. mynets:make_unet, got {model!r}; "
                          "a registered architecture goes without --model")
    name = model or arch
    if name is None and recipe is not None:
        from segexport.recipe import load_recipe

        name = load_recipe("", recipe).arch or None
    if name is None:
        raise ConfigError("name an architecture (see `segexport list`) or a network of your own with "
                          "--model MODULE:CALLABLE")
    kwargs = None
    if model_kwargs is not None:
        try:
            kwargs = json.loads(model_kwargs)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--model-kwargs is not valid JSON ({exc.msg}); pass an object, "
                              "e.g. '{\"width\": 16}'") from exc
        if not isinstance(kwargs, dict):
            raise ConfigError(f"--model-kwargs must be a JSON object, e.g. '{{\"width\": 16}}', got {model_kwargs!r}")
        if not is_module_spec(name):
            raise ConfigError(f"--model-kwargs applies to --model MODULE:CALLABLE, not to the architecture {name!r}")
    return name, kwargs


MEAN_HELP = "Input mean per RGB channel in [0, 1] units, R,G,B (default: the checkpoint's or ImageNet's)."
STD_HELP = "Input std per RGB channel in [0, 1] units, R,G,B (default: the checkpoint's or ImageNet's)."


def parse_rgb(value: str | None, option: str) -> tuple[float, float, float] | None:
    """``"0.5,0.5,0.5"`` -> (0.5, 0.5, 0.5); None stays None.

    Raises:
        ConfigError: not three comma-separated finite numbers (std: each > 0).
    """
    import math

    from segexport.errors import ConfigError

    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in value.split(","))
    except ValueError:
        numbers = ()
    if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers) or (option == "--std" and min(numbers) <= 0):
        bound = " > 0" if option == "--std" else ""
        raise ConfigError(f"{option} must be three numbers{bound} R,G,B in [0, 1] units, e.g. {option} 0.5,0.5,0.5; "
                          f"got {value!r}")
    return numbers  # type: ignore[return-value]


def model_overrides(model_kwargs: dict[str, Any] | None, mean: str | None, std: str | None) -> dict[str, Any]:
    """The recipe values the network options give (only those given)."""
    given = {"model_kwargs": model_kwargs, "mean": parse_rgb(mean, "--mean"), "std": parse_rgb(std, "--std")}
    return {k: v for k, v in given.items() if v is not None}


# The network options of train, export and build, declared once.
MODEL_OPTION: Any = typer.Option(None, "--model", metavar="MODULE:CALLABLE", help=MODEL_HELP)
MODEL_KWARGS_OPTION: Any = typer.Option(None, "--model-kwargs", metavar="JSON", help=MODEL_KWARGS_HELP)
MEAN_OPTION: Any = typer.Option(None, metavar="R,G,B", help=MEAN_HELP)
STD_OPTION: Any = typer.Option(None, metavar="R,G,B", help=STD_HELP)
