"""Projectors from visual features to the LLM's hidden size, by name."""

from __future__ import annotations

from torch import nn


def build_projector(name: str, in_dim: int, out_dim: int) -> nn.Module:
    """'linear' or 'mlp' (Linear -> GELU -> Linear), mapping (..., in_dim) -> (..., out_dim)."""
    if in_dim < 1 or out_dim < 1:
        raise ValueError(f"projector dims must be >= 1, got {in_dim} -> {out_dim}")
    if name == "linear":
        return nn.Linear(in_dim, out_dim)
    if name == "mlp":
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
    raise ValueError(f"model.projector={name!r} is unknown; choose 'linear' or 'mlp'")
