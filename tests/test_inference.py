"""The Predictor without masks: its segmenter's regions, grounded finding sentences, warnings,
and the same text as with the dataset's masks when the segmenter is right."""

from __future__ import annotations

import numpy as np
import pytest
from segmenter_double import truth_segmenter

from rgct.constants import LUNG_LOBES, REGIONS, SEGMENT_CLASSES
from rgct.data.layout import region_mask_path, volume_path
from rgct.data.records import find_volumes
from rgct.data.truth import load_ground_truth
from rgct.inference import Predictor


@pytest.fixture(scope="module")
def case(tiny_checkpoint, phantom_root):
    volume = find_volumes(phantom_root, "valid")[0]
    p = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    p.cfg.generation.max_new_tokens = 6
    p.segmenter = truth_segmenter(phantom_root, volume, p.cfg)
    return p, volume_path(phantom_root, volume), phantom_root, volume


def test_no_segmenter_asks_for_masks(tiny_checkpoint, phantom_root):
    p = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    scan = volume_path(phantom_root, find_volumes(phantom_root, "valid")[0])
    with pytest.raises(ValueError, match="no segmenter"):
        p.report(scan)
    with pytest.raises(ValueError, match="no segmenter"):
        p.region_report(scan, region="lung")


def test_masks_free_report_equals_the_dataset_mask_report_when_segmentation_is_right(case):
    p, scan, root, volume = case
    given = {r: m for r in REGIONS if (m := region_mask_path(root, volume, r)).is_file()}
    with_masks = p.report(scan, given, mask_source="dataset")
    free = p.report(scan)
    assert free["mask_source"] == "predicted" and with_masks["mask_source"] == "dataset"
    assert free["regions"] == with_masks["regions"]
    assert all({"region", "text", "labels", "finding"} <= set(s) for s in free["sentences"])
    lung = p.region_report(scan, region="lung")
    assert lung == p.region_report(scan, region_mask_path(root, volume, "lung"), region="lung")
    details = p.region_report_details(scan, region="lung")
    assert details["text"] == lung and details["mask_source"] == "predicted"
    seg = p.segment(scan)
    assert set(LUNG_LOBES) <= set(seg["masks"])
    # only what the phantom lacks is warned (some phantoms have no breasts)
    assert all(w.startswith("breast:") for w in seg["warnings"])


def test_a_region_the_segmenter_misses_is_skipped_with_a_warning(case):
    p, scan, root, volume = case
    saved = p.segmenter
    try:
        p.segmenter = truth_segmenter(root, volume, p.cfg, drop=("heart",))
        out = p.report(scan)
        assert "heart" not in out["regions"]
        assert "heart: no mask predicted, region skipped" in out["warnings"]
        with pytest.raises(ValueError, match="heart: no mask predicted"):
            p.region_report(scan, region="heart")
        p.segmenter = truth_segmenter(root, volume, p.cfg, drop=tuple(SEGMENT_CLASSES))
        assert any("No lungs were found" in w for w in p.check_scan(scan))
        with pytest.raises(ValueError, match="no region was found"):
            p.report(scan)
    finally:
        p.segmenter = saved


def test_finding_sentences_carry_the_localised_finding(case, monkeypatch):
    p, scan, root, volume = case
    truth = load_ground_truth(root)[volume]
    finding = {
        "label": "Lung nodule",
        "region": "lung",
        "lobes": ["right lung upper lobe"],
        "side": "right",
        "probability": 0.9,
        "center_voxel": [3, 4, 5],
        "box_voxel": [2, 3, 4, 4, 5, 6],
        "mask": np.zeros((2, 2, 2), bool),
    }
    monkeypatch.setattr(
        p,
        "_run",
        lambda image, masks, prompts, gen, places=None: [
            "A solid nodule of 6 mm is seen in the right lung upper lobe." for _ in prompts
        ],
    )
    from rgct.generate.segment import Segmentation

    real = p.segmentation(scan)
    monkeypatch.setattr(
        p,
        "segmentation",
        lambda v: Segmentation(real.masks, [finding], real.shape, real.affine, real.spacing),
    )
    out = p.report(scan)
    lung = [s for s in out["sentences"] if s["region"] == "lung"][0]
    assert lung["labels"] == ["Lung nodule"]
    assert lung["finding"]["lobes"] == ["right lung upper lobe"] and "mask" not in lung["finding"]
    heart = [s for s in out["sentences"] if s["region"] == "heart"][0]
    assert heart["finding"] is None  # a nodule is a lung finding
    assert out["findings"][0]["mask"].shape == (2, 2, 2)
    assert truth["volume"]


def test_check_scan_flags_a_small_field_of_view(case):
    p, *_ = case
    warnings = p.check_scan(np.full((8, 40, 40), -1000.0, np.float32))
    assert any("head to foot" in w for w in warnings)
    assert any("field of view" in w for w in warnings)


def test_a_volume_is_segmented_once_for_several_calls(case, monkeypatch):
    import rgct.generate.segment as seg_mod

    p, scan, root, volume = case
    calls = []
    real = seg_mod.segment_volume
    monkeypatch.setattr(seg_mod, "segment_volume", lambda *a, **k: calls.append(1) or real(*a, **k))
    p._segmentations.clear()
    vol = p.load(scan)
    p.segment(vol)
    p.region_report_details(vol, region="lung")
    p.check_scan(vol)
    assert len(calls) == 1
    other = vol.array.copy()
    other[0, 0, 0] += 1.0
    p.segment(other)
    assert len(calls) == 2  # different voxels, a new segmentation


def test_places_reach_the_detections_line_with_evidence_locations(case, monkeypatch):
    from rgct.model import region_classifier as rc

    p, scan, *_ = case
    seen = []
    original = rc.evidence_prompts
    monkeypatch.setattr(
        rc,
        "evidence_prompts",
        lambda pr, det, locs=None: seen.append(locs) or original(pr, det, locs),
    )
    monkeypatch.setattr(p.cfg.model, "evidence_prompt", True)
    monkeypatch.setattr(p.cfg.model, "evidence_locations", True)
    p.region_report(scan, region="lung")
    assert seen and seen[-1][0] and set(seen[-1][0].values()) <= set(LUNG_LOBES)
    p.region_report(scan, region="heart")
    assert seen[-1] == [{}]  # the heart has no lobes
