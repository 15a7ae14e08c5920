"""``segexport export --crf conv``: put a :class:`ConvCRF` behind the model and measure it
against the host CRF on the export's verification images.

The exported graph takes the same normalised images as the model alone and outputs refined
logits under the same name (``logits``); the ONNX metadata says ``crf: conv`` with its
parameters, so a reader knows the logits are already refined.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segexport.data import Preprocess
from segexport.errors import CheckFailed, ConfigError
from segexport.postprocess.conv_crf import (
    DEFAULT_DILATION,
    DEFAULT_ITERATIONS,
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


def _crf_chunks(
    crf: ConvCRF, logits: torch.Tensor, images: torch.Tensor, chunk: int = 4
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(logits, images, crf output)`` a few images at a time (the CRF's window tensor holds
    ``window^2`` copies of the class scores, so whole verification sets do not fit at once)."""
    with torch.no_grad():
        for i in range(0, len(images), chunk):
            z, x = logits[i : i + chunk], images[i : i + chunk]
            yield z, x, crf(z, x)


def float32_error(crf: ConvCRF, logits: torch.Tensor, images: torch.Tensor) -> float:
    """Max |float32 - float64| of ``crf`` on the same float32 logits and images: the precision
    floor of the CRF itself, which grows with its iterations (mean field is not contractive
    where two classes tie)."""
    double = copy.deepcopy(crf).double()
    return max((float((out.double() - double(z.double(), x.double())).abs().max())
                for z, x, out in _crf_chunks(crf, logits, images)), default=0.0)


def onnx_crf_error(onnx_path: str | Path, crf: ConvCRF, logits: torch.Tensor, images: torch.Tensor) -> float:
    """Max |ONNX - PyTorch| of the CRF inside an exported graph, both given the same logits.

    The graph is cut at the CRF's input (the first Softmax reads the network's logits) and run on
    ONNX Runtime with PyTorch's logits fed there, so the network's own rounding differences,
    which the CRF amplifies where classes tie, are not counted: this measures the CRF's export.

    Args:
        onnx_path: a graph exported with ``--crf conv`` (refined logits, or labels, out).
        crf: the PyTorch ConvCRF it contains.
        logits: the PyTorch network's logits on ``images``.
        images: normalised images ``(N, 3, H, W)``.

    Raises:
        CheckFailed: the graph has no CRF (no Softmax) or ONNX Runtime cannot run the cut.
    """
    import onnx

    from segexport.runners.onnxruntime_runner import open_session

    graph = onnx.load(str(onnx_path))
    softmax = next((n for n in graph.graph.node if n.op_type == "Softmax"), None)
    if softmax is None:
        raise CheckFailed(f"{onnx_path}: no CRF in the graph (no Softmax node)")
    outputs = [o.name for o in graph.graph.output]
    argmax = next((n for n in graph.graph.node if n.op_type == "ArgMax"), None)
    if "logits" not in outputs and argmax is None:
        raise CheckFailed(f"{onnx_path}: neither a 'logits' output nor an ArgMax to find the refined logits by")
    refined = "logits" if "logits" in outputs else argmax.input[0]
    cut = onnx.utils.Extractor(graph).extract_model([graph.graph.input[0].name, softmax.input[0]], [refined])
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save_model(cut, str(Path(tmp) / "crf.onnx"))
        session = open_session(Path(tmp) / "crf.onnx")
    worst = 0.0
    for z, x, out in _crf_chunks(crf, logits, images):
        got = session.run(None, {graph.graph.input[0].name: x.numpy(), softmax.input[0]: z.numpy()})[0]
        worst = max(worst, float(np.abs(got - out.numpy()).max()))
    return worst


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
    *, logits: torch.Tensor | None = None, iterations: int = DEFAULT_ITERATIONS,
    window: int = DEFAULT_WINDOW, dilation: int = DEFAULT_DILATION,
) -> tuple[CrfModel, CrfModel, dict[str, Any]]:
    """``model`` and ``reference`` each followed by the same ConvCRF, and a report of the CRF.

    Args:
        model: the model to export (after rewrites), eval mode.
        reference: the model before rewrites (for the export's "vs original" figures).
        images: normalised verification images ``(N, 3, H, W)``.
        preprocess: their normalisation (the CRF inverts it to get colours).
        params: CRF parameters (e.g. :func:`segexport.postprocess.crf_params` of the recipe);
            their ``iterations`` are the host CRF's.
        iterations: the ConvCRF's mean-field steps (see :mod:`segexport.postprocess.conv_crf`
            for why the default is fewer than the host CRF's).
        logits: ``model``'s logits on ``images`` when the caller has them already.
        window, dilation: the ConvCRF's neighbourhood.

    Returns:
        ``(model + crf, reference + crf, report)``; the report has ``mode``, ``window``,
        ``dilation``, ``params`` (the ConvCRF's), ``host_iterations``, ``images``,
        ``float32_error`` (max |float32 - float64| of the PyTorch ConvCRF on the same logits:
        how precisely any float32 backend can be expected to match it), ``agreement_vs_host``
        (argmax agreement of the ConvCRF with the host dense CRF on the model's logits),
        ``agreement_vs_no_crf`` and ``host_agreement_vs_no_crf`` (how many labels each CRF keeps).

    Raises:
        ConfigError: iterations below 1, or a bad window or dilation.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ConfigError(f"--crf-iterations must be an integer >= 1, got {iterations!r}")
    conv_params = dataclasses.replace(params, iterations=iterations)
    crf = ConvCRF(conv_params, mean=preprocess.mean, std=preprocess.std, window=window, dilation=dilation).eval()
    wrapped = CrfModel(model, crf).eval()
    if logits is None:
        with torch.no_grad():
            logits = run_batched(model, images)
    conv = torch.cat([out for _, _, out in _crf_chunks(crf, logits, images)]).numpy()
    host = dense_crf(logits.numpy(), denormalize(images, preprocess), params)
    report = {
        "mode": "conv", "window": window, "dilation": dilation, "params": conv_params.to_dict(),
        "host_iterations": params.iterations, "images": len(images),
        "float32_error": float32_error(crf, logits, images),
        "agreement_vs_host": label_agreement(conv, host),
        "agreement_vs_no_crf": label_agreement(conv, logits.numpy()),
        "host_agreement_vs_no_crf": label_agreement(host, logits.numpy()),
    }
    return wrapped, CrfModel(reference, crf).eval(), report
