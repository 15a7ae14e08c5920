"""Instance labels: the built-in scenes' objects, the COCO-format reader and COCO AP."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from segexport.data import open_dataset
from segexport.data.coco import CocoDataset
from segexport.data.instances import Instances, masks_to_boxes, semantic_from_instances
from segexport.data.source import IGNORE_INDEX
from segexport.data.synthetic import (
    MIN_INSTANCE_PIXELS,
    SYNTHETIC_CLASSES,
    SyntheticDataset,
    render_instance_scene,
    render_scene,
)
from segexport.errors import InputError
from segexport.instance_metrics import Detections, instance_ap


def _touch(a: np.ndarray, b: np.ndarray) -> bool:
    grown = a.copy()
    grown[1:] |= a[:-1]
    grown[:-1] |= a[1:]
    grown[:, 1:] |= a[:, :-1]
    grown[:, :-1] |= a[:, 1:]
    return bool((grown & b).any())


def test_synthetic_instances_are_the_masks_shapes():
    val = SyntheticDataset("val", 48, size=(64, 64))
    touching = same_class_touching = 0
    for sample in val:
        inst = sample.instances
        assert inst is not None and len(inst) >= 1
        union = np.zeros(sample.mask.shape, dtype=bool)
        for k in range(len(inst)):
            m = inst.masks[k]
            assert m.sum() >= MIN_INSTANCE_PIXELS
            assert (sample.mask[m] == inst.classes[k]).all()  # an object's pixels carry its class
            assert not (union & m).any()  # visible masks never share a pixel
            union |= m
            rows, cols = np.nonzero(m)
            assert tuple(inst.boxes[k]) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            for j in range(k):
                if _touch(inst.masks[j], m):
                    touching += 1
                    same_class_touching += int(inst.classes[j] == inst.classes[k])
        # what no instance claims is background, or a shape covered down to a few pixels
        assert (sample.mask[~union] == 0).mean() > 0.97
    assert touching >= 5 and same_class_touching >= 1, (touching, same_class_touching)


def test_instances_leave_the_semantic_scene_unchanged():
    a = render_scene(np.random.default_rng(7), 64, 80)
    b = render_instance_scene(np.random.default_rng(7), 64, 80)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_semantic_map_paints_small_objects_over_large_and_crowds_as_ignored():
    big = np.zeros((8, 8), dtype=bool)
    big[1:7, 1:7] = True
    small = np.zeros((8, 8), dtype=bool)
    small[3:5, 3:5] = True
    crowd = np.zeros((8, 8), dtype=bool)
    crowd[7, :] = True
    inst = Instances.from_masks([2, 5, 1], np.stack([small, big, crowd]), crowd=[False, False, True])
    out = semantic_from_instances(inst, 8, 8)
    assert out[3, 3] == 2 and out[1, 1] == 5 and out[0, 0] == 0 and (out[7] == IGNORE_INDEX).all()
    assert masks_to_boxes(np.zeros((1, 4, 4), dtype=bool)).tolist() == [[0, 0, 0, 0]]


def write_coco(root, samples, split="val2017", *, polygon_first=True, crowd_last=True):
    """A COCO folder from samples: compressed RLE, and a polygon for the first object."""
    (root / "annotations").mkdir(parents=True)
    (root / split).mkdir()
    images, anns = [], []
    for i, s in enumerate(samples, start=1):
        name = f"{i:012d}.png"
        Image.fromarray(s.image).save(root / split / name)
        h, w = s.mask.shape
        images.append({"id": i, "file_name": name, "height": h, "width": w})
        for k in range(len(s.instances)):
            rle = mask_utils.encode(np.asfortranarray(s.instances.masks[k].astype(np.uint8)))
            seg = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 10 * int(s.instances.classes[k]),
                         "segmentation": seg, "iscrowd": 0, "area": 1, "bbox": [0, 0, 1, 1]})
    if polygon_first:  # a 4x6 rectangle as a polygon: pixels 2..5 in x, 1..6 in y
        anns[0]["segmentation"] = [[2, 1, 6, 1, 6, 7, 2, 7]]
    if crowd_last:
        anns[-1]["iscrowd"] = 1
    cats = [{"id": 10 * c, "name": SYNTHETIC_CLASSES[c]} for c in range(1, len(SYNTHETIC_CLASSES))]
    (root / "annotations" / f"instances_{split}.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return anns


def test_coco_folder_reads_back_what_was_written(tmp_path):
    samples = list(SyntheticDataset("val", 4, size=(48, 64)))
    anns = write_coco(tmp_path / "coco", samples)
    data = open_dataset(f"coco:{tmp_path / 'coco'}", "val")
    assert data.classes == SYNTHETIC_CLASSES and len(data) == 4 and data.name == "coco/val"
    k = 0
    for s, back in zip(samples, data):
        assert np.array_equal(back.image, s.image)
        assert np.array_equal(back.instances.classes, s.instances.classes)
        for j in range(len(s.instances)):
            if k == 0:  # the polygon
                assert back.instances.masks[j].sum() > 0 and tuple(back.instances.boxes[j]) == (2, 1, 6, 7)
            else:
                assert np.array_equal(back.instances.masks[j], s.instances.masks[j])
            k += 1
        assert np.array_equal(back.mask, semantic_from_instances(back.instances, *s.mask.shape))
    assert k == len(anns) and back.instances.crowd[-1] and not back.instances.crowd[:-1].any()
    assert len(open_dataset(f"coco:{tmp_path / 'coco'}", "val", length=2)) == 2


def test_coco_folder_problems_are_one_input_error_each(tmp_path):
    samples = list(SyntheticDataset("val", 2, size=(32, 32)))
    write_coco(tmp_path / "c", samples)
    with pytest.raises(InputError, match="no instances_train"):
        CocoDataset(tmp_path / "c", "train")
    (tmp_path / "c" / "val2017" / "000000000002.png").unlink()
    with pytest.raises(InputError, match="000000000002.png listed .* but missing"):
        CocoDataset(tmp_path / "c", "val")
    path = tmp_path / "c" / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 999
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="category 999, which the file does not list"):
        CocoDataset(tmp_path / "c", "val")
    data["categories"] = [{"id": i, "name": f"c{i}"} for i in range(300)]
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="300 categories; masks hold at most 254"):
        CocoDataset(tmp_path / "c", "val")


def _perfect(inst: Instances) -> Detections:
    return Detections(inst.classes, np.linspace(0.9, 0.5, len(inst)), inst.boxes, inst.masks)


def test_coco_ap_of_perfect_missing_and_partial_predictions():
    samples = list(SyntheticDataset("val", 6, size=(64, 64)))
    truth = [s.instances for s in samples]
    sizes = [s.mask.shape for s in samples]
    n = len(SYNTHETIC_CLASSES)
    perfect = instance_ap(truth, [_perfect(t) for t in truth], sizes, n)
    assert perfect == {"mask_ap": 1.0, "mask_ap50": 1.0, "box_ap": 1.0, "box_ap50": 1.0}
    empty = [Detections(np.zeros(0, int), np.zeros(0), np.zeros((0, 4)), np.zeros((0, 64, 64), bool)) for _ in truth]
    assert instance_ap(truth, empty, sizes, n) == dict.fromkeys(perfect, 0.0)
    # boxes grown by 2 pixels each side: still hits at IoU 0.5, misses at the strict thresholds
    grown = [Detections(t.classes, np.ones(len(t)), t.boxes + np.array([-2, -2, 2, 2]), t.masks) for t in truth]
    ap = instance_ap(truth, grown, sizes, n)
    assert ap["mask_ap"] == 1.0 and ap["box_ap50"] == 1.0 and 0.2 < ap["box_ap"] < 0.95
    # a wrong class is no hit
    wrong = [Detections(t.classes % (n - 1) + 1, np.ones(len(t)), t.boxes, t.masks) for t in truth]
    assert instance_ap(truth, wrong, sizes, n)["mask_ap50"] < 0.5
