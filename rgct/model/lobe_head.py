"""The lobe head: which lung lobe holds each finding, from the intensity statistics of each lobe.

The region classifier is trained on whole regions ("lung"); run under a single lobe it is out of
its training distribution: measured on 28 development phantoms (seed 31) it placed none of 10
lung nodules right and put 10 of its 12 misplaced findings in the right middle lobe (lobe
accuracy 0.56 over all lung findings). The lobe head is
trained where it is used: the parameter-free region intensity histograms
(:class:`rgct.model.region_classifier.RegionIntensityStats`) under each lobe mask, standardised,
then a one-hidden-layer MLP with one logit per CT-RATE label, supervised by the lobe each
finding lies in (``ground_truth.jsonl``: ``findings[].lobe``). Fitted on the lobes of 200
phantoms of seed 13, its argmax over the five lobes of 28 development phantoms of seed 31 (the
dataset's lobe masks) places 22 of 26 (label, volume) lung findings (the classifier under
each lobe: 15 of 27).

It depends on the image and the lobe masks only (not on the encoder), so it is a companion of a
checkpoint like its segmenter: ``lobe_head.safetensors`` (weights and standardisation, no
pickle) and ``lobe_head.json`` (its settings and how it was fitted). The localiser
(:mod:`rgct.generate.localize`) reads it when the checkpoint has one.

Example::

    head = LobeHead(hu_window=(-1000.0, 200.0))
    logits = head(torch.rand(1, 1, 32, 64, 64), torch.ones(5, 1, 32, 64, 64))   # (5, 18)
    save_lobe_head("runs/model", head, {"volumes": 200})
    head2, meta = load_lobe_head("runs/model")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rgct.constants import CT_RATE_LABELS
from rgct.files import atomic_path, write_json
from rgct.model.region_classifier import RegionIntensityStats

WEIGHTS_FILE = "lobe_head.safetensors"
CONFIG_FILE = "lobe_head.json"
FORMAT_VERSION = 1
DEFAULT_HIDDEN = 64


class LobeHead(nn.Module):
    """Per-lobe label logits from the intensity histograms under each lobe mask.

    Args:
        hu_window: (low, high) HU of the image's first channel (the model's ``data.hu_window``).
        num_labels: outputs (CT-RATE labels).
        hidden: width of the hidden layer.
        dropout: dropout after it (training only).
    """

    def __init__(
        self,
        hu_window: tuple[float, float],
        num_labels: int = len(CT_RATE_LABELS),
        hidden: int = DEFAULT_HIDDEN,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if hidden < 1 or num_labels < 1:
            raise ValueError(
                f"lobe head: hidden and num_labels must be >= 1, got {hidden}, {num_labels}"
            )
        self.stats = RegionIntensityStats(tuple(float(v) for v in hu_window))
        n = self.stats.num_features
        self.hidden, self.num_labels, self.dropout = int(hidden), int(num_labels), float(dropout)
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("std", torch.ones(n))
        self.mlp = nn.Sequential(
            nn.Linear(n, self.hidden),
            nn.ReLU(),
            nn.Dropout(self.dropout),
            nn.Linear(self.hidden, num_labels),
        )

    def features(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Histograms (R, F) of ``image`` (1, C, D, H, W) under R masks (R, 1, D, H, W)."""
        return self.stats(image, masks)

    def set_standardisation(self, feats: torch.Tensor) -> None:
        """Standardise inputs by the mean and spread of training features (N, F)."""
        self.mean.copy_(feats.mean(0))
        self.std.copy_(feats.std(0).clamp(min=1e-4))

    def logits_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        return self.mlp((feats - self.mean) / self.std)

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """(R, L) logits for ``image`` (1, C, D, H, W) under R lobe masks (R, 1, D, H, W)."""
        return self.logits_from_features(self.features(image, masks))

    def config(self) -> dict[str, Any]:
        return {
            "hu_window": list(self.stats.hu_window),
            "num_labels": self.num_labels,
            "hidden": self.hidden,
            "dropout": self.dropout,
        }


def has_lobe_head(folder: str | Path) -> bool:
    return (Path(folder) / WEIGHTS_FILE).is_file()


def save_lobe_head(out_dir: str | Path, head: LobeHead, meta: dict[str, Any] | None = None) -> Path:
    """Write ``lobe_head.safetensors`` and ``lobe_head.json`` into ``out_dir`` (atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in head.state_dict().items()
    }
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    write_json(
        out / CONFIG_FILE,
        {
            "format": FORMAT_VERSION,
            "labels": list(CT_RATE_LABELS),
            "config": head.config(),
            "meta": dict(meta or {}),
        },
    )
    return out


def load_lobe_head(path: str | Path, device: str | torch.device = "cpu") -> tuple[LobeHead, dict]:
    """Read a folder written by :func:`save_lobe_head`; returns ``(head in eval mode, meta)``.

    Raises:
        FileNotFoundError: the folder lacks one of the two files.
        ValueError: an unreadable config, other labels, or weights that do not fit it.
    """
    folder = Path(path)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder}: no {name} (a lobe head is two files)")
    try:
        spec = json.loads((folder / CONFIG_FILE).read_text())
        cfg = spec["config"]
        head = LobeHead(
            tuple(cfg["hu_window"]),
            int(cfg["num_labels"]),
            int(cfg["hidden"]),
            float(cfg["dropout"]),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{folder / CONFIG_FILE}: not a lobe head config ({e})") from e
    if spec.get("labels") != list(CT_RATE_LABELS):
        raise ValueError(
            f"{folder / CONFIG_FILE}: its labels differ from this version's CT-RATE labels"
        )
    try:
        head.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
    except RuntimeError as e:
        raise ValueError(f"{folder / WEIGHTS_FILE}: weights do not fit its config: {e}") from e
    return head.to(device).eval(), dict(spec.get("meta") or {})
