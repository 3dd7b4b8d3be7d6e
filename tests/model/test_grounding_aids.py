"""Dense finding maps (encoder supervision), detect-then-describe prompts, threshold fitting."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, TINY_TRAIN, tiny_overrides

from rgct.config import ConfigError, load_config
from rgct.constants import CT_RATE_LABELS, EVIDENCE_PREFIX
from rgct.data.dataset import RGCTDataset
from rgct.data.finding_maps import finding_targets, paint_finding_map
from rgct.data.io import DataError
from rgct.model import region_classifier as rc
from rgct.model.builder import build_model
from rgct.model.checkpoint import load_checkpoint, save_checkpoint
from rgct.model.region_classifier import (
    collect_region_probabilities,
    detection_scores,
    fit_thresholds,
)

REPO = Path(__file__).resolve().parents[2]
NODULE = CT_RATE_LABELS.index("Lung nodule")
EFFUSION = CT_RATE_LABELS.index("Pleural effusion")


def _record(findings, shape=(16, 32, 32)):
    return {"volume": "train_1_a_1", "shape": list(shape), "findings": findings}


def _finding(label, center, radius):
    return {"label": label, "center_voxel": list(center), "radius_vox": list(radius)}


# -- finding maps ---------------------------------------------------------------------------------
def test_finding_map_paints_bits_where_the_findings_are():
    rec = _record(
        [
            _finding("Lung nodule", (8, 10, 10), (1.5, 2, 2)),
            _finding("Pleural effusion", (8, 11, 11), (3, 6, 6)),  # overlaps the nodule
        ]
    )
    m = paint_finding_map(rec, (16, 32, 32)).astype(int)
    assert (m[8, 10, 10] >> NODULE) & 1 and (m[8, 10, 10] >> EFFUSION) & 1  # both kept
    assert m[0, 0, 0] == 0 and m[8, 25, 25] == 0
    # scaled to another input shape: the nodule moves with it
    m2 = paint_finding_map(rec, (32, 64, 64)).astype(int)
    assert (m2[16, 20, 20] >> NODULE) & 1
    t = finding_targets(torch.tensor(m, dtype=torch.float32)[None, None], (4, 8, 8))
    assert t.shape == (1, len(CT_RATE_LABELS), 4, 8, 8)
    assert t[0, NODULE, 2, 2, 2] == 1 and t[0, NODULE].sum() <= 8 and t[0, 0].sum() == 0


def test_finding_map_bad_records():
    with pytest.raises(ValueError, match="unknown finding label"):
        paint_finding_map(_record([_finding("Broken bone", (1, 1, 1), (1, 1, 1))]), (16, 32, 32))
    with pytest.raises(ValueError, match="lacks center_voxel"):
        paint_finding_map(_record([{"label": "Lung nodule"}]), (16, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 1, D, H, W\)"):
        finding_targets(torch.zeros(1, 16, 32, 32), (4, 8, 8))


def test_dataset_adds_finding_maps_to_training_samples_only(phantom_root, tmp_path):
    cfg = load_config(
        [TINY_MODEL, REPO / "configs/train/stage0_dense.yaml"],
        tiny_overrides(phantom_root, tmp_path / "run"),
    )
    train = RGCTDataset(cfg.data, "train", train=True, num_samples=4, seed=0)
    item = train[0]
    assert item["findings"].shape == item["image"].shape
    gt = train.ground_truth[train.samples[0].volume]
    assert (item["findings"].sum() > 0) == bool(gt["findings"])
    valid = RGCTDataset(cfg.data, "valid", train=False)
    assert "findings" not in valid[0]


def test_finding_maps_need_ground_truth_and_dense_loss_needs_maps(phantom_root, tmp_path):
    real_like = tmp_path / "no_gt"
    import shutil

    shutil.copytree(phantom_root, real_like, ignore=shutil.ignore_patterns(".rgct_cache"))
    (real_like / "ground_truth.jsonl").unlink()
    cfg = load_config(
        [TINY_MODEL, REPO / "configs/train/stage0_dense.yaml"],
        tiny_overrides(real_like, tmp_path / "run"),
    )
    with pytest.raises(DataError, match="no ground_truth.jsonl"):
        RGCTDataset(cfg.data, "train", train=True, num_samples=2)
    with pytest.raises(ConfigError, match="needs data.finding_maps"):
        load_config([TINY_MODEL], ["model.dense_loss_weight=1.0"])


def test_dense_head_learns_where_a_finding_is(seed):
    cfg = load_config([TINY_MODEL], ["model.dense_loss_weight=1.0", "data.finding_maps=true"])
    model = build_model(cfg)
    d, h, w = model.input_shape
    image = torch.zeros(2, 1, d, h, w)
    image[0, :, 4:8, 8:16, 8:16] = 1.0  # a bright blob only in the first volume
    maps = torch.zeros_like(image)
    maps[0, :, 4:8, 8:16, 8:16] = float(1 << NODULE)
    mask = torch.ones_like(image)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(25):
        out = model(image, mask, findings=maps, objective="aux")
        out["loss"].backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(out["dense_loss"]))
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        heat = torch.sigmoid(model.dense(model.encode_image(image))[:, NODULE])
    assert heat[0].max() > 0.5 > heat[1].max()


def test_dense_part_round_trips_and_loads_into_a_model_without_it(seed, tmp_path):
    cfg = load_config([TINY_MODEL], ["model.dense_loss_weight=1.0", "data.finding_maps=true"])
    model = build_model(cfg)
    assert model.vision_parts[-1] == "dense"
    ckpt = save_checkpoint(model, cfg, tmp_path / "ckpt")
    loaded, _ = load_checkpoint(ckpt)
    assert torch.equal(loaded.dense.weight, model.dense.weight)
    from rgct.model.checkpoint import load_parts

    plain = build_model(load_config([TINY_MODEL]))
    assert plain.dense is None
    load_parts(plain, ckpt, ["encoder", "pooler"])  # stage 0 -> later stages
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(plain.encoder.state_dict()[k], v)
    with pytest.raises(ValueError, match="no dense part"):
        load_parts(plain, ckpt, ["dense"])


# -- detect, then describe ----------------------------------------------------------------------
def _spy_detections(monkeypatch) -> list[torch.Tensor]:
    """The detections each generation writes into its prompts, as they are made."""
    seen: list[torch.Tensor] = []
    original = rc.evidence_prompts

    def spy(prompts, det, *rest, **kw):
        seen.append(det.clone())
        return original(prompts, det, *rest, **kw)

    monkeypatch.setattr(rc, "evidence_prompts", spy)
    return seen


def test_evidence_line_from_labels_in_training_and_from_the_classifier_in_generation(
    seed, monkeypatch
):
    cfg = load_config([TINY_MODEL], ["model.evidence_prompt=true"])
    model = build_model(cfg)
    present = torch.zeros(2, len(CT_RATE_LABELS), dtype=torch.bool)
    present[0, NODULE] = present[0, EFFUSION] = True
    lines = rc.evidence_prompts(["Describe the findings in the lung."] * 2, present)
    assert lines[0] == (
        f"{EVIDENCE_PREFIX}lung nodule, pleural effusion.\nDescribe the findings in the lung."
    )
    assert lines[1].startswith(f"{EVIDENCE_PREFIX}none.\n")
    labels = present.float()
    enc = model.tokenize(["q", "q"], ["a", "b"], labels, torch.ones(2, dtype=torch.bool))
    text = model.tokenizer.decode(enc["input_ids"][0])
    assert "lung nodule, pleural effusion" in text
    with pytest.raises(ValueError, match="needs per-region labels"):
        model.tokenize(["q"], ["a"])
    with pytest.raises(ValueError, match="needs per-region labels"):
        model.tokenize(["q"], ["a"], labels[:1], torch.zeros(1, dtype=torch.bool))

    # generation: the detections come from the classifier at the configured thresholds
    seen = _spy_detections(monkeypatch)
    d, h, w = model.input_shape
    image, mask = torch.rand(2, 1, d, h, w), torch.ones(2, 1, d, h, w)
    model.cfg.evidence_thresholds = [0.02] * len(CT_RATE_LABELS)  # everything counts
    model.generate(image, mask, ["Describe the findings in the lung."] * 2)
    assert seen[-1].all()
    model.cfg.evidence_thresholds = [0.98] * len(CT_RATE_LABELS)
    model.generate(image, mask, ["Describe the findings in the lung."] * 2, blind=True)
    assert not seen[-1].any()


def test_the_segmenters_masks_are_read_by_their_own_head_and_thresholds(seed, monkeypatch):
    """``model.source_heads``: rows whose masks the segmenter predicted (``mask_source``
    ``predicted``) are detected by that head at its thresholds; any other source, by the main
    head at ``evidence_thresholds``."""
    cfg = load_config(
        [TINY_MODEL],
        ["model.evidence_prompt=true", f"model.source_heads={{predicted: {[0.98] * 18}}}"],
    )
    model = build_model(cfg).eval()
    assert set(model.pooler.source_heads) == {"predicted"}
    model.cfg.evidence_thresholds = [0.02] * len(CT_RATE_LABELS)
    seen = _spy_detections(monkeypatch)
    d, h, w = model.input_shape
    image, mask = torch.rand(1, 1, d, h, w), torch.ones(1, 1, d, h, w)
    prompt = ["Describe the findings in the lung."]
    for source, detected in ((None, True), ("folder:segs", True), ("predicted", False)):
        model.generate(image, mask, prompt, mask_source=source)
        assert bool(seen[-1].all()) is detected and bool(seen[-1].any()) is detected, source
    with pytest.raises(ConfigError, match="unknown mask source 'dataset'"):
        load_config([TINY_MODEL], ["model.source_heads={dataset: null}"])
    with pytest.raises(ConfigError, match="source_heads.predicted must be null or 18"):
        load_config([TINY_MODEL], ["model.source_heads={predicted: [0.5]}"])
    for bad in ("-1", "9", "0.5"):
        with pytest.raises(ConfigError, match="model.source_erosion"):
            load_config([TINY_MODEL], [f"model.source_erosion={bad}"])
    eroding = load_config([TINY_MODEL], ["model.source_erosion=1"])
    assert build_model(eroding).pooler.source_erosion == 1


def test_evidence_locations_in_training_and_generation_but_never_blind(seed, monkeypatch):
    cfg = load_config([TINY_MODEL], ["model.evidence_prompt=true", "model.evidence_locations=true"])
    model = build_model(cfg)
    labels = torch.zeros(2, len(CT_RATE_LABELS))
    labels[0, NODULE] = 1
    where = [{"Lung nodule": "right lung upper lobe"}, None]
    enc = model.tokenize(["q", "q"], ["a", "b"], labels, torch.ones(2, dtype=torch.bool), where)
    text = model.tokenizer.decode(enc["input_ids"][0])
    assert "lung nodule (right lung upper lobe)." in text
    assert rc.evidence_line(labels[1] > 0.5, {"Lung nodule": "x"}) == f"{EVIDENCE_PREFIX}none."
    seen = []
    original = rc.evidence_prompts
    monkeypatch.setattr(
        rc,
        "evidence_prompts",
        lambda prompts, det, locs=None, *a, **k: (
            seen.append(locs) or original(prompts, det, locs, *a, **k)
        ),
    )
    d, h, w = model.input_shape
    image, mask = torch.rand(2, 1, d, h, w), torch.ones(2, 1, d, h, w)
    model.generate(image, mask, ["q", "q"], locations=where)
    assert seen[-1] == where
    model.generate(image, mask, ["q", "q"], blind=True, locations=where)
    assert seen[-1] is None  # the blind baseline gets no places (they come from the image)
    with pytest.raises(ValueError, match="location rows"):
        rc.evidence_prompts(["q"], labels[:1] > 0.5, [None, None])
    with pytest.raises(ConfigError, match="evidence_locations needs"):
        load_config([TINY_MODEL], ["model.evidence_locations=true"])
    with pytest.raises(ConfigError, match="scan_locations needs"):
        load_config([TINY_MODEL], ["model.evidence_prompt=true", "model.scan_locations=true"])


@pytest.mark.parametrize("value", ["[0.5]", "[" + ",".join(["1.5"] * len(CT_RATE_LABELS)) + "]"])
def test_bad_evidence_thresholds(value):
    with pytest.raises(ConfigError, match="evidence_thresholds"):
        load_config([TINY_MODEL], [f"model.evidence_thresholds={value}"])


# -- thresholds ------------------------------------------------------------------------------------
def test_fit_thresholds_finds_the_separating_cut():
    rng = np.random.default_rng(0)
    n = 400
    labels = np.zeros((n, len(CT_RATE_LABELS)), bool)
    labels[: n // 4, NODULE] = True
    probs = rng.uniform(0.0, 0.1, (n, len(CT_RATE_LABELS)))
    probs[: n // 4, NODULE] = rng.uniform(0.15, 0.3, n // 4)  # present but below 0.5
    th, report = fit_thresholds(probs, labels)
    assert 0.1 <= th[NODULE] <= 0.15 and th[0] == 0.5
    assert report["per_label"]["Lung nodule"]["f1"] == 1.0
    assert report["per_label"]["Lung nodule"]["f1_at_0.5"] == 0.0
    assert detection_scores(probs, labels, th)["f1"] == 1.0
    with pytest.raises(ValueError, match="must both be"):
        fit_thresholds(probs[:, :3], labels[:, :3])


def test_fit_thresholds_calibrates_what_the_detector_leaves_to_the_classifier():
    """Rows whose label the detector states are found whatever the classifier says: the
    threshold then only has to add the detector's misses without false finds."""
    labels = np.zeros((4, len(CT_RATE_LABELS)), bool)
    labels[:2, NODULE] = True
    probs = np.zeros((4, len(CT_RATE_LABELS)))
    probs[:, NODULE] = [0.9, 0.2, 0.6, 0.1]
    stated = np.zeros_like(labels)
    stated[1, NODULE] = True  # the detector finds the faint one
    alone, _ = fit_thresholds(probs, labels)
    assert alone[NODULE] <= 0.2  # the classifier alone must take the 0.6 false find too
    th, report = fit_thresholds(probs, labels, stated=stated)
    assert 0.6 < th[NODULE] <= 0.9
    assert report["per_label"]["Lung nodule"]["f1"] == 1.0 and report["stated"] == {
        "Lung nodule": 1
    }
    assert detection_scores(probs, labels, th, stated)["f1"] == 1.0
    assert detection_scores(probs, labels, th)["fn"] == 1  # without the detector: a miss
    with pytest.raises(ValueError, match="stated must be"):
        fit_thresholds(probs, labels, stated=stated[:, :3])


def test_calibrate_writes_a_new_checkpoint_with_thresholds(tiny_checkpoint, phantom_root, tmp_path):
    from rgct.cli import main

    ckpt = tiny_checkpoint
    before = (ckpt / "rgct_config.yaml").read_text()
    model, cfg = load_checkpoint(ckpt)
    probs, labels, keys = collect_region_probabilities(model, cfg, phantom_root, "train", 1)
    assert probs.shape == labels.shape and len(keys) == len(probs)
    everything, _, all_keys = collect_region_probabilities(model, cfg, phantom_root, "train", 0)
    first = sorted({v for v, _ in all_keys})[0]
    assert first not in {v for v, _ in keys} and len(everything) > len(probs)
    out = tmp_path / "calibrated"
    argv = ["classifier", "calibrate", "--checkpoint", str(ckpt), "--data", str(phantom_root)]
    argv += ["--out", str(out), "--split", "train", "--skip-volumes", "1", "--report-volumes", "1"]
    assert main(argv) == 0
    report = json.loads((out / "calibration.json").read_text())
    loaded, cfg2 = load_checkpoint(out)
    assert cfg2.model.evidence_thresholds == report["thresholds"]
    assert len(report["thresholds"]) == len(CT_RATE_LABELS)
    assert (ckpt / "rgct_config.yaml").read_text() == before  # the source is never edited
    with pytest.raises(ValueError, match="must differ"):
        main(
            [
                "classifier",
                "calibrate",
                "--checkpoint",
                str(ckpt),
                "--data",
                str(phantom_root),
                "--out",
                str(ckpt),
            ]
        )


def test_tiny_run_with_dense_loss_and_evidence_prompt(phantom_root, tmp_path):
    from rgct.train.loop import train

    out = tmp_path / "run"
    cfg = load_config(
        [TINY_MODEL, TINY_TRAIN],
        tiny_overrides(
            phantom_root,
            out,
            "train.max_steps=2",
            "train.eval_every=0",
            "model.dense_loss_weight=1.0",
            "data.finding_maps=true",
            "model.evidence_prompt=true",
        ),
    )
    final = train(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("dense_loss", 0) > 0 for r in rows)
    model, saved = load_checkpoint(final)
    assert model.dense is not None and saved.model.evidence_prompt


def test_fit_thresholds_keeps_a_weak_label_quiet_for_micro_f1():
    rng = np.random.default_rng(1)
    n = 1000
    labels = np.zeros((n, len(CT_RATE_LABELS)), bool)
    labels[:200, NODULE] = True  # well separated
    labels[200:230, EFFUSION] = True  # 30 positives the classifier barely tells apart
    probs = rng.uniform(0.0, 0.2, (n, len(CT_RATE_LABELS)))
    probs[:200, NODULE] = 0.9
    probs[:, EFFUSION] = rng.uniform(0.0, 0.6, n)
    probs[200:230, EFFUSION] += 0.05
    th, report = fit_thresholds(probs, labels)
    assert report["micro_f1"] >= report["micro_f1_at_0.5"]
    assert (probs[:, EFFUSION] >= th[EFFUSION]).sum() < 30  # stays (nearly) silent


def test_predictor_detect_gives_one_probability_per_label(tiny_checkpoint):
    from rgct.inference import Predictor

    p = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    d, h, w = p.cfg.data.input_shape
    volume = np.full((d, h, w), -800.0, np.float32)
    mask = np.zeros((d, h, w), bool)
    mask[2:6, 4:12, 4:12] = True
    probs = p.detect(volume, mask)
    assert list(probs) == list(CT_RATE_LABELS)
    assert all(0.0 <= v <= 1.0 for v in probs.values())
    with pytest.raises(ValueError, match="empty"):
        p.detect(volume, np.zeros((d, h, w), bool))


def test_crops_are_centred_on_findings_half_the_time(phantom_root, tmp_path):
    cfg = load_config(
        [TINY_MODEL, REPO / "configs/train/stage0_crops.yaml"],
        tiny_overrides(phantom_root, tmp_path / "run", "data.crop_shape=[8,16,16]"),
    )
    n = 160
    ds = RGCTDataset(cfg.data, "train", train=True, num_samples=n, seed=0)
    items = [ds[i] for i in range(n)]
    assert all(it["image"].shape == (1, 8, 16, 16) == it["findings"].shape for it in items)
    # what uniformly placed crops of the same volumes would hold: the share of crop positions
    # that touch a finding, from each sample's whole finding map
    whole = RGCTDataset(
        replace(cfg.data, crop_shape=None), "train", train=True, num_samples=n, seed=0
    )
    chance = []
    for s in whole.samples:
        m = torch.as_tensor(whole.finding_map(s) > 0, dtype=torch.float32)[None]  # (1,1,D,H,W)
        chance.append(float(torch.nn.functional.max_pool3d(m, (8, 16, 16), stride=1).mean()))
    # crops of volumes that hold a finding: pos=1, neg=1 centres half of them on one, so they
    # hold a finding far more often than uniformly placed crops (the rest hold none either way)
    rows = [i for i, c in enumerate(chance) if c > 0]
    assert len(rows) >= 20
    hit = np.mean([bool(items[i]["findings"].sum() > 0) for i in rows])
    assert hit > np.mean([chance[i] for i in rows]) + 0.1, hit
    assert not any(items[i]["findings"].sum() > 0 for i, c in enumerate(chance) if c == 0)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["data.crop_shape=[8,16,16]"], "needs data.finding_maps"),
        (["data.finding_maps=true", "data.crop_shape=[8,16,16]"], "for train.objective=dense"),
        (["train.objective=dense"], "dense_loss_weight > 0"),
        (
            [
                "data.finding_maps=true",
                "data.crop_shape=[4,16,16]",
                "train.objective=dense",
                "model.dense_loss_weight=1",
            ],
            "crop_shape must be",
        ),
    ],
)
def test_crop_and_dense_objective_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config([TINY_MODEL], overrides)


def test_tiny_dense_crop_run_then_pooler_on_the_frozen_encoder(phantom_root, tmp_path):
    from rgct.train.loop import train

    crops = train(
        load_config(
            [TINY_MODEL, REPO / "configs/train/stage0_crops.yaml"],
            tiny_overrides(
                phantom_root,
                tmp_path / "crops",
                "train.max_steps=2",
                "data.crop_shape=[8,16,16]",
                "model.llm=tiny",
                "train.batch_size=4",
            ),
        )
    )
    rows = [json.loads(x) for x in (tmp_path / "crops/metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["dense_loss"] > 0 and rows[-1]["aux_loss"] == 0
    pool_cfg = load_config(
        [TINY_MODEL, REPO / "configs/train/stage0_pool.yaml"],
        tiny_overrides(
            phantom_root,
            tmp_path / "pool",
            "train.max_steps=2",
            f"train.init=[{{from: {crops}, parts: [encoder, pooler]}}]",
            "train.batch_size=4",
            "train.eval_every=0",
        ),
    )
    pooled = train(pool_cfg)
    a, _ = load_checkpoint(crops)
    b, _ = load_checkpoint(pooled)
    for k, v in a.encoder.state_dict().items():  # frozen: the encoder is unchanged
        assert torch.equal(b.encoder.state_dict()[k], v)
    assert not all(
        torch.equal(v, a.pooler.state_dict()[k]) for k, v in b.pooler.state_dict().items()
    )


def test_generation_takes_given_evidence_instead_of_the_classifier(seed, monkeypatch):
    model = build_model(load_config([TINY_MODEL], ["model.evidence_prompt=true"]))
    seen = []
    original = rc.evidence_prompts
    monkeypatch.setattr(
        rc,
        "evidence_prompts",
        lambda prompts, det, loc=None, *a, **k: (
            seen.append(det.clone()) or original(prompts, det, loc, *a, **k)
        ),
    )
    d, h, w = model.input_shape
    image, mask = torch.rand(2, 1, d, h, w), torch.ones(2, 1, d, h, w)
    truth = torch.zeros(2, len(CT_RATE_LABELS), dtype=torch.bool)
    truth[1, NODULE] = True
    model.generate(image, mask, ["q", "q"], evidence=truth)
    assert torch.equal(seen[-1], truth)
    with pytest.raises(ValueError, match="one row of 18 labels"):
        model.generate(image, mask, ["q", "q"], evidence=truth[:1])


def test_heldout_check_with_oracle_evidence(phantom_root, tmp_path):
    from rgct.generate.heldout import card_section, heldout_eval
    from rgct.train.loop import train

    final = train(
        load_config(
            [TINY_MODEL, TINY_TRAIN],
            tiny_overrides(
                phantom_root,
                tmp_path / "run",
                "train.max_steps=1",
                "train.eval_every=0",
                "model.evidence_prompt=true",
            ),
        )
    )
    model, cfg = load_checkpoint(final)
    cfg.generation.max_new_tokens = 8
    result = heldout_eval(model, cfg, phantom_root, tmp_path / "ho", limit=1, oracle=True)
    assert set(result) >= {"model", "blind_baseline", "oracle_evidence"}
    rows = (tmp_path / "ho/predictions_oracle_evidence.jsonl").read_text().splitlines()
    assert rows and json.loads(rows[0])["volume"]
    assert "perfect region classifier" in card_section(result)
    saved = json.loads((tmp_path / "ho/heldout.json").read_text())
    assert saved["oracle_evidence"]["finding_f1"] == result["oracle_evidence"]["finding_f1"]
    plain, plain_cfg = load_checkpoint(final, overrides=["model.evidence_prompt=false"])
    with pytest.raises(ValueError, match="evidence_prompt"):
        heldout_eval(plain, plain_cfg, phantom_root, tmp_path / "x", limit=1, oracle=True)
    # the folder resumes only for the same model: another one's predictions are not scored
    rows = (tmp_path / "ho/predictions_model.jsonl").read_text()
    again = heldout_eval(model, cfg, phantom_root, tmp_path / "ho", limit=1, blind=False)
    assert (tmp_path / "ho/predictions_model.jsonl").read_text() == rows
    with torch.no_grad():
        next(model.pooler.parameters()).add_(1.0)  # another model
    seen = []
    import rgct.generate.heldout as heldout_module

    original = heldout_module.run_generation

    def spy(*args, **kwargs):
        out = args[5] if len(args) > 5 else kwargs["out"]
        seen.append(Path(out).is_file())  # a file left from before would be resumed
        return original(*args, **kwargs)

    heldout_module.run_generation = spy
    try:
        heldout_eval(model, cfg, phantom_root, tmp_path / "ho", limit=1, blind=False)
    finally:
        heldout_module.run_generation = original
    assert seen == [False] and again["volumes"] == 1
