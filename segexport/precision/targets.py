"""The precision-target registry: every INT8 flavour segexport makes, declared once.

A target is the INT8 graph one family of engines runs best: its file name, the
``quantize_static`` settings that make it, the recipe budget it is judged by and the backends
that run it (the first one judges it in the precision stage). The build's ``--target``
choices, its variants and rows, the manifest's validation, the stage files and the budgets
are all derived from this table, so adding a target is one entry here (plus its tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segexport.errors import ConfigError

WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


@dataclass(frozen=True)
class Int8Target:
    """One INT8 flavour.

    Attributes:
        name: the registry key (``--target NAME``; the build's ``int8.NAME`` stage and budget entry).
        filename: the model file it writes (``model.int8.NAME.onnx``).
        signed_activations: INT8 (True) or UINT8 (False) activations; weights are always signed per channel.
        op_types: the operator types that get Q/DQ (None: every type the library quantizes).
        extra_options: ``quantize_static``'s ``extra_options``.
        budget_key: the recipe field holding its mIoU budget in points.
        backends: the backends that run its model, the judging one first, the deploying one last.
        help: one line for ``--help``.
        trt_cache: also write TensorRT's ``calibration.cache`` from the same ranges.
        fused_kernels: report how many convolutions ONNX Runtime fuses into QLinearConv.
        exclude: ``"module:function"`` returning more node names to keep in FP32 for this
            target, given the FP32 ``onnx.ModelProto`` (None: none).
        first_layer_7bit: the tasks (``semantic``, ``instance``, as the graph's metadata says)
            whose graphs get 7-bit weights (``reduce_range``) in the weighted layers that read the
            image, the overflow fix for CPUs without VNNI (see ``precision.int8.first_layers``).
    """

    name: str
    filename: str
    signed_activations: bool
    op_types: tuple[str, ...] | None
    extra_options: dict[str, Any] = field(default_factory=dict)
    budget_key: str = "budget_int8"
    backends: tuple[str, ...] = ("onnxruntime",)
    help: str = ""
    trt_cache: bool = False
    fused_kernels: bool = False
    exclude: str | None = None
    first_layer_7bit: tuple[str, ...] = ()

    @property
    def judge_backend(self) -> str:
        """The backend the precision stage measures its accuracy on (no GPU needed)."""
        return self.backends[0]

    @property
    def deploy_backend(self) -> str:
        """The backend it is made for, whose speed it must pay off on."""
        return self.backends[-1]


TARGETS: dict[str, Int8Target] = {}
DEFAULT_TARGET = "tensorrt"


def register_target(target: Int8Target) -> Int8Target:
    """Add ``target`` to the registry.

    Raises:
        ValueError: a target of that name is registered already (a programming error).
    """
    if target.name in TARGETS:
        raise ValueError(f"INT8 target {target.name!r} is registered twice")
    TARGETS[target.name] = target
    return target


def get_target(name: str) -> Int8Target:
    """Raises:
    ConfigError: an unknown target.
    """
    if name not in TARGETS:
        raise ConfigError(f"--target must be one of {', '.join(TARGETS)}, got {name!r}")
    return TARGETS[name]


def targets_help() -> str:
    return "; ".join(f"{t.name}: {t.help}" for t in TARGETS.values())


register_target(Int8Target(
    "tensorrt", "model.int8.tensorrt.onnx", True, (*WEIGHTED_OPS, "Add", "MaxPool", "AveragePool"),
    {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False, "DedicatedQDQPair": True,
     "OpTypesToExcludeOutputQuantization": [*WEIGHTED_OPS, "Add"]},
    budget_key="budget_int8", backends=("onnxruntime", "tensorrt"), trt_cache=True,
    help="symmetric signed Q/DQ for TensorRT's explicit quantization (engines on a GPU)",
))
register_target(Int8Target(
    "cpu", "model.int8.cpu.onnx", False, None, {"WeightSymmetric": True},
    budget_key="budget_int8_cpu", backends=("onnxruntime",), fused_kernels=True,
    # Instance graphs only, so far: on an AVX2-only EPYC the tiny PANet's cpu model lost 1.04 AP
    # points with 8-bit first-layer weights and -0.09 with 7-bit ones (BENCHMARKS.md); semantic
    # networks keep 8 bits until the same is measured for them.
    first_layer_7bit=("instance",),
    help="unsigned activations, fused QLinear kernels on ONNX Runtime",
))
# Q/DQ on the inputs of weighted layers only: OpenVINO's low-precision transformations carry
# the dequantization through pools, concats and residual adds themselves (its runtime graph ran
# all 68 convolutions of the paper DeepLabv3+ in u8 either way), while Q/DQ around every small
# op made the tiny model 1.7x slower than this graph, and Q/DQ on outputs leaves FakeQuantize
# nodes unfused. It also keeps the MaxUnpool rewrite's compared tensors FP32, which NNCF's
# default breaks (a FakeQuantize per Equal input: 57 mIoU points lost on SegNet). The first
# layer's weights are 7-bit, as in NNCF's default: without it OpenVINO's u8 convolutions
# saturate on AVX2-only CPUs (NNCF without its overflow fix lost 0.78 points on the tiny U-Net,
# with it 0.02). BENCHMARKS.md.
register_target(Int8Target(
    "openvino", "model.int8.openvino.onnx", False, WEIGHTED_OPS,
    {"WeightSymmetric": True, "QuantizeBias": False, "OpTypesToExcludeOutputQuantization": list(WEIGHTED_OPS)},
    budget_key="budget_int8_cpu", backends=("openvino",), first_layer_7bit=("semantic", "instance"),
    help="unsigned Q/DQ on the inputs of weighted layers, for OpenVINO's CPU plugin",
))
