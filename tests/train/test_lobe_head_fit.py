"""Fitting the lobe head (:mod:`rgct.train.lobe_head`) and the localiser reading it."""

from __future__ import annotations

import json

import pytest
import torch
from segmenter_double import truth_segmenter

from rgct.constants import CT_RATE_LABELS, LUNG_LOBES
from rgct.data.records import find_volumes
from rgct.generate.localize import Localizer, lobe_probabilities
from rgct.generate.masks import MaskProvider
from rgct.model.checkpoint import load_checkpoint
from rgct.model.lobe_head import LobeHead, has_lobe_head, load_lobe_head
from rgct.train.lobe_head import (
    collect_lobe_features,
    fit_lobe_head,
    fit_lobe_head_checkpoint,
    lobe_accuracy,
    lobe_targets,
)

NODULE = CT_RATE_LABELS.index("Lung nodule")


def test_lobe_targets_mark_the_lobe_of_each_lung_finding():
    record = {
        "findings": [
            {"label": "Lung nodule", "region": "lung", "lobe": "left lung lower lobe"},
            {"label": "Pleural effusion", "region": "pleura", "side": "left"},
            {"label": "Emphysema", "region": "lung", "lobe": None},
        ]
    }
    y = lobe_targets(record)
    assert y.shape == (5, len(CT_RATE_LABELS)) and y.sum() == 1
    assert y[LUNG_LOBES.index("left lung lower lobe"), NODULE] == 1


def test_fit_learns_a_lobe_signal_and_scores_it():
    torch.manual_seed(0)
    head = LobeHead((-1000.0, 200.0), hidden=16)
    n = head.stats.num_features
    groups = torch.arange(40).repeat_interleave(5)  # 40 volumes x 5 lobes
    feats = torch.rand(200, n)
    targets = torch.zeros(200, len(CT_RATE_LABELS))
    where = torch.randint(0, 5, (40,))
    rows = torch.arange(40) * 5 + where
    targets[rows, NODULE] = 1
    feats[rows, 3] += 2.0  # the lobe holding the nodule stands out in one histogram bin
    before = lobe_accuracy(head, feats, targets, groups)
    history = fit_lobe_head(head, feats, targets, epochs=150, lr=1e-2)
    assert history[-1] < history[0]
    assert lobe_accuracy(head, feats, targets, groups) == 1.0 > before
    assert lobe_accuracy(head, feats, torch.zeros_like(targets), groups) is None
    with pytest.raises(ValueError, match="targets"):
        fit_lobe_head(head, feats, targets[:, :3])
    with pytest.raises(ValueError, match="epochs"):
        fit_lobe_head(head, feats, targets, epochs=0)


def test_fit_checkpoint_copies_the_source_adds_the_head_and_the_predictor_loads_it(
    tiny_checkpoint, phantom_root, tmp_path
):
    out = tmp_path / "lobes"
    record = fit_lobe_head_checkpoint(
        tiny_checkpoint, phantom_root, out, epochs=3, hidden=8, device="cpu"
    )
    assert has_lobe_head(out) and not has_lobe_head(tiny_checkpoint)
    assert (out / "adapter_model.safetensors").is_file()  # the report model travels along
    assert record["volumes"] == len(find_volumes(phantom_root, "train"))
    assert record["lobes"] == 5 * record["volumes"] and record["missing_lobes"] == 0
    head, meta = load_lobe_head(out)
    assert meta["epochs"] == 3 and json.dumps(meta)
    from rgct.inference import Predictor

    assert Predictor.from_checkpoint(out, device="cpu").lobe_head is not None
    with pytest.raises(ValueError, match="must differ"):
        fit_lobe_head_checkpoint(out, phantom_root, out)
    bare = tmp_path / "bare"
    (bare / "train_preprocessed").mkdir(parents=True)
    with pytest.raises(ValueError, match="ground_truth.jsonl"):
        collect_lobe_features(head, out, bare)


class _FavourOneLobe(torch.nn.Module):
    """A lobe head double: the nodule logit is high under the ``k``-th mask only."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.register_buffer("anchor", torch.zeros(1))

    def forward(self, image, masks):
        out = torch.full((len(masks), len(CT_RATE_LABELS)), -5.0)
        out[self.k, NODULE] = 5.0
        return out


def test_the_localiser_places_a_label_where_the_lobe_head_finds_it(tiny_checkpoint, phantom_root):
    model, cfg = load_checkpoint(tiny_checkpoint)
    volume = find_volumes(phantom_root, "valid")[0]
    provider = MaskProvider(
        "predicted", cfg.data, phantom_root, truth_segmenter(phantom_root, volume, cfg)
    )
    masks, _ = provider.volume(volume)
    lobes = [lb for lb in LUNG_LOBES if lb in masks]
    assert len(lobes) >= 2
    image = torch.rand(cfg.data.in_channels, *cfg.data.input_shape)
    for k in (0, len(lobes) - 1):
        head = _FavourOneLobe(k)
        probs = lobe_probabilities(model, image[None], masks, head)
        assert list(probs) == lobes and probs[lobes[k]][NODULE] > 0.99
        provider.findings = []  # no segmenter component: the head decides
        same = Localizer(model, provider, head).identity()
        assert same == Localizer(model, provider, _FavourOneLobe(k)).identity()
        assert same != Localizer(model, provider).identity()  # held-out folders tell them apart
        with pytest.MonkeyPatch.context() as mp:  # and placement rules of another version
            mp.setattr("rgct.generate.localize.PLACEMENT_VERSION", -1)
            assert same != Localizer(model, provider, head).identity()
        assert (
            Localizer(model, provider, head).locations(volume, "lung", image)["Lung nodule"]
            == lobes[k]
        )


def test_fit_lobes_command(tiny_checkpoint, phantom_root, tmp_path, capsys):
    from rgct.cli import main

    out = tmp_path / "cli_lobes"
    args = ["classifier", "fit-lobes", "--checkpoint", str(tiny_checkpoint)]
    args += ["--data", str(phantom_root), "--out", str(out), "--epochs", "2", "--hidden", "4"]
    assert main([*args, "--max-volumes", "2", "--device", "cpu"]) == 0
    assert has_lobe_head(out) and load_lobe_head(out)[0].hidden == 4
    assert '"volumes": 2' in capsys.readouterr().out
