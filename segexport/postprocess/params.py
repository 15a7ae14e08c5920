"""Parameters of the fully connected CRF (Krähenbühl and Koltun, NIPS 2011) and where they come from.

The pairwise potential of two pixels i, j with Potts compatibility ``[l_i != l_j]`` is

    w1 * exp(-|p_i - p_j|^2 / (2 theta_alpha^2) - |I_i - I_j|^2 / (2 theta_beta^2))   (appearance)
  + w2 * exp(-|p_i - p_j|^2 / (2 theta_gamma^2))                                     (smoothness)

with positions ``p`` in pixels and colours ``I`` in 0..255 RGB units.

Published values (10 mean-field iterations in both papers):

- DeepLab v1 (Chen et al., ICLR 2015, https://arxiv.org/abs/1412.7062): w2 = 3 and
  theta_gamma = 3 fixed, w1, theta_alpha, theta_beta cross-validated per model on PASCAL VOC
  val images; for DeepLab-CRF-LargeFOV w1 = 4, theta_alpha = 121, theta_beta = 5 (in the
  densecrf tool's terms: bi_w 4, bi_xy_std 121, bi_rgb_std 5, pos_w 3, pos_xy_std 3).
- DeepLab v2 (Chen et al., TPAMI 2017, https://arxiv.org/abs/1606.00915): the same
  coarse-to-fine cross-validation of w1 (3..6), theta_alpha (30..100) and theta_beta (3..6);
  the ResNet-101 VOC model's settings are w1 = 4, theta_alpha = 67, theta_beta = 3, w2 = 3,
  theta_gamma = 1 (as reproduced by the widely used PyTorch port kazuto1011/deeplab-pytorch,
  configs/voc12.yaml).

Messages are normalised per pixel by the kernel's sum (Krähenbühl's densecrf 2.x
``PottsPotential`` with per-pixel normalisation, the code DeepLab ran), so a weight bounds
how many logit units a kernel can move.

Those bandwidths are in pixels of ~500x500 PASCAL images. A recipe may override every value
(keys ``crf_*``), e.g. with values tuned for its data and input size.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from segexport.errors import ConfigError
from segexport.recipe import CRF_MODES

RECIPE_KEYS = {  # recipe key -> CrfParams field
    "crf_appearance_weight": "appearance_weight",
    "crf_appearance_xy": "appearance_xy",
    "crf_appearance_rgb": "appearance_rgb",
    "crf_smoothness_weight": "smoothness_weight",
    "crf_smoothness_xy": "smoothness_xy",
    "crf_iterations": "iterations",
}


@dataclass(frozen=True)
class CrfParams:
    """Weights, bandwidths and iterations of the dense CRF (see the module docstring).

    Attributes:
        appearance_weight: w1, weight of the appearance (bilateral) kernel.
        appearance_xy: theta_alpha, its spatial bandwidth in pixels.
        appearance_rgb: theta_beta, its colour bandwidth in 0..255 units.
        smoothness_weight: w2, weight of the smoothness (spatial) kernel.
        smoothness_xy: theta_gamma, its spatial bandwidth in pixels.
        iterations: mean-field iterations (0 returns the logits unchanged).

    Raises:
        ConfigError: on construction, a negative weight, a non-positive bandwidth or a
            negative iteration count.
    """

    appearance_weight: float = 4.0
    appearance_xy: float = 121.0
    appearance_rgb: float = 5.0
    smoothness_weight: float = 3.0
    smoothness_xy: float = 3.0
    iterations: int = 10

    def __post_init__(self) -> None:
        for name in ("appearance_weight", "smoothness_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"CRF {name} must be a finite number >= 0, got {value!r}")
        for name in ("appearance_xy", "appearance_rgb", "smoothness_xy"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"CRF {name} must be a finite number > 0, got {value!r}")
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 0:
            raise ConfigError(f"CRF iterations must be an integer >= 0, got {self.iterations!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DEEPLAB_V1 = CrfParams(4.0, 121.0, 5.0, 3.0, 3.0, 10)
DEEPLAB_V2 = CrfParams(4.0, 67.0, 3.0, 3.0, 1.0, 10)
PAPER_PARAMS = {"deeplabv1": DEEPLAB_V1, "deeplabv2": DEEPLAB_V2}


def crf_params(recipe: Any) -> CrfParams:
    """The CRF parameters of a recipe: its arch's published values, overridden by its ``crf_*`` keys.

    Args:
        recipe: a :class:`segexport.recipe.Recipe` (any object with ``arch`` and the ``crf_*``
            attributes; ``None`` values keep the published value).

    Raises:
        ConfigError: an override out of range.
    """
    base = PAPER_PARAMS.get(recipe.arch, DEEPLAB_V1)
    given = {field: getattr(recipe, key) for key, field in RECIPE_KEYS.items()
             if getattr(recipe, key, None) is not None}
    if "iterations" in given:
        given["iterations"] = int(given["iterations"])
    return dataclasses.replace(base, **given)


def crf_mode(recipe: Any) -> str:
    """``"host"`` when the recipe enables the host CRF, else ``"none"``.

    Raises:
        ConfigError: a ``crf`` value other than "host" or "none".
    """
    mode = getattr(recipe, "crf", None) or "none"
    if mode not in CRF_MODES:
        raise ConfigError(f"recipe key crf must be one of {', '.join(CRF_MODES)}, not {mode!r}")
    return mode
