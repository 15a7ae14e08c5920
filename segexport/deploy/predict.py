"""``segexport predict``: class masks for image files, with any artifact (checkpoint, .onnx, .plan).

Images of any size: each is read as RGB, brought to the model's input size by the artifact's
own preprocessing (``Preprocess.image``: bilinear resize, or pad for ``pad`` models; the same
numbers the verify step feeds), run, and its logits are resized bilinearly back to the image's
size before the argmax (cropped instead for ``pad`` models). So a mask has the image's size, and
for an image already at the input size it is exactly the verify step's labels.

Written per image: ``STEM.png``, a palette PNG whose pixel values are the class indices (the
PASCAL VOC colours), and with ``overlay`` ``STEM.overlay.png``, the image blended with them.

With ``crf`` the logits at the image's size are refined by the host dense CRF
(:func:`segexport.postprocess.dense_crf`, with the original image's colours) before the argmax:
the parameters of the artifact's arch recipe (``crf_*`` keys over the paper's values), or DeepLab
v1's published values for an unknown arch or a plain model. A model exported with its CRF in the
graph (``segexport export --crf conv``) is refused: its logits are refined already.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from segexport.data.imagefiles import IMAGE_EXTENSIONS, preview, read_rgb
from segexport.deploy.artifact import ArtifactSpec, read_artifact_spec
from segexport.deploy.triton_python_model import labels_at_size, logits_at_size
from segexport.errors import ConfigError, InputError
from segexport.fsutil import atomic_path
from segexport.ownership import claim_outputs, path_source
from segexport.postprocess import CrfParams, crf_params, dense_crf
from segexport.progress import progress_bar

BATCH = 8  # images preprocessed and run together (all are at the input size by then)
OVERLAY_ALPHA = 0.5  # weight of the mask colours in an overlay


@dataclass(frozen=True)
class PredictedImage:
    """One image's result: where its mask (and overlay) went, its size and the classes found."""

    image: Path
    mask: Path
    overlay: Path | None
    size: tuple[int, int]
    classes: tuple[str, ...]
    crf_changed: float | None = None  # with the CRF: fraction of pixels whose label it changed
    detections: Path | None = None  # an instance network's STEM.json (see ``predict_instances``)
    objects: int | None = None  # and how many objects it lists


def expand_images(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders as their image files (sorted, not recursive).

    Raises:
        InputError: a missing path, a folder without images, or two images with the same stem.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."))
            if not found:
                raise InputError(f"{p}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"{p}: no such image file or folder")
    stems = [f.stem for f in files]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise InputError(f"several images are named {preview(clashes)}: their masks would overwrite each other; "
                         "predict them into separate --out folders")
    return files


def palette_image(labels: np.ndarray, palette: np.ndarray) -> Image.Image:
    """``[H, W]`` uint8 labels as a palette ("P") image: pixel values stay the class indices."""
    height, width = labels.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    image.putpalette(palette.reshape(-1).tolist())
    return image


def _write_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def _batches(files: list[Path], spec: ArtifactSpec) -> Iterator[tuple[list[Path], list[np.ndarray], np.ndarray]]:
    for start in range(0, len(files), BATCH):
        chunk = files[start : start + BATCH]
        images = [read_rgb(f) for f in chunk]
        try:
            inputs = np.stack([spec.preprocess.image(img) for img in images])
        except InputError as exc:  # e.g. larger than a pad model's input
            raise InputError(f"{', '.join(f.name for f in chunk)}: {exc}") from exc
        yield chunk, images, inputs


def artifact_crf_params(spec: ArtifactSpec) -> CrfParams:
    """The host CRF's parameters for an artifact: its registered arch's recipe, else DeepLab v1's.

    Raises:
        ConfigError: the arch's recipe has invalid ``crf_*`` values.
    """
    from segexport.models import list_models
    from segexport.recipe import load_recipe

    if spec.arch is not None and spec.arch in {entry.name for entry in list_models()}:
        return crf_params(load_recipe(spec.arch))
    return CrfParams()


def _check_no_graph_crf(artifact: Path) -> None:
    """Raises InputError when ``artifact``'s logits already went through a CRF in its graph
    (the ``crf`` metadata ``segexport export --crf conv`` writes, which engine records copy)."""
    if artifact.is_dir():
        return
    if artifact.suffix in (".plan", ".engine"):
        from segexport.engine.record import read_engine_record

        metadata = read_engine_record(artifact).get("metadata", {})
    else:
        from segexport.engine.io import read_onnx_io

        metadata = read_onnx_io(artifact).metadata
    if metadata.get("crf", "none") != "none":
        raise InputError(f"{artifact}: exported with the {metadata['crf']} CRF in its graph, so its logits are "
                         "refined already; drop --crf (or predict with a model exported without --crf)")


def _labels(scores: np.ndarray, rgb: np.ndarray, resize: str,
            crf: CrfParams | None) -> tuple[np.ndarray, float | None]:
    """Labels at the image's size, and with ``crf`` the fraction of them the CRF changed."""
    if crf is None:
        return labels_at_size(scores, rgb.shape[:2], resize), None
    logits = logits_at_size(scores, rgb.shape[:2], resize)
    refined = dense_crf(logits[None], rgb[None], crf)[0].argmax(0)
    return refined.astype(np.uint8), float(np.mean(refined != logits.argmax(0)))


def _save(file: Path, image: np.ndarray, labels: np.ndarray, spec: ArtifactSpec, palette: np.ndarray,
          out: Path, overlay: bool) -> PredictedImage:
    mask_path = out / f"{file.stem}.png"
    _write_png(palette_image(labels, palette), mask_path)
    overlay_path = None
    if overlay:
        blended = image.astype(np.float32) * (1 - OVERLAY_ALPHA) + palette[labels].astype(np.float32) * OVERLAY_ALPHA
        overlay_path = out / f"{file.stem}.overlay.png"
        _write_png(Image.fromarray(np.round(blended).astype(np.uint8)), overlay_path)
    found = tuple(spec.classes[i] for i in np.unique(labels) if i < len(spec.classes))
    return PredictedImage(file, mask_path, overlay_path, (int(labels.shape[0]), int(labels.shape[1])), found)


def output_names(files: Sequence[Path], overlay: bool, instance: bool = False) -> list[str]:
    """The file names predict writes for ``files``: ``STEM.png`` (and ``STEM.overlay.png``; an
    instance network's ``STEM.json`` too)."""
    suffixes = (".png", *((".json",) if instance else ()), *((".overlay.png",) if overlay else ()))
    return [f"{f.stem}{suffix}" for f in files for suffix in suffixes]


def _claim(files: Sequence[Path], out: Path, artifact: Path, overlay: bool, force: bool, instance: bool) -> Path:
    """Refuse an ``out`` where a mask would replace an input image (always) or a file segexport
    did not write (unless ``force``); see :func:`segexport.ownership.claim_outputs`."""
    names = output_names(files, overlay, instance)
    twice = sorted(n for n, count in Counter(names).items() if count > 1)
    if twice:
        raise InputError(f"--out {out}: a mask and an overlay would both be named {twice[0]!r}; rename that "
                         "image, or predict without --overlay")
    inputs = {f.resolve() for f in files}
    clobbered = [n for n in names if (out / n).resolve() in inputs]
    if clobbered:
        raise InputError(f"--out {out}: the mask {clobbered[0]!r} would replace an input image; "
                         "choose an --out folder that holds no input image")
    return claim_outputs(out, names, source=path_source("predictions of", artifact, out), force=force)


def _is_instance(artifact: Path, spec: ArtifactSpec) -> bool:
    """Whether ``artifact`` is an instance network (its ONNX metadata or its architecture says so)."""
    if artifact.suffix == ".onnx":
        from segexport.onnx_graph import read_metadata

        return read_metadata(artifact).get("task") == "instance"
    from segexport.models import list_models

    return spec.arch in {entry.name for entry in list_models() if entry.task == "instance"}


def _instances(outputs: dict[str, np.ndarray], files: list[Path], rgbs: list[np.ndarray], spec: ArtifactSpec,
               palette: np.ndarray, out: Path, overlay: bool, min_score: float) -> list[PredictedImage]:
    """One batch of an instance network: each image's class map, detections and overlay."""
    from segexport.deploy.predict_instances import image_detections, save_instances
    from segexport.instance_outputs import render_semantic

    results = []
    for i, (file, rgb) in enumerate(zip(files, rgbs, strict=True)):
        size = (int(rgb.shape[0]), int(rgb.shape[1]))
        found = image_detections(outputs, i, size, tuple(spec.preprocess.size), spec.preprocess.resize, min_score)
        labels = render_semantic(found, *size)
        mask = _save(file, rgb, labels, spec, palette, out, overlay=False)
        listing, drawn = save_instances(file.stem, rgb, found, spec.classes, palette, out, overlay, OVERLAY_ALPHA)
        results.append(dataclasses.replace(mask, overlay=drawn, detections=listing, objects=len(found)))
    return results


def predict_images(artifact: str | Path, images: Sequence[str | Path], *, out: str | Path = "predictions",
                   overlay: bool = False, crf: bool = False, progress: bool = True,
                   force: bool = False, backend: str | None = None,
                   min_score: float | None = None) -> list[PredictedImage]:
    """Write a colour mask (and an overlay) for every image, with ``artifact`` on ``backend``;
    for an instance network also the detections (:mod:`segexport.deploy.predict_instances`).

    Args:
        artifact: a checkpoint folder, ``.onnx`` file or ``.plan``/``.engine`` TensorRT engine.
        images: image files and folders of images.
        out: output folder (created).
        overlay: also write ``STEM.overlay.png``.
        crf: refine the logits at each image's size with the host dense CRF before the argmax.
        progress: show a progress bar (on a terminal).
        force: write masks even over files of those names that segexport did not write, or
            masks of another artifact (an input image is never written over, even so).
        backend: a registered backend that runs the artifact (default: its kind's first).
        min_score: an instance network's detections scoring below it are left out (default 0.5).

    Returns:
        One :class:`PredictedImage` per image, in input order.

    Raises:
        InputError: a missing or unreadable image or artifact, clashing image names, or ``crf``
            for a model with a CRF in its graph.
        MissingDependencyError: the artifact's backend is not installed (e.g. tensorrt for a .plan).
        CheckFailed: the backend cannot run the artifact.
        ConfigError: with ``crf``, invalid CRF values in the arch's recipe; ``crf`` or
            ``min_score`` where they do not apply.
    """
    from segexport.deploy.predict_instances import check_min_score
    from segexport.runners import open_runner
    from segexport.verify.plots import class_palette

    files = expand_images(images)
    spec = read_artifact_spec(artifact)
    instance = _is_instance(Path(artifact), spec)
    score = check_min_score(min_score, instance)
    if instance and crf:
        raise ConfigError(f"{artifact}: --crf refines a semantic network's logits; {spec.arch} is an instance "
                          "network, drop --crf")
    if len(spec.classes) > 255:
        raise InputError(f"{artifact}: {len(spec.classes)} classes do not fit an 8-bit mask (255 at most)")
    palette = class_palette(256)
    params = None
    if crf:
        _check_no_graph_crf(Path(artifact))
        params = artifact_crf_params(spec)
    out_dir = _claim(files, Path(out), Path(artifact), overlay, force, instance)
    results: list[PredictedImage] = []
    with open_runner(artifact, backend=backend) as runner, progress_bar(progress and len(files) > 1) as bar:
        task = bar.add_task("predict", total=len(files), info=runner.device)
        for chunk, rgbs, inputs in _batches(files, spec):
            if instance:
                results += _instances(runner.run_outputs(inputs), chunk, rgbs, spec, palette, out_dir, overlay, score)
                bar.advance(task, len(chunk))
                continue
            logits = runner.run(inputs)
            for file, rgb, scores in zip(chunk, rgbs, logits, strict=True):
                labels, changed = _labels(scores, rgb, spec.preprocess.resize, params)
                result = _save(file, rgb, labels, spec, palette, out_dir, overlay)
                results.append(dataclasses.replace(result, crf_changed=changed))
                bar.advance(task)
    return results
