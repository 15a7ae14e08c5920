"""A Triton Inference Server model repository from a build folder: one model per built variant.

``NAME_VARIANT/config.pbtxt`` + ``NAME_VARIANT/1/model.onnx`` (platform ``onnxruntime_onnx``, or
backend ``openvino`` for the OpenVINO rows: names from the backend registry) or
``model.plan`` (``tensorrt_plan``), with input/output names, data types and dims read from the
model itself, ``max_batch_size`` and dynamic batching when its batch axis is dynamic, and an
instance group. With ``python_backend``, ``NAME_e2e`` serves encoded images end to end through
Triton's Python backend (see ``triton_python_model.py``). ``README.NAME.md`` in the repository
gives the preprocessing, the classes and what the server needs. Several builds share a
repository under different names: each call writes only its own ``NAME_*`` models.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from segexport.deploy.artifact import ArtifactSpec, read_artifact_spec
from segexport.deploy.triton_readme import render_readme
from segexport.engine.io import TensorSpec, read_onnx_io
from segexport.errors import ConfigError, InputError
from segexport.fsutil import atomic_dir, atomic_path
from segexport.ownership import claim_outputs, path_source
from segexport.precision.targets import TARGETS
from segexport.runners.registry import get_backend
from segexport.verify.manifest import BuildManifest, VariantSpec, read_manifest

DEFAULT_MAX_BATCH = 8
E2E_SUFFIX = "e2e"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int8": "TYPE_INT8",
                 "uint8": "TYPE_UINT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
                 "bool": "TYPE_BOOL", "object": "TYPE_STRING"}


@dataclass
class TritonModel:
    """One model of the repository.

    Attributes:
        name: the model's folder and Triton name.
        variant: the build variant it serves (``e2e`` for the Python-backend model).
        platform: ``onnxruntime_onnx``, ``tensorrt_plan`` or ``python`` (the backend).
        precision: of the served artifact.
        inputs, outputs: tensors with dims as in ``config.pbtxt`` (without the batch axis when batching).
        max_batch_size: 0 when the model does not batch.
        kind: the instance group's kind.
    """

    name: str
    variant: str
    platform: str
    precision: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_batch_size: int
    kind: str
    key: str = "platform"
    filename: str | None = None  # the model file in the version folder, when not Triton's default
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass
class TritonRepo:
    """What :func:`write_triton_repo` wrote."""

    path: Path
    models: list[TritonModel]
    readme: Path
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _tensor_block(key: str, tensors: list[TensorSpec]) -> list[str]:
    lines = [f"{key} ["]
    for i, t in enumerate(tensors):
        if t.dtype not in _TRITON_TYPES:
            raise InputError(f"tensor {t.name!r} has type {t.dtype}, which Triton does not serve")
        # A per-image scalar (an instance network's count, [N] with the batch axis dropped) is
        # declared dims [ 1 ] with reshape [ ]: clients see [N, 1], the model gives [N].
        dims = ", ".join(map(str, t.shape or (1,)))
        lines += ["  {", f'    name: "{t.name}"', f"    data_type: {_TRITON_TYPES[t.dtype]}", f"    dims: [ {dims} ]",
                  *([] if t.shape else ["    reshape: { shape: [ ] }"]), "  }" + ("," if i < len(tensors) - 1 else "")]
    return [*lines, "]"]


def config_pbtxt(model: TritonModel, instances: int, header: str) -> str:
    """The model's ``config.pbtxt`` (protobuf text format of Triton's ModelConfig)."""
    lines = [f"# {header}", f'name: "{model.name}"', f'{model.key}: "{model.platform}"',
             f"max_batch_size: {model.max_batch_size}"]
    if model.filename:
        lines.append(f'default_model_filename: "{model.filename}"')
    lines += _tensor_block("input", model.inputs) + _tensor_block("output", model.outputs)
    if model.max_batch_size > 0:
        lines += ["dynamic_batching { }"]
    lines += ["instance_group [", "  {", f"    count: {instances}", f"    kind: {model.kind}", "  }", "]"]
    for name, value in model.parameters.items():
        lines += ["parameters: {", f'  key: "{name}"', f'  value: {{ string_value: "{value}" }}', "}"]
    return "\n".join(lines) + "\n"


def _batching(path: Path, io_in: tuple[TensorSpec, ...], io_out: tuple[TensorSpec, ...], max_batch: int | None,
              limit: int | None, notes: list[str]) -> tuple[int, list[TensorSpec], list[TensorSpec]]:
    """max_batch_size and the dims Triton sees: the batch axis dropped when the model batches."""
    if io_in[0].shape[0] > 0 or any(o.shape[0] > 0 for o in io_out):
        if max_batch:
            notes.append(f"{path.name}: fixed batch {io_in[0].shape[0]} in the model, so served without batching")
        return 0, list(io_in), list(io_out)
    size = max_batch or min(DEFAULT_MAX_BATCH, limit or DEFAULT_MAX_BATCH)
    if limit is not None and size > limit:
        raise ConfigError(f"{path}: --max-batch {size} exceeds the engine's profile (max batch {limit}); "
                          f"pass --max-batch {limit} or rebuild the engine with --max-batch {size}")
    drop = [TensorSpec(t.name, t.dtype, t.shape[1:]) for t in (*io_in, *io_out)]
    return size, drop[: len(io_in)], drop[len(io_in):]


def _onnx_files(path: Path) -> list[Path]:
    """The ONNX file and its external-data files (which must travel with it)."""
    model = onnx.load(str(path), load_external_data=False)
    tensors = list(model.graph.initializer)
    locations = {e.value for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL
                 for e in t.external_data if e.key == "location"}
    return [path, *(path.parent / loc for loc in sorted(locations))]


def _copy_onnx(path: Path, version_dir: Path) -> None:
    version_dir.mkdir(parents=True)
    files = _onnx_files(path)
    shutil.copyfile(files[0], version_dir / "model.onnx")
    for extra in files[1:]:  # external data keeps its path relative to the model
        (version_dir / extra.relative_to(path.parent)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(extra, version_dir / extra.relative_to(path.parent))


def _variant_model(root: Path, spec: VariantSpec, name: str, max_batch: int | None,
                   notes: list[str]) -> tuple[TritonModel, Path]:
    path = root / str(spec.artifact)
    backend = get_backend(spec.backend)
    if backend.triton is None:
        raise InputError(f"{spec.name}: Triton has no backend for {spec.backend} artifacts; serve an ONNX variant")
    if path.suffix == ".onnx":
        io = read_onnx_io(path)
        size, inputs, outputs = _batching(path, io.inputs, io.outputs, max_batch, None, notes)
        cpu_only = backend.device == "cpu" or (spec.target is not None and TARGETS[spec.target].backends == (spec.backend,))
        model = TritonModel(name, spec.name, backend.triton, spec.precision, inputs, outputs, size,
                            "KIND_CPU" if cpu_only else "KIND_AUTO", key=backend.triton_field)
        model.filename, model.parameters = backend.triton_file, dict(backend.triton_parameters)
        return model, path
    from segexport.engine.record import read_engine_record

    record = read_engine_record(path)
    specs = [tuple(TensorSpec.from_dict(t) for t in record[k]) for k in ("inputs", "outputs")]
    limit = int(record["settings"]["profile"]["max"][0])
    size, inputs, outputs = _batching(path, specs[0], specs[1], max_batch, limit, notes)
    return TritonModel(name, spec.name, "tensorrt_plan", spec.precision, inputs, outputs, size, "KIND_GPU"), path


def _e2e_source(manifest: BuildManifest, root: Path) -> VariantSpec:
    onnx_specs = [s for s in manifest.variants if not s.skipped and str(s.artifact).endswith(".onnx")]
    if not onnx_specs:
        raise InputError(f"{root}: --python-backend needs an ONNX variant in build.json, and there is none")
    fp32 = [s for s in onnx_specs if s.precision == "fp32"]
    return (fp32 or onnx_specs)[0]


def _write_e2e(repo: Path, root: Path, source: VariantSpec, name: str, spec: ArtifactSpec, instances: int,
               header: str) -> TritonModel:
    """The Python-backend model: ``model.py``, ``segexport.json`` and the ONNX model in ``1/``."""
    path = root / str(source.artifact)
    io = read_onnx_io(path)
    logits = [o.name for o in io.outputs if o.name == "logits"] or [o.name for o in io.outputs if len(o.shape) == 4]
    if not logits:
        raise InputError(f"{path}: --python-backend needs a logits output [N, C, H, W]; export with --output logits")
    model = TritonModel(name, E2E_SUFFIX, "python", source.precision, [TensorSpec("IMAGE", "object", (1,))],
                        [TensorSpec("MASK", "uint8", (-1, -1))], 0, "KIND_CPU", key="backend")
    with atomic_dir(repo / name) as folder:
        _write_e2e_files(folder, path, io, logits[0], source, spec)
        (folder / "config.pbtxt").write_text(config_pbtxt(model, instances, header))
    return model


def _write_e2e_files(folder: Path, path: Path, io: Any, logits: str, source: VariantSpec, spec: ArtifactSpec) -> None:
    version = folder / "1"
    _copy_onnx(path, version)
    shutil.copyfile(Path(__file__).with_name("triton_python_model.py"), version / "model.py")
    (version / "segexport.json").write_text(json.dumps({
        "onnx": "model.onnx", "input": io.image_input.name, "output": logits, "variant": source.name,
        "size": list(spec.preprocess.size), "mean": list(spec.preprocess.mean), "std": list(spec.preprocess.std),
        "resize": spec.preprocess.resize, "classes": list(spec.classes), "arch": spec.arch,
    }, indent=2) + "\n")


def readme_name(prefix: str) -> str:
    """The README of the models named ``prefix_*`` (one per prefix: several builds share a repository)."""
    return f"README.{prefix}.md"


def _model_names(manifest: BuildManifest, root: Path, prefix: str, python_backend: bool) -> list[str]:
    """The model folders this call writes: one per built file variant (and the e2e model)."""
    names = [f"{prefix}_{s.name}" for s in manifest.variants
             if not s.skipped and not (root / str(s.artifact)).is_dir()]
    return names + ([f"{prefix}_{E2E_SUFFIX}"] if python_backend else [])


def write_triton_repo(build_dir: str | Path, repo: str | Path, *, name: str | None = None,
                      max_batch: int | None = None, instances: int = 1, python_backend: bool = False,
                      force: bool = False) -> TritonRepo:
    """Add the models of a build to a model repository (each model folder written atomically).

    Only the models named ``NAME_*`` (and ``README.NAME.md``) are written; other models in the
    repository, segexport's or the user's, are left as they are. A model folder of that name is
    replaced only when segexport wrote it from the same build (or with ``force``; files the
    user added inside it are kept), see :func:`segexport.ownership.claim_outputs`.

    Args:
        build_dir: a folder written by ``segexport build`` (with ``build.json``).
        repo: the repository folder.
        name: model name prefix (default: the architecture).
        max_batch: ``max_batch_size`` of batching models (default 8, or an engine's profile maximum if lower).
        instances: model instances per model (instance group count).
        python_backend: add ``NAME_e2e``, encoded images in, masks out, via Triton's Python backend.
        force: replace model folders of those names that segexport did not write, or wrote from another build.

    Raises:
        InputError: a missing or malformed build, an artifact missing, or model folders of
            those names that are not this build's (without ``force``).
        ConfigError: bad name, counts, or a max batch beyond an engine's profile.
    """
    root, repo = Path(build_dir), Path(repo)
    manifest = read_manifest(root)
    prefix = name or manifest.arch
    if not _NAME.match(prefix):
        raise ConfigError(f"--name {prefix!r}: use letters, digits, '_', '-' and '.', starting with a letter or digit")
    if instances < 1 or (max_batch is not None and max_batch < 1):
        raise ConfigError(f"--instances and --max-batch must be at least 1, got {instances} and {max_batch}")
    if python_backend and manifest.task == "instance":
        raise ConfigError(f"--python-backend serves class masks; {manifest.arch} is an instance network, whose models "
                          "serve the padded detections themselves: drop --python-backend")
    names = [*_model_names(manifest, root, prefix, python_backend), readme_name(prefix)]
    claim_outputs(repo, names, source=path_source("the build", root, repo), force=force, option="--repo")
    result = TritonRepo(repo, [], repo / readme_name(prefix))
    header = f"written by segexport from {root.resolve()} (build.json)"
    for spec in manifest.variants:
        _add_variant(repo, root, spec, f"{prefix}_{spec.name}", max_batch, instances, header, result)
    if python_backend:
        source = _e2e_source(manifest, root)
        artifact_spec = read_artifact_spec(root / str(source.artifact))
        result.models.append(_write_e2e(repo, root, source, f"{prefix}_{E2E_SUFFIX}", artifact_spec, instances,
                                        header))
    readme = render_readme(result, manifest, read_artifact_spec(root / manifest.reference))
    with atomic_path(result.readme) as tmp:
        tmp.write_text(readme)
    return result


def _add_variant(repo: Path, root: Path, spec: VariantSpec, name: str, max_batch: int | None, instances: int,
                 header: str, result: TritonRepo) -> None:
    if spec.skipped:
        result.skipped[spec.name] = spec.skipped
        return
    path = root / str(spec.artifact)
    if not path.exists():
        raise InputError(f"{path}: listed in build.json ({spec.name}) but missing; re-run `segexport build`")
    if path.is_dir():
        result.skipped[spec.name] = ("a PyTorch checkpoint: Triton serves PyTorch only as TorchScript "
                                     "(libtorch backend); serve one of the ONNX variants instead")
        return
    model, artifact = _variant_model(root, spec, name, max_batch, result.notes)
    with atomic_dir(repo / name) as folder:
        if artifact.suffix == ".onnx":
            _copy_onnx(artifact, folder / "1")
        else:
            (folder / "1").mkdir(parents=True)
            shutil.copyfile(artifact, folder / "1" / "model.plan")
        (folder / "config.pbtxt").write_text(config_pbtxt(model, instances, f"{spec.name}, {header}"))
    result.models.append(model)
