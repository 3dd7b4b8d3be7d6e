"""Build a fresh RGCTModel from a config (checkpoint I/O: :mod:`rgct.model.checkpoint`)."""

from __future__ import annotations

import logging

import torch

from rgct.config import RGCTConfig
from rgct.model.llm import build_llm
from rgct.model.pretrained import load_pretrained_encoder
from rgct.model.rgct_model import RGCTModel, attach_lora

logger = logging.getLogger(__name__)

CONFIG_FILE = "rgct_config.yaml"
VISION_FILE = "vision.safetensors"
TINY_BASE_FILE = "llm_base.safetensors"
CARD_FILE = "README.md"
REQUIRED_FILES = (CONFIG_FILE, VISION_FILE, "adapter_config.json", "adapter_model.safetensors")


def build_model(cfg: RGCTConfig) -> RGCTModel:
    """A fresh model for ``cfg`` (vision side randomly initialised from ``train.seed``)."""
    llm, tokenizer = build_llm(cfg.model.llm, cfg.model.llm_cache_dir, seed=cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    model = RGCTModel(
        cfg.model,
        cfg.data.input_shape,
        attach_lora(llm, cfg.model),
        tokenizer,
        in_channels=cfg.data.in_channels,
        hu_window=cfg.data.hu_window,
    )
    if cfg.model.encoder_weights:  # a published pretrained encoder (rgct.model.pretrained)
        load_pretrained_encoder(
            model.encoder, cfg.model.encoder_weights, cfg.model.encoder_weights_format
        )
    if cfg.model.gradient_checkpointing:
        model.llm.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    return model
