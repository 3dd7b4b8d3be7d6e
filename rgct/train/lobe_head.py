"""Fit a checkpoint's lobe head (:mod:`rgct.model.lobe_head`) into a new checkpoint folder.

The head reads the intensity histograms under each of the five lobe masks of a volume and is
supervised by the lobes the volume's findings lie in (``ground_truth.jsonl``: phantoms, or
any dataset whose truth names a finding's ``lobe``). Features are computed once per volume
(no encoder: the histograms are parameter-free), then the head is fitted full-batch in
seconds. ``rgct classifier fit-lobes``; recipe stage kind ``fit_lobes``.

Example::

    fit_lobe_head_checkpoint("runs/grounded/model", "runs/locations13", "runs/lobes/model")
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rgct.config import load_saved_config
from rgct.constants import CT_RATE_LABELS, LUNG_LOBES
from rgct.data.io import load_volume
from rgct.data.layout import anatomy_mask_dir, normalize_split, volume_path
from rgct.data.transforms import preprocess
from rgct.data.truth import load_ground_truth
from rgct.files import atomic_dir
from rgct.model.checkpoint import CONFIG_FILE, check_checkpoint
from rgct.model.lobe_head import DEFAULT_HIDDEN, LobeHead, save_lobe_head
from rgct.train.classifier import _distinct

logger = logging.getLogger(__name__)

LOBE_REGION = "lung"
MASK_SOURCES = ("dataset",)


def lobe_targets(record: dict) -> np.ndarray:
    """(5, L) {0, 1}: label present in each lobe (:data:`LUNG_LOBES` order) of a truth record."""
    y = np.zeros((len(LUNG_LOBES), len(CT_RATE_LABELS)), np.float32)
    index = {label: j for j, label in enumerate(CT_RATE_LABELS)}
    for f in record.get("findings", []):
        lobe = f.get("lobe")
        if f.get("region") == LOBE_REGION and lobe in LUNG_LOBES and f.get("label") in index:
            y[LUNG_LOBES.index(lobe), index[f["label"]]] = 1.0
    return y


def _providers(sources, checkpoint: Path, cfg, data: Path, split: str, device):
    from rgct.generate.masks import build_mask_provider

    if not sources or len(set(sources)) != len(sources):
        raise ValueError(f"masks: give one or more distinct mask sources, got {list(sources)}")
    out = []
    for name in sources:
        src = str(anatomy_mask_dir(data, split)) if name == "dataset" else str(name)
        out.append((str(name), build_mask_provider(src, checkpoint, cfg, data, device)))
    return out


def collect_lobe_features(
    head: LobeHead,
    checkpoint: str | Path,
    data: str | Path,
    *,
    split: str = "train",
    max_volumes: int | None = None,
    masks: tuple[str, ...] | list[str] = MASK_SOURCES,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Histograms (N, F) under every lobe mask of the split's volumes, their targets (N, L) and
    group ids (N,): the lobes of one volume from one mask source share an id.

    ``masks``: lobe mask sources: ``dataset`` (the split's anatomy masks), ``predicted`` (the
    checkpoint's segmenter) or a folder of ``seg_<volume>/`` masks. A volume's missing lobe
    masks are left out (logged)."""
    checkpoint, data = Path(checkpoint), Path(data)
    split = normalize_split(split)
    truth = load_ground_truth(data, split)
    if not truth:
        raise ValueError(
            f"{data}: the lobe head learns from ground_truth.jsonl (each finding's lobe); "
            f"none for split {split!r}"
        )
    cfg = load_saved_config(check_checkpoint(checkpoint) / CONFIG_FILE)
    names = sorted(truth)[: max_volumes or None]
    providers = _providers(tuple(masks), checkpoint, cfg, data, split, device)
    feats, targets, groups, missing = [], [], [], 0
    for name in names:
        vol = load_volume(volume_path(data, name + ".nii.gz"))
        image, _ = preprocess(vol, None, cfg.data)
        image = image[None].to(device)
        y = torch.from_numpy(lobe_targets(truth[name]))
        for _, provider in providers:
            tensors, _ = provider.volume(name + ".nii.gz")
            have = [k for k, lb in enumerate(LUNG_LOBES) if lb in tensors]
            missing += len(LUNG_LOBES) - len(have)
            if not have:
                continue
            stack = torch.stack([tensors[LUNG_LOBES[k]] for k in have]).to(device)
            with torch.no_grad():
                feats.append(head.features(image, stack).cpu())
            targets.append(y[have])
            groups.append(torch.full((len(have),), len(groups)))
    if not feats:
        raise ValueError(f"{data} ({split}): no lobe masks found for any of {len(names)} volumes")
    if missing:
        logger.warning("%d lobe masks missing across %d volumes: left out", missing, len(names))
    info = {"volumes": len(names), "lobes": sum(len(f) for f in feats), "missing_lobes": missing}
    return torch.cat(feats), torch.cat(targets), torch.cat(groups), info


def fit_lobe_head(
    head: LobeHead,
    feats: torch.Tensor,
    targets: torch.Tensor,
    *,
    epochs: int = 400,
    lr: float = 3e-3,
    weight_decay: float = 0.05,
    seed: int = 0,
    max_pos_weight: float = 20.0,
) -> list[float]:
    """Full-batch AdamW on the per-lobe BCE (positives weighted up to ``max_pos_weight``, as a
    label sits in one lobe of five or fewer); returns the loss per epoch."""
    if feats.ndim != 2 or targets.shape != (len(feats), head.num_labels):
        raise ValueError(
            f"features must be (N, F) and targets (N, {head.num_labels}), "
            f"got {tuple(feats.shape)} and {tuple(targets.shape)}"
        )
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    torch.manual_seed(seed)
    feats, targets = feats.float(), targets.float()
    head.set_standardisation(feats)
    pos = targets.sum(0).clamp(min=1.0)
    pos_weight = ((len(targets) - pos) / pos).clamp(min=1.0, max=max_pos_weight)
    opt = torch.optim.AdamW(head.mlp.parameters(), lr=lr, weight_decay=weight_decay)
    history = []
    head.train()
    for _ in range(epochs):
        loss = F.binary_cross_entropy_with_logits(
            head.logits_from_features(feats), targets, pos_weight=pos_weight
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    head.eval()
    return history


def lobe_accuracy(
    head: LobeHead, feats: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor
) -> float | None:
    """Share of (group, label) findings whose most probable lobe of the group is one holding
    it (``groups``: :func:`collect_lobe_features`); None when there is no finding."""
    with torch.no_grad():
        logits = head.logits_from_features(feats.float())
    hits = []
    for g in groups.unique():
        rows = (groups == g).nonzero().flatten()
        y, lg = targets[rows], logits[rows]
        for j in (y.sum(0) > 0).nonzero().flatten():
            hits.append(bool(y[int(lg[:, j].argmax()), j] > 0))
    return sum(hits) / len(hits) if hits else None


def fit_lobe_head_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    split: str = "train",
    max_volumes: int | None = None,
    masks: tuple[str, ...] | list[str] = MASK_SOURCES,
    hidden: int = DEFAULT_HIDDEN,
    epochs: int = 400,
    lr: float = 3e-3,
    weight_decay: float = 0.05,
    seed: int = 0,
    device: str = "auto",
) -> dict:
    """Copy ``checkpoint`` to ``out`` with a lobe head fitted on ``data``; returns the record
    (also in ``OUT/lobe_head.json``)."""
    from rgct.inference import pick_device

    src, out = _distinct(checkpoint, out)
    dev = pick_device(device)
    cfg = load_saved_config(check_checkpoint(src) / CONFIG_FILE)
    torch.manual_seed(seed)
    head = LobeHead(tuple(cfg.data.hu_window), hidden=hidden).to(dev)
    t0 = time.perf_counter()
    feats, targets, groups, info = collect_lobe_features(
        head, src, data, split=split, max_volumes=max_volumes, masks=masks, device=dev
    )
    t1 = time.perf_counter()
    history = fit_lobe_head(
        head,
        feats.to(dev),
        targets.to(dev),
        epochs=epochs,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
    )
    record = {
        "from": str(src),
        "data": str(data),
        "split": split,
        "masks": list(masks),
        **info,
        "positives": {
            CT_RATE_LABELS[j]: int(n) for j, n in enumerate(targets.sum(0).tolist()) if n
        },
        "hidden": hidden,
        "epochs": epochs,
        "lr": lr,
        "weight_decay": weight_decay,
        "seed": seed,
        "train_lobe_accuracy": lobe_accuracy(head, feats.to(dev), targets.to(dev), groups.to(dev)),
        "feature_seconds": round(t1 - t0, 1),
        "fit_seconds": round(time.perf_counter() - t1, 1),
        "loss": [round(history[0], 5), round(history[-1], 5)],
    }
    with atomic_dir(out) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        save_lobe_head(tmp, head.cpu(), record)
    logger.info(
        "lobe head on %d lobes of %d volumes: loss %.4f -> %.4f; wrote %s",
        info["lobes"],
        info["volumes"],
        history[0],
        history[-1],
        out,
    )
    return record
