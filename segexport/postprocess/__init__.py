"""Post-processing of logits: the fully connected CRF of DeepLab v1/v2.

- Host CRF (:func:`dense_crf`): mean-field inference of the fully connected CRF with Gaussian
  edge potentials on logits from any runner and the original uint8 images; permutohedral-lattice
  filtering (``method="lattice"``) or exact O(N^2) filtering for small images (``"exact"``).
- Engine-friendly CRF (:class:`ConvCRF`): the same mean field over a local window in ONNX- and
  TensorRT-friendly torch ops, exported with ``segexport export ... --crf conv``.
- Scoring (:func:`crf_rows`): ``+crf`` rows (mIoU, trimap mIoU, CRF time per image) for verify.
"""

from segexport.postprocess.conv_crf import ConvCRF, CrfModel
from segexport.postprocess.dense_crf import EXACT_MAX_PIXELS, METHODS, dense_crf
from segexport.postprocess.evaluate import (
    DEFAULT_BAND,
    CrfTally,
    boundary_band,
    crf_row,
    crf_rows,
    label_agreement,
    score_labels,
)
from segexport.postprocess.export import (
    EXPORT_CRF_MODES,
    attach_conv_crf,
    check_crf_mode,
    denormalize,
)
from segexport.postprocess.params import (
    DEEPLAB_V1,
    DEEPLAB_V2,
    PAPER_PARAMS,
    CrfParams,
    crf_mode,
    crf_params,
)

__all__ = [
    "DEEPLAB_V1",
    "DEEPLAB_V2",
    "DEFAULT_BAND",
    "EXACT_MAX_PIXELS",
    "EXPORT_CRF_MODES",
    "METHODS",
    "PAPER_PARAMS",
    "ConvCRF",
    "CrfModel",
    "CrfParams",
    "CrfTally",
    "attach_conv_crf",
    "boundary_band",
    "check_crf_mode",
    "crf_mode",
    "crf_params",
    "crf_row",
    "crf_rows",
    "denormalize",
    "dense_crf",
    "label_agreement",
    "score_labels",
]
