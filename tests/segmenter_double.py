"""Test doubles of the learned segmenter: one that "predicts" a phantom's true masks, and a
saved one whose every mask is the whole grid."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import torch
from torch import nn

from rgct.config import DataConfig
from rgct.constants import REGIONS, SEGMENT_CLASSES
from rgct.data.io import load_mask, load_volume
from rgct.data.layout import anatomy_mask_path, region_mask_path, volume_path
from rgct.data.transforms import preprocess
from rgct.model.segmenter import Segmenter, data_meta, save_segmenter


class TruthSegmenter(nn.Module):
    """A test double of :class:`rgct.model.segmenter.Segmenter` that "predicts" one volume's
    true masks (+-10 logits), so predicted-mask paths can be checked exactly."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.in_channels = 1
        self.classes = SEGMENT_CLASSES
        self.register_buffer("logits", logits)
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the module a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[None].expand(x.shape[0], -1, -1, -1, -1)


def truth_segmenter(root, volume, cfg, drop: tuple[str, ...] = ()) -> tuple[TruthSegmenter, dict]:
    vol = load_volume(volume_path(root, volume))
    arrays = {}
    for name in SEGMENT_CLASSES:
        path = (
            region_mask_path(root, volume, name)
            if name in REGIONS
            else anatomy_mask_path(root, volume, name)
        )
        if path.is_file() and name not in drop:
            arrays[name] = load_mask(path, vol)
    _, tensors = preprocess(vol, arrays, cfg.data)
    shape = tuple(cfg.data.input_shape)
    logits = torch.full((len(SEGMENT_CLASSES), *shape), -10.0)
    for k, name in enumerate(SEGMENT_CLASSES):
        if name in tensors:
            logits[k] = tensors[name][0] * 20.0 - 10.0
    return TruthSegmenter(logits), {"data": data_meta(cfg.data)}


def save_constant_segmenter(out: Path, empty: Collection[str]) -> Path:
    """Save into ``out`` a segmenter whose logits are a constant per class: +6 everywhere except
    ``empty`` and the finding channels (-6): every other region is the whole grid."""
    net = Segmenter(channels=(4, 8), refine_channels=1, internal_scale=0.5)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        bias = torch.full((len(SEGMENT_CLASSES),), -6.0)
        for k, name in enumerate(SEGMENT_CLASSES[:17]):
            bias[k] = -6.0 if name in empty else 6.0
        net.refine[1].bias.copy_(bias)
    save_segmenter(out, net, {"data": data_meta(DataConfig(input_shape=(8, 16, 16)))})
    return out
