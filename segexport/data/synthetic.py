"""The built-in data set ``synthetic``: procedurally rendered scenes of textured shapes.

A scene is a textured background with 1-4 shapes (rotated, anisotropically scaled, possibly
overlapping, the later on top), then lighting, blur and noise over the whole image. All
regions draw their fill from one texture distribution, so the class of a pixel follows from
the outline it belongs to, not from its colour. Image ``i`` of a split is rendered from its
own generator ``default_rng([seed, SPLIT_IDS[split], i])``: independent of the split's
length and of access order, identical bit for bit for the same seed.
"""

from __future__ import annotations

import numpy as np

from segexport.data.instances import Instances
from segexport.data.shapes import SHAPE_TESTS, Placement, rasterize_shape
from segexport.data.source import Sample, check_index
from segexport.data.textures import (
    add_noise,
    apply_lighting,
    gaussian_blur,
    random_texture,
)
from segexport.errors import ConfigError

SYNTHETIC_CLASSES: tuple[str, ...] = (
    "background",
    "disk",
    "square",
    "triangle",
    "ring",
    "cross",
    "star",
    "crescent",
)
"""Class names; a mask value is the index of its class here."""

DEFAULT_SPLIT_SIZES: dict[str, int] = {"train": 1024, "val": 128, "calib": 256}
"""Number of images per split when nobody says otherwise."""

SPLIT_IDS: dict[str, int] = {"train": 0, "val": 1, "calib": 2}
"""Seeds each split's generators, so splits never share an image."""

MIN_SIDE = 16
MAX_SHAPES = 3
RADIUS_RANGE = (0.16, 0.32)  # shape radius as a fraction of the image's shorter side
MAX_ASPECT = 1.15  # largest ratio between a shape's two axes
MAX_ROTATION = np.pi / 7  # radians either way
MIN_SEPARATION = 0.75  # centres at least this times the sum of radii apart: occlusion stays partial
PLACEMENT_TRIES = 10
MAX_BLUR_SIGMA = 1.2
RIM_WIDTH = (1, 2)  # pixels
MIN_CONTRAST = 0.25  # mean brightness gap between a shape and what it covers
SHADOW_OFFSET = (2, 5)  # pixels down and right
SHADOW_STRENGTH = (0.35, 0.6)  # fraction of light the shadow takes away
MAX_NOISE_STD = 0.04
MIN_INSTANCE_PIXELS = 16  # a shape showing fewer pixels is no instance (COCO's smallest are about this)


def _sample_placement(
    rng: np.random.Generator, height: int, width: int, placed: list[tuple[Placement, float]]
) -> tuple[Placement, float] | None:
    """Draw a shape's pose, retrying while it would bury the centre of an earlier shape.

    Returns:
        ``(placement, radius)``, or ``None`` when no try found room.
    """
    side = min(height, width)
    for _ in range(PLACEMENT_TRIES):
        radius = rng.uniform(*RADIUS_RANGE) * side
        aspect = np.sqrt(np.exp(rng.uniform(-np.log(MAX_ASPECT), np.log(MAX_ASPECT))))
        margin = 0.8 * radius  # keeps most of the outline inside the image
        cy = rng.uniform(margin, height - margin)
        cx = rng.uniform(margin, width - margin)
        angle = rng.uniform(-MAX_ROTATION, MAX_ROTATION)
        if all(
            np.hypot(cy - other.cy, cx - other.cx) > MIN_SEPARATION * (radius + other_radius)
            for other, other_radius in placed
        ):
            return Placement(cy, cx, radius / aspect, radius * aspect, angle), radius
    return None


def _contrasting(fill: np.ndarray, under: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Shift a shape's fill so its mean brightness differs from what it covers by MIN_CONTRAST.

    Every class gets the same rule, so brightness still says nothing about the class; it only
    keeps a shape from vanishing into a background of the same shade.
    """
    if not inside.any():  # a shape thinner than its rim has no fill to shift (and no mean)
        return fill
    gap = float(fill[:, inside].mean() - under[:, inside].mean())
    if abs(gap) >= MIN_CONTRAST:
        return fill
    direction = 1.0 if float(under[:, inside].mean()) < 0.5 else -1.0
    return fill + np.float32(direction * MIN_CONTRAST - gap)


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """Binary erosion by ``steps`` pixels (4-neighbourhood), with numpy shifts."""
    core = mask.copy()
    for _ in range(steps):
        shrunk = core.copy()
        shrunk[1:, :] &= core[:-1, :]
        shrunk[:-1, :] &= core[1:, :]
        shrunk[:, 1:] &= core[:, :-1]
        shrunk[:, :-1] &= core[:, 1:]
        core = shrunk
    return core


def _rim_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A near-black or near-white rim, whichever stands out from what the shape covers."""
    dark = float(under.mean()) > 0.5 if under.size else True
    base = np.float32(0.06 if dark else 0.94)
    return base + rng.uniform(-0.05, 0.05, size=3).astype(np.float32)


def _cast_shadow(
    rng: np.random.Generator, image: np.ndarray, rows: slice, cols: slice, inside: np.ndarray
) -> None:
    """Darken the shape's outline shifted by a few pixels: a drop shadow on what lies below.

    The shadow is a context cue for figure versus ground (it falls on the side away from the
    shape), drawn from one distribution for every class, so it says nothing about the class.
    """
    height, width = image.shape[1:]
    dy, dx = (int(v) for v in rng.integers(SHADOW_OFFSET[0], SHADOW_OFFSET[1] + 1, size=2))
    full = np.zeros((height, width), dtype=bool)
    full[rows, cols] = inside
    shadow = np.zeros_like(full)
    shadow[dy:, dx:] = full[: height - dy, : width - dx]
    strength = np.float32(rng.uniform(*SHADOW_STRENGTH))
    image[:, shadow] *= np.float32(1.0) - strength


def render_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene.

    Args:
        rng: the only source of randomness; the same generator state gives the same scene.
        height, width: image size in pixels.

    Returns:
        ``(image, mask)``: HxWx3 uint8 RGB and HxW uint8 indices into ``SYNTHETIC_CLASSES``.
    """
    image, mask, _ = render_instance_scene(rng, height, width)
    return image, mask


def render_instance_scene(rng: np.random.Generator, height: int,
                          width: int) -> tuple[np.ndarray, np.ndarray, Instances]:
    """:func:`render_scene` (the same image and mask from the same ``rng``) and its objects.

    Every shape is one instance: its visible pixels (later shapes cover earlier ones, so
    instances overlap and touch, same class or not), its class and its tight box. A shape
    covered so far that fewer than ``MIN_INSTANCE_PIXELS`` of it show is left out of the
    instances; its pixels still carry its class in the mask.
    """
    image = random_texture(rng, height, width)
    mask = np.zeros((height, width), dtype=np.uint8)
    owner = np.zeros((height, width), dtype=np.int8)  # 1 + the index of the shape drawn last there
    drawn: list[int] = []  # the class of each shape drawn
    placed: list[tuple[Placement, float]] = []
    for _ in range(int(rng.integers(1, MAX_SHAPES + 1))):
        class_index = int(rng.integers(1, len(SYNTHETIC_CLASSES)))
        pose = _sample_placement(rng, height, width, placed)
        if pose is None:
            continue
        placed.append(pose)
        raster = rasterize_shape(SHAPE_TESTS[SYNTHETIC_CLASSES[class_index]], pose[0], height, width)
        if raster is None:
            continue
        (rows, cols), inside = raster
        _cast_shadow(rng, image, rows, cols, inside)
        window = image[:, rows, cols]
        covered = window.copy()
        # A sticker: a thin contrasting rim, the textured fill inside it. Rim and fill follow
        # one distribution for every class: they mark figure against ground, not which figure.
        window[:, inside] = _rim_colour(rng, window[:, inside])[:, None]
        core = _erode(inside, int(rng.integers(RIM_WIDTH[0], RIM_WIDTH[1] + 1)))
        fill = _contrasting(random_texture(rng, inside.shape[0], inside.shape[1]), covered, core)
        np.copyto(window, fill, where=core[None])
        mask[rows, cols][inside] = class_index
        drawn.append(class_index)
        owner[rows, cols][inside] = len(drawn)
    image = apply_lighting(rng, image)
    image = gaussian_blur(image, rng.uniform(0.0, MAX_BLUR_SIGMA))
    image = add_noise(rng, image, rng.uniform(0.0, MAX_NOISE_STD))
    image_u8 = np.clip(image * np.float32(255.0) + np.float32(0.5), 0.0, 255.0).astype(np.uint8)
    visible = owner[None] == np.arange(1, len(drawn) + 1, dtype=np.int8)[:, None, None]
    keep = visible.reshape(len(drawn), -1).sum(axis=1) >= MIN_INSTANCE_PIXELS
    instances = Instances.from_masks(np.asarray(drawn, dtype=np.int64)[keep], visible[keep])
    return np.ascontiguousarray(image_u8.transpose(1, 2, 0)), mask, instances


def _check_count(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class SyntheticDataset:
    """One split of the built-in synthetic data set; scenes are rendered on access.

    Args:
        split: ``train``, ``val`` or ``calib``.
        length: number of images.
        size: (height, width) of every image.
        seed: selects the data set; the same seed gives identical images.

    Raises:
        ConfigError: an unknown split, or a negative length or seed, or a size below 16.
    """

    classes: tuple[str, ...] = SYNTHETIC_CLASSES

    def __init__(self, split: str, length: int, *, size: tuple[int, int] = (128, 128), seed: int = 0) -> None:
        if split not in SPLIT_IDS:
            raise ConfigError(f"unknown split {split!r} for synthetic; use one of {', '.join(SPLIT_IDS)}")
        if len(size) != 2:
            raise ConfigError(f"size must be (height, width), got {size!r}")
        self.split = split
        self.length = _check_count(length, "length", 0)
        self.size = (_check_count(size[0], "height", MIN_SIDE), _check_count(size[1], "width", MIN_SIDE))
        self.seed = _check_count(seed, "seed", 0)
        self.name = f"synthetic/{split}"

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sample:
        position = check_index(index, self.length)
        rng = np.random.default_rng([self.seed, SPLIT_IDS[self.split], position])
        image, mask, instances = render_instance_scene(rng, *self.size)
        return Sample(image=image, mask=mask, name=f"{self.split}_{position:06d}", instances=instances)
