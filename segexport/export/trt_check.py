"""Static TensorRT-compatibility check of an ONNX graph: no GPU and no ``tensorrt`` package needed.

The rules come from ``trt_ops.json``, NVIDIA's onnx-tensorrt operator support matrix encoded as
data (its header names the matrix version). The check reports, per node, what TensorRT's ONNX
parser would reject (``unsupported``), accept with a caveat (``restricted``), or what the matrix
states but cannot be verified without building an engine (``info``).

Example::

    report = check_tensorrt_compat("builds/fcn8s/model.onnx")
    if not report.ok:
        print([f.message for f in report.findings if f.severity == "unsupported"])
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx
import onnx.inliner
import onnx.shape_inference

from segexport.error_map import translated_errors
from segexport.errors import InputError
from segexport.export.trt_graph import GraphIndex, iter_nodes
from segexport.export.trt_rules import INFO, RESTRICTED, RULES, UNSUPPORTED, apply_rules

SEVERITIES = (UNSUPPORTED, RESTRICTED, INFO)
TABLE_PATH = Path(__file__).with_name("trt_ops.json")
DEFAULT_DOMAINS = ("", "ai.onnx")
MODEL_LEVEL = "(model)"  # the node column of findings about the model as a whole


@dataclass(frozen=True)
class Finding:
    """One thing TensorRT's parser would reject or restrict. ``rule`` names where it came from."""

    node: str
    op_type: str
    severity: str
    message: str
    rule: str


@dataclass
class CompatReport:
    """Findings of one check. ``ok`` is True when nothing is unsupported."""

    target: str
    model: str
    matrix: str
    nodes: int
    op_types: dict[str, int]
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.severity == UNSUPPORTED for f in self.findings)

    def counts(self) -> dict[str, int]:
        """Number of findings per severity, every severity present."""
        tally = Counter(f.severity for f in self.findings)
        return {s: tally.get(s, 0) for s in SEVERITIES}

    def summary(self) -> str:
        """One line: verdict and counts, e.g. for the CLI's failure message."""
        c = self.counts()
        verdict = "compatible" if self.ok else "not compatible"
        unsupported_ops = sorted({f.op_type for f in self.findings if f.severity == UNSUPPORTED and f.op_type})
        where = f" ({', '.join(unsupported_ops)})" if unsupported_ops else ""
        return (
            f"{self.model}: {verdict} with {self.target}: {c[UNSUPPORTED]} unsupported{where}, "
            f"{c[RESTRICTED]} restricted, {c[INFO]} info in {self.nodes} nodes"
        )

    def to_dict(self) -> dict:
        return {
            "target": self.target, "model": self.model, "matrix": self.matrix, "ok": self.ok,
            "nodes": self.nodes, "op_types": self.op_types, "counts": self.counts(),
            "findings": [asdict(f) for f in self.findings],
        }


@dataclass(frozen=True)
class TrtTable:
    """The parsed support table: op entries and data types as ``onnx.TensorProto`` enum values."""

    ops: dict[str, dict]
    source: dict
    opset_range: tuple[int, int]
    type_codes: dict[str, int]
    tensor_types: frozenset[int]
    io_only_types: frozenset[int]
    downcast_types: frozenset[int]

    @property
    def version(self) -> str:
        s = self.source
        return f"{s['release']} operator matrix, commit {s['commit'][:12]} of {s['commit_date']}"

    def codes(self, names: list[str]) -> frozenset[int]:
        return frozenset(self.type_codes[n] for n in names)


@functools.lru_cache(maxsize=4)
def load_trt_table(path: Path = TABLE_PATH) -> TrtTable:
    """Parse the support table. A malformed table is a packaging bug, so it raises ``ValueError``."""
    data = json.loads(Path(path).read_text())
    codes = {short: onnx.TensorProto.DataType.Value(name) for short, name in data["type_names"].items()}
    for op, entry in data["ops"].items():
        for rule in entry.get("rules", []):
            if rule["kind"] not in RULES:
                raise ValueError(f"{path}: {op} has a rule of unknown kind {rule['kind']!r}")
        for name in (*entry.get("types", []), *entry.get("output_types", [])):
            if name not in codes:
                raise ValueError(f"{path}: {op} lists unknown type {name!r}")
    low, high = data["opset_range"]
    return TrtTable(
        ops=data["ops"], source=data["source"], opset_range=(low, high), type_codes=codes,
        tensor_types=frozenset(codes[n] for n in data["tensor_types"]),
        io_only_types=frozenset(codes[n] for n in data["io_only_types"]),
        downcast_types=frozenset(codes[n] for n in data["downcast_types"]),
    )


def _load_model(model: onnx.ModelProto | str | Path) -> tuple[onnx.ModelProto, str]:
    if isinstance(model, onnx.ModelProto):
        return model, model.graph.name or "model"
    path = Path(model)
    if not path.exists():
        raise InputError(f"{path}: no such file; pass the path of an .onnx model")
    if not path.is_file():
        raise InputError(f"{path}: not a file; pass the path of an .onnx model")
    with translated_errors(path):  # a damaged file, or external data missing or truncated
        proto = onnx.load(str(path))
    if proto.ir_version == 0 or not proto.HasField("graph"):
        raise InputError(f"{path}: not an ONNX model (no IR version or graph in it)")
    return proto, str(path)


def _typed_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Finding]]:
    """Inline local functions (TensorRT's parser does too) and infer types; never mutates ``model``."""
    notes: list[Finding] = []
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True), notes
    except (onnx.shape_inference.InferenceError, ValueError) as exc:
        # Still worth checking ops and attributes; type rules then see declared types only.
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        notes.append(Finding(MODEL_LEVEL, "", INFO, f"type inference failed ({first_line}); data types checked "
                             "only where the model declares them", "inference"))
        return model, notes


def _node_label(node: onnx.NodeProto, position: int) -> str:
    return node.name or (node.output[0] if node.output and node.output[0] else f"{node.op_type}#{position}")


def _type_issue(table: TrtTable, elem: int, allowed: list[str], what: str, op: str) -> tuple[str, str] | None:
    if not elem or elem in table.codes(allowed):
        return None
    name = onnx.TensorProto.DataType.Name(elem)
    if elem in table.downcast_types:
        return RESTRICTED, f"{what} is {name}: TensorRT casts it to FLOAT, clamping to +-FLT_MAX"
    return UNSUPPORTED, f"{what} is {name}; TensorRT's {op} takes {', '.join(allowed)} there"


def _check_node_types(node: onnx.NodeProto, entry: dict, table: TrtTable, index: GraphIndex,
                      flagged: set[str]) -> Iterator[tuple[str, str, str]]:
    """The matrix's 'Supported Types' column, checked on the tensors the table designates."""
    if "types" not in entry:
        return
    out_types = entry.get("output_types", entry["types"])
    slots = [("input", node.input, i, entry["types"]) for i in entry.get("type_inputs", [0])]
    slots += [("output", node.output, i, out_types) for i in entry.get("type_outputs", [])]
    for side, names, i, allowed in slots:
        name = names[i] if len(names) > i else ""
        issue = name and _type_issue(table, index.elem_types.get(name, 0), allowed, f"{side} '{name}'", node.op_type)
        if issue:
            flagged.add(name)
            yield (*issue, f"{node.op_type}.types")


def _check_node(node: onnx.NodeProto, table: TrtTable, index: GraphIndex,
                flagged: set[str]) -> Iterator[tuple[str, str, str]]:
    if node.domain not in DEFAULT_DOMAINS:
        yield (UNSUPPORTED, f"custom op {node.domain}::{node.op_type}: TensorRT's parser needs a plugin "
               "registered for it", "domain.custom")
        return
    entry = table.ops.get(node.op_type)
    if entry is None:
        yield UNSUPPORTED, f"{node.op_type} is not in TensorRT's operator support matrix", "matrix.unknown_op"
        return
    if not entry["supported"]:
        yield UNSUPPORTED, f"{node.op_type} is not supported by TensorRT's ONNX parser", "matrix.unsupported_op"
        return
    yield from _check_node_types(node, entry, table, index, flagged)
    yield from apply_rules(node, entry.get("rules", []), index)


def _check_opsets(model: onnx.ModelProto, table: TrtTable) -> Iterator[Finding]:
    low, high = table.opset_range
    for opset in model.opset_import:
        if opset.domain in DEFAULT_DOMAINS and not low <= opset.version <= high:
            yield Finding(MODEL_LEVEL, "", RESTRICTED, f"ONNX opset {opset.version} is outside the matrix's range "
                          f"{low}-{high}; TensorRT may reject or misread it", "opset.range")


def _check_tensor_types(table: TrtTable, index: GraphIndex, flagged: set[str]) -> Iterator[Finding]:
    """Types TensorRT has no tensors of, and UINT8 away from the network's inputs and outputs."""
    io = set(index.graph_inputs) | set(index.graph_outputs)
    names = [*index.graph_inputs, *index.producers]
    for name in dict.fromkeys(names):
        elem = index.elem_types.get(name, 0)
        # Constants are weights to TensorRT, like initializers; the ops reading them judge their types.
        if not elem or name in flagged or index.is_constant(name):
            continue
        producer = index.producers.get(name)
        node, op = (producer.name or name, producer.op_type) if producer else ("(graph input)", "")
        type_name = onnx.TensorProto.DataType.Name(elem)
        if elem not in table.tensor_types:
            yield Finding(node, op, UNSUPPORTED, f"tensor '{name}' is {type_name}, a type TensorRT lacks",
                          "types.tensor")
        elif elem in table.io_only_types and name not in io:
            yield Finding(node, op, UNSUPPORTED, f"tensor '{name}' is {type_name}, which TensorRT allows "
                          "only as a network input or output", "types.tensor")
        elif elem in table.downcast_types:
            yield Finding(node, op, RESTRICTED, f"tensor '{name}' is {type_name}: TensorRT casts it to "
                          "FLOAT, clamping to +-FLT_MAX", "types.tensor")


def check_tensorrt_compat(model: onnx.ModelProto | str | Path) -> CompatReport:
    """Check an ONNX model against TensorRT's operator support matrix, statically.

    Args:
        model: a loaded ``onnx.ModelProto`` (not modified) or the path of an ``.onnx`` file.

    Returns:
        A :class:`CompatReport`; ``report.ok`` is False when any node is unsupported.

    Raises:
        InputError: the path is missing, not a file, or not an ONNX model.
    """
    proto, model_name = _load_model(model)
    table = load_trt_table()
    findings = list(_check_opsets(proto, table))
    typed, notes = _typed_model(proto)
    findings += notes
    index = GraphIndex.build(typed)
    flagged: set[str] = set()
    nodes = list(iter_nodes(typed.graph))
    for position, node in enumerate(nodes):
        label = _node_label(node, position)
        for severity, message, rule in _check_node(node, table, index, flagged):
            findings.append(Finding(label, node.op_type, severity, message, rule))
    findings += _check_tensor_types(table, index, flagged)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: order[f.severity])  # stable: graph order within a severity
    op_types = dict(sorted(Counter(n.op_type for n in nodes).items()))
    return CompatReport("tensorrt", model_name, table.version, len(nodes), op_types, findings)
