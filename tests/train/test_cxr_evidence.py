"""The radiograph model made to see, the way the CT model was (tiny, seconds): the encoder and
classifier on the classifier's loss alone, the heads fitted on films, boxes and zones, thresholds
calibrated, then detect-then-describe with the places of the zone localiser, held out against
the blind baseline, and served by the Predictor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import CXR_TINY_MODEL, REPO, cxr_tiny_overrides

from rgct.config import load_config, load_saved_config
from rgct.constants import EVIDENCE_PREFIX, WHOLE_SCAN
from rgct.data.cxr import PLACES
from rgct.data.cxr_samples import VOCABULARY, placeable_labels
from rgct.generate.heldout import heldout_eval
from rgct.generate.localize_cxr import ZoneLocalizer, build_zone_localizer
from rgct.inference import Predictor
from rgct.model import region_classifier as rc
from rgct.model.checkpoint import load_checkpoint
from rgct.model.film_regions import collect_film_features, zone_place_accuracy
from rgct.train.classifier import calibrate_checkpoint, fit_classifier_checkpoint
from rgct.train.loop import build_data, to_model_inputs, train

ENCODER = REPO / "configs" / "train" / "cxr_encoder.yaml"
EVIDENCE = REPO / "configs" / "train" / "cxr_evidence.yaml"
VINDR = VOCABULARY["vindr-cxr"]


def test_radiograph_detect_then_describe_chain(cxr_phantoms, tmp_path):
    root = cxr_phantoms["vindr"]
    common = ["train.eval_every=0", "model.region_stats=true"]

    # A: encoder + classifier on the aux loss alone; the checkpoint knows its labels
    cfg = load_config(
        [CXR_TINY_MODEL, ENCODER],
        cxr_tiny_overrides(root, tmp_path / "enc", "train.max_steps=2", *common),
    )
    encoder = train(cfg)
    saved = load_saved_config(Path(encoder) / "rgct_config.yaml")
    assert saved.model.label_names == VINDR and saved.train.objective == "aux"

    # B: heads fitted on films, boxes and zones; thresholds on another split
    record = fit_classifier_checkpoint(encoder, root, tmp_path / "fit", epochs=3, device="cpu")
    model, fit_cfg = load_checkpoint(tmp_path / "fit")
    feats = collect_film_features(model, fit_cfg, root, "train")
    assert record["regions"] == len(feats.keys) and feats.labels.shape[1] == len(VINDR)
    kinds = {key.split(" ")[0] if key.startswith("box") else key for _, key in feats.keys}
    assert {"film", "box"} | set(PLACES) <= kinds
    probs = rc.feature_probabilities(model, feats)
    scores = zone_place_accuracy(probs, feats, model.label_names, 0.5)
    assert scores["findings"] > 0 and 0.0 <= scores["exact"] <= 1.0
    report = calibrate_checkpoint(tmp_path / "fit", root, tmp_path / "cal", split="test")
    assert len(report["thresholds"]) == len(VINDR) and set(report["per_label"]) <= set(VINDR)

    # C: detect then describe, classifier frozen; its thresholds are carried
    cfg = load_config(
        [CXR_TINY_MODEL, EVIDENCE],
        cxr_tiny_overrides(
            root,
            tmp_path / "ev",
            "train.max_steps=2",
            *common,
            f"train.init=[{{from: {tmp_path / 'cal'}, parts: [encoder, pooler]}}]",
        ),
    )
    described = train(cfg)
    model, cfg = load_checkpoint(described)
    assert cfg.model.evidence_thresholds == report["thresholds"]
    assert cfg.model.evidence_locations and cfg.model.label_names == VINDR

    # training prompts: true labels, and the boxes' places on whole-film rows only
    from rgct.data.cxr_samples import places_by_film

    data = build_data(cfg, world=1)
    items = [data.train_ds[i] for i in range(len(data.train_ds))]
    from rgct.data.dataset import collate

    batch = collate(items)
    truth = places_by_film(root, "vindr-cxr")
    inputs = to_model_inputs(model, batch, torch.device("cpu"), "lm", truth)
    texts = [model.tokenizer.decode(ids) for ids in inputs["input_ids"]]
    assert all(EVIDENCE_PREFIX in t for t in texts)
    for text, region, volume in zip(texts, batch["region"], batch["volume"]):
        placed = [p for p in truth.get(volume, {}).values()]
        if region == WHOLE_SCAN and placed:
            assert f"({placed[0]})" in text
        if region != WHOLE_SCAN:
            assert " zone)" not in text

    # the zone localiser: whole-film rows only, boxable classes only
    localizer = build_zone_localizer(model, cfg)
    assert isinstance(localizer, ZoneLocalizer)
    image = torch.rand(1, 64, 64)
    places = localizer.locations("film", WHOLE_SCAN, image)
    assert (
        set(places) == set(placeable_labels(VINDR))
        and localizer.locations("f", "box", image) is None
    )
    assert all(set(p.split(" and ")) <= set(PLACES) for p in places.values())

    # held out against the blind baseline, resumable only for the same model
    tasks = ["cxr_presence", "cxr_box", "cxr_location"]
    result = heldout_eval(model, cfg, root, tmp_path / "ho", split="test", tasks=tasks)
    assert result["volumes"] >= 1 and "blind_baseline" in result and result["tasks"] == tasks
    run = json.loads((tmp_path / "ho" / "run.json").read_text())
    assert run["split"] == "test" and run["blind"] is True and run["tasks"] == tasks
    lines = (tmp_path / "ho" / "predictions_model.jsonl").read_text().splitlines()
    assert {json.loads(line)["task"] for line in lines} <= set(tasks)
    with pytest.raises(ValueError, match="some of"):
        heldout_eval(model, cfg, root, tmp_path / "ho2", split="test", tasks=["report"])

    # the Predictor serves it: detections (and places) in every prompt
    p = Predictor.from_checkpoint(described)
    film = next((root / "test").glob("*.dicom"))
    assert isinstance(p.cxr_ask(film, "What is in the given box?", box=(5, 5, 30, 30)), str)
    assert "sentences" in p.cxr_report(film)


def test_a_radiograph_model_takes_no_ct_segmenter(tmp_path):
    from rgct.config import save_config
    from rgct.train.loop import inherit_segmenter

    ct_source = tmp_path / "ct"
    ct_source.mkdir()
    save_config(
        load_config([REPO / "configs" / "model" / "tiny.yaml"]), ct_source / "rgct_config.yaml"
    )
    (ct_source / "segmenter.json").write_text('{"kind": "test"}')
    (ct_source / "segmenter.safetensors").write_bytes(b"weights")
    init = [f"train.init=[{{from: {ct_source}, parts: [lora]}}]"]
    cxr = load_config([CXR_TINY_MODEL, EVIDENCE], init)
    inherit_segmenter(cxr, tmp_path / "cxr_model")
    assert not (tmp_path / "cxr_model" / "segmenter.safetensors").exists()
    ct = load_config([REPO / "configs" / "model" / "tiny.yaml"], init)
    (tmp_path / "ct_model").mkdir()
    inherit_segmenter(ct, tmp_path / "ct_model")
    assert (tmp_path / "ct_model" / "segmenter.safetensors").read_bytes() == b"weights"
