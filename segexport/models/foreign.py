"""Networks segexport did not define: ``MODULE:CALLABLE`` wherever an architecture name goes.

``mynets:make_unet`` imports ``mynets`` (from the current folder or ``PYTHONPATH``) and calls
``make_unet(**model_kwargs)``, passing ``num_classes`` too when the callable takes it and
``model_kwargs`` does not set it. The result must be an ``nn.Module``; :class:`ForeignModel`
wraps it once so that everything downstream (training, rewrites, export, verification) sees
what it sees for a registered architecture: ``forward`` returns class logits ``[N, C, H, W]``
at the input's size, ``forward_train`` adds the auxiliary logits when the network has them.

What the network's forward may return, as written in the wild:

- a tensor ``[N, C, H, W]``;
- a dict with ``out`` (and optionally ``aux``), as torchvision's segmentation models do;
- a tuple or list whose first item is the logits (and whose second, if 4-D, the auxiliary ones).

Logits smaller than the input (a head at stride 4 or 8) are resized bilinearly to it, as the
registered architectures do. The wrapped network sits at ``net``, so its own state-dict keys
appear under ``net.``; ``segexport.weights.load_foreign_weights`` loads a user's state dict
(``module.`` prefixes of DataParallel/DistributedDataParallel and ``state_dict``/``model``
wrappings removed) into it.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segexport.errors import ConfigError

_SPEC = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")
OUTPUT_FORMS = "logits [N, C, H, W], a dict with 'out', or a tuple whose first item is the logits"
DEFAULT_DIVISOR = 32


def is_module_spec(text: str) -> bool:
    """True for ``MODULE:CALLABLE`` (the form a user's network is named by), whatever it names."""
    return ":" in text and not os.path.exists(text) and not re.match(r"^[A-Za-z]:[\\/]", text)


def folder_name(arch: str) -> str:
    """A folder name for ``arch`` (``mynets:make_unet`` -> ``mynets.make_unet``)."""
    return arch.replace(":", ".")


def load_callable(spec: str) -> Callable[..., Any]:
    """The callable ``spec`` (``MODULE:CALLABLE``) names, its module imported from the current
    folder or ``PYTHONPATH``.

    Raises:
        ConfigError: a malformed spec, a module that does not import, or no callable of that name.
    """
    match = _SPEC.match(spec)
    if match is None:
        raise ConfigError(f"--model must be MODULE:CALLABLE, e.g. mynets:make_unet, got {spec!r}")
    module_name, attr = match["module"], match["attr"]
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.split(".")[0] == exc.name.split(".")[0] \
                and module_name.startswith(exc.name):
            raise ConfigError(f"{spec}: no module {exc.name!r} in the current folder or on PYTHONPATH; "
                              f"run from the folder holding {exc.name.split('.')[0]}.py or add it to PYTHONPATH") from exc
        raise ConfigError(f"{spec}: importing {module_name} failed: {exc}; install what it imports") from exc
    except Exception as exc:  # the user's module raised while importing: report it in one line
        raise ConfigError(f"{spec}: importing {module_name} failed ({type(exc).__name__}: {exc}); fix the module") from exc
    found: Any = module
    for part in attr.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise ConfigError(f"{spec}: {module_name} has no {attr!r}; name a function or class that returns "
                              "the nn.Module")
    if not callable(found):
        raise ConfigError(f"{spec}: {attr} is a {type(found).__name__}, not a callable; name a function or class "
                          "that returns the nn.Module")
    return found


def _takes(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _logits(out: Any, where: str) -> tuple[Any, Any]:
    """(main output, auxiliary output or None) of whatever the network's forward returned."""
    if isinstance(out, dict):
        if "out" not in out:
            raise ConfigError(f"{where} returned a dict without 'out' (keys {', '.join(map(str, out))}); "
                              f"return {OUTPUT_FORMS}")
        return out["out"], out.get("aux")
    if isinstance(out, (tuple, list)):
        if not out:
            raise ConfigError(f"{where} returned an empty {type(out).__name__}; return {OUTPUT_FORMS}")
        aux = out[1] if len(out) > 1 and isinstance(out[1], torch.Tensor) and out[1].dim() == 4 else None
        return out[0], aux
    return out, None


class ForeignModel(nn.Module):
    """A user's network as segexport sees every model: logits ``[N, C, H, W]`` at input size.

    Args:
        net: the user's module.
        spec: the ``MODULE:CALLABLE`` it came from (for messages).
        input_divisor: input height and width must be multiples of this.
    """

    def __init__(self, net: nn.Module, *, spec: str = "", input_divisor: int = DEFAULT_DIVISOR) -> None:
        super().__init__()
        self.net = net
        self.spec = spec
        self.input_divisor = int(input_divisor)
        self.aux_classifier = None  # the auxiliary head, if any, is the network's own business

    def _checked(self, value: Any, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(value, torch.Tensor) or value.dim() != 4 or value.shape[0] != x.shape[0]:
            got = f"a {value.dim()}-D tensor {tuple(value.shape)}" if isinstance(value, torch.Tensor) \
                else f"a {type(value).__name__}"
            raise ConfigError(f"{self.spec or 'the model'}: forward returned {got} for input {tuple(x.shape)}; "
                              f"return {OUTPUT_FORMS}")
        if value.shape[-2:] != x.shape[-2:]:
            value = F.interpolate(value, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return value.contiguous()

    def check_size(self, height: int, width: int) -> None:
        """Run one blank image of ``height x width`` through the network, before any work.

        Raises:
            ConfigError: the network cannot take that size (or returns no 4-D logits there),
                naming the nearest sizes that work, when some multiple of 8 to 64 nearby does.
        """
        reason = self._fails(height, width)
        if reason is None:
            return
        if reason.startswith("forward returned"):
            raise ConfigError(f"{self.spec or 'the model'}: {reason}; return {OUTPUT_FORMS}")
        near: list[str] = []
        for d in (8, 16, 32, 64):
            options = sorted({(max(d, height // d * d), max(d, width // d * d)),
                              (-(-height // d) * d, -(-width // d) * d)} - {(height, width)})
            near = [f"{h}x{w}" for h, w in options if self._fails(h, w) is None]
            if near:
                break
        hint = f"use {' or '.join(near)}" if near else "pass a size it takes with --input-size"
        raise ConfigError(f"{self.spec or 'the model'} cannot take input size {height}x{width} ({reason}); {hint}")

    def _fails(self, height: int, width: int) -> str | None:
        """Why a forward pass at ``height x width`` fails, or None when it works."""
        was = self.training
        try:
            with torch.no_grad():
                self.eval()
                self(torch.zeros(1, 3, height, width))
        except ConfigError as exc:
            return str(exc).split(": ", 1)[-1].split("; return")[0]
        except Exception as exc:  # the user's network: its error is the reason
            return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        finally:
            self.train(was)
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[N, C, H, W]`` for images ``[N, 3, H, W]``."""
        out, _ = _logits(self.net(x), self.spec or "the model")
        return self._checked(out, x)

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and auxiliary logits (None when the network returns none), both at input size."""
        out, aux = _logits(self.net(x), self.spec or "the model")
        return self._checked(out, x), (None if aux is None else self._checked(aux, x))


def build_foreign(spec: str, *, num_classes: int | None = None, size: str | None = None,
                  model_kwargs: dict[str, Any] | None = None, input_divisor: int | None = None) -> ForeignModel:
    """Call ``spec``'s callable and wrap its module (``size`` is accepted and ignored: a user's
    network has the one size its arguments give it).

    Raises:
        ConfigError: the callable fails, or returns no ``nn.Module``.
    """
    del size
    fn = load_callable(spec)
    kwargs = dict(model_kwargs or {})
    if num_classes is not None and "num_classes" not in kwargs and _takes(fn, "num_classes"):
        kwargs["num_classes"] = num_classes
    try:
        net = fn(**kwargs)
    except Exception as exc:  # the user's code: one line, not its traceback
        raise ConfigError(f"{spec}(**{kwargs}) failed ({type(exc).__name__}: {exc}); pass its arguments "
                          "with --model-kwargs JSON") from exc
    if isinstance(net, ForeignModel):
        return net
    if not isinstance(net, nn.Module):
        raise ConfigError(f"{spec} returned a {type(net).__name__}, not a torch.nn.Module; name the function or "
                          "class that builds the network")
    return ForeignModel(net, spec=spec, input_divisor=input_divisor or DEFAULT_DIVISOR)


def unwrap_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the ``module.`` prefix DataParallel and DistributedDataParallel add."""
    while state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state
