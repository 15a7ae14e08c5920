"""Would layer-local bias correction (NNCF's default "fast bias correction" idea) help the
``openvino`` INT8 target? Measured, not taken (BENCHMARKS.md, "The same on 1024 val images").

For each convolution of the target's Q/DQ graph whose input and weights are dequantized: the
layer's FP32 input ``X`` comes from running the FP32 graph on calibration images; the layer is
computed twice in torch, ``conv(X, W)`` and ``conv(QDQ(X), DQ(Wq))``, and the per-channel mean
of the difference (over images and pixels) is added to the bias. Each layer is corrected from
FP32 inputs, so errors do not accumulate from layer to layer. The corrected graph, the target's
own, NNCF's default model and NNCF's model without its bias correction
(``disable_bias_correction``, the same calibration images) are then judged on OpenVINO against
PyTorch FP32 on val images of another seed than ``benchmarks/openvino_accuracy.py`` reports on,
so that table is not tuned on.

Needs the models ``benchmarks/openvino_accuracy.py --out DIR`` wrote:

    python benchmarks/openvino_bias_correction.py --models builds/bench/openvino unet deeplabv1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from openvino_accuracy import SEEDS, gap_interval, labels_of, miou, per_image_confusions
from openvino_int8 import nncf_default

from segexport.precision.calibration_data import (
    DEFAULT_CALIB_IMAGES,
    load_calibration_images,
)
from segexport.precision.evaluate import load_val
from segexport.precision.onnx_model import read_model_info
from segexport.runners.openvino_runner import OpenVINORunner
from segexport.runners.torch_runner import TorchRunner

BATCH = 16


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _layer(node: onnx.NodeProto, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``node`` (a 2-D Conv or ConvTranspose, no bias) on ``x`` with weights ``w``."""
    a = _attrs(node)
    pads = a.get("pads", [0, 0, 0, 0])
    stride, dilation, groups = tuple(a.get("strides", (1, 1))), tuple(a.get("dilations", (1, 1))), a.get("group", 1)
    if node.op_type == "Conv":
        return F.conv2d(F.pad(x, (pads[1], pads[3], pads[0], pads[2])), w, None, stride, 0, dilation, groups)
    if pads[0] != pads[2] or pads[1] != pads[3]:
        raise ValueError(f"{node.name}: asymmetric ConvTranspose pads {pads}")
    return F.conv_transpose2d(x, w, None, stride, (pads[0], pads[1]), tuple(a.get("output_padding", (0, 0))),
                              groups, dilation)


def quantized_convs(q: onnx.ModelProto, fp32: onnx.ModelProto) -> list[dict]:
    """The convolutions of ``q`` fed by QuantizeLinear -> DequantizeLinear on the input and a
    dequantized weight initializer, with what the correction needs from both graphs."""
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    f_inits = {t.name: t for t in fp32.graph.initializer}
    f_nodes = {n.name: n for n in fp32.graph.node}
    producer = {o: n for n in q.graph.node for o in n.output}
    found = []
    for node in q.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose") or node.name not in f_nodes:
            continue
        dx, dw = producer.get(node.input[0]), producer.get(node.input[1])
        if not (dx and dw and dx.op_type == dw.op_type == "DequantizeLinear" and dw.input[0] in inits):
            continue
        qx = producer.get(dx.input[0])
        if not (qx and qx.op_type == "QuantizeLinear"):
            continue
        zero = inits[dx.input[2]] if len(dx.input) > 2 and dx.input[2] else np.uint8(0)
        weights = inits[dw.input[0]].astype(np.float32)
        shape = [1] * weights.ndim
        shape[_attrs(dw).get("axis", 1)] = -1
        w_zero = inits[dw.input[2]].astype(np.float32) if len(dw.input) > 2 and dw.input[2] else np.float32(0)
        dequantized = (weights - np.reshape(w_zero, shape if np.ndim(w_zero) else [])) * np.reshape(
            inits[dw.input[1]].astype(np.float32), shape)
        fp32_node = f_nodes[node.name]
        found.append({
            "node": node, "input": fp32_node.input[0], "scale": float(inits[dx.input[1]]), "zero": int(zero),
            "range": (0, 255) if zero.dtype == np.uint8 else (-128, 127),
            "w": torch.from_numpy(numpy_helper.to_array(f_inits[fp32_node.input[1]]).astype(np.float32)),
            "w_q": torch.from_numpy(dequantized),
            "bias": node.input[2] if len(node.input) > 2 and node.input[2] else None,
        })
    return found


def correct_biases(fp32_path: Path, q: onnx.ModelProto, batches: list[np.ndarray], threads: int) -> int:
    """Add each quantized convolution's mean output shift to its bias in ``q`` (in place);
    returns how many layers were corrected."""
    fp32 = onnx.load(str(fp32_path))
    layers = quantized_convs(q, fp32)
    wanted = sorted({layer["input"] for layer in layers})
    outputs = {o.name for o in fp32.graph.output}
    fp32.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in wanted if n not in outputs)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph's own tensors
    session = ort.InferenceSession(fp32.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    with torch.no_grad():
        for batch in batches:
            inputs = dict(zip(wanted, session.run(wanted, {feed: batch})))
            for layer in layers:
                x = torch.from_numpy(inputs[layer["input"]])
                scale, zero = layer["scale"], layer["zero"]
                x_q = (torch.clamp(torch.round(x / scale) + zero, *layer["range"]) - zero) * scale
                shift = _layer(layer["node"], x, layer["w"]) - _layer(layer["node"], x_q, layer["w_q"])
                name = layer["node"].name
                sums[name] = sums.get(name, 0) + shift.double().sum((0, 2, 3))
                counts[name] = counts.get(name, 0) + shift.shape[0] * shift.shape[2] * shift.shape[3]
    inits = {t.name: t for t in q.graph.initializer}
    for layer in layers:
        node = layer["node"]
        shift = (sums[node.name] / counts[node.name]).float().numpy()
        if layer["bias"] in inits:
            tensor = inits[layer["bias"]]
            corrected = numpy_helper.to_array(tensor).astype(np.float32) + shift
            tensor.CopyFrom(numpy_helper.from_array(corrected, tensor.name))
        else:
            name = f"{node.name}_corrected_bias"
            q.graph.initializer.append(numpy_helper.from_array(shift, name))
            node.input.extend([""] * (3 - len(node.input)))
            node.input[2] = name
    return len(layers)


def run_arch(arch: str, root: Path, models: Path, images: int, val_images: int, val_seed: int, threads: int) -> dict:
    ckpt, out = root / arch, models / arch
    fp32 = ckpt / "export" / "model.onnx"
    info = read_model_info(fp32)
    calib = load_calibration_images("synthetic", info.preprocess, count=DEFAULT_CALIB_IMAGES, seed=0)
    q = onnx.load(str(out / "model.int8.openvino.onnx"))
    corrected = correct_biases(fp32, q, list(calib.batches(BATCH))[: max(1, images // BATCH)], threads)
    onnx.save(q, str(out / "model.int8.openvino-bias-corrected.onnx"))
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    nncf_default(fp32, calib, out / "model.int8.nncf-no-bias-correction.xml",
                 advanced_parameters=AdvancedQuantizationParameters(disable_bias_correction=True))
    val = load_val("synthetic", info.preprocess, count=val_images, seed=val_seed, num_classes=len(info.classes))
    reference = labels_of(TorchRunner(ckpt, threads=threads), val)
    labels = {name: labels_of(OpenVINORunner(out / file, threads=threads, precision="int8"), val)
              for name, file in (("target", "model.int8.openvino.onnx"),
                                 ("bias-corrected", "model.int8.openvino-bias-corrected.onnx"),
                                 ("nncf", "model.int8.nncf.xml"),
                                 ("nncf without bias correction", "model.int8.nncf-no-bias-correction.xml"))}
    ref_miou = miou(reference, val)
    per_image = {name: per_image_confusions(got, val) for name, got in labels.items()}
    return {"arch": arch, "layers_corrected": corrected, "val_seed": val_seed, "val_images": len(val),
            "drop": {name: 100.0 * (ref_miou - miou(got, val)) for name, got in labels.items()},
            "agreement": {name: float((got == reference).mean()) for name, got in labels.items()},
            "minus_nncf": {name: gap_interval(per_image[name], per_image["nncf"], len(val.classes))
                           for name in ("target", "bias-corrected")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archs", nargs="*", default=list(SEEDS))
    parser.add_argument("--root", type=Path, default=Path("builds/bench"), help="folder of checkpoint folders")
    parser.add_argument("--models", type=Path, default=Path("builds/bench/openvino"),
                        help="where benchmarks/openvino_accuracy.py wrote the INT8 models")
    parser.add_argument("--images", type=int, default=64, help="calibration images the shifts are measured on")
    parser.add_argument("--val-images", type=int, default=512)
    parser.add_argument("--val-seed", type=int, default=1, help="not 0: the seed openvino_accuracy.py reports on")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print("| arch | layers | target drop / agreement | bias-corrected | NNCF default | NNCF, no bias correction "
          "| target - NNCF (95%) | bias-corrected - NNCF (95%) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for arch in args.archs:
        r = run_arch(arch, args.root, args.models, args.images, args.val_images, args.val_seed, args.threads)
        cells = [f"{r['drop'][n]:.2f} / {r['agreement'][n]:.4f}" for n in r["drop"]]
        cells += [f"{g[0]:+.2f} ({g[1]:+.2f}, {g[2]:+.2f})" for g in r["minus_nncf"].values()]
        print(f"| {arch} | {r['layers_corrected']} | " + " | ".join(cells) + " |", flush=True)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
