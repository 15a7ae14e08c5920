"""``segexport export --crf conv``: put a :class:`ConvCRF` behind the model and measure it
against the host CRF on the export's verification images.

The exported graph takes the same normalised images as the model alone and outputs refined
logits under the same name (``logits``); the ONNX metadata says ``crf: conv`` with its
parameters, so a reader knows the logits are already refined.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from segexport.data import Preprocess
from segexport.errors import ConfigError
from segexport.postprocess.conv_crf import (
    DEFAULT_DILATION,
    DEFAULT_WINDOW,
    ConvCRF,
    CrfModel,
)
from segexport.postprocess.dense_crf import dense_crf
from segexport.postprocess.evaluate import label_agreement
from segexport.postprocess.params import CrfParams
from segexport.rewrite.common import run_batched

EXPORT_CRF_MODES = ("none", "conv")


def denormalize(images: torch.Tensor, preprocess: Preprocess) -> np.ndarray:
    """Normalised ``(N, 3, H, W)`` float images back to uint8 ``(N, H, W, 3)`` (exact for images
    that were uint8 before :func:`segexport.data.normalize_batch`)."""
    mean = torch.tensor(preprocess.mean, dtype=torch.float64).reshape(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, dtype=torch.float64).reshape(1, 3, 1, 1)
    rgb = (images.detach().double() * std + mean) * 255.0
    return rgb.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def check_crf_mode(mode: str) -> str:
    """Raises:
    ConfigError: a mode other than "none" or "conv".
    """
    if mode not in EXPORT_CRF_MODES:
        raise ConfigError(
            f"--crf must be one of {', '.join(EXPORT_CRF_MODES)}, got {mode!r} "
            "(the host CRF runs after the engine: enable it with the recipe key crf = \"host\")"
        )
    return mode


def attach_conv_crf(
    model: nn.Module, reference: nn.Module, images: torch.Tensor, preprocess: Preprocess, params: CrfParams,
    *, window: int = DEFAULT_WINDOW, dilation: int = DEFAULT_DILATION,
) -> tuple[CrfModel, CrfModel, dict[str, Any]]:
    """``model`` and ``reference`` each followed by the same ConvCRF, and a report of the CRF.

    Args:
        model: the model to export (after rewrites), eval mode.
        reference: the model before rewrites (for the export's "vs original" figures).
        images: normalised verification images ``(N, 3, H, W)``.
        preprocess: their normalisation (the CRF inverts it to get colours).
        params: CRF parameters (e.g. :func:`segexport.postprocess.crf_params` of the recipe).
        window, dilation: the ConvCRF's neighbourhood.

    Returns:
        ``(model + crf, reference + crf, report)``; the report has ``mode``, ``window``,
        ``dilation``, ``params``, ``images``, ``agreement_vs_host`` (argmax agreement of the
        ConvCRF with the host dense CRF on the model's logits), ``agreement_vs_no_crf`` and
        ``host_agreement_vs_no_crf`` (how many labels each CRF keeps).
    """
    crf = ConvCRF(params, mean=preprocess.mean, std=preprocess.std, window=window, dilation=dilation).eval()
    wrapped = CrfModel(model, crf).eval()
    logits = run_batched(model, images)
    conv = run_batched(wrapped, images).numpy()
    host = dense_crf(logits.numpy(), denormalize(images, preprocess), params)
    report = {
        "mode": "conv", "window": window, "dilation": dilation, "params": params.to_dict(),
        "images": len(images),
        "agreement_vs_host": label_agreement(conv, host),
        "agreement_vs_no_crf": label_agreement(conv, logits.numpy()),
        "host_agreement_vs_no_crf": label_agreement(host, logits.numpy()),
    }
    return wrapped, CrfModel(reference, crf).eval(), report
