"""Generation with masks from the segmenter or a folder (every line records its source), and
the localiser that places each finding for ``model.evidence_locations``."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from segmenter_double import truth_segmenter

from rgct.constants import CT_RATE_LABELS, LUNG_LOBES, REGIONS
from rgct.data.layout import region_mask_path
from rgct.data.records import find_volumes
from rgct.data.truth import finding_locations, load_ground_truth
from rgct.generate.localize import Localizer, component_phrase, place_labels
from rgct.generate.masks import MaskProvider, MaskUnavailable, candidate_names
from rgct.generate.runner import merge_parts, run_generation
from rgct.model.checkpoint import load_checkpoint


def test_candidate_names_most_specific_first():
    assert candidate_names("lung/lung/right lung/right lung upper lobe", "lung") == [
        "right lung upper lobe",
        "right lung",
        "lung",
    ]
    assert candidate_names(None, "whole scan") == []
    assert candidate_names("", "heart") == ["heart"]


@pytest.fixture(scope="module")
def setup(tiny_checkpoint, phantom_root):
    model, cfg = load_checkpoint(tiny_checkpoint)
    cfg.generation.max_new_tokens = 4
    volume = find_volumes(phantom_root, "valid")[0]
    return model, cfg, phantom_root, volume


def test_folder_and_predicted_masks_give_the_dataset_text(setup, tmp_path):
    model, cfg, root, volume = setup
    folder = tmp_path / "masks" / f"seg_{volume}"
    folder.mkdir(parents=True)
    for r in REGIONS:
        if (p := region_mask_path(root, volume, r)).is_file():
            shutil.copy(p, folder / p.name)
    rows = {}
    for name, masks in (
        ("dataset", None),
        ("folder", MaskProvider(tmp_path / "masks", cfg.data, root)),
        (
            "predicted",
            MaskProvider("predicted", cfg.data, root, truth_segmenter(root, volume, cfg)),
        ),
    ):
        out = tmp_path / f"{name}.jsonl"
        run_generation(model, cfg, root, "valid", ["region_report"], out, limit=1, masks=masks)
        rows[name] = [json.loads(x) for x in merge_parts(out).read_text().splitlines()]
    assert {r["mask_source"] for r in rows["dataset"]} == {"dataset"}
    assert {r["mask_source"] for r in rows["folder"]} == {"folder:masks"}
    assert {r["mask_source"] for r in rows["predicted"]} == {"predicted"}
    text = {(r["region"], r["prediction"]) for r in rows["dataset"]}
    assert {(r["region"], r["prediction"]) for r in rows["predicted"]} == text
    assert {(r["region"], r["prediction"]) for r in rows["folder"]} <= text


def test_missing_masks_are_skipped_by_name_never_filled(setup, tmp_path):
    model, cfg, root, volume = setup
    (tmp_path / "empty").mkdir()
    provider = MaskProvider(tmp_path / "empty", cfg.data, root)
    with pytest.raises(MaskUnavailable, match="no mask folder"):
        provider.mask(volume, None, "lung")
    assert provider.mask(volume, None, "whole scan") is None  # whole scan: all ones
    out = tmp_path / "p.jsonl"
    run_generation(model, cfg, root, "valid", ["region_report"], out, limit=1, masks=provider)
    assert merge_parts(out).read_text() == ""
    assert provider.warnings and "sample skipped" in provider.warnings[0]
    with pytest.raises(FileNotFoundError, match="no such folder"):
        MaskProvider(tmp_path / "nowhere", cfg.data, root)
    with pytest.raises(ValueError, match="needs a checkpoint with a segmenter"):
        MaskProvider("predicted", cfg.data, root)


def test_localizer_places_labels_in_lobes_and_components_win(setup):
    model, cfg, root, volume = setup
    provider = MaskProvider("predicted", cfg.data, root, truth_segmenter(root, volume, cfg))
    loc = Localizer(model, provider)
    image = torch.rand(cfg.data.in_channels, *cfg.data.input_shape)
    places = loc.locations(volume, "lung", image)
    assert set(places.values()) <= set(LUNG_LOBES) and places  # a lobe for every label
    assert loc.locations(volume, "heart", image) == {}
    provider.findings = [
        {
            "label": "Lung nodule",
            "region": "lung",
            "lobes": ["left lung lower lobe"],
            "probability": 1.0,
        }
    ]
    provider._load = lambda v: None  # keep the planted component
    assert loc.locations(volume, "lung", image)["Lung nodule"] == "left lung lower lobe"
    assert component_phrase({"side": "left", "lobes": []}, "pleura") == "left"
    assert component_phrase({"side": "both"}, "pleura") is None
    with pytest.raises(ValueError, match="predicted"):
        Localizer(model, MaskProvider(root, cfg.data, root))


def test_whole_scan_places_pleura_by_side_and_only_parenchyma_labels_by_lobe():
    import numpy as np

    findings = [
        {"label": "Pleural effusion", "region": "pleura", "side": "left", "probability": 0.9},
        {
            "label": "Lung nodule",
            "region": "lung",
            "lobes": ["right lung upper lobe"],
            "probability": 0.8,
        },
    ]
    probs = np.zeros(len(CT_RATE_LABELS))
    probs[CT_RATE_LABELS.index("Consolidation")] = 0.9
    probs[CT_RATE_LABELS.index("Cardiomegaly")] = 0.9
    lobe_probs = {lb: probs * (lb == "left lung lower lobe") for lb in LUNG_LOBES}
    assert place_labels("whole scan", findings, lobe_probs) == {}  # not a scan-places model
    places = place_labels("whole scan", findings, lobe_probs, whole_scan=True)
    assert places["Pleural effusion"] == "left"  # its component's side, not a lobe
    assert places["Lung nodule"] == "right lung upper lobe"  # a component wins
    assert places["Consolidation"] == "left lung lower lobe"  # where the classifier finds it
    assert "Cardiomegaly" not in places  # no lobe for a heart label
    assert place_labels("lung", findings, lobe_probs, whole_scan=True) == place_labels(
        "lung", findings, lobe_probs
    )


def test_every_component_of_a_label_is_placed_most_probable_first():
    """Several components of one label: each one's place, joined as training joins the truth's
    places of several findings ("left and right": a bilateral effusion); one place once."""
    from rgct.data.truth import finding_locations

    def comp(label, region, p, lobes=(), side=None):
        return {
            "label": label,
            "region": region,
            "lobes": list(lobes),
            "side": side,
            "probability": p,
        }

    findings = [
        comp("Pleural effusion", "pleura", 0.6, side="right"),
        comp("Pleural effusion", "pleura", 0.9, side="left"),
        comp("Pleural effusion", "pleura", 0.5, side="left"),  # a second left one: said once
        comp("Lung nodule", "lung", 0.7, ["left lung lower lobe"]),
        comp("Lung nodule", "lung", 0.95, ["right lung upper lobe", "right lung middle lobe"]),
    ]
    assert place_labels("pleura", findings) == {"Pleural effusion": "left and right"}
    lung = place_labels("lung", findings)
    assert lung == {"Lung nodule": "right lung upper lobe and left lung lower lobe"}
    truth = {
        "findings": [
            {"label": "Pleural effusion", "region": "pleura", "side": "left"},
            {"label": "Pleural effusion", "region": "pleura", "side": "right"},
        ]
    }
    assert finding_locations(truth, "pleura") == place_labels("pleura", findings)


def test_oracle_locations_come_from_the_truth(setup, tmp_path, monkeypatch):
    from rgct.model import region_classifier as rc

    model, cfg, root, volume = setup
    model.cfg.evidence_prompt = model.cfg.evidence_locations = True
    seen = []
    original = rc.evidence_prompts
    monkeypatch.setattr(
        rc,
        "evidence_prompts",
        lambda p, d, locs=None, *a, **k: seen.append(locs) or original(p, d, locs, *a, **k),
    )
    try:
        out = tmp_path / "o.jsonl"
        run_generation(
            model, cfg, root, "valid", ["region_report"], out, limit=1, oracle_evidence=True
        )
    finally:
        model.cfg.evidence_prompt = model.cfg.evidence_locations = False
    rows = [r for batch in seen if batch for r in batch]
    for region in ("lung", "pleura", "heart"):
        assert finding_locations(load_ground_truth(root)[volume], region) in rows


def test_predicted_regions_never_overlap_predicted_bone(setup):
    from rgct.constants import SEGMENT_CLASSES
    from rgct.data.io import load_volume
    from rgct.data.layout import volume_path
    from rgct.generate.segment import segment_volume

    model, cfg, root, volume = setup
    seg, meta = truth_segmenter(root, volume, cfg)
    bone = SEGMENT_CLASSES.index("bone")
    k = SEGMENT_CLASSES.index("mediastinum")  # leak the mediastinum into the bone
    seg.logits[k] = torch.maximum(seg.logits[k], seg.logits[bone])
    out = segment_volume(seg, meta, load_volume(volume_path(root, volume)))
    assert out.masks["bone"].any()
    for name, mask in out.masks.items():
        if name != "bone":
            assert not (mask & out.masks["bone"]).any(), name
    assert out.masks["heart"].any()


def test_the_detector_s_findings_are_stated_whatever_the_classifier_says(setup):
    from rgct.generate.localize import detected_labels

    findings = [
        {"label": "Lung nodule", "region": "lung", "lobes": ["left lung lower lobe"]},
        {"label": "Pleural effusion", "region": "pleura", "side": "left"},
    ]
    focal = ("Lung nodule",)
    assert detected_labels("lung", findings, focal) == {"Lung nodule": True}
    assert detected_labels("pleura", findings, focal) is None  # not a detector class there
    assert detected_labels("heart", findings, focal) is None
    assert detected_labels("whole scan", findings, focal) == {"Lung nodule": True}
    assert detected_labels("lung", findings, ()) is None
    model, cfg, root, volume = setup
    provider = MaskProvider("predicted", cfg.data, root, truth_segmenter(root, volume, cfg))
    loc = Localizer(model, provider)
    image = torch.rand(cfg.data.in_channels, *cfg.data.input_shape)
    assert loc.detected(volume, "lung", image) is None  # a segmenter without a detector
    provider.segmenter[0].focal_classes = focal
    provider.findings = findings
    provider._load = lambda v: None  # keep the planted components
    assert loc.detected(volume, "lung", image, "Describe the lung.") == {"Lung nodule": True}
    where = "Where is the pleural effusion located in the image?"
    asked = loc.detected(volume, "whole scan", image, where)
    assert [k for k, on in asked.items() if on] == ["Pleural effusion"]  # the nodule left off
    assert set(asked) == set(CT_RATE_LABELS)


def test_a_where_question_states_the_label_it_asks_about():
    from rgct.generate.localize import asked_label, detected_labels

    assert asked_label("Where is the nodule located in the image?") == "Lung nodule"
    assert asked_label("Where is the ground glass opacity located in the image?") == "Lung opacity"
    assert asked_label("where is the pleural effusion?") == "Pleural effusion"
    assert asked_label("Where is it?") is None  # names no label
    assert asked_label("Can a nodule be identified in the lung?") is None  # not a where-question
    assert asked_label(None) is None
    where = "Where is the consolidation located in the image?"
    alone = detected_labels("whole scan", [], (), question=where)
    assert {k for k, on in alone.items() if on} == {"Consolidation"}
    assert set(alone) == set(CT_RATE_LABELS)  # every other label off the line
    assert detected_labels("lung", [], (), question=where) is None  # whole-scan rows only
    assert detected_labels("whole scan", [], (), question="What is in the scan?") is None
