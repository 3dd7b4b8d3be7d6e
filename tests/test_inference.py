"""The Predictor without masks: its segmenter's regions, grounded finding sentences, warnings,
and the same text as with the dataset's masks when the segmenter is right; a conversation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segmenter_double import truth_segmenter

from rgct.constants import LUNG_LOBES, REGIONS, SEGMENT_CLASSES, WHOLE_SCAN
from rgct.data.io import load_mask
from rgct.data.layout import anatomy_mask_path, region_mask_path, volume_path
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
    sources = []  # where the masks came from, as the language model's caller is told

    def run(image, masks, prompts, gen, places=None, mask_source=None, detected=None):
        sources.append(mask_source)
        return ["A solid nodule of 6 mm is seen in the right lung upper lobe." for _ in prompts]

    monkeypatch.setattr(p, "_run", run)
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
    # the segmenter's masks are read as such (its own classifier head where there is one)
    assert sources == ["predicted"] and out["mask_source"] == "predicted"
    p.report(scan, {"lung": real.masks["lung"]}, mask_source="uploaded")
    p.region_report_details(scan, region="lung")
    assert sources[1:] == ["uploaded", "predicted"]


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
    # a closed session's scan: its segmentation is dropped, the next call segments again
    assert p.forget(vol) == 1 and p.forget(vol) == 0
    assert len(p._segmentations) == 1
    p.segment(vol)
    assert len(calls) == 3


def test_places_reach_the_detections_line_with_evidence_locations(case, monkeypatch):
    from rgct.model import region_classifier as rc

    p, scan, *_ = case
    seen = []
    original = rc.evidence_prompts
    monkeypatch.setattr(
        rc,
        "evidence_prompts",
        lambda pr, det, locs=None, *a, **k: seen.append(locs) or original(pr, det, locs, *a, **k),
    )
    monkeypatch.setattr(p.cfg.model, "evidence_prompt", True)
    monkeypatch.setattr(p.cfg.model, "evidence_locations", True)
    p.region_report(scan, region="lung")
    assert seen and seen[-1][0] and set(seen[-1][0].values()) <= set(LUNG_LOBES)
    p.region_report(scan, region="heart")
    assert seen[-1] == [{}]  # the heart has no lobes
    p.answer(scan, "Where is the nodule located in the image?")
    assert seen[-1] is None or seen[-1] == [None]  # whole scan: no places without scan_locations
    monkeypatch.setattr(p.cfg.model, "scan_locations", True)
    p.answer(scan, "Where is the nodule located in the image?")
    assert seen[-1][0] and set(seen[-1][0].values()) <= set(LUNG_LOBES) | {"left", "right"}


# --- a conversation -------------------------------------------------------------------------------


@pytest.fixture
def heard(case, monkeypatch):
    """``case``'s Predictor whose language model answers by prompt; (prompt, mask) recorded."""
    p, *_ = case
    replies = {
        "What are the abnormalities in the lung?": "Nodule.",
        "Where is the nodule located in the image?": "lung/lung/right lung/right lung upper lobe",
    }
    asked: list[tuple[str, torch.Tensor]] = []

    def run(image, masks, prompts, gen, places=None, mask_source=None, detected=None):
        asked.extend(zip(prompts, masks))
        return [replies.get(q, "No abnormality.") for q in prompts]

    monkeypatch.setattr(p, "_run", run)
    return p, asked


def _same_mask(p, scan, tensor, mask) -> bool:
    return torch.equal(tensor, p.prepare(scan, {"m": mask})[1]["m"])


def test_chat_resolves_follow_ups_and_answers_with_the_resolved_region(case, heard):
    p, scan, root, volume = case
    p, asked = heard
    seg = p.segment(scan)["masks"]
    t1 = p.chat(scan, "What are the abnormalities in the lung?", region="lung")
    t2 = p.chat(scan, "Where is it?", t1["history"])
    t3 = p.chat(scan, "How big is it?", t2["history"])
    t4 = p.chat(scan, "And the heart?", t3["history"])
    assert (
        [t["resolved"] for t in (t1, t2, t3, t4)]
        == [q for q, _ in asked]
        == [
            "What are the abnormalities in the lung?",
            "Where is the nodule located in the image?",
            "What is the approximate size of the nodule in the lung?",
            "What are the abnormalities in the heart?",
        ]
    )
    assert [t["region"] for t in (t1, t2, t3, t4)] == ["lung", WHOLE_SCAN, "lung", "heart"]
    assert [t["mask_source"] for t in (t1, t2, t3, t4)] == [
        "predicted",
        WHOLE_SCAN,
        "predicted",
        "predicted",
    ]
    # each answer used its region's mask (the whole scan: all ones)
    assert _same_mask(p, scan, asked[0][1], seg["lung"])
    assert bool(asked[1][1].all())
    assert _same_mask(p, scan, asked[3][1], seg["heart"])
    assert t4["answer"] == "No abnormality." and len(t4["history"]) == 4
    assert not any(t["clarify"] for t in (t1, t2, t3, t4))


def test_chat_uses_given_masks_their_sources_and_lobe_unions(case, heard):
    p, scan, root, volume = case
    p, asked = heard
    lobes = {lb: anatomy_mask_path(root, volume, lb) for lb in LUNG_LOBES}
    pleura = region_mask_path(root, volume, "pleura")
    turn = p.chat(
        scan,
        "What about the pleura?",
        [["What are the abnormalities in the lung?", "Nodule."]],  # plain pairs are replayed
        masks={"pleura": pleura, **lobes},
        mask_sources={"pleura": "dataset", **{lb: "uploaded" for lb in lobes}},
    )
    assert turn["region"] == "pleura" and turn["mask_source"] == "dataset"
    assert _same_mask(p, scan, asked[-1][1], pleura)
    turn = p.chat(scan, "and the left lung?", turn["history"], masks=lobes)
    left = np.logical_or.reduce([load_mask(lobes[lb], p.load(scan)) for lb in LUNG_LOBES[3:]])
    assert turn["resolved"] == "What are the abnormalities in the left lung?"
    assert _same_mask(p, scan, asked[-1][1], left) and turn["mask_source"] == "given"


def test_chat_asks_back_for_a_region_without_mask_and_a_finding_it_cannot_place(case, heard):
    p, scan, root, volume = case
    p, asked = heard
    saved = p.segmenter
    try:
        p.segmenter = truth_segmenter(root, volume, p.cfg, drop=("thyroid",))
        p._segmentations.clear()
        turn = p.chat(scan, "What about the thyroid?", region="lung")
        assert turn["clarify"] and "no thyroid mask" in turn["answer"] and not asked
        # nothing in focus and nothing detected in the lung: "it" is asked back
        turn = p.chat(scan, "How big is it?", region="lung")
        assert turn["clarify"] and "Which finding" in turn["answer"] and not asked
    finally:
        p.segmenter = saved
        p._segmentations.clear()


def test_chat_reads_it_as_the_one_detected_finding(case, heard, monkeypatch):
    from rgct.generate.segment import Segmentation

    p, scan, *_ = case
    p, asked = heard
    real = p.segmentation(scan)
    nodule = {"label": "Lung nodule", "region": "lung", "lobes": ["right lung upper lobe"]}
    monkeypatch.setattr(
        p,
        "segmentation",
        lambda v: Segmentation(real.masks, [nodule], real.shape, real.affine, real.spacing),
    )
    turn = p.chat(scan, "Where is it?", region="lung")
    assert turn["resolved"] == "Where is the nodule located in the image?"
    assert "read as the nodule detected in the lung" in turn["warnings"][0]


def test_a_chat_turn_is_the_single_shot_answer_of_its_resolved_question(case):
    p, scan, *_ = case
    turn = p.chat(scan, "what about the heart?", region="lung", max_new_tokens=4)
    heart = p.segment(scan)["masks"]["heart"]
    assert turn["resolved"] == "What are the abnormalities in the heart?"
    assert turn["answer"] == p.answer(scan, turn["resolved"], heart, max_new_tokens=4)


def test_the_segmenter_s_detector_findings_reach_the_detections_line(case, monkeypatch):
    """A segmenter with a focal detector: its components are stated on the rows of their
    region (report, region report, whole-scan question), whatever the classifier says."""
    p, scan, root, volume = case
    seen = []

    def run(image, masks, prompts, gen, locations=None, mask_source=None, detected=None):
        seen.append(detected)
        return ["x"] * len(prompts)

    monkeypatch.setattr(p, "_run", run)
    monkeypatch.setattr(p.cfg.model, "evidence_locations", True)
    monkeypatch.setattr(p.segmenter[0], "focal_classes", ("Lung nodule",), raising=False)
    seg = p.segmentation(p.load(scan))
    planted = {"label": "Lung nodule", "region": "lung", "lobes": ["left lung upper lobe"]}
    monkeypatch.setattr(seg, "findings", [*seg.findings, planted])
    out = p.report(scan)
    rows = dict(zip(out["regions"], seen[-1]))
    assert rows["lung"] == {"Lung nodule": True} and rows["heart"] is None
    p.region_report(scan, region="lung")
    assert seen[-1] == [{"Lung nodule": True}]
    p.answer(scan, "Is there a lung nodule?")
    assert seen[-1] == [{"Lung nodule": True}]
    where = "Where is the pleural effusion located in the image?"  # presupposes its finding
    p.answer(scan, where)  # and is asked about it alone
    assert [k for k, on in seen[-1][0].items() if on] == ["Pleural effusion"]
    monkeypatch.setattr(p.segmenter[0], "focal_classes", ())  # no detector: nothing stated
    p.report(scan)
    assert seen[-1] is None
    p.answer(scan, where)
    assert [k for k, on in seen[-1][0].items() if on] == ["Pleural effusion"]
    p.answer(scan, where, p.segment(scan)["masks"]["pleura"])  # a region's question: as asked
    assert seen[-1] is None
