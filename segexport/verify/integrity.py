"""What verify checks before any work: counts it can hold, and that every artifact is the file
the build wrote (verify trusts nothing it has not checked).

Before a variant is judged, each of its files is compared with what was recorded when it was
written: the SHA-256 in the build's stage records (``BUILD_DIR/.stages/STAGE.json``, the
``outputs`` map), else the folder's ledger of files segexport wrote (:mod:`segexport.ownership`).
An ONNX artifact's graph must also hold the row's precision (an FP32 file put in place of
``model.int8.cpu.onnx`` is caught even in a folder with no records). A mismatch is bad input:
exit 2, naming the file and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

from segexport.errors import InputError
from segexport.ownership import LEDGER_NAME, file_digest, is_ours, is_temporary
from segexport.verify.manifest import BuildManifest, VariantSpec

STAGES_DIR = ".stages"  # where ``segexport build`` keeps its stage records


def recorded_hashes(root: Path) -> dict[str, str]:
    """``{path relative to root: sha256}`` of every output the build's stage records list."""
    found: dict[str, str] = {}
    folder = root / STAGES_DIR
    for record in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            outputs = json.loads(record.read_text()).get("outputs", {})
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            continue
        if isinstance(outputs, dict):
            found.update({k: v for k, v in outputs.items() if isinstance(k, str) and isinstance(v, str)})
    return found


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not is_temporary(p.name))
    return [path]


def _check_file(root: Path, file: Path, recorded: dict[str, str], arch: str) -> None:
    fix = f"re-run `segexport build {arch}` to rebuild it"
    rel = file.relative_to(root).as_posix()
    if rel in recorded:
        digest = file_digest(file)
        if digest != recorded[rel]:
            raise InputError(f"{file}: not the file the build wrote (SHA-256 {digest[:12]}, {STAGES_DIR} recorded "
                             f"{recorded[rel][:12]}); {fix}")
    elif (file.parent / LEDGER_NAME).is_file() and not is_ours(file):
        raise InputError(f"{file}: not written by segexport, or changed since it was; {fix}")


def _check_precision(path: Path, spec: VariantSpec, arch: str) -> None:
    from segexport.onnx_graph import graph_precision

    try:
        found = graph_precision(path)
    except (InputError, OSError):
        return  # the file the build wrote does not parse: its row fails to run, as a failed check

    if found != spec.precision:
        raise InputError(f"{path}: an {found} graph, but build.json lists it as {spec.name} ({spec.precision}); "
                         f"re-run `segexport build {arch}` to rebuild it")


def check_counts(manifest: BuildManifest, images: int | None, runs: int | None) -> int | None:
    """``runs`` when the image and run counts are within segexport's limits and memory holds the
    images; else ConfigError before any work."""
    from segexport import limits
    from segexport.verify import latency as lat

    lat.check_count(images, "--images")
    lat.check_count(runs, "latency runs")
    limits.check_count(images, "--images", limits.IMAGES_MAX)
    limits.check_count(runs, "--runs", limits.RUNS_MAX)
    count = images or manifest.val_images
    if count:
        limits.check_decoded_images(count, manifest.input_size, "--images", rows=1 + len(manifest.variants))
    return runs


def check_artifacts(root: Path, manifest: BuildManifest, specs: list[VariantSpec]) -> None:
    """Raise InputError for the first artifact that is missing, not the file the build wrote,
    or (ONNX) not of its row's precision."""
    recorded = recorded_hashes(root)
    for spec in specs:
        if spec.skipped is not None:
            continue
        path = root / str(spec.artifact)
        if not path.exists():
            raise InputError(f"{path}: listed in build.json ({spec.name}) but missing; "
                             f"re-run `segexport build {manifest.arch}`")
        for file in _files(path):
            _check_file(root, file, recorded, manifest.arch)
        if path.suffix == ".onnx":
            _check_precision(path, spec, manifest.arch)
