"""fit_segmenter: the loss falls, files are written, a killed run resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from rgct.constants import SEGMENT_CLASSES
from rgct.model.segmenter import load_segmenter
from rgct.train.segmenter import (
    SegmenterTrainConfig,
    augment_batch,
    fit_segmenter,
    prepare_cache,
    segmentation_loss,
)

SHAPE = (16, 32, 32)


def _cfg(root, out, cache, **kw) -> SegmenterTrainConfig:
    base = dict(
        data_root=str(root),
        out_dir=str(out),
        cache_dir=str(cache),
        steps=8,
        batch_size=2,
        lr=1e-2,
        warmup_steps=1,
        save_every=4,
        log_every=2,
        input_shape=SHAPE,
        model={"channels": (4, 8), "internal_scale": 0.5},
    )
    return SegmenterTrainConfig(**{**base, **kw})


def test_training_lowers_the_loss_and_writes_the_segmenter(phantom_root, tmp_path, seed):
    out = fit_segmenter(_cfg(phantom_root, tmp_path / "run", tmp_path / "cache", augment=False))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6, 8]
    assert rows[-1]["loss"] < rows[0]["loss"]
    model, meta = load_segmenter(out)
    assert model.classes == SEGMENT_CLASSES
    assert meta["data"]["input_shape"] == list(SHAPE)
    assert meta["train"]["steps_done"] == 8


def test_a_killed_run_resumes_where_it_stopped(phantom_root, tmp_path, seed):
    cache = tmp_path / "cache"
    full = fit_segmenter(_cfg(phantom_root, tmp_path / "full", cache, steps=6, save_every=3))
    killed = tmp_path / "killed"
    fit_segmenter(_cfg(phantom_root, killed, cache, steps=6, save_every=3, stop_after=4))
    assert json.loads((killed / "checkpoint" / "state.json").read_text())["step"] == 3
    assert not (killed / "segmenter.safetensors").exists()
    fit_segmenter(_cfg(phantom_root, killed, cache, steps=6, save_every=3))
    a = load_file(str(full / "segmenter.safetensors"))
    b = load_file(str(killed / "segmenter.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    steps = [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]  # the row logged after the checkpoint was dropped and redone


def test_a_checkpoint_of_another_network_is_refused(phantom_root, tmp_path):
    cfg = _cfg(phantom_root, tmp_path / "run", tmp_path / "cache", steps=2, save_every=1)
    cfg.stop_after = 1
    fit_segmenter(cfg)
    other = _cfg(phantom_root, tmp_path / "run", tmp_path / "cache", model={"channels": (4, 16)})
    with pytest.raises(ValueError, match="differs"):
        fit_segmenter(other)


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="steps"):
        _cfg(tmp_path, tmp_path, tmp_path, steps=0)
    with pytest.raises(ValueError, match="follow from the data"):
        _cfg(tmp_path, tmp_path, tmp_path, model={"classes": ["lung"]})
    with pytest.raises(ValueError, match="loss must be one of"):
        _cfg(tmp_path, tmp_path, tmp_path, loss="dice")
    with pytest.raises(ValueError, match="balanced loss has none"):
        _cfg(tmp_path, tmp_path, tmp_path, loss="balanced", bright_weight=5.0)


def test_loss_skips_unannotated_and_empty_channels():
    logits = torch.full((1, 3, 4, 4, 4), -4.0)
    target = torch.zeros(1, 3, 4, 4, 4)
    target[0, 0, :2] = 1.0
    valid = torch.tensor([[True, True, False]])
    base = segmentation_loss(logits, target, valid)
    logits_bad = logits.clone()
    logits_bad[0, 2] = 4.0  # confidently wrong, but channel 2 is not annotated
    assert segmentation_loss(logits_bad, target, valid)["loss"] == pytest.approx(
        float(base["loss"])
    )
    # Dice counts only channel 0 (the one with foreground); channel 1 is taught by BCE
    perfect = logits.clone()
    perfect[0, 0, :2] = 8.0
    assert float(segmentation_loss(perfect, target, valid)["dice"]) < 0.01


def test_pos_weight_raises_the_cost_of_missed_foreground():
    logits = torch.full((1, 2, 4, 4, 4), -4.0)
    target = torch.zeros(1, 2, 4, 4, 4)
    target[0, :, 0, 0, 0] = 1.0
    valid = torch.ones(1, 2, dtype=torch.bool)
    plain = segmentation_loss(logits, target, valid)["bce"]
    weighted = segmentation_loss(logits, target, valid, pos_weight=torch.tensor([1.0, 50.0]))
    assert float(weighted["bce"]) > 10 * float(plain)


def test_voxel_weight_makes_the_bce_a_weighted_mean():
    logits = torch.zeros(1, 1, 2, 2, 2)
    logits[0, 0, 0, 0, 0] = -6.0  # one confidently wrong voxel
    target = torch.ones(1, 1, 2, 2, 2)
    valid = torch.ones(1, 1, dtype=torch.bool)
    plain = float(segmentation_loss(logits, target, valid)["bce"])
    weight = torch.ones(1, 1, 2, 2, 2)
    weight[0, 0, 0, 0, 0] = 20.0
    heavy = float(segmentation_loss(logits, target, valid, voxel_weight=weight)["bce"])
    per_voxel = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, target, reduction="none"
    ).flatten()
    expected = float((per_voxel * weight.flatten()).sum() / weight.sum())
    assert heavy == pytest.approx(expected) and heavy > 2 * plain


def test_fine_tuning_the_refine_head_keeps_the_unet(phantom_root, tmp_path, seed):
    cache = tmp_path / "cache"
    model = {"channels": (4, 8), "internal_scale": 0.5, "refine_channels": 4}
    start = fit_segmenter(_cfg(phantom_root, tmp_path / "start", cache, steps=2, model=model))
    tuned = fit_segmenter(
        _cfg(
            phantom_root,
            tmp_path / "tuned",
            cache,
            steps=3,
            model={},
            init=str(start),
            train_parts=("refine",),
            bright_weight=20.0,
        )
    )
    a, b = (
        load_file(str(start / "segmenter.safetensors")),
        load_file(str(tuned / "segmenter.safetensors")),
    )
    assert a.keys() == b.keys()
    for key in a:
        same = torch.equal(a[key], b[key])
        assert same == key.startswith("unet."), key
    assert load_segmenter(tuned)[1]["train"]["init"] == str(start)
    with pytest.raises(ValueError, match="drop model settings"):
        _cfg(phantom_root, tmp_path / "x", cache, init=str(start))
    with pytest.raises(ValueError, match="no refine head"):
        fit_segmenter(_cfg(phantom_root, tmp_path / "y", cache, steps=1, train_parts=("refine",)))
    with pytest.raises(ValueError, match="train_parts"):
        _cfg(phantom_root, tmp_path / "z", cache, train_parts=("encoder",))
    with pytest.raises(ValueError, match="input_shape"):
        fit_segmenter(
            _cfg(
                phantom_root,
                tmp_path / "w",
                cache,
                model={},
                init=str(start),
                input_shape=(16, 32, 64),
            )
        )


def test_augmentation_keeps_left_and_right():
    image = torch.zeros(2, 1, 8, 16, 32)
    image[..., :8] = 1.0  # low x only
    target = image.repeat(1, 3, 1, 1, 1)
    gen = torch.Generator().manual_seed(0)
    img2, tgt2 = augment_batch(image, target, gen)
    assert img2.shape == image.shape and tgt2.shape == target.shape
    low, high = tgt2[..., :16].sum(), tgt2[..., 16:].sum()
    assert low > 10 * max(float(high), 1.0)
    assert set(torch.unique(tgt2).tolist()) <= {0.0, 1.0}
    assert img2.min() >= 0.0 and img2.max() <= 1.0


def test_a_radiograph_folder_trains_a_film_segmenter_of_its_boxes(cxr_phantoms, tmp_path, seed):
    from rgct.data.cxr_samples import BOXED
    from rgct.data.film_targets import FilmSegmentationDataset

    root = cxr_phantoms["vindr"]
    cfg = _cfg(root, tmp_path / "film", tmp_path / "c", input_shape=(32, 32), steps=4)
    assert cfg.films and cfg.data_config().modality == "cxr"
    assert prepare_cache(cfg, workers=2) == len(
        FilmSegmentationDataset(root, "train", cfg.data_config())
    )
    fit_segmenter(cfg)
    net, meta = load_segmenter(tmp_path / "film")
    assert net.spatial_dims == 2 and net.classes == tuple(BOXED["vindr-cxr"])
    assert meta["data"]["modality"] == "cxr" and meta["data"]["input_shape"] == [32, 32]
    # the targets: each class's boxes, on the model grid
    ds = FilmSegmentationDataset(root, "train", cfg.data_config())
    item = next(ds[i] for i in range(len(ds)) if ds.films[ds.names[i]].boxes)
    film = ds.films[item["volume"]]
    k = net.classes.index(film.boxes[0].class_name)
    assert item["image"].shape == (1, 32, 32) and item["target"].shape == (len(net.classes), 32, 32)
    assert item["target"][k].any() and bool(item["valid"].all())
    # a radiograph folder with a CT grid (and the reverse) is refused by name
    with pytest.raises(ValueError, match="vindr-cxr folder"):
        fit_segmenter(_cfg(root, tmp_path / "bad", tmp_path / "c"))


def test_the_film_detector_learns_its_boxes_on_the_balanced_loss(cxr_phantoms, tmp_path, seed):
    root = cxr_phantoms["vindr"]
    cfg = _cfg(
        root,
        tmp_path / "det",
        tmp_path / "c",
        input_shape=(32, 32),
        steps=12,
        loss="balanced",
        lr=3e-3,
        model={"backbone": "cnn", "channels": [4, 8], "grid_stride": 4, "internal_scale": 1.0},
    )
    fit_segmenter(cfg)
    net, meta = load_segmenter(tmp_path / "det")
    assert net.config()["backbone"] == "cnn" and net.unet is None
    assert meta["train"]["loss"] == "balanced"
    rows = [
        json.loads(line) for line in (tmp_path / "det" / "metrics.jsonl").read_text().splitlines()
    ]
    assert rows[-1]["dice"] == 0.0 and rows[-1]["loss"] < rows[0]["loss"]


def test_film_augmentation_moves_image_and_target_together(seed):
    image = torch.zeros(2, 1, 32, 32)
    image[:, :, 10:14, 4:8] = 1.0
    target = (image > 0).float().expand(2, 3, 32, 32).clone()
    a, t = augment_batch(image, target, torch.Generator().manual_seed(0))
    assert a.shape == image.shape and t.shape == target.shape
    inside = a[:, 0][t[:, 0] > 0.5]
    assert inside.mean() > 0.8  # the box's pixels stay under the box's target
    assert (t[:, :, :, 16:] == 0).all()  # never flipped to the other side
