"""Deployment rewrites: pure module -> module transforms applied before ONNX export.

Each rule lives in its own file and returns a new module (the input is deep-copied, never
mutated) plus one :class:`RewriteRecord` per target it looked at, holding the numerical
error it measured. :func:`apply_rewrites` runs them in a fixed order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class RewriteRecord:
    """What one rule did to one module of the model.

    Attributes:
        rule: "deconv_to_resize" | "unpool_for_tensorrt" | "fixed_adaptive_pool" | "functional_unpool", or "model"
            for the final whole-model record written by ``apply_rewrites``.
        target: qualified module name in the model ("" for the whole model; for
            ``functional_unpool``, ``"PATH: F.max_unpool2d"``, PATH the module whose forward calls it).
        action: "replaced", "kept" (the original stays; ``reason`` says why) or "skipped".
        reason: one line saying why.
        max_abs_error: max |output difference|, original vs rewritten, on the example inputs
            (the module's own output for per-module records; the logits for "model").
        details: rule-specific numbers (fitted residual, agreement, window sizes...).
    """

    rule: str
    target: str
    action: str
    reason: str
    max_abs_error: float | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (for ``rewrites.json``)."""
        return asdict(self)


from segexport.rewrite.apply import apply_rewrites

__all__ = ["RewriteRecord", "apply_rewrites"]
