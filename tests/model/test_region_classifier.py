"""The region classifier (:mod:`rgct.model.region_classifier`): intensity statistics
(``model.region_stats``), cached features, fitting its heads, ``rgct classifier fit``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, TINY_TRAIN, tiny_overrides

from rgct.config import load_config
from rgct.constants import CT_RATE_LABELS
from rgct.model.builder import build_model
from rgct.model.checkpoint import load_checkpoint, load_parts, save_checkpoint
from rgct.model.pooling import RegionPooler, erode_mask
from rgct.model.region_classifier import (
    FILTERS,
    VALUE_EDGES_HU,
    RegionFeatures,
    RegionIntensityStats,
    add_region_stats,
    collect_region_features,
    collect_region_probabilities,
    feature_probabilities,
    fit_region_classifier,
    unique_images,
)

REPO = Path(__file__).resolve().parents[2]
WINDOW = (-1000.0, 200.0)


def _units(hu: torch.Tensor) -> torch.Tensor:
    """HU -> the image's window units (what the model is fed)."""
    return (hu.clamp(*WINDOW) - WINDOW[0]) / (WINDOW[1] - WINDOW[0])


def _block(stats: RegionIntensityStats, feats: torch.Tensor, name: str) -> torch.Tensor:
    """The log1p(count)/5 block of filter ``name`` -> counts."""
    start = 0
    for f in FILTERS:
        n = stats.bins[f]
        if f == name:
            return torch.expm1(feats[:, start + n : start + 2 * n] * 5.0)
        start += 2 * n
    raise KeyError(name)


def test_histogram_counts_the_voxels_under_the_mask():
    stats = RegionIntensityStats(WINDOW)
    hu = torch.full((1, 1, 12, 16, 16), -850.0)
    hu[0, 0, 2:4, 2:4, 2:4] = -975.0  # 8 low-attenuation voxels inside the mask
    hu[0, 0, 8, 12, 12] = 180.0  # one calcium voxel outside it
    mask = torch.zeros(1, 1, 12, 16, 16)
    mask[0, 0, :6] = 1.0
    feats = stats(_units(hu), mask)
    assert feats.shape == (1, stats.num_features)
    counts = _block(stats, feats, "value")[0]
    edges = [e for e in VALUE_EDGES_HU if WINDOW[0] < e < WINDOW[1]]
    assert counts.sum().round() == mask.sum()
    assert counts[edges.index(-970)].round() == 8  # (-990, -970]
    assert counts[edges.index(-850)].round() == mask.sum() - 8  # (-870, -850]
    assert counts[-1].round() == 0  # the calcium voxel lies outside the region
    # the last feature is the region size
    assert torch.isclose(feats[0, -1], torch.log(mask.sum()) / 10.0)
    # erosion: the 2x2x2 dark block is thinner than a 3-box, so the local minimum spreads it
    assert _block(stats, feats, "min3")[0][edges.index(-970)].round() > 8


def test_one_image_many_masks_matches_one_by_one_and_bad_input_is_named():
    stats = RegionIntensityStats(WINDOW)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 1, 8, 16, 16, generator=g)
    masks = (torch.rand(3, 1, 8, 16, 16, generator=g) > 0.5).float()
    together = stats(image, masks)
    apart = torch.cat([stats(image, masks[i : i + 1]) for i in range(3)])
    assert torch.allclose(together, apart, atol=1e-6)
    # a batch repeating volumes: filters once per distinct volume, same features per row
    other = torch.rand(1, 1, 8, 16, 16, generator=g)
    batch = torch.cat([image, other, image])
    uniq, inverse = unique_images(batch)
    assert uniq.shape[0] == 2 and inverse.tolist() == [0, 1, 0]
    assert torch.equal(uniq[inverse], batch)
    rows = torch.cat([stats(batch[i : i + 1], masks[i : i + 1]) for i in range(3)])
    assert torch.allclose(stats(batch, masks), rows, atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        stats(image, torch.zeros(1, 1, 8, 16, 16))
    with pytest.raises(ValueError, match="same size"):
        stats(image, masks[:, :, :4])
    with pytest.raises(ValueError, match="2 images for 3 masks"):
        stats(image.expand(2, -1, -1, -1, -1), masks)
    with pytest.raises(ValueError, match="hu_window"):
        RegionIntensityStats((200.0, -1000.0))


def test_unique_images_never_merges_rows_that_only_share_a_fingerprint():
    """A permutation has the same sum, sum of squares and maximum: proposed, not confirmed."""
    a = torch.arange(24, dtype=torch.float32).reshape(1, 1, 2, 3, 4)
    b = a.flip(-1)
    batch = torch.cat([a, b, b, a, b])
    uniq, inverse = unique_images(batch)
    assert torch.equal(uniq[inverse], batch)
    assert inverse[0] == inverse[3] and inverse[0] != inverse[1]
    assert unique_images(a)[0].shape[0] == 1 and unique_images(batch[:0])[0].shape[0] == 0


def test_stats_head_starts_at_zero_and_needs_the_image():
    torch.manual_seed(0)
    plain = RegionPooler(16, num_global_tokens=1, num_labels=len(CT_RATE_LABELS))
    feats, mask = torch.randn(2, 16, 2, 4, 4), torch.ones(2, 1, 8, 16, 16)
    image = torch.rand(2, 1, 8, 16, 16)
    _, _, before = plain(feats, mask)
    plain.add_region_stats(WINDOW, len(CT_RATE_LABELS))
    _, _, after = plain(feats, mask, image)
    assert torch.allclose(before, after)
    with pytest.raises(ValueError, match="needs the image"):
        plain(feats, mask)
    with pytest.raises(ValueError, match="pass them"):
        plain.classify(torch.randn(2, 2, 16))


def test_erode_mask_takes_one_voxel_off_every_face_and_keeps_thin_regions():
    cube = torch.zeros(2, 1, 7, 7, 7)
    cube[0, :, 1:6, 1:6, 1:6] = 1
    cube[1, :, 3, 3, 3] = 1  # one voxel: erosion would empty it, so it stays
    eroded = erode_mask(cube, 1)
    assert eroded[0].sum() == 27 and eroded[0, 0, 2:5, 2:5, 2:5].all()
    assert torch.equal(eroded[1], cube[1])
    assert torch.equal(erode_mask(cube, 0), cube)
    whole = torch.ones(1, 1, 4, 4, 4)  # the image border does not erode
    assert torch.equal(erode_mask(whole, 2), whole)
    film = torch.zeros(1, 1, 8, 8)
    film[..., 2:7, 1:6] = 1
    assert erode_mask(film, 1).sum() == 9  # 2D: a square element
    with pytest.raises(ValueError, match=">= 0 voxels"):
        erode_mask(cube, -1)


def test_a_source_head_reads_the_eroded_mask_and_the_tokens_read_it_as_given():
    """``source_erosion``: the mask source's own head classifies the region's core; the main
    head and the language model's region tokens read the mask as given."""
    torch.manual_seed(0)
    pool = RegionPooler(16, num_global_tokens=1, num_labels=len(CT_RATE_LABELS), source_erosion=1)
    pool.add_region_stats(WINDOW, len(CT_RATE_LABELS))
    pool.add_source_head("predicted")
    torch.nn.init.normal_(pool.source_heads["predicted"]["stats_head"][-1].weight)
    pool.eval()  # no dropout
    feats, image = torch.randn(1, 16, 4, 8, 8), torch.rand(1, 1, 8, 16, 16)
    mask = torch.zeros(1, 1, 8, 16, 16)
    mask[..., 1:7, 2:14, 2:14] = 1
    core = erode_mask(mask, 1)
    glob, region, by_head = pool(feats, mask, image, "predicted")
    _, as_given = pool.pool(feats, mask)
    _, inside = pool.pool(feats, core)
    assert torch.equal(region, as_given)  # the tokens: the mask as given
    expected = pool.classify(inside, pool.stats(image, core), "predicted")
    assert torch.allclose(by_head, expected, atol=1e-6)
    assert not torch.allclose(
        by_head, pool.classify(as_given, pool.stats(image, mask), "predicted")
    )
    _, _, by_main = pool(feats, mask, image)  # the main head: as given
    assert torch.allclose(by_main, pool.classify(as_given, pool.stats(image, mask)))
    assert torch.equal(pool.source_mask(mask, "folder:x"), mask)  # no head of its own
    with pytest.raises(ValueError, match="source_erosion must be >= 0"):
        RegionPooler(16, source_erosion=-1)


@pytest.fixture(scope="module")
def stats_model(phantom_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("stats") / "run"
    cfg = load_config([TINY_MODEL, TINY_TRAIN], tiny_overrides(phantom_root, out))
    model = build_model(cfg).eval()
    add_region_stats(model)
    return model, cfg


def test_region_stats_model_trains_generates_and_round_trips(stats_model, tmp_path):
    model, cfg = stats_model
    assert cfg.model.region_stats
    d, h, w = model.input_shape
    image, mask = torch.rand(2, 1, d, h, w), torch.ones(2, 1, d, h, w)
    with torch.no_grad():
        model.pooler.stats_head[-1].weight.normal_()  # make the head matter
    labels = torch.zeros(2, len(CT_RATE_LABELS))
    out = model(image, mask, aux_labels=labels, has_labels=torch.ones(2), objective="aux")
    assert torch.isfinite(out["loss"]) and out["aux_loss"] > 0
    prompts = ["Describe the findings in the lung."] * 2
    assert len(model.generate(image, mask, prompts)) == 2
    assert len(model.generate(image, mask, prompts, blind=True)) == 2
    save_checkpoint(model, cfg, tmp_path / "ckpt")
    loaded, loaded_cfg = load_checkpoint(tmp_path / "ckpt")
    assert loaded_cfg.model.region_stats and loaded.pooler.stats_head is not None
    with torch.no_grad():
        a = model.visual_tokens(model.encode_image(image), mask, image)[1]
        b = loaded.visual_tokens(loaded.encode_image(image), mask, image)[1]
    assert torch.allclose(a, b, atol=1e-5)
    # a model built without the head is told which switch loads these weights
    plain_cfg = load_config([TINY_MODEL, TINY_TRAIN], tiny_overrides(cfg.data.root, tmp_path / "p"))
    with pytest.raises(ValueError, match="set model.region_stats=true"):
        load_parts(build_model(plain_cfg), tmp_path / "ckpt", ["pooler"])


def test_fit_region_classifier_learns_the_heads_and_nothing_else(stats_model):
    model, _ = stats_model
    g = torch.Generator().manual_seed(1)
    n, c = 256, model.pooler.norm.normalized_shape[0]
    stats = torch.rand(n, model.pooler.stats.num_features, generator=g)
    labels = np.zeros((n, len(CT_RATE_LABELS)), bool)
    labels[:, 7] = stats[:, 3].numpy() > 0.5  # a label the histograms alone decide
    feats = RegionFeatures(torch.randn(n, 2, c, generator=g), stats, labels, [("v", "r")] * n)
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    model.pooler.requires_grad_(False)
    history = fit_region_classifier(model, feats, epochs=150, lr=3e-3)
    assert history[-1] < 0.5 * history[0]
    probs = feature_probabilities(model, feats)
    assert ((probs[:, 7] > 0.5) == labels[:, 7]).mean() > 0.95
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in encoder_before.items())
    assert not any(p.requires_grad for p in model.pooler.parameters())  # flags restored
    with pytest.raises(ValueError, match="disagree on region statistics"):
        fit_region_classifier(model, RegionFeatures(feats.region, None, labels, feats.keys))
    with pytest.raises(ValueError, match="positive"):
        fit_region_classifier(model, feats, epochs=0)


def test_collected_features_give_the_model_probabilities(stats_model, phantom_root):
    model, cfg = stats_model
    feats = collect_region_features(model, cfg, phantom_root, "train", max_volumes=2)
    assert feats.stats is not None and len(feats.keys) == feats.region.shape[0]
    assert len({v for v, _ in feats.keys}) == 2
    probs, labels, keys = collect_region_probabilities(
        model, cfg, phantom_root, "train", max_volumes=2
    )
    volume, region = keys[0]
    item_probs = probs[0]
    assert keys == feats.keys and labels.shape == probs.shape
    assert np.allclose(feature_probabilities(model, feats), probs, atol=1e-6)
    assert item_probs.shape == (len(CT_RATE_LABELS),) and volume.startswith("train")
    assert region
    # with the VQA tasks: every mask any prompt uses (whole scan, lobes...), each once
    every = collect_region_features(
        model, cfg, phantom_root, "train", max_volumes=2, tasks=("region_report", "disorders")
    )
    assert len(set(every.keys)) == len(every.keys) == len(feats.keys) + 2
    whole = [i for i, (_, r) in enumerate(every.keys) if r == "whole scan"]
    assert len(whole) == 2
    for i in whole:  # the whole scan holds every finding of its volume
        in_regions = [
            feats.labels[j] for j, (v, _) in enumerate(feats.keys) if v == every.keys[i][0]
        ]
        assert (every.labels[i] == np.any(in_regions, axis=0)).all()


def _fit(checkpoint: Path, data: Path, out: Path, *extra: str) -> int:
    from rgct.cli import main

    return main(
        ["classifier", "fit", "--checkpoint", str(checkpoint), "--data", str(data)]
        + ["--out", str(out), *extra]
    )


def test_classifier_fit_command_writes_a_new_checkpoint(tiny_checkpoint, phantom_root, tmp_path):
    out = tmp_path / "fitted"
    assert _fit(tiny_checkpoint, phantom_root, out, "--epochs", "3") == 0
    model, cfg = load_checkpoint(out)
    assert cfg.model.region_stats and model.pooler.stats_head is not None
    record = json.loads((out / "region_head.json").read_text())
    assert record["epochs"] == 3 and len(record["loss"]) == 3 and record["regions"] > 0
    assert "disorders" in record["tasks"]  # every mask a prompt uses
    with pytest.raises(ValueError, match="must differ"):
        _fit(out, phantom_root, out)


def test_training_with_region_stats_keeps_a_frozen_head_and_warns_about_jitter(
    phantom_root, tmp_path, caplog
):
    from rgct.train.loop import train

    cfg = load_config(
        [TINY_MODEL, TINY_TRAIN],
        tiny_overrides(
            phantom_root,
            tmp_path / "run",
            "model.region_stats=true",
            "model.train_pooler=false",
            "data.augment=true",
            "train.max_steps=2",
            "train.eval_every=0",
        ),
    )
    with caplog.at_level("WARNING", logger="rgct.train.loop"):
        out = train(cfg)
    assert "data.augment=false" in caplog.text
    model, saved = load_checkpoint(out)
    assert saved.model.region_stats and model.pooler.stats_head is not None
    # the head was frozen: still at its zero initialisation
    assert not model.pooler.stats_head[-1].weight.any()
