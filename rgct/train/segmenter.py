"""Training the segmenter on a dataset's own masks: a plain accelerate loop.

Each step draws its batch and its augmentation from generators seeded by ``(seed, step)``, so a
run killed after a checkpoint and resumed continues exactly as if it had never stopped.
Augmentation (small rotations, scaling, shifts and intensity jitter, no flips: a flip would turn
the right lung into the left) runs batched on the device, identically for image and targets.
The loss is sigmoid BCE over every annotated channel plus MONAI's soft Dice over the channels
that hold foreground in the sample (an empty finding channel is taught by BCE alone), or with
``loss: balanced`` the class-balanced BCE of :func:`rgct.model.losses.balanced_bce` (the
radiograph finding detector: a film's boxes are a few dozen of 16,384 pixels, and whether a
film holds a finding is decided by its strongest pixel).

Layout of ``out_dir``: ``metrics.jsonl`` (one row per ``log_every`` steps),
``checkpoint/`` (the latest resumable state: weights, ``optimizer.pt``, ``scheduler.pt``
read back with ``weights_only=True``, ``state.json``) and at the end ``segmenter.safetensors``
+ ``segmenter.json`` (:func:`rgct.model.segmenter.save_segmenter`).

Example::

    cfg = SegmenterTrainConfig(data_root="data/phantoms", out_dir="runs/seg", steps=300)
    fit_segmenter(cfg)                   # run again with the same cfg to resume
    model, meta = load_segmenter("runs/seg")
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from monai.losses import DiceLoss

from rgct.config import DataConfig
from rgct.constants import HU_WINDOW, METRICS_FILE, SEGMENT_CLASSES, SEGMENT_FINDINGS
from rgct.data.film_targets import FILM_LAYOUTS, FilmSegmentationDataset
from rgct.data.seg_targets import SegmentationDataset, SegTargetCache, split_volumes
from rgct.data.source_report import detect_layout
from rgct.data.truth import load_ground_truth
from rgct.files import atomic_dir, write_json, write_jsonl
from rgct.jsonl import iter_jsonl
from rgct.model.losses import balanced_bce
from rgct.model.segmenter import (
    Segmenter,
    build_segmenter,
    data_meta,
    load_segmenter,
    save_segmenter,
)

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
TRAIN_PARTS = ("unet", "cnn", "refine")
"""The segmenter's submodules a run can train (``SegmenterTrainConfig.train_parts``: those its
backbone has); its focal detector (:mod:`rgct.model.detector`) learns on crops in
:mod:`rgct.train.detector` and stays frozen here (batch-norm statistics included)."""
LOSSES = ("dice_bce", "balanced")
"""The segmenter's training losses (``SegmenterTrainConfig.loss``)."""
BRIGHT_HU = 130.0
"""Calcium-bright: the HU from which ``bright_weight`` weighs a voxel (Agatston's 130)."""


@dataclass
class SegmenterTrainConfig:
    """Settings of one segmenter training run (validated on creation)."""

    data_root: str
    """Dataset folder in the RadGenome layout (phantoms add finding truth), or a VinDr-CXR /
    ChestX-ray14 folder: a 2D segmenter of the boxable classes' boxes
    (:mod:`rgct.data.film_targets`; ``input_shape`` (H, W))."""
    out_dir: str
    """Run folder: metrics, resumable checkpoint, final weights."""
    split: str = "train"
    """Split whose volumes train."""
    steps: int = 300
    """Optimizer steps."""
    batch_size: int = 2
    """Volumes per step."""
    lr: float = 2e-3
    """Peak AdamW learning rate (linear warm-up, then cosine to 5 %)."""
    weight_decay: float = 1e-5
    warmup_steps: int = 20
    save_every: int = 50
    """Write the resumable checkpoint every this many steps (and at the end)."""
    log_every: int = 10
    """Append a metrics.jsonl row every this many steps."""
    num_workers: int = 0
    """DataLoader worker processes."""
    seed: int = 0
    max_volumes: int | None = None
    """Train on the first this many volumes of the split (sorted by name)."""
    cache_dir: str | None = None
    """Cache of preprocessed images and targets (default ``<data_root>/.rgct_cache``)."""
    input_shape: tuple[int, ...] = (64, 128, 128)
    """Model grid (D, H, W) in voxels; (H, W) pixels for a radiograph folder."""
    hu_window: tuple[float, float] = HU_WINDOW
    extra_hu_windows: tuple[tuple[float, float], ...] = ()
    """More HU windows, one input channel each."""
    augment: bool = True
    """Random affine and intensity jitter (never flips)."""
    loss: str = "dice_bce"
    """``dice_bce`` (``bce_weight`` x BCE + ``dice_weight`` x soft Dice) or ``balanced``
    (:func:`rgct.model.losses.balanced_bce` over the annotated channels; ``dice_weight``,
    ``bce_weight``, ``finding_pos_weight`` and ``bright_weight`` do not apply)."""
    dice_weight: float = 1.0
    bce_weight: float = 1.0
    finding_pos_weight: float = 1.0
    """BCE weight of foreground voxels in the finding channels (small findings are a few
    voxels in a million: without it their channels can collapse to all-background)."""
    stop_after: int | None = None
    """End this call after this many steps, keeping only the checkpoint of the last
    ``save_every`` (no final weights): time-sliced or preemptible runs continue on the next call."""
    max_seconds: float | None = None
    """Stop after this much training time in one call, saving the weights as at the end (the
    checkpoint allows resuming to ``steps``); None = no limit."""
    model: dict[str, Any] = field(default_factory=dict)
    """Segmenter keyword arguments (``channels``, ``internal_scale``, ``refine_channels`` ...)."""
    init: str | None = None
    """A segmenter folder to start from (its network; ``model`` must then be empty): a
    fine-tuning run. Its meta's finding thresholds are not carried over (calibrate again)."""
    train_parts: tuple[str, ...] = TRAIN_PARTS
    """The submodules that learn (``refine`` alone: the full-resolution head, on a frozen UNet)."""
    bright_weight: float = 1.0
    """Loss weight (BCE, every channel) of voxels brighter than :data:`BRIGHT_HU` in the input:
    the bone rims and calcium the region classifier reads as calcification."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "save_every", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.dice_weight < 0 or self.bce_weight < 0 or self.dice_weight + self.bce_weight == 0:
            raise ValueError("dice_weight and bce_weight must be >= 0 and not both 0")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {list(LOSSES)}, got {self.loss!r}")
        if self.loss == "balanced" and self.bright_weight != 1.0:
            raise ValueError("bright_weight weighs the dice_bce loss; the balanced loss has none")
        if self.finding_pos_weight <= 0:
            raise ValueError(f"finding_pos_weight must be > 0, got {self.finding_pos_weight}")
        if self.bright_weight <= 0:
            raise ValueError(f"bright_weight must be > 0, got {self.bright_weight}")
        self.train_parts = tuple(self.train_parts)
        if not self.train_parts or set(self.train_parts) - set(TRAIN_PARTS):
            raise ValueError(f"train_parts must be some of {TRAIN_PARTS}, got {self.train_parts}")
        if self.init is not None and self.model:
            raise ValueError("init takes the network of its segmenter folder: drop model settings")
        unknown = {"in_channels", "classes", "spatial_dims"} & set(self.model)
        if unknown:
            raise ValueError(f"model: {sorted(unknown)} follow from the data settings; drop them")
        self.input_shape = tuple(int(s) for s in self.input_shape)
        if len(self.input_shape) not in (2, 3):
            raise ValueError(f"input_shape must be (D, H, W) or (H, W), got {self.input_shape}")

    @property
    def films(self) -> bool:
        """Radiographs (a 2D ``input_shape``) rather than CT volumes."""
        return len(self.input_shape) == 2

    def data_config(self) -> DataConfig:
        """The preprocessing settings (shared with inference through the checkpoint meta)."""
        return DataConfig(
            root=self.data_root,
            modality="cxr" if self.films else "ct",
            input_shape=self.input_shape,
            hu_window=tuple(self.hu_window),
            extra_hu_windows=tuple(tuple(w) for w in self.extra_hu_windows),
            cache_dir=self.cache_dir,
        )


# --- loss and augmentation ---------------------------------------------------------------------

_DICE = DiceLoss(sigmoid=True, reduction="none", smooth_nr=1e-5, smooth_dr=1e-5)


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    dice_weight: float = 1.0,
    bce_weight: float = 1.0,
    pos_weight: torch.Tensor | None = None,
    voxel_weight: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """BCE over annotated channels + soft Dice over annotated channels holding foreground.

    Args:
        logits: (B, K, D, H, W) (or (B, K, H, W)).
        target: like ``logits``, {0, 1}.
        valid: (B, K) bool: the channel is annotated for that sample.
        pos_weight: (K,) BCE weight of foreground voxels per channel (None = 1).
        voxel_weight: (B, 1, D, H, W) BCE weight per voxel, all channels (None = 1); the BCE
            is then the weighted mean.

    Returns:
        ``{"loss", "bce", "dice"}`` scalars (a term with no channel to score is 0).
    """
    logits, target = logits.float(), target.float()
    valid = valid.float()
    spatial = (1,) * (logits.ndim - 2)
    pw = None if pos_weight is None else pos_weight.to(logits).view(1, -1, *spatial)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none", pos_weight=pw)
    if voxel_weight is None:
        bce = bce.flatten(2).mean(-1)
    else:
        w = voxel_weight.to(bce).flatten(2)  # (B, 1, N)
        bce = (bce.flatten(2) * w).sum(-1) / w.sum(-1).clamp(min=1e-6)
    bce = (bce * valid).sum() / valid.sum().clamp(min=1.0)
    present = valid * (target.flatten(2).amax(-1) > 0).float()  # (B, K)
    dice = _DICE(logits, target).reshape(present.shape)
    dice = (dice * present).sum() / present.sum().clamp(min=1.0)
    return {"loss": bce_weight * bce + dice_weight * dice, "bce": bce, "dice": dice}


def augment_batch(
    image: torch.Tensor, target: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random small affine (same for image and target) and intensity jitter; no flips.

    Args:
        image: (B, C, D, H, W) in [0, 1], or a radiograph batch (B, C, H, W).
        target: (B, K, D, H, W) {0, 1} (float), or (B, K, H, W).
        generator: CPU generator (the draws do not depend on the device).

    Returns:
        the augmented ``(image, target)``: image bilinear and clamped to [0, 1], target nearest.
    """
    b = image.shape[0]

    def u(*shape: int, scale: float) -> torch.Tensor:
        return (torch.rand(*shape, generator=generator) * 2 - 1) * scale

    if image.ndim == 4:  # a radiograph: in-plane rotation, scale and shift
        angle = u(b, scale=0.08)
        scale2 = 1.0 + u(b, 2, scale=0.05)
        cos, sin = angle.cos(), angle.sin()
        rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], 1)
        theta = torch.cat([rot * scale2[:, None, :], u(b, 2, 1, scale=0.06)], dim=2)  # (B, 2, 3)
        gain, offset = 1.0 + u(b, 1, 1, 1, scale=0.05), u(b, 1, 1, 1, scale=0.03)
        return _warp(image, target, theta, gain, offset, generator)
    angles = u(b, 3, scale=0.08)  # radians, about 4.5 degrees
    scale = 1.0 + u(b, 3, scale=0.05)
    shift = u(b, 3, scale=0.06)  # normalised coordinates (3 % of the size each way)
    cos, sin = angles.cos(), angles.sin()
    eye = torch.eye(3).expand(b, 3, 3)
    rx, ry, rz = eye.clone(), eye.clone(), eye.clone()
    rx[:, 1, 1], rx[:, 1, 2], rx[:, 2, 1], rx[:, 2, 2] = cos[:, 0], -sin[:, 0], sin[:, 0], cos[:, 0]
    ry[:, 0, 0], ry[:, 0, 2], ry[:, 2, 0], ry[:, 2, 2] = cos[:, 1], sin[:, 1], -sin[:, 1], cos[:, 1]
    rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1] = cos[:, 2], -sin[:, 2], sin[:, 2], cos[:, 2]
    theta = torch.cat([rz @ ry @ rx * scale[:, None, :], shift[:, :, None]], dim=2)  # (B, 3, 4)
    gain = 1.0 + u(b, 1, 1, 1, 1, scale=0.05)
    offset = u(b, 1, 1, 1, 1, scale=0.03)
    return _warp(image, target, theta, gain, offset, generator)


def _warp(
    image: torch.Tensor,
    target: torch.Tensor,
    theta: torch.Tensor,
    gain: torch.Tensor,
    offset: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The affine ``theta`` on image (bilinear) and target (nearest), then gain, offset and a
    little noise on the image."""
    noise_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    dev = image.device
    grid = F.affine_grid(theta.to(dev), list(image.shape), align_corners=False)
    image = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    target = F.grid_sample(
        target, grid.to(target.dtype), mode="nearest", padding_mode="zeros", align_corners=False
    )
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(noise_seed)).to(dev)
    image = (image * gain.to(dev) + offset.to(dev) + 0.01 * noise).clamp(0.0, 1.0)
    return image, target


# --- the loop ------------------------------------------------------------------------------------


class _StepBatches(torch.utils.data.Sampler):
    """Batch indices for steps ``start .. steps-1``, each drawn from ``rng([seed, step])``."""

    def __init__(self, n: int, batch: int, seed: int, start: int, steps: int) -> None:
        self.n, self.batch, self.seed, self.start, self.steps = n, batch, seed, start, steps

    def __len__(self) -> int:
        return max(self.steps - self.start, 0)

    def __iter__(self):
        for step in range(self.start, self.steps):
            rng = np.random.default_rng([self.seed, step])
            yield rng.choice(self.n, size=self.batch, replace=self.batch > self.n).tolist()


def _collate(items: list[dict]) -> dict:
    return {
        "image": torch.stack([i["image"] for i in items]),
        "target": torch.stack([i["target"] for i in items]),
        "valid": torch.stack([i["valid"] for i in items]),
        "volume": [i["volume"] for i in items],
    }


def _lr_lambda(cfg: SegmenterTrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))

    return f


def _save_checkpoint(
    out: Path, model: Segmenter, optimizer, scheduler, step: int, meta: dict
) -> None:
    with atomic_dir(out / CHECKPOINT_DIR) as tmp:
        save_segmenter(tmp, model, meta)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        write_json(tmp / "state.json", {"step": step})


def _load_checkpoint(out: Path, model: Segmenter, optimizer, scheduler) -> int:
    ck = out / CHECKPOINT_DIR
    saved, _ = load_segmenter(ck)
    if saved.config() != model.config():
        raise ValueError(
            f"{ck}: checkpoint network {saved.config()} differs from this run's {model.config()}"
        )
    model.load_state_dict(saved.state_dict())
    optimizer.load_state_dict(
        torch.load(ck / "optimizer.pt", weights_only=True, map_location="cpu")
    )
    scheduler.load_state_dict(torch.load(ck / "scheduler.pt", weights_only=True))
    return int(json.loads((ck / "state.json").read_text())["step"])


def _training_data(cfg: SegmenterTrainConfig) -> SegmentationDataset | FilmSegmentationDataset:
    layout = detect_layout(cfg.data_root)
    if (layout in FILM_LAYOUTS) != cfg.films:
        raise ValueError(
            f"{cfg.data_root} is a {layout} folder but input_shape is {list(cfg.input_shape)}: "
            "radiographs take (H, W), CT volumes (D, H, W)"
        )
    if cfg.films:
        return FilmSegmentationDataset(
            cfg.data_root, cfg.split, cfg.data_config(), max_films=cfg.max_volumes
        )
    names = split_volumes(cfg.data_root, cfg.split)
    if cfg.max_volumes is not None:
        names = names[: cfg.max_volumes]
    truth = load_ground_truth(cfg.data_root, cfg.split)
    cache_dir = cfg.cache_dir or str(Path(cfg.data_root) / ".rgct_cache")
    cache = SegTargetCache(cfg.data_config(), cache_dir, SEGMENT_CLASSES)
    return SegmentationDataset(cfg.data_root, names, truth, cache)


def _warm(args: tuple[SegmentationDataset, int]) -> None:
    dataset, i = args
    dataset[i]


def prepare_cache(cfg: SegmenterTrainConfig, workers: int = 1) -> int:
    """Fill the image and target cache of the training volumes with ``workers`` processes
    (films have no disk cache: the training process reads them into memory itself).

    Returns:
        the number of volumes (films).
    """
    dataset = _training_data(cfg)
    if cfg.films:
        return len(dataset)
    jobs = [(dataset, i) for i in range(len(dataset))]
    if workers <= 1:
        for job in jobs:
            _warm(job)
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            for _ in pool.imap_unordered(_warm, jobs, chunksize=4):
                pass
    return len(dataset)


def _init_network(cfg: SegmenterTrainConfig, data_cfg: DataConfig, classes) -> Segmenter:
    """The network of ``cfg.init``, checked against this run's data settings and classes."""
    model, meta = load_segmenter(cfg.init)
    if list(model.classes) != list(classes) or model.in_channels != data_cfg.in_channels:
        raise ValueError(
            f"init {cfg.init}: a segmenter of {len(model.classes)} classes and "
            f"{model.in_channels} input channels; this run needs {len(classes)} and "
            f"{data_cfg.in_channels}"
        )
    theirs, mine = meta.get("data") or {}, data_meta(data_cfg)
    differ = {k: (theirs[k], mine[k]) for k in theirs if k in mine and theirs[k] != mine[k]}
    if differ:
        raise ValueError(f"init {cfg.init}: other preprocessing (trained, this run): {differ}")
    return model.train()


def _trainable(model: Segmenter, parts: tuple[str, ...]) -> list[torch.nn.Parameter]:
    """Freeze every submodule not in ``parts``; the parameters that learn."""
    for name in TRAIN_PARTS:
        module = getattr(model, name)
        if module is not None:
            module.requires_grad_(name in parts)
    if model.focal is not None:
        model.focal.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(
            f"train_parts {list(parts)}: nothing to train (the network has no refine head)"
        )
    return trainable


def fit_segmenter(cfg: SegmenterTrainConfig) -> Path:
    """Train (or resume) a segmenter; returns ``out_dir`` holding ``segmenter.safetensors``.

    Args:
        cfg: run settings. A run folder with a ``checkpoint/`` resumes from it.

    Raises:
        ValueError: a checkpoint whose network differs from ``cfg.model``.
        DataError: no volumes in the split.
    """
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_cfg = cfg.data_config()
    torch.manual_seed(cfg.seed)
    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    dataset = _training_data(cfg)
    classes = dataset.classes if cfg.films else SEGMENT_CLASSES
    findings = classes if cfg.films else SEGMENT_FINDINGS  # every film channel is a finding
    if cfg.init is not None:
        model = _init_network(cfg, data_cfg, classes)
    else:
        model = build_segmenter(
            {
                "in_channels": data_cfg.in_channels,
                "classes": list(classes),
                "spatial_dims": len(cfg.input_shape),
                **cfg.model,
            }
        )
    trainable = _trainable(model, cfg.train_parts)
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    step = 0
    metrics = out / METRICS_FILE
    rows: list[dict] = []
    if (out / CHECKPOINT_DIR / "state.json").is_file():
        step = _load_checkpoint(out, model, optimizer, scheduler)
        logger.info("resumed %s at step %d", out, step)
        if metrics.is_file():  # keep the rows logged up to the checkpoint
            rows = [r for _, r in iter_jsonl(metrics) if r.get("step", 0) <= step]

    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=_StepBatches(len(dataset), cfg.batch_size, cfg.seed, step, cfg.steps),
        num_workers=cfg.num_workers,
        collate_fn=_collate,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )
    pos_weight = torch.tensor(
        [cfg.finding_pos_weight if c in findings else 1.0 for c in classes],
        device=accelerator.device,
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    raw = accelerator.unwrap_model(model)
    meta = {
        "data": data_meta(data_cfg),
        "train": {**asdict(cfg), "volumes": len(dataset)},
    }
    logger.info("training segmenter on %d volumes, steps %d..%d", len(dataset), step, cfg.steps)
    model.train()
    if raw.focal is not None:
        raw.focal.eval()
    t0, done, window = time.perf_counter(), 0, []
    for batch in loader:
        image = batch["image"].to(accelerator.device, non_blocking=True)
        target = batch["target"].to(accelerator.device, non_blocking=True).float()
        valid = batch["valid"].to(accelerator.device)
        if cfg.augment:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            image, target = augment_batch(image, target, gen)
        with accelerator.autocast():
            logits = model(image)
        weight = None
        if cfg.bright_weight != 1.0:
            lo, hi = data_cfg.hu_window
            bright = image[:, :1] >= (BRIGHT_HU - lo) / (hi - lo)
            weight = 1.0 + (cfg.bright_weight - 1.0) * bright.float()
        if cfg.loss == "balanced":
            balanced = balanced_bce(logits, target, valid)
            losses = {"loss": balanced, "bce": balanced, "dice": torch.zeros_like(balanced)}
        else:
            losses = segmentation_loss(
                logits, target, valid, cfg.dice_weight, cfg.bce_weight, pos_weight, weight
            )
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(losses["loss"])
        accelerator.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        step += 1
        done += 1
        window.append({k: float(v.detach()) for k, v in losses.items()})
        if step % cfg.log_every == 0 or step == cfg.steps:
            row = {
                "step": step,
                **{k: round(float(np.mean([w[k] for w in window])), 5) for k in window[0]},
                "lr": scheduler.get_last_lr()[0],
                "seconds": round(time.perf_counter() - t0, 2),
            }
            window = []
            rows.append(row)
            write_jsonl(metrics, rows)
            logger.info(
                "step %d loss %.4f (bce %.4f dice %.4f)", step, row["loss"], row["bce"], row["dice"]
            )
        if step % cfg.save_every == 0 or step == cfg.steps:
            _save_checkpoint(out, raw, optimizer, scheduler, step, meta)
        if cfg.stop_after is not None and done >= cfg.stop_after:
            return out
        if cfg.max_seconds is not None and time.perf_counter() - t0 >= cfg.max_seconds:
            logger.warning(
                "max_seconds %.0f reached at step %d of %d", cfg.max_seconds, step, cfg.steps
            )
            _save_checkpoint(out, raw, optimizer, scheduler, step, meta)
            break
    meta["train"]["seconds_last_call"] = round(time.perf_counter() - t0, 1)
    meta["train"]["steps_done"] = step
    save_segmenter(out, raw, meta)
    logger.info("wrote %s", out / "segmenter.safetensors")
    return out
