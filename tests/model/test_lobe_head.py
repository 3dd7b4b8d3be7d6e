"""The lobe head: per-lobe logits from intensity histograms, saved and loaded without pickle."""

from __future__ import annotations

import json

import pytest
import torch

from rgct.constants import CT_RATE_LABELS
from rgct.model.lobe_head import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    LobeHead,
    has_lobe_head,
    load_lobe_head,
    save_lobe_head,
)

HU = (-1000.0, 200.0)


def test_logits_per_mask_and_standardisation():
    head = LobeHead(HU, hidden=8)
    image = torch.rand(1, 1, 8, 16, 16)
    masks = torch.zeros(3, 1, 8, 16, 16)
    masks[0, :, :4], masks[1, :, 4:], masks[2] = 1, 1, 1
    feats = head.features(image, masks)
    assert feats.shape == (3, head.stats.num_features)
    head.set_standardisation(feats)
    assert torch.allclose(head.mean, feats.mean(0))
    assert (head.std > 0).all()
    assert head(image, masks).shape == (3, len(CT_RATE_LABELS))
    with pytest.raises(ValueError, match="hidden"):
        LobeHead(HU, hidden=0)


def test_save_load_round_trip_and_refusals(tmp_path):
    torch.manual_seed(0)
    head = LobeHead(HU, hidden=8).eval()
    head.set_standardisation(torch.rand(10, head.stats.num_features))
    assert not has_lobe_head(tmp_path)
    save_lobe_head(tmp_path, head, {"volumes": 3})
    assert has_lobe_head(tmp_path)
    loaded, meta = load_lobe_head(tmp_path)
    assert meta == {"volumes": 3}
    image, masks = torch.rand(1, 1, 8, 16, 16), torch.ones(2, 1, 8, 16, 16)
    assert torch.allclose(loaded(image, masks), head(image, masks))
    other = tmp_path / "copy"
    save_lobe_head(other, head)
    spec = json.loads((other / CONFIG_FILE).read_text())
    spec["labels"] = ["Something else"]
    (other / CONFIG_FILE).write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="labels differ"):
        load_lobe_head(other)
    (other / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not a lobe head config"):
        load_lobe_head(other)
    (other / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        load_lobe_head(other)
