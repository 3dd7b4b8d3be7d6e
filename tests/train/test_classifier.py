"""Classifier stages (:mod:`rgct.train.classifier`) with several mask sources: the classifier
learns, and its thresholds are fitted on, the regions of each source; a region a source has no
mask for is left out and counted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rgct.constants import REGIONS
from rgct.data.layout import region_mask_path
from rgct.data.records import find_volumes
from rgct.model.checkpoint import load_checkpoint
from rgct.model.region_classifier import collect_region_features, concat_features
from rgct.train.classifier import calibrate_checkpoint, fit_classifier_checkpoint


def _mask_folder(root: Path, out: Path, split: str, keep: int, drop: str) -> Path:
    """``seg_<volume>/<region>.nii.gz`` copies of the dataset's masks for the first ``keep``
    volumes of a split, without region ``drop`` (the layout `rgct segment` writes)."""
    for volume in find_volumes(root, split)[:keep]:
        folder = out / f"seg_{volume.removesuffix('.nii.gz')}"
        folder.mkdir(parents=True)
        for region in REGIONS:
            src = region_mask_path(root, volume, region)
            if region != drop and src.is_file():
                shutil.copy2(src, folder / f"{region}.nii.gz")
    return out


def test_features_from_another_source_leave_out_regions_it_has_no_mask_for(
    tiny_checkpoint, phantom_root
):
    model, cfg = load_checkpoint(tiny_checkpoint)
    base = collect_region_features(model, cfg, phantom_root, "train", max_volumes=2)
    same = collect_region_features(
        model,
        cfg,
        phantom_root,
        "train",
        max_volumes=2,
        mask_for=lambda s: _dataset_mask(phantom_root, cfg, s),
    )
    assert same.keys == base.keys
    assert torch.allclose(same.region, base.region, atol=1e-5)

    def no_heart(s):
        if s.region == "heart":
            raise LookupError("no heart mask")
        return torch.ones(1, *cfg.data.input_shape)  # the whole scan: other features

    other = collect_region_features(
        model, cfg, phantom_root, "train", max_volumes=2, mask_for=no_heart
    )
    assert [k for k in base.keys if k[1] != "heart"] == other.keys
    assert not torch.allclose(other.region, base.region[: len(other.keys)])
    joined = concat_features([base, other])
    assert len(joined.keys) == len(base.keys) + len(other.keys)
    assert np.array_equal(joined.labels[: len(base.keys)], base.labels)
    with pytest.raises(ValueError, match="no region has a mask"):
        collect_region_features(
            model, cfg, phantom_root, "train", max_volumes=1, mask_for=_always_missing
        )


def _always_missing(sample):
    raise LookupError(sample.region)


def _dataset_mask(root: Path, cfg, sample) -> torch.Tensor:
    from rgct.data.io import load_mask, load_volume
    from rgct.data.layout import volume_path
    from rgct.data.transforms import preprocess

    vol = load_volume(volume_path(root, sample.volume))
    mask = load_mask(region_mask_path(root, sample.volume, sample.region), vol)
    return preprocess(vol, {"m": mask}, cfg.data)[1]["m"]


def test_fit_and_calibrate_on_two_mask_sources(tiny_checkpoint, phantom_root, tmp_path):
    masks = _mask_folder(phantom_root, tmp_path / "seg", "train", keep=2, drop="heart")
    source = tmp_path / "source"  # a checkpoint with a segmenter: it stays with the new folders
    shutil.copytree(tiny_checkpoint, source)
    (source / "segmenter.json").write_text('{"kind": "test"}')
    (source / "segmenter.safetensors").write_bytes(b"weights")
    fitted = tmp_path / "fitted"
    record = fit_classifier_checkpoint(
        source,
        phantom_root,
        fitted,
        tasks=("region_report",),
        epochs=2,
        masks=["dataset", str(masks)],
    )
    per_source = record["regions_per_mask_source"]
    assert record["masks"] == ["dataset", str(masks)]
    # the folder covers two volumes, without their hearts
    dataset_volumes = record["volumes"]
    assert per_source[str(masks)] < per_source["dataset"]
    assert per_source[str(masks)] == sum(
        1
        for v in find_volumes(phantom_root, "train")[:2]
        for r in REGIONS
        if r != "heart" and region_mask_path(phantom_root, v, r).is_file()
    )
    assert record["regions"] == sum(per_source.values()) and dataset_volumes >= 2
    calibrated = tmp_path / "calibrated"
    report = calibrate_checkpoint(
        fitted, phantom_root, calibrated, split="train", masks=["dataset", str(masks)]
    )
    assert set(report["fitted_per_mask_source"]) == {"dataset", str(masks)}
    _, cfg = load_checkpoint(calibrated)
    assert cfg.model.evidence_thresholds == report["thresholds"]
    assert json.loads((calibrated / "calibration.json").read_text())["masks"] == report["masks"]
    for folder in (fitted, calibrated):
        assert (folder / "segmenter.safetensors").read_bytes() == b"weights"
        assert (folder / "segmenter.json").read_text() == '{"kind": "test"}'
    with pytest.raises(ValueError, match="distinct mask sources"):
        calibrate_checkpoint(fitted, phantom_root, tmp_path / "x", masks=["dataset", "dataset"])
    with pytest.raises(FileNotFoundError, match="no .*segmenter|no such folder"):
        fit_classifier_checkpoint(
            tiny_checkpoint, phantom_root, tmp_path / "y", masks=["predicted"]
        )


def test_fit_passes_weight_decay_to_the_heads(tiny_checkpoint, phantom_root, tmp_path, monkeypatch):
    from rgct.model import region_classifier as rc

    seen = {}
    original = rc.fit_region_classifier

    def spy(model, feats, **kw):
        seen.update(kw)
        return original(model, feats, **kw)

    monkeypatch.setattr(rc, "fit_region_classifier", spy)
    record = fit_classifier_checkpoint(
        tiny_checkpoint,
        phantom_root,
        tmp_path / "fitted",
        tasks=("region_report",),
        epochs=1,
        weight_decay=0.25,
    )
    assert seen["weight_decay"] == 0.25 and record["weight_decay"] == 0.25


def _fit_predicted_head(checkpoint: Path, root: Path, tmp_path: Path) -> tuple[Path, Path, dict]:
    """A ``predicted`` head fitted on a mask folder of two volumes without the heart, reading
    the masks one voxel inside their edges: ``(mask folder, fitted checkpoint, record)``."""
    masks = _mask_folder(root, tmp_path / "seg", "train", keep=2, drop="heart")
    fitted = tmp_path / "fitted"
    record = fit_classifier_checkpoint(
        checkpoint,
        root,
        fitted,
        tasks=("region_report",),
        epochs=3,
        lr=1e-2,
        masks=[str(masks)],
        head="predicted",
        erode=1,
    )
    return masks, fitted, record


def test_a_head_of_the_segmenters_masks_leaves_the_main_head_and_thresholds(
    tiny_checkpoint, phantom_root, tmp_path
):
    """``--head predicted``: a second head fitted (and calibrated) on another source's regions;
    the main head and ``evidence_thresholds`` stay the source checkpoint's, and only rows whose
    masks come from that source are classified by the new head."""
    from rgct.model.builder import build_model
    from rgct.model.checkpoint import load_parts

    main, main_cfg = load_checkpoint(tiny_checkpoint)
    masks, fitted, record = _fit_predicted_head(tiny_checkpoint, phantom_root, tmp_path)
    assert record["head"] == "predicted" and record["erosion"] == 1
    model, cfg = load_checkpoint(fitted)
    assert cfg.model.source_heads == {"predicted": None}
    assert cfg.model.source_erosion == 1 and model.pooler.source_erosion == 1
    assert cfg.model.evidence_thresholds == main_cfg.model.evidence_thresholds
    main_state = main.pooler.classifier.state_dict()
    for k, v in model.pooler.classifier.state_dict().items():
        assert torch.equal(v, main_state[k]), k  # the main head is the source's
    head = model.pooler.source_heads["predicted"]["classifier"].state_dict()
    assert any(not torch.equal(head[k], main_state[k]) for k in head)  # the new one learned

    calibrated = tmp_path / "calibrated"
    report = calibrate_checkpoint(
        fitted, phantom_root, calibrated, split="train", masks=[str(masks)], head="predicted"
    )
    model, cfg = load_checkpoint(calibrated)
    assert report["head"] == "predicted"
    assert cfg.model.source_heads["predicted"] == report["thresholds"]
    assert cfg.model.evidence_thresholds == main_cfg.model.evidence_thresholds
    assert model.evidence_thresholds("predicted") == report["thresholds"]
    assert model.evidence_thresholds("folder:seg") == main_cfg.model.evidence_thresholds
    grid = torch.randn(2, model.pooler.norm.normalized_shape[0], *([2] * 3))
    mask = torch.ones(2, 1, *cfg.data.input_shape)
    image = torch.randn(2, cfg.data.in_channels, *cfg.data.input_shape)
    _, _, by_main = model.pooler(grid, mask, image)
    _, _, by_other = model.pooler(grid, mask, image, "folder:seg")  # no head of its own
    _, _, by_head = model.pooler(grid, mask, image, "predicted")
    assert torch.equal(by_main, by_other) and not torch.allclose(by_main, by_head)

    # a model without that head (another stage's init) loads the main head and leaves it out
    cfg.model.source_heads = {}
    plain = build_model(cfg)
    load_parts(plain, calibrated, ["pooler"])
    assert len(plain.pooler.source_heads) == 0
    assert torch.equal(plain.pooler(grid, mask, image)[2], by_main)

    with pytest.raises(ValueError, match="no head for mask source 'predicted'"):
        calibrate_checkpoint(tiny_checkpoint, phantom_root, tmp_path / "x", head="predicted")
    with pytest.raises(ValueError, match="mask sources \\['predicted'\\] only"):
        fit_classifier_checkpoint(tiny_checkpoint, phantom_root, tmp_path / "y", head="dataset")
    with pytest.raises(ValueError, match="applies to a mask source's own head"):
        fit_classifier_checkpoint(tiny_checkpoint, phantom_root, tmp_path / "z", erode=1)
    with pytest.raises(ValueError, match="erode must be a whole number"):
        fit_classifier_checkpoint(
            tiny_checkpoint, phantom_root, tmp_path / "z", head="predicted", erode=-2
        )


def test_a_language_stage_keeps_the_mask_source_head_it_starts_from(
    tiny_checkpoint, phantom_root, tmp_path
):
    """A stage that loads a pooler with a head for the segmenter's masks and does not train it
    (e.g. stage3_places after predicted_head) keeps that head, its thresholds and erosion
    (:func:`rgct.model.checkpoint.inherit_source_heads`); without them the stage's model had no
    such head and dropped its weights. A resumed stage keeps what its step checkpoint holds."""
    from conftest import TINY_MODEL, TINY_TRAIN, tiny_overrides

    from rgct.config import load_config
    from rgct.train.loop import train

    masks, fitted, _ = _fit_predicted_head(tiny_checkpoint, phantom_root, tmp_path)
    calibrated = tmp_path / "calibrated"
    report = calibrate_checkpoint(
        fitted, phantom_root, calibrated, split="train", masks=[str(masks)], head="predicted"
    )
    source, _ = load_checkpoint(calibrated)

    def stage(out: Path, *extra: str) -> Path:
        cfg = load_config(
            [TINY_MODEL, TINY_TRAIN],
            tiny_overrides(phantom_root, out, "train.eval_every=0", "train.save_every=1", *extra),
        )
        return train(cfg)

    frozen = ("model.region_stats=true", "model.train_pooler=false")
    run = tmp_path / "lm"
    done = stage(run, *frozen, "train.max_steps=1", f"train.init=[{{from: {calibrated}}}]")
    model, cfg = load_checkpoint(done)
    assert cfg.model.source_heads == {"predicted": report["thresholds"]}
    assert cfg.model.source_erosion == 1
    head = model.pooler.source_heads["predicted"].state_dict()
    for k, v in source.pooler.source_heads["predicted"].state_dict().items():
        assert torch.equal(head[k], v), k
    resumed = stage(run, *frozen, "train.max_steps=2", "train.resume=auto")
    assert load_checkpoint(resumed)[1].model.source_heads == {"predicted": report["thresholds"]}
    # a stage that trains the pooler calibrates its own classifier: nothing is carried
    trained = stage(
        tmp_path / "own",
        "model.region_stats=true",
        "model.train_pooler=true",
        "train.max_steps=1",
        f"train.init=[{{from: {calibrated}}}]",
    )
    assert load_checkpoint(trained)[1].model.source_heads == {}


def test_detector_statements_mark_the_rows_the_detector_states():
    """Per (volume, region) row: the detector's components in that region (and on the whole
    scan); a reader of the same provider notes them so the segmenter runs once per volume."""
    from types import SimpleNamespace

    from rgct.constants import CT_RATE_LABELS
    from rgct.train.classifier import DetectorStatements

    components = {
        "a": [
            {"label": "Lung nodule", "region": "lung"},
            {"label": "Atelectasis", "region": "lung"},
        ],
        "b": [],
    }
    segmented = []

    class Provider:
        source, _volume, findings = "predicted", None, []

        def volume(self, v):  # as MaskProvider: segments a volume once while it holds it
            if v != self._volume:
                segmented.append(v)
            self._volume, self.findings = v, components[v]
            return {}, self.findings

    provider = Provider()
    statements = DetectorStatements(provider, ("Lung nodule",), CT_RATE_LABELS)

    def reader(sample):
        provider.volume(sample.volume)
        return "mask"

    reader.provider = provider
    read = statements.noting(reader)
    assert read(SimpleNamespace(volume="a")) == "mask" and segmented == ["a"]
    rows = statements.rows([("a", "lung"), ("a", "heart"), ("a", "whole scan"), ("b", "lung")])
    nodule = CT_RATE_LABELS.index("Lung nodule")
    assert rows[:, nodule].tolist() == [True, False, True, False]
    assert rows.sum() == 2  # the atelectasis component is not a detector class
    assert segmented == ["a", "b"]  # "a" was noted while read, "b" segmented for its row
    assert statements.noting(None) is None  # the dataset's masks: nothing to note
