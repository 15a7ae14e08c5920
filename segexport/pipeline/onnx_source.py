"""An ONNX file as the build's source: ``segexport build model.onnx --data SPEC``.

A team whose training repository already exports ONNX enters the pipeline after export. There
is no PyTorch model, so the FP32 graph on ONNX Runtime is the reference every variant is judged
against, and the report says so. What the build needs to feed the graph and name its outputs
comes from the file's segexport metadata when segexport wrote it, otherwise from the flags:

- input size: the graph's static height and width, else ``--input-size``;
- mean and std: ``--mean`` and ``--std`` (no silent ImageNet default for someone else's model);
- class names: ``--classes FILE`` (one per line), else the data set's when it has as many
  classes as the graph has output channels.

The import stage copies the graph into the build folder with that metadata added (the source
file is never written, and may not lie in the build folder itself), so every later stage and
command needs nothing but ``model.onnx``. The default build folder is ``builds/NAME-onnx``,
beside any build of the same architecture rather than on top of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segexport.errors import ConfigError, InputError

SUFFIX = ".onnx"


def is_onnx_source(text: str | Path) -> bool:
    """True for a path naming an ONNX file (whether it exists is checked later)."""
    return str(text).lower().endswith(SUFFIX)


@dataclass(frozen=True)
class OnnxSource:
    """A checked ONNX source and what the build records about it.

    Attributes:
        path: the user's file.
        arch: the name rows and folders use: the metadata's ``arch`` or the file's stem.
        classes: one name per output channel.
        mean, std: input normalisation, [0, 1] units.
        input_size: (height, width) to verify at.
        sha256: of the file.
        segexport_metadata: True when segexport wrote the file.
    """

    path: Path
    arch: str
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: tuple[int, int]
    sha256: str
    segexport_metadata: bool

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "arch": self.arch, "classes": list(self.classes), "mean": list(self.mean),
                "std": list(self.std), "input_size": list(self.input_size), "sha256": self.sha256,
                "segexport_metadata": self.segexport_metadata}


def read_classes_file(path: str | Path) -> tuple[str, ...]:
    """Class names, one per line (blank lines and surrounding spaces ignored).

    Raises:
        InputError: missing, unreadable, empty or with repeated names.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--classes {p}: not found; pass a text file with one class name per line")
    try:
        names = tuple(line.strip() for line in p.read_text().splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--classes {p}: cannot be read as text ({exc}); one class name per line") from exc
    if not names:
        raise InputError(f"--classes {p}: no class names in it; one class name per line")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"--classes {p}: {', '.join(repeated)} listed twice; one distinct name per line")
    return names


def _outputs(path: Path) -> int | None:
    """The channel count of the graph's first 4-D output, when static."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value") and dims[1].dim_value > 0:
            return int(dims[1].dim_value)
    return None


def check_onnx_source(path: str | Path, *, classes_file: str | Path | None, mean: Any, std: Any,
                      input_size: tuple[int, int] | None, data_classes: tuple[str, ...] | None) -> OnnxSource:
    """Check ``path`` and settle its input size, normalisation and classes (see the module docstring).

    Raises:
        InputError: a missing file, not ONNX, not one float ``[N, 3, H, W]`` input, already
            quantized, or a bad ``--classes`` file.
        ConfigError: what neither the file nor a flag says (naming the flag), or classes that
            do not match the graph's outputs.
    """
    from segexport.hashing import file_sha256
    from segexport.precision.onnx_model import read_model_info

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: ONNX file not found; pass the path of your model.onnx")
    metadata = _metadata(p)
    ours = "arch" in metadata and "mean" in metadata
    missing = [flag for flag, value in (("--mean", mean), ("--std", std)) if value is None and not ours]
    if missing:
        raise ConfigError(f"{p.name} carries no segexport metadata, so its input normalisation is unknown; pass "
                          f"{' and '.join(missing)} (R,G,B in [0, 1] units, e.g. --mean 0.485,0.456,0.406 "
                          "--std 0.229,0.224,0.225 for ImageNet)")
    try:
        info = read_model_info(p)
    except InputError as exc:
        if input_size is None or "dynamic" not in str(exc):
            raise
        info = None
    if info is None:  # dynamic height/width without metadata: --input-size gives the size
        size = tuple(input_size)  # type: ignore[arg-type]
        classes_meta, arch = None, None
    else:
        size = tuple(input_size or info.preprocess.size)
        classes_meta = tuple(info.classes) if ours and info.classes else None
        arch = info.arch
        mean = mean if mean is not None else info.preprocess.mean
        std = std if std is not None else info.preprocess.std
    channels = _outputs(p)
    classes = _settle_classes(p, classes_file, classes_meta, data_classes, channels)
    return OnnxSource(path=p, arch=arch or p.stem, classes=classes, mean=tuple(mean), std=tuple(std),
                      input_size=size, sha256=file_sha256(p), segexport_metadata=ours)  # type: ignore[arg-type]


def _metadata(path: Path) -> dict[str, str]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file
        raise InputError(f"{path}: not an ONNX model ({type(exc).__name__}); pass a .onnx file") from exc
    return {prop.key: prop.value for prop in model.metadata_props}


def _settle_classes(path: Path, classes_file: str | Path | None, from_metadata: tuple[str, ...] | None,
                    data_classes: tuple[str, ...] | None, channels: int | None) -> tuple[str, ...]:
    if classes_file is not None:
        classes = read_classes_file(classes_file)
    elif from_metadata is not None:
        classes = from_metadata
    elif data_classes is not None and (channels is None or channels == len(data_classes)):
        classes = data_classes
    else:
        got = f"its {channels} output channels" if channels else "its outputs"
        raise ConfigError(f"{path.name} does not name the classes of {got}; pass --classes FILE (one name per line)")
    if channels is not None and channels != len(classes):
        raise ConfigError(f"{path.name} outputs {channels} channels but {len(classes)} class names were given; "
                          "pass --classes with one name per output channel")
    return classes


def import_onnx(source: OnnxSource, out: Path) -> Path:
    """Write ``source``'s graph to ``out`` (atomically) with segexport's metadata for it."""
    import onnx

    from segexport.data import Preprocess
    from segexport.export.metadata import export_metadata, set_metadata
    from segexport.fsutil import atomic_path

    model = onnx.load(str(source.path))
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    dims = inputs[0].type.tensor_type.shape.dim
    dynamic = [not d.HasField("dim_value") for d in dims]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    metadata = export_metadata(
        arch=source.arch, classes=source.classes,
        preprocess=Preprocess(size=source.input_size, mean=source.mean, std=source.std),
        input_size=source.input_size, opset=opset, outputs=[o.name for o in model.graph.output],
        source=f"onnx:{source.path}", source_sha256=source.sha256, dynamic_batch=dynamic[0],
        dynamic_hw=dynamic[2] and dynamic[3], input_divisor=1,
    )

    set_metadata(model, {**metadata, "reference": "onnxruntime"})
    with atomic_path(out) as tmp:
        onnx.save_model(model, str(tmp))
    return out
