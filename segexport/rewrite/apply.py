"""Run every rewrite rule in a fixed order and measure the whole model against the original."""

from __future__ import annotations

import torch
from torch import nn

from segexport.rewrite import RewriteRecord
from segexport.rewrite.common import (
    argmax_agreement,
    check_images,
    eval_copy,
    max_abs_diff,
)
from segexport.rewrite.deconv_to_resize import rewrite_deconvs_
from segexport.rewrite.fit_decision import FitContext
from segexport.rewrite.fixed_adaptive_pool import rewrite_adaptive_pools_
from segexport.rewrite.functional_unpool import rewrite_functional_unpools
from segexport.rewrite.unpool_for_tensorrt import rewrite_unpools_

# Exact rules first, so the fitted deconv rule judges its candidates on the final graph.
RULE_ORDER = ("fixed_adaptive_pool", "unpool_for_tensorrt", "deconv_to_resize", "functional_unpool")
MODEL_RULE = "model"


def _summary(
    reference: nn.Module, rewritten: nn.Module, example: torch.Tensor, records: list[RewriteRecord]
) -> RewriteRecord:
    """The final record: whole-model logits of the rewritten model vs the original on ``example``."""
    with torch.no_grad():
        before, after = reference(example), rewritten(example)
    counts = {a: sum(r.action == a for r in records) for a in ("replaced", "kept", "skipped")}
    details = {
        "rules": list(RULE_ORDER),
        **counts,
        "argmax_agreement": argmax_agreement(before, after),
        # True when a replaced module only works at the example's height and width.
        "static_hw": any(r.action == "replaced" and r.details.get("static_hw", False) for r in records),
    }
    action = "replaced" if counts["replaced"] else "kept"
    reason = ", ".join(f"{n} {a}" for a, n in counts.items()) if records else "nothing to rewrite"
    return RewriteRecord(MODEL_RULE, "", action, reason, max_abs_diff(before, after), details)


def apply_rewrites(
    model: nn.Module,
    example: torch.Tensor,
    *,
    keep_deconv: bool = False,
    fit_images: torch.Tensor | None = None,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    min_agreement: float = 0.999,
) -> tuple[nn.Module, list[RewriteRecord]]:
    """Apply every deployment rewrite to a copy of ``model``.

    Rules run in ``RULE_ORDER``: ``fixed_adaptive_pool``, ``unpool_for_tensorrt`` (both exact),
    then ``deconv_to_resize`` (exact for bilinear kernels; fitted and checked for learned ones),
    then ``functional_unpool`` (exact; ``F.max_pool2d``/``F.max_unpool2d`` calls, by wrapping).

    Args:
        model: the model to export; not modified (not even its train/eval mode).
        example: a normalised input batch at the export size (NCHW float). Adaptive pools are
            frozen for the feature sizes it produces.
        keep_deconv: leave every ``ConvTranspose2d`` as it is.
        fit_images: normalised calibration images to fit learned deconvs on.
        val: (normalised images, int64 masks with 255 = ignore) deciding whether a fitted
            rewrite is kept. Without ``fit_images`` and ``val`` learned deconvs are skipped.
        min_agreement: smallest whole-model argmax agreement with the original on ``val``
            for a fitted rewrite to be kept.

    Returns:
        The rewritten model (a new module, eval mode) and the records: one per module each
        rule looked at, in rule order, then a last record with ``rule == "model"`` whose
        ``max_abs_error`` is the max |logit difference| against the original on ``example``,
        ``details["argmax_agreement"]`` the pixel agreement there, and
        ``details["static_hw"]`` True when the rewritten model only works at the example's
        height and width (fixed pooling), so it must not be exported with dynamic H/W.

    Raises:
        InputError: malformed ``example``, ``fit_images`` or ``val``.
        ConfigError: ``min_agreement`` outside (0, 1].
    """
    check_images(example, "example")
    fit = FitContext.build(fit_images, val, min_agreement)
    reference = eval_copy(model)
    rewritten = eval_copy(model)
    records = rewrite_adaptive_pools_(rewritten, example)
    records += rewrite_unpools_(rewritten, example)
    records += rewrite_deconvs_(rewritten, example, reference=reference, keep_deconv=keep_deconv, fit=fit)
    rewritten, functional = rewrite_functional_unpools(rewritten, example)  # wraps the model: last
    records += functional
    records.append(_summary(reference, rewritten, example, records))
    return rewritten, records
