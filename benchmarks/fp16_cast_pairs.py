"""FP16 instance graphs with and without the converter's FP32 -> FP16 -> FP32 cast pairs.

``onnxconverter_common`` casts every FP32-kept node's result to FP16 when the tensor has more
than one reader, and each FP32 reader casts it back: the tensor is rounded to half between two
FP32 nodes. ``segexport.precision.fp16.convert_fp16`` removes those pairs. For each build folder
(a ``segexport build`` of ``maskrcnn`` or ``panet``: its ``model.onnx`` and ``build.json``) this
converts the FP32 graph to FP16 with the geometry kept FP32 (as ``segexport build`` does) twice,
once as the converter writes it and once with the pairs removed, and also with *every* node kept
FP32 (nothing should change), and prints the mask and box AP drops in points against the FP32
graph on the build's val images (ONNX Runtime, CPU).

    python benchmarks/fp16_cast_pairs.py builds/maskrcnn builds/panet
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx

import segexport.precision.fp16 as fp16
from segexport.checkpoint import read_config
from segexport.precision.instance_graph import geometry_nodes
from segexport.precision.instance_judge import instance_metrics, load_instance_val
from segexport.verify.latency import host_description


@contextlib.contextmanager
def converter_as_written() -> Iterator[None]:
    """``convert_fp16`` without the pair removal: the converter's graph as it writes it."""
    kept = fp16._drop_round_trips
    fp16._drop_round_trips = lambda model: 0
    try:
        yield
    finally:
        fp16._drop_round_trips = kept


def measure(build: Path) -> list[dict[str, object]]:
    facts = json.loads((build / "build.json").read_text())
    config = read_config(build / facts["reference"])
    val = load_instance_val(facts["data"], config.preprocess, count=facts["val_images"], seed=facts["seed"],
                            classes=tuple(config.classes))
    reference = instance_metrics(build / "model.onnx", val)
    model = onnx.load(str(build / "model.onnx"))
    plans = {"geometry FP32": geometry_nodes(model), "every node FP32": [n.name for n in model.graph.node]}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, kept in plans.items():
            for pairs in ("as the converter writes it", "cast pairs removed"):
                out = Path(tmp) / "model.fp16.onnx"
                with converter_as_written() if pairs.startswith("as") else contextlib.nullcontext():
                    removed = fp16.convert_fp16(build / "model.onnx", out, nodes_kept=kept)["dropped_round_trips"]
                found = instance_metrics(out, val)
                rows.append({
                    "build": str(build), "arch": facts["arch"], "images": len(val), "kept": label, "graph": pairs,
                    "readers_rewired": removed,
                    **{f"{k}_drop": round(100 * (reference[k] - found[k]), 3) for k in ("mask_ap", "box_ap")},
                })
                print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builds", nargs="+", type=Path, help="segexport build folders of instance networks")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results_fp16_cast_pairs.json"))
    args = parser.parse_args()
    rows = [row for build in args.builds for row in measure(build)]
    print(f"\nCPU: {host_description()}")
    print("| build | arch | kept FP32 | graph | readers rewired | mask AP drop | box AP drop |")
    print("|---|---|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['build']} | {r['arch']} | {r['kept']} | {r['graph']} | {r['readers_rewired']} | "
              f"{r['mask_ap_drop']:.3f} | {r['box_ap_drop']:.3f} |")
    args.json.write_text(json.dumps({"cpu": host_description(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
