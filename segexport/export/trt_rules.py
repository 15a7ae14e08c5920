"""The restriction kinds of the TensorRT support table (``trt_ops.json``), one function each.

Every op entry of the table may carry ``rules``: small dicts whose ``kind`` names a function
here. A rule function looks at one node and yields ``(severity, message)`` pairs; the table's
``rule_kinds`` section documents the parameters of each kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import onnx

from segexport.export.trt_graph import GraphIndex

UNSUPPORTED, RESTRICTED, INFO = "unsupported", "restricted", "info"

Issue = tuple[str, str]
RuleFn = Callable[[onnx.NodeProto, dict, dict[str, Any], GraphIndex], Iterator[Issue]]


def node_attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """Attribute values of ``node`` with strings decoded (ONNX stores them as bytes)."""
    attrs = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode("utf-8", errors="replace") for v in value]
        attrs[attr.name] = value
    return attrs


def _input(node: onnx.NodeProto, index: int) -> str:
    """Name of input ``index``, or '' when the node omits that (optional) input."""
    return node.input[index] if len(node.input) > index else ""


def _why(rule: dict, fallback: str) -> str:
    return rule.get("note") or fallback


def _attr_in(node, rule, attrs, index) -> Iterator[Issue]:
    value = attrs.get(rule["attr"], rule["default"])
    if value not in rule["allowed"]:
        allowed = ", ".join(map(str, rule["allowed"]))
        yield UNSUPPORTED, f"{rule['attr']}={value!r}: {_why(rule, f'TensorRT supports only {allowed}')}"


def _attr_all_ones(node, rule, attrs, index) -> Iterator[Issue]:
    value = attrs.get(rule["attr"])
    if value and any(v != 1 for v in value):
        yield UNSUPPORTED, f"{rule['attr']}={list(value)}: {_why(rule, 'must be all 1')}"


def _attr_absent(node, rule, attrs, index) -> Iterator[Issue]:
    for name in rule["attrs"]:
        if name in attrs:
            yield UNSUPPORTED, f"attribute {name} is set: {_why(rule, 'unsupported')}"


def _attr_ignored(node, rule, attrs, index) -> Iterator[Issue]:
    if rule["attr"] in attrs:
        yield INFO, f"{rule['attr']}={attrs[rule['attr']]!r}: {_why(rule, 'ignored by TensorRT')}"


def _attr_iota(node, rule, attrs, index) -> Iterator[Issue]:
    name = rule["attr"]
    if name not in attrs or not _input(node, rule["when_input"]):
        return
    rank = index.rank(_input(node, 0))
    if rank is None:
        yield INFO, f"{name}={attrs[name]} with unknown input rank, not verified: {_why(rule, '')}"
        return
    axes = [a + rank if a < 0 else a for a in attrs[name]]
    if axes != list(range(rank)):
        yield UNSUPPORTED, f"{name}={attrs[name]} on a rank-{rank} input: {_why(rule, 'must be 0..rank-1')}"


def _spatial_dims(node, rule, attrs, index) -> Iterator[Issue]:
    kernel = attrs.get("kernel_shape")
    rank = index.rank(_input(node, 0))
    spatial = len(kernel) if kernel else (None if rank is None else rank - 2)
    if spatial is not None and spatial not in rule["allowed"]:
        yield UNSUPPORTED, f"{spatial} spatial dims: {_why(rule, 'unsupported')}"


def _input_rank(node, rule, attrs, index) -> Iterator[Issue]:
    name = _input(node, rule["input"])
    rank = index.rank(name)
    if rank is None:
        yield INFO, f"rank of input '{name}' is unknown, not verified: {_why(rule, '')}"
    elif rank not in rule["allowed"]:
        yield UNSUPPORTED, f"input '{name}' has rank {rank}: {_why(rule, 'unsupported rank')}"


def _static_shape(node, rule, attrs, index) -> Iterator[Issue]:
    name = _input(node, rule["input"])
    dims = index.shapes.get(name)
    if dims is None:
        yield INFO, f"shape of input '{name}' is unknown, not verified: {_why(rule, '')}"
    elif any(d is None for d in dims):
        shown = "x".join("?" if d is None else str(d) for d in dims)
        yield UNSUPPORTED, f"input '{name}' has dynamic shape {shown}: {_why(rule, 'must be static')}"


def _constant_input(node, rule, attrs, index) -> Iterator[Issue]:
    name = _input(node, rule["input"])
    if not name:
        return
    label = f"input {rule['name']} ('{name}')"
    if not index.is_constant(name):
        if rule.get("required", True):
            yield UNSUPPORTED, f"{label} is computed at run time: {_why(rule, 'must be an initializer')}"
        else:
            yield RESTRICTED, f"{label} is computed at run time, so it cannot be checked: {_why(rule, '')}"
        return
    if "value" in rule:
        value = index.constant_value(name)
        if value is not None and not np.all(value == rule["value"]):
            yield UNSUPPORTED, f"{label} = {np.ravel(value)[:4].tolist()}: {_why(rule, 'wrong value')}"


def _input_below(node, rule, attrs, index) -> Iterator[Issue]:
    name = _input(node, rule["input"])
    if not name:
        return
    value = index.constant_value(name)
    label = f"input {rule['name']} ('{name}')"
    if value is None:
        yield INFO, f"{label} is computed at run time, not verified: {_why(rule, '')}"
    elif value.size and int(np.max(value)) >= rule["below"]:
        yield UNSUPPORTED, f"{label} = {int(np.max(value))}: {_why(rule, 'too large')}"


def _no_output(node, rule, attrs, index) -> Iterator[Issue]:
    if len(node.output) <= rule["output"]:
        return
    name = node.output[rule["output"]]
    why = _why(rule, "unsupported")
    if index.is_used(name):
        yield UNSUPPORTED, f"{node.op_type} output '{name}' ({rule['name']}) is used: {why}"
    else:
        yield UNSUPPORTED, (
            f"{node.op_type} lists output {rule['name']} ('{name}') though nothing uses it: {why}; "
            "drop it from the node's outputs"
        )


def _attr_at_least(node, rule, attrs, index) -> Iterator[Issue]:
    value = attrs.get(rule["attr"], rule["default"])
    low, strict = rule["min"], rule.get("strict", False)
    if value < low or (strict and value == low):
        bound = f"> {low}" if strict else f">= {low}"
        yield UNSUPPORTED, f"{rule['attr']}={value!r}: {_why(rule, f'must be {bound}')}"


def _attr_required(node, rule, attrs, index) -> Iterator[Issue]:
    if rule["attr"] not in attrs:
        yield RESTRICTED, f"{rule['attr']} is not set: {_why(rule, 'TensorRT assumes another default than ONNX')}"


def _dim_at_most(node, rule, attrs, index) -> Iterator[Issue]:
    name = _input(node, rule["input"])
    dims = index.shapes.get(name)
    dim = None if dims is None or len(dims) <= rule["axis"] else dims[rule["axis"]]
    label = f"input '{name}' axis {rule['axis']} ({rule['name']})"
    if dim is None:
        yield INFO, f"{label} is dynamic or unknown, not verified: {_why(rule, '')}"
    elif dim > rule["max"]:
        yield RESTRICTED, f"{label} = {dim}: {_why(rule, 'too large')}"


def _note(node, rule, attrs, index) -> Iterator[Issue]:
    yield INFO, f"not checked statically: {rule['note']}"


RULES: dict[str, RuleFn] = {
    "attr_in": _attr_in,
    "attr_all_ones": _attr_all_ones,
    "attr_absent": _attr_absent,
    "attr_ignored": _attr_ignored,
    "attr_iota": _attr_iota,
    "spatial_dims": _spatial_dims,
    "input_rank": _input_rank,
    "static_shape": _static_shape,
    "constant_input": _constant_input,
    "input_below": _input_below,
    "no_output": _no_output,
    "attr_at_least": _attr_at_least,
    "attr_required": _attr_required,
    "dim_at_most": _dim_at_most,
    "note": _note,
}


def rule_id(op_type: str, rule: dict) -> str:
    """A stable name for a table rule, e.g. ``Resize.attr_in(mode)`` or ``MaxPool.no_output(Indices)``."""
    subject = rule.get("attr") or rule.get("name")
    return f"{op_type}.{rule['kind']}" + (f"({subject})" if subject else "")


def apply_rules(node: onnx.NodeProto, rules: list[dict], index: GraphIndex) -> Iterator[tuple[str, str, str]]:
    """``(severity, message, rule id)`` for each restriction of ``rules`` that ``node`` runs into."""
    attrs = node_attributes(node)
    for rule in rules:
        for severity, message in RULES[rule["kind"]](node, rule, attrs, index):
            yield severity, message.rstrip(": "), rule_id(node.op_type, rule)
