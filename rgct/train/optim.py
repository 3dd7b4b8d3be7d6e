"""AdamW with decay / no-decay groups and per-part learning rates; warmup + cosine."""

from __future__ import annotations

import math

import torch
from torch import nn

from rgct.config import TrainConfig


def _no_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over trainable parameters, grouped by part (lr) and by decay / no decay.

    Parts: ``encoder`` (encoder_lr or lr), ``projector`` (pooler, projector, evidence, dense:
    projector_lr) and ``lora`` (lr).
    """
    lrs = {"encoder": cfg.encoder_lr or cfg.lr, "projector": cfg.projector_lr, "lora": cfg.lr}
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = name.split(".", 1)[0]
        part = {
            "pooler": "projector",
            "evidence": "projector",
            "dense": "projector",
            "llm": "lora",
        }.get(part, part)
        if part not in lrs:
            raise ValueError(f"trainable parameter {name} belongs to no optimizer group")
        groups.setdefault((part, _no_decay(name, p)), []).append(p)
    if not groups:
        raise ValueError("no trainable parameters: check model.train_* and model.encoder.freeze")
    param_groups = [
        {
            "params": ps,
            "lr": lrs[part],
            "weight_decay": 0.0 if nd else cfg.weight_decay,
            "name": f"{part}{'_nd' if nd else ''}",
        }
        for (part, nd), ps in sorted(groups.items())
    ]
    # fused: one multi-tensor kernel per step, step counts kept on the parameters' device (the
    # default for-each / per-parameter paths read each step count back to the host)
    return torch.optim.AdamW(param_groups, betas=(0.9, 0.95), eps=1e-8, fused=True)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the peak lr, then cosine decay to ``min_lr_ratio`` x peak."""
    warmup, total, floor = cfg.warmup_steps, max(cfg.max_steps, 1), cfg.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        progress = min(1.0, (step - warmup) / max(total - warmup, 1))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
