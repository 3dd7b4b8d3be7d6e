"""Segmentation targets: channels from mask files and finding truth, validity, cache."""

from __future__ import annotations

import numpy as np
import pytest

from rgct.config import DataConfig
from rgct.constants import LUNG_LOBES, REGIONS, SEGMENT_CLASSES, SEGMENT_FINDINGS
from rgct.data.io import load_mask, load_volume
from rgct.data.layout import anatomy_mask_path, region_mask_path, volume_path
from rgct.data.seg_targets import (
    CALCIUM_MIN_HU,
    SegmentationDataset,
    SegTargetCache,
    build_seg_target,
    finding_voxel_map,
    split_volumes,
)
from rgct.data.truth import load_ground_truth


@pytest.fixture(scope="module")
def truth(phantom_root):
    return load_ground_truth(phantom_root)


def _with_lung_finding(truth: dict) -> str:
    for name, rec in sorted(truth.items()):
        if any(f.get("lobe") for f in rec["findings"]):
            return name
    raise AssertionError("the phantom fixture has no lung finding")


def test_channels_match_the_mask_files_and_the_findings(phantom_root, truth):
    name = _with_lung_finding(truth)
    volume = load_volume(volume_path(phantom_root, name))
    target, valid = build_seg_target(phantom_root, name, truth[name], volume.shape)
    assert target.shape == (len(SEGMENT_CLASSES), *volume.shape) and target.dtype == np.uint8
    assert valid.all()
    for k, cls in enumerate(SEGMENT_CLASSES):
        if cls in REGIONS:
            path = region_mask_path(phantom_root, name, cls)
        elif cls in SEGMENT_FINDINGS:
            continue
        else:
            path = anatomy_mask_path(phantom_root, name, cls)
        if path.is_file():
            np.testing.assert_array_equal(target[k].astype(bool), load_mask(path, volume))
        else:
            assert not target[k].any(), cls
    for f in truth[name]["findings"]:
        k = SEGMENT_CLASSES.index(f["label"])
        assert target[k][tuple(f["center_voxel"])] == 1, f["label"]
        if f.get("lobe"):  # clipped to its lobe
            lobe = target[SEGMENT_CLASSES.index(f["lobe"])].astype(bool)
            channel = finding_voxel_map(
                f, volume.shape, owner=lobe, hu=volume.array, record_shape=truth[name]["shape"]
            )
            assert channel.any() and not (channel & ~lobe).any()


def test_without_truth_the_finding_channels_are_not_annotated(phantom_root, truth):
    name = sorted(truth)[0]
    target, valid = build_seg_target(phantom_root, name, None, (12, 24, 24))
    assert target.shape == (len(SEGMENT_CLASSES), 12, 24, 24)
    for k, cls in enumerate(SEGMENT_CLASSES):
        assert valid[k] == (cls not in SEGMENT_FINDINGS)
    assert target[SEGMENT_CLASSES.index("lung")].any()


def test_intensity_rule_keeps_calcium_only():
    shape = (8, 16, 16)
    hu = np.full(shape, 40.0, np.float32)
    hu[4, 8, 8] = 600.0
    owner = np.ones(shape, bool)
    f = {"label": "Arterial wall calcification", "center_voxel": [4, 8, 8], "radius_vox": [2, 3, 3]}
    voxels = finding_voxel_map(f, shape, owner=owner, hu=hu)
    assert voxels.sum() == 1 and voxels[4, 8, 8]
    assert CALCIUM_MIN_HU < 600.0
    no_calcium = finding_voxel_map(f, shape, owner=owner, hu=np.zeros(shape, np.float32))
    assert no_calcium.sum() > 1  # falls back to the ellipsoid, never to nothing
    outside = finding_voxel_map(f, shape, owner=np.zeros(shape, bool))
    assert outside.any()  # an owner that misses the finding does not erase it


def test_cache_reuses_targets_and_dataset_items(phantom_root, truth, tmp_path):
    cfg = DataConfig(input_shape=(12, 24, 24))
    cache = SegTargetCache(cfg, tmp_path)
    names = split_volumes(phantom_root, "train")
    assert names and all(n.startswith("train_") for n in names)
    a, va = cache.target(phantom_root, names[0], truth[names[0]])
    b, vb = cache.target(phantom_root, names[0], truth[names[0]])
    assert (cache.misses, cache.hits) == (1, 1)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(va, vb)
    ds = SegmentationDataset(phantom_root, names[:2], truth, cache)
    item = ds[1]
    assert item["image"].shape == (1, 12, 24, 24)
    assert item["target"].shape == (len(SEGMENT_CLASSES), 12, 24, 24)
    assert item["valid"].dtype.is_floating_point is False and item["volume"] == names[1]
    lobes = item["target"][[SEGMENT_CLASSES.index(n) for n in LUNG_LOBES]]
    assert (lobes.sum(0) <= 1).all()  # lobes do not overlap


def test_a_missing_split_is_a_clear_error(tmp_path):
    from rgct.data.io import DataError

    with pytest.raises(DataError, match="no region-mask folder"):
        split_volumes(tmp_path, "valid")
