"""The CUDA path (bf16 autocast), run only where a GPU is visible (``-m gpu``)."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_MODEL

from rgct.config import load_config
from rgct.inference import autocast_for
from rgct.model.builder import build_model


@pytest.mark.gpu
def test_tiny_model_trains_and_generates_in_bf16_on_cuda(seed):
    device = torch.device("cuda")
    model = build_model(load_config([TINY_MODEL])).to(device)
    d, h, w = model.input_shape
    image, mask = torch.rand(2, 1, d, h, w, device=device), torch.ones(2, 1, d, h, w, device=device)
    enc = model.tokenize(["Describe the findings in the lung."] * 2, ["No nodule.", "A nodule."])
    enc = {k: v.to(device) for k, v in enc.items()}
    with autocast_for(device):
        out = model(image, mask, **enc)
        assert torch.isfinite(out["loss"])
        out["loss"].backward()
        texts = model.generate(image, mask, ["Describe the findings in the lung."] * 2)
    assert len(texts) == 2
    assert any(p.grad is not None for p in model.projector.parameters())
