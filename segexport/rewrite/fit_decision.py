"""Fit a learned transposed conv with resize + conv and decide, on validation data, whether to keep it.

Part of the ``deconv_to_resize`` rule. The decision is the whole model's argmax agreement
with the original on the validation images (a label-free measure, so it does not depend on
how good the model is); mIoU before and after are reported beside it for the reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from segexport.errors import ConfigError, InputError
from segexport.metrics import (
    IGNORE_INDEX,
    confusion_matrix,
    metrics_from_confusion,
)
from segexport.rewrite import RewriteRecord
from segexport.rewrite.common import (
    argmax_agreement,
    check_images,
    max_abs_diff,
    module_inputs,
    record,
    replace_module,
    run_batched,
)
from segexport.rewrite.resize_conv_fit import fit_resize_conv

RULE = "deconv_to_resize"
_record = partial(record, RULE)
FIT_KERNEL = 3


@dataclass
class FitContext:
    """Calibration and validation data for fitting learned deconvs (validated once).

    Attributes:
        fit_images: normalised calibration images, or None.
        val_images: normalised validation images, or None.
        val_masks: int64 masks ``[N, H, W]`` (255 = ignore) matching ``val_images``, or None.
        min_agreement: smallest whole-model argmax agreement that keeps a fitted rewrite.
    """

    fit_images: torch.Tensor | None
    val_images: torch.Tensor | None
    val_masks: torch.Tensor | None
    min_agreement: float
    _reference_logits: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        fit_images: torch.Tensor | None,
        val: tuple[torch.Tensor, torch.Tensor] | None,
        min_agreement: float,
    ) -> FitContext:
        """Check the arguments of ``apply_rewrites``/``deconv_to_resize`` and hold them.

        Raises:
            InputError: malformed images or masks.
            ConfigError: ``min_agreement`` outside (0, 1].
        """
        if not 0.0 < min_agreement <= 1.0:
            raise ConfigError(f"min_agreement must be in (0, 1], got {min_agreement}")
        if fit_images is not None:
            check_images(fit_images, "fit_images")
        images = masks = None
        if val is not None:
            images, masks = val
            check_images(images, "val images")
            if masks.dtype != torch.int64 or tuple(masks.shape) != (len(images), *images.shape[-2:]):
                raise InputError(
                    f"val masks must be int64 [N, H, W] matching the images {tuple(images.shape)}, "
                    f"got {masks.dtype} {tuple(masks.shape)}"
                )
        return cls(fit_images, images, masks, min_agreement)

    def missing(self) -> str | None:
        """Why learned deconvs cannot be fitted with this data, or None."""
        absent = [n for n, v in (("fit_images", self.fit_images), ("val", self.val_images)) if v is None]
        return f"needs {' and '.join(absent)} to fit and check resize+conv" if absent else None

    def reference_logits(self, reference: nn.Module) -> torch.Tensor:
        """The original model's logits on the validation images (computed once)."""
        if self._reference_logits is None:
            self._reference_logits = run_batched(reference, self.val_images)
        return self._reference_logits


def _miou(logits: torch.Tensor, masks: torch.Tensor) -> float:
    classes = logits.shape[1]
    valid = masks[masks != IGNORE_INDEX]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= classes):
        raise InputError(
            f"val masks hold labels outside [0, {classes}) besides {IGNORE_INDEX}; "
            "pass masks of the model's class indices"
        )
    return metrics_from_confusion(confusion_matrix(masks, logits.argmax(1), classes)).miou


def upsampling_factor(m: nn.ConvTranspose2d) -> int | None:
    """``s`` when ``m`` maps ``h x w`` to exactly ``s*h x s*w`` (s >= 2), else None."""
    s = m.stride[0]
    # Output = (in - 1) * s - 2p + k + output_padding: s * in exactly when k - 2p + op == s.
    grow = [k - 2 * p + op for k, p, op in zip(m.kernel_size, m.padding, m.output_padding)]
    if m.stride != (s, s) or s < 2 or m.dilation != (1, 1) or grow != [s, s]:
        return None
    return s


def fit_learned_deconv(
    model: nn.Module,
    name: str,
    inputs: list[torch.Tensor],
    *,
    reference: nn.Module,
    fit: FitContext | None,
    kernel_deviation: float | None,
) -> RewriteRecord:
    """Replace deconv ``name`` by a fitted resize+conv if the model's agreement holds, in place.

    Args:
        model: the model being rewritten (in eval mode).
        name: qualified name of the ``ConvTranspose2d``.
        inputs: the deconv's inputs on the example (for ``max_abs_error``).
        reference: the original model in eval mode.
        fit: calibration/validation data; None or incomplete -> "skipped".
        kernel_deviation: max distance to a bilinear kernel when the shape matched FCN's.

    Returns:
        The record: "replaced", "kept" (agreement too low) or "skipped" (cannot be fitted).
    """
    deconv = model.get_submodule(name)
    details: dict = {"kind": "learned", "kernel_max_deviation_from_bilinear": kernel_deviation}
    s = upsampling_factor(deconv)
    if s is None:
        return _record(name, "skipped", "output is not an integer multiple (>= 2) of the input", **details)
    reason = fit.missing() if fit is not None else "needs fit_images and val to fit and check resize+conv"
    if reason:
        reason = f"learned transposed conv (not a bilinear kernel): {reason}"
        return _record(name, "skipped", reason, **details)
    return _fit_and_judge(model, name, s, inputs, reference, fit, details)


def _fit_and_judge(
    model: nn.Module,
    name: str,
    s: int,
    inputs: list[torch.Tensor],
    reference: nn.Module,
    fit: FitContext,
    details: dict,
) -> RewriteRecord:
    """Fit resize+conv for deconv ``name``, swap it in, keep it only if the agreement holds."""
    deconv = model.get_submodule(name)
    result = fit_resize_conv(deconv, module_inputs(model, name, fit.fit_images), s, FIT_KERNEL)
    with torch.no_grad():
        err = max(max_abs_diff(deconv(x), result.module(x)) for x in inputs)
    ref = fit.reference_logits(reference)
    miou_original = _miou(ref, fit.val_masks)  # checks the masks before the model changes
    replace_module(model, name, result.module)
    candidate = run_batched(model, fit.val_images)
    agreement = argmax_agreement(ref, candidate)
    details.update(
        factor=s,
        fit_kernel=FIT_KERNEL,
        fit_edge_correction=result.module.edge is not None,
        fit_images=len(fit.fit_images),
        fit_values=result.values,
        fit_rmse=result.rmse,
        fit_relative_residual=result.relative_residual,
        val_images=len(fit.val_images),
        agreement=agreement,
        min_agreement=fit.min_agreement,
        val_max_abs_logit_error=max_abs_diff(ref, candidate),
        miou_original=miou_original,
        miou_rewritten=_miou(candidate, fit.val_masks),
    )
    verdict = f"fitted resize+conv agreement {agreement:.4f}"
    if agreement >= fit.min_agreement:
        return _record(name, "replaced", f"{verdict} >= {fit.min_agreement}", err, **details)
    replace_module(model, name, deconv)
    return _record(name, "kept", f"{verdict} < {fit.min_agreement}", err, **details)
