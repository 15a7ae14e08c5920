"""``+crf`` rows: boundary band, figures from a real runner, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segexport.checkpoint import load_checkpoint
from segexport.data import Preprocess, load_arrays, normalize_batch, open_dataset
from segexport.errors import InputError
from segexport.metrics import confusion_matrix, metrics_from_confusion
from segexport.postprocess import (
    CrfParams,
    CrfTally,
    boundary_band,
    crf_row,
    crf_rows,
    dense_crf,
)
from segexport.runners import open_runner

PARAMS = CrfParams(appearance_weight=5.0, appearance_xy=10.0, appearance_rgb=20.0,
                   smoothness_weight=3.0, smoothness_xy=1.0, iterations=5)


def test_boundary_band_marks_pixels_near_label_changes() -> None:
    masks = np.zeros((1, 5, 8), dtype=np.uint8)
    masks[0, :, 4:] = 1
    masks[0, :, 7] = 255  # an ignored column forms no boundary
    band = boundary_band(masks, 1)
    np.testing.assert_array_equal(band[0, 0], [False, False, True, True, True, True, False, False])
    assert (band[0] == band[0, :1]).all()  # the same in every row
    np.testing.assert_array_equal(boundary_band(masks, 0)[0, 0], [False] * 3 + [True, True] + [False] * 3)


def _reference(runner, images, masks, preprocess, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels without and with the CRF, computed directly in the same batches."""
    x = normalize_batch(torch.from_numpy(images), preprocess).numpy()
    logits = np.concatenate([runner.run(x[i : i + batch]) for i in range(0, len(x), batch)])
    return logits.argmax(1), dense_crf(logits, images, PARAMS).argmax(1)


def _miou(masks: np.ndarray, labels: np.ndarray, keep: np.ndarray | None = None) -> float:
    target = masks if keep is None else np.where(keep, masks, 255)
    return metrics_from_confusion(confusion_matrix(target, labels, 8)).miou


def test_crf_row_figures_from_a_torch_runner(tiny_checkpoint) -> None:
    _, config = load_checkpoint(tiny_checkpoint)
    pre = config.preprocess
    images, masks = load_arrays(open_dataset("synthetic", "val", size=pre.size, seed=0, length=4), pre)
    with open_runner(tiny_checkpoint) as runner:
        row = crf_row("pytorch", runner, images, masks, pre, 8, PARAMS, band=2, batch_size=3)
        base, refined = _reference(runner, images, masks, pre, 3)
    band = boundary_band(masks, 2)
    assert row["variant"] == "pytorch+crf" and row["base"] == "pytorch" and row["images"] == 4
    assert row["base_miou"] == _miou(masks, base)
    assert row["miou"] == _miou(masks, refined)
    assert row["trimap_miou"] == _miou(masks, refined, band)
    assert row["base_trimap_miou"] == _miou(masks, base, band)
    assert row["miou_gain_pts"] == pytest.approx(100 * (row["miou"] - row["base_miou"]))
    assert row["changed_pixels"] == (base != refined).mean()
    assert row["crf_ms_per_image"] > 0 and row["crf_ms_p90"] >= row["crf_ms_per_image"]
    assert row["crf"] == PARAMS.to_dict() and row["trimap_band_px"] == 2


def test_crf_rows_keeps_the_order_of_variants(tiny_checkpoint) -> None:
    _, config = load_checkpoint(tiny_checkpoint)
    pre = config.preprocess
    images, masks = load_arrays(open_dataset("synthetic", "val", size=pre.size, seed=0, length=2), pre)
    with open_runner(tiny_checkpoint) as fp32, open_runner(tiny_checkpoint, precision="fp16") as fp16:
        rows = crf_rows({"pytorch": fp32, "pytorch-fp16": fp16}, images, masks, pre, 8, PARAMS)
    assert [r["variant"] for r in rows] == ["pytorch+crf", "pytorch-fp16+crf"]


def test_masks_that_do_not_fit_the_images_are_an_input_error(tiny_checkpoint) -> None:
    images = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    with open_runner(tiny_checkpoint) as runner, pytest.raises(InputError, match="masks must be"):
        crf_row("pytorch", runner, images, np.zeros((2, 32, 32), np.uint8), None, 8, PARAMS)


def test_tallies_of_shards_add_up_to_the_whole() -> None:
    images, masks = load_arrays(open_dataset("synthetic", "val", size=(32, 32), seed=0, length=4),
                                Preprocess(size=(32, 32)))
    rng = np.random.default_rng(0)
    logits = (2.0 * np.eye(8, dtype=np.float32)[masks].transpose(0, 3, 1, 2)
              + rng.normal(0.0, 1.5, (4, 8, 32, 32)).astype(np.float32))
    whole, first, second = (CrfTally(8, PARAMS) for _ in range(3))
    whole.add(logits, images, masks)
    first.add(logits[:1], images[:1], masks[:1])
    second.add(logits[1:], images[1:], masks[1:])
    first.counts += second.counts
    first.changed += second.changed
    first.pixels += second.pixels
    first.times += second.times
    merged, direct = first.row("onnx"), whole.row("onnx")
    for key in ("miou", "trimap_miou", "base_miou", "base_trimap_miou", "changed_pixels", "images"):
        assert merged[key] == direct[key]
    assert direct["miou"] > direct["base_miou"]  # the CRF removes most of the noise
