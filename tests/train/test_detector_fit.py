"""fit_detector / calibrate_detector: crops, loss, the segmenter it joins stays as it was, a
killed run resumes exactly, calibration writes the detector's thresholds only, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from rgct.data.io import DataError
from rgct.model.segmenter import load_segmenter, save_segmenter
from rgct.train.detector import (
    DetectorTrainConfig,
    calibrate_detector,
    detector_loss,
    fit_detector,
    load_crop_data,
    sample_crops,
    with_detector,
)
from rgct.train.segmenter import SegmenterTrainConfig, fit_segmenter

SHAPE = (24, 48, 48)
CROP = (8, 16, 16)


@pytest.fixture(scope="module")
def base_segmenter(phantom_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("seg") / "seg"
    cfg = SegmenterTrainConfig(
        data_root=str(phantom_root),
        out_dir=str(out),
        cache_dir=str(out.parent / "cache"),
        steps=1,
        input_shape=SHAPE,
        model={"channels": (4, 8), "internal_scale": 0.5},
    )
    fit_segmenter(cfg)
    model, meta = load_segmenter(out)
    meta["finding_thresholds"] = {"Lung nodule": 1.01, "Cardiomegaly": 0.7}
    save_segmenter(out, model, meta)
    return out


def _cfg(root, init, out, **kw) -> DetectorTrainConfig:
    base = dict(
        data_root=str(root),
        init=str(init),
        out_dir=str(out),
        classes=("Lung nodule", "Lung opacity", "Pleural effusion"),
        steps=4,
        crops=2,
        crop_shape=CROP,
        width=4,
        save_every=2,
        log_every=1,
        workers=1,
        cache_dir=str(out) + "_cache",
    )
    return DetectorTrainConfig(**{**base, **kw})


def test_every_other_crop_holds_a_finding_and_batches_repeat_by_step(
    phantom_root, base_segmenter, tmp_path
):
    cfg = _cfg(phantom_root, base_segmenter, tmp_path / "r", crops=4)
    _, meta = load_segmenter(base_segmenter)
    from rgct.model.segmenter import data_config_from_meta

    items = load_crop_data(cfg, data_config_from_meta(meta))
    x, y = sample_crops(items, cfg, 3)
    assert x.shape == (4, 1, *CROP) and y.shape == (4, 3, *CROP)
    assert all(y[b].any() for b in (0, 2))
    x2, y2 = sample_crops(items, cfg, 3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, sample_crops(items, cfg, 4)[0])


def test_the_loss_rewards_cells_that_hold_the_finding():
    target = torch.zeros(1, 1, 2, 4, 4)
    target[0, 0, 1, 2, 3] = 1
    right = torch.full((1, 1, 2, 2, 2), -5.0)
    right[0, 0, 1, 1, 1] = 5.0
    wrong = torch.full((1, 1, 2, 2, 2), -5.0)
    wrong[0, 0, 0, 0, 0] = 5.0
    assert detector_loss(right, target, 30.0) < 0.1 < detector_loss(wrong, target, 30.0)


def test_training_keeps_the_segmenter_and_a_killed_run_resumes_exactly(
    phantom_root, base_segmenter, tmp_path, seed
):
    full = fit_detector(_cfg(phantom_root, base_segmenter, tmp_path / "full"))
    killed = tmp_path / "killed"
    fit_detector(_cfg(phantom_root, base_segmenter, killed, stop_after=3))
    assert json.loads((killed / "checkpoint" / "state.json").read_text())["step"] == 2
    assert not (killed / "segmenter.safetensors").exists()
    fit_detector(_cfg(phantom_root, base_segmenter, killed))
    a = load_file(str(full / "segmenter.safetensors"))
    b = load_file(str(killed / "segmenter.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    before = load_file(str(base_segmenter / "segmenter.safetensors"))
    for key, value in before.items():  # the UNet and refinement head are untouched
        torch.testing.assert_close(a[key], value)
    assert any(k.startswith("focal.") for k in a)
    model, meta = load_segmenter(full)
    assert model.focal_classes == ("Lung nodule", "Lung opacity", "Pleural effusion")
    assert meta["detector"]["steps_done"] == 4 and not meta["detector"]["calibrated"]
    assert meta["finding_thresholds"] == {"Cardiomegaly": 0.7}  # the old nodule one is gone
    rows = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_calibration_sets_only_the_detector_thresholds(phantom_root, base_segmenter, tmp_path):
    run = fit_detector(_cfg(phantom_root, base_segmenter, tmp_path / "run", steps=1))
    found = calibrate_detector(run, phantom_root, out=tmp_path / "cal", max_volumes=3)
    assert set(found["finding_thresholds"]) <= {"Lung nodule", "Lung opacity", "Pleural effusion"}
    _, meta = load_segmenter(tmp_path / "cal")
    assert meta["finding_thresholds"]["Cardiomegaly"] == 0.7
    assert meta["detector"]["calibrated"] and meta["detector"]["calibration"]["volumes"] == 3
    for label, t in found["finding_thresholds"].items():
        assert meta["finding_thresholds"][label] == t
    with pytest.raises(ValueError, match="no detector"):
        calibrate_detector(base_segmenter, phantom_root)


def test_with_detector_keeps_a_matching_detector_and_drops_another(base_segmenter, tmp_path):
    model, meta = with_detector(base_segmenter, ("Lung nodule",), 4)
    save_segmenter(tmp_path / "a", model, meta)
    again, _ = with_detector(tmp_path / "a", ("Lung nodule",), 4)
    for k, v in model.focal.state_dict().items():
        torch.testing.assert_close(again.focal.state_dict()[k], v)
    other, _ = with_detector(tmp_path / "a", ("Lung nodule",), 6)  # another width: fresh
    assert other.config()["focal_width"] == 6


def test_bad_settings_and_data_are_refused(phantom_root, base_segmenter, tmp_path):
    with pytest.raises(ValueError, match="not finding channels"):
        _cfg(phantom_root, base_segmenter, tmp_path, classes=("lung",))
    with pytest.raises(ValueError, match="multiple of the detector's cell"):
        _cfg(phantom_root, base_segmenter, tmp_path, crop_shape=(8, 15, 16))
    with pytest.raises(ValueError, match="steps"):
        _cfg(phantom_root, base_segmenter, tmp_path, steps=0)
    fit_detector(
        _cfg(phantom_root, base_segmenter, tmp_path / "w", steps=2, save_every=1, stop_after=1)
    )
    with pytest.raises(ValueError, match="another network"):
        fit_detector(_cfg(phantom_root, base_segmenter, tmp_path / "w", steps=2, width=6))
    with pytest.raises(DataError, match="region-mask folder"):
        fit_detector(_cfg(tmp_path / "nowhere", base_segmenter, tmp_path / "x"))


def test_calibrating_a_checkpoint_with_a_detector_counts_what_it_states(
    phantom_root, base_segmenter, tmp_path
):
    """``rgct classifier calibrate`` on a checkpoint whose segmenter has a detector fits the
    thresholds of the decision generation makes (the detector's labels stated whatever the
    classifier says); without a detector nothing is stated."""
    from conftest import TINY_MODEL, TINY_TRAIN, tiny_overrides

    from rgct.config import load_config
    from rgct.train.classifier import calibrate_checkpoint
    from rgct.train.loop import train

    evidence = ("model.evidence_prompt=true", "model.evidence_locations=true")
    cfg = load_config(
        [TINY_MODEL, TINY_TRAIN],
        tiny_overrides(phantom_root, tmp_path / "run", "train.max_steps=1", *evidence),
    )
    ckpt = train(cfg)
    plain = calibrate_checkpoint(ckpt, phantom_root, tmp_path / "plain", split="train")
    assert "stated_by_detector" not in plain
    model, meta = with_detector(base_segmenter, ("Lung nodule",), 4)
    from rgct.constants import CT_RATE_LABELS

    quiet = dict.fromkeys(CT_RATE_LABELS, 1.01)  # only the detector's channel fires
    meta["finding_thresholds"] = {**quiet, "Lung nodule": 0.0}
    save_segmenter(ckpt, model, meta)
    report = calibrate_checkpoint(ckpt, phantom_root, tmp_path / "cal", split="train")
    assert report["stated_by_detector"] == ["Lung nodule"]
    assert report["stated"] == {"Lung nodule": report["stated"]["Lung nodule"]}
    assert report["stated"]["Lung nodule"] >= 1
