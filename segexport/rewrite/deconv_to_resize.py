"""Rule ``deconv_to_resize``: ``ConvTranspose2d`` -> bilinear resize (exact or fitted).

Exact case. A transposed conv with stride ``s``, kernel ``2s``, padding ``s/2`` and the
channel-diagonal bilinear kernel ``w[k] = 1 - |k - (s - 1/2)| / s`` (the FCN initialisation)
computes, for output row ``o`` and input rows ``i`` (kernel tap ``k = o + s/2 - i*s``)::

    out[o] = sum_i x[i] * (1 - |u - i|),  u = (o + 1/2) / s - 1/2,

with ``x[i] = 0`` outside the image: bilinear interpolation at the half-pixel source
coordinate ``u``, the same coordinate ``F.interpolate(..., align_corners=False)`` uses. They
differ only where ``u`` leaves ``[0, H-1]`` (the first and last ``s/2`` output rows): the
resize clamps to the edge pixel (weight 1) while the deconv interpolates towards the implicit
zero (weight ``1 - |u|``, resp. ``1 - (u - (H-1))``). In both cases only one input row
contributes, so along each axis ``deconv_weight(o, i) = g(o) * resize_weight(o, i)`` with::

    g(o) = 1/2 + (o + 1/2) / s          for the first s/2 rows, mirrored for the last s/2,
    g(o) = 1                            elsewhere,

and the 2-D deconv equals ``resize(x) * g_rows[:, None] * g_cols[None, :]`` exactly (the
kernel is separable). :class:`BilinearUpsample` applies ``g`` to the first and last ``s/2``
rows and columns only, so the same module (and ONNX graph: Resize, Slice, Mul by a constant
``s/2``-vector, Concat) is right at every input size.

Learned case. Any other transposed conv whose output is ``s`` x its input becomes resize +
3x3 conv fitted by least squares (:mod:`segexport.rewrite.resize_conv_fit`) and is kept only
when the whole model's argmax agreement with the original on validation images reaches
``min_agreement``.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from segexport.nn.blocks import bilinear_kernel
from segexport.rewrite import RewriteRecord
from segexport.rewrite.bilinear import BilinearUpsample
from segexport.rewrite.common import (
    capture_io,
    check_images,
    eval_copy,
    max_abs_diff,
    record,
    replace_module,
    square,
)
from segexport.rewrite.fit_decision import FitContext, fit_learned_deconv

RULE = "deconv_to_resize"
_record = partial(record, RULE)
# How close a kernel must be to bilinear_kernel to count as one.
BILINEAR_ATOL = 1e-6
# Relative error above which the exact rewrite is refused (it is ~1e-7 by construction).
EXACT_RTOL = 1e-5


def bilinear_factor(m: nn.ConvTranspose2d) -> tuple[int | None, float | None]:
    """The upsampling factor when ``m`` is an FCN bilinear deconv, and the kernel's max deviation.

    Returns:
        ``(s, deviation)`` when ``m`` is exactly the bilinear configuration, ``(None, deviation)``
        when only the weight differs, ``(None, None)`` when the configuration differs.
    """
    s = square(m.stride)
    shaped = (
        s is not None and s >= 2 and s % 2 == 0 and m.kernel_size == (2 * s, 2 * s)
        and m.padding == (s // 2, s // 2) and m.output_padding == (0, 0)
        and m.dilation == (1, 1) and m.groups == 1 and m.in_channels == m.out_channels
    )
    if not shaped:
        return None, None
    dev = float((m.weight.detach().double() - bilinear_kernel(m.in_channels, 2 * s).double()).abs().max())
    return (s if dev <= BILINEAR_ATOL else None), dev


def _replace_bilinear(
    model: nn.Module, name: str, s: int, dev: float, inputs: list[torch.Tensor]
) -> RewriteRecord:
    """Replace bilinear deconv ``name`` by :class:`BilinearUpsample` after checking it on ``inputs``."""
    deconv = model.get_submodule(name)
    new = BilinearUpsample(s, deconv.bias)
    with torch.no_grad():
        pairs = [(deconv(x), new(x)) for x in inputs]
    err = max(max_abs_diff(a, b) for a, b in pairs)
    scale = max(max(float(a.abs().max()) for a, _ in pairs), 1.0)
    details = {"kind": "bilinear", "factor": s, "kernel_max_deviation": dev}
    if err > EXACT_RTOL * scale:
        return _record(name, "kept", f"bilinear resize differs by {err:.3g} on the example", err, **details)
    replace_module(model, name, new)
    reason = f"bilinear kernel, x{s}: resize + fixed edge correction (exact)"
    return _record(name, "replaced", reason, err, **details)


def rewrite_deconvs_(
    model: nn.Module,
    example: torch.Tensor,
    *,
    reference: nn.Module,
    keep_deconv: bool = False,
    fit: FitContext | None = None,
) -> list[RewriteRecord]:
    """In place on a model the caller owns (in eval mode): rewrite every ConvTranspose2d.

    Args:
        model: the model being rewritten.
        example: export-size input batch (for the per-module error).
        reference: the original model in eval mode (fitted rewrites are judged against it).
        keep_deconv: turn the rule off (every deconv gets a "skipped" record).
        fit: calibration and validation data for learned deconvs; None skips them.

    Returns:
        One record per ``nn.ConvTranspose2d`` in the model.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, nn.ConvTranspose2d)]
    if keep_deconv:
        return [_record(n, "skipped", "keep_deconv is set: transposed convs stay") for n in names]
    with torch.no_grad(), capture_io(model, names) as seen:
        model(example)
    records = []
    for n in names:
        inputs = [args[0] for args, _ in seen[n]]
        if not inputs:
            records.append(_record(n, "skipped", "not run by forward on the example input"))
            continue
        s, dev = bilinear_factor(model.get_submodule(n))
        if s is not None:
            records.append(_replace_bilinear(model, n, s, dev, inputs))
        else:
            fitted = fit_learned_deconv(model, n, inputs, reference=reference, fit=fit, kernel_deviation=dev)
            records.append(fitted)
    return records


def deconv_to_resize(
    model: nn.Module,
    example: torch.Tensor,
    *,
    keep_deconv: bool = False,
    fit_images: torch.Tensor | None = None,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    min_agreement: float = 0.999,
) -> tuple[nn.Module, list[RewriteRecord]]:
    """Replace transposed convs by bilinear resizes (exact) or fitted resize + conv.

    Args:
        model: any module; not modified.
        example: a normalised input batch at the export size (NCHW float).
        keep_deconv: turn the rule off.
        fit_images: normalised calibration images to fit learned deconvs on.
        val: (normalised images, int64 masks, 255 = ignore) deciding whether a fit is kept.
        min_agreement: smallest whole-model argmax agreement with the original on ``val``.

    Returns:
        A rewritten deep copy in eval mode and one record per transposed conv.

    Raises:
        InputError: malformed ``example``, ``fit_images`` or ``val``.
        ConfigError: ``min_agreement`` outside (0, 1].
    """
    check_images(example, "example")
    context = FitContext.build(fit_images, val, min_agreement)
    reference = eval_copy(model)
    out = eval_copy(model)
    return out, rewrite_deconvs_(out, example, reference=reference, keep_deconv=keep_deconv, fit=context)
