"""A test double of the learned segmenter that "predicts" a phantom's true masks."""

from __future__ import annotations

import torch
from torch import nn

from rgct.constants import REGIONS, SEGMENT_CLASSES
from rgct.data.io import load_mask, load_volume
from rgct.data.layout import anatomy_mask_path, region_mask_path, volume_path
from rgct.data.transforms import preprocess
from rgct.model.segmenter import data_meta


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
