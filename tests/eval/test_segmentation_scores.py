"""Dice per class and finding-box accuracy (arrays in, numbers out)."""

from __future__ import annotations

import numpy as np
import pytest

from rgct.eval.segmentation import (
    box_accuracy,
    dice,
    summarize_boxes,
    summarize_dice,
    volume_dice,
)


def test_dice_values_and_empty_cases():
    a = np.zeros((4, 4, 4), bool)
    b = a.copy()
    assert dice(a, b) is None
    a[0, 0, :2] = True
    b[0, 0, 1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, np.zeros_like(a)) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        dice(a, np.zeros((2, 2, 2), bool))


def test_volume_and_summary_means():
    m = np.zeros((2, 2, 2), bool)
    m[0] = True
    per = [
        volume_dice({"lung": m, "heart": m}, {"lung": m, "heart": ~m}),
        volume_dice({"lung": m}, {"lung": m, "right lung upper lobe": m}),
    ]
    assert per[0] == {"heart": 0.0, "lung": 1.0}
    assert per[1]["right lung upper lobe"] == 0.0  # missing prediction counts as empty
    s = summarize_dice(per)
    assert s["per_class"]["lung"] == 1.0 and s["count"]["heart"] == 1
    assert s["mean_regions"] == pytest.approx(0.5)
    assert s["mean_lobes"] == 0.0 and s["volumes"] == 2


def test_box_accuracy_inside_or_within_tolerance():
    mask = np.zeros((10, 10, 10), bool)
    mask[2:8, 2:8, 2:8] = True
    truth = [{"label": "Lung nodule", "center_voxel": [5, 5, 5], "mask": mask}]
    preds = [
        {"label": "Lung nodule", "center_voxel": [2, 2, 2]},  # inside the finding
        {"label": "Lung nodule", "center_voxel": [9, 5, 5]},  # 4 voxels * 2 mm = 8 mm away
        {"label": "Lung nodule", "center_voxel": [5, 5, 9]},  # 4 * 5 mm = 20 mm, outside
        {"label": "Emphysema", "center_voxel": [5, 5, 5]},  # a label the volume lacks
    ]
    r = box_accuracy(preds, truth, spacing_mm=(2.0, 5.0, 5.0))
    assert r == {"correct": 2, "scored": 3, "detected": 4, "true": 1, "found": 1}
    s = summarize_boxes([r, box_accuracy([], truth, (1, 1, 1))])
    assert s["accuracy"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(0.5)
    assert s["label_precision"] == pytest.approx(0.75)
