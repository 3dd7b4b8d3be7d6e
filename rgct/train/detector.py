"""Training the segmenter's focal detector (:mod:`rgct.model.detector`) on crops: a plain
accelerate loop.

The detector learns where a small finding is (lung nodules by default) from the dataset's own
finding truth (``ground_truth.jsonl``: the phantoms', or any dataset that paints its findings the
same way, :mod:`rgct.data.seg_targets`). The segmenter it joins stays as it is (its UNet and
refinement head are not touched): a run starts from a segmenter folder (``init``: a segmenter,
or a model folder that holds one), adds the detector for ``classes`` and trains only the detector.

Each step draws ``crops`` crops of ``crop_shape`` voxels from generators seeded by
``(seed, step)``: every other crop is centred near a voxel of a finding (jittered by up to
``jitter`` voxels in-plane and half that across slices), the others lie anywhere in a random
volume; the batch is mirrored left-right half of the time (a nodule looks the same on either
side: which lobe holds it comes from the lobe masks, not from the detector). The target of a
detector cell is 1 when any voxel of the finding lies in it (the finding's voxel map max-pooled
to the detector's grid); the loss is BCE with ``pos_weight`` on those cells (a nodule is a few
cells among a quarter million). A run killed after a checkpoint resumes exactly.

Layout of ``out_dir``: ``metrics.jsonl``, ``checkpoint/`` (detector weights, ``optimizer.pt``,
``scheduler.pt`` read back with ``weights_only=True``, ``state.json``) and at the end the whole
segmenter with its detector (``segmenter.safetensors`` + ``segmenter.json``; the detector's
classes lose the init's calibrated thresholds: :func:`calibrate_detector` sets new ones).

Example::

    cfg = DetectorTrainConfig(data_root="runs/seg_synth", init="rgct/assets/demo_model",
                              out_dir="runs/detector", steps=1500)
    fit_detector(cfg)                               # run again to resume
    calibrate_detector("runs/detector", "runs/calibration_synth", max_volumes=60)
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from rgct.constants import METRICS_FILE, SEGMENT_FINDINGS
from rgct.data.io import DataError
from rgct.data.seg_targets import SegTargetCache, split_volumes
from rgct.data.truth import load_ground_truth
from rgct.files import atomic_dir, write_json, write_jsonl
from rgct.jsonl import iter_jsonl
from rgct.model.detector import STRIDE
from rgct.model.segmenter import (
    Segmenter,
    build_segmenter,
    data_config_from_meta,
    load_segmenter,
    save_segmenter,
)

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
DETECTOR_WEIGHTS = "detector.safetensors"
DEFAULT_CLASSES = ("Lung nodule",)


@dataclass
class DetectorTrainConfig:
    """Settings of one detector training run (validated on creation)."""

    data_root: str
    """Dataset folder in the RadGenome layout with finding truth (``ground_truth.jsonl``)."""
    init: str
    """The segmenter the detector joins: a segmenter folder or a model folder holding one."""
    out_dir: str
    """Run folder: metrics, resumable checkpoint, the segmenter with its detector."""
    classes: tuple[str, ...] = DEFAULT_CLASSES
    """Finding channels the detector takes over."""
    split: str = "train"
    steps: int = 1500
    crops: int = 4
    """Crops per step (every other one centred near a finding)."""
    crop_shape: tuple[int, int, int] = (32, 64, 64)
    """Crop size (d, h, w) in model-grid voxels (h and w even: the detector's cells are 1 x 2 x
    2 voxels)."""
    jitter: int = 12
    """How far (voxels, in-plane; half across slices) a finding crop's centre may lie from the
    finding voxel it was drawn around."""
    width: int = 16
    """The detector's feature width."""
    lr: float = 2e-3
    """Peak AdamW learning rate (cosine to zero)."""
    weight_decay: float = 1e-4
    pos_weight: float = 30.0
    """BCE weight of the finding cells."""
    seed: int = 0
    save_every: int = 250
    log_every: int = 25
    max_volumes: int | None = None
    """Train on the first this many volumes of the split (sorted by name)."""
    cache_dir: str | None = None
    """Cache of preprocessed images and targets (default ``<data_root>/.rgct_cache``)."""
    workers: int = 2
    """Processes that read the volumes and build their targets before training."""
    stop_after: int | None = None
    """End this call after this many steps (the checkpoint of the last ``save_every`` stays)."""

    def __post_init__(self) -> None:
        self.classes = tuple(str(c) for c in self.classes)
        if not self.classes:
            raise ValueError("classes: name at least one finding label for the detector")
        bad = [c for c in self.classes if c not in SEGMENT_FINDINGS]
        if bad:
            raise ValueError(f"classes {bad} are not finding channels; known: {SEGMENT_FINDINGS}")
        for name in ("steps", "crops", "save_every", "log_every", "width", "workers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.crop_shape = tuple(int(s) for s in self.crop_shape)
        if len(self.crop_shape) != 3 or min(self.crop_shape) < 4:
            raise ValueError(f"crop_shape must be 3 sizes >= 4 (d, h, w), got {self.crop_shape}")
        if any(s % t for s, t in zip(self.crop_shape, STRIDE)):
            raise ValueError(
                f"crop_shape {list(self.crop_shape)} must be a multiple of the detector's cell "
                f"{list(STRIDE)}"
            )
        if self.jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {self.jitter}")
        if self.lr <= 0 or self.pos_weight <= 0:
            raise ValueError(f"lr and pos_weight must be > 0, got {self.lr}, {self.pos_weight}")


# --- data ----------------------------------------------------------------------------------------


@dataclass
class _Item:
    name: str
    image: torch.Tensor  # (C, D, H, W) float16
    target: torch.Tensor  # (F, D, H, W) bool
    positives: np.ndarray  # (N, 3) int16 voxels of any detector class


def _read(args: tuple[str, str, dict | None, SegTargetCache]) -> _Item:
    root, name, record, cache = args
    target, valid = cache.target(root, name, record)
    if not valid.all():
        raise DataError(f"{root}: {name} has no finding truth (ground_truth.jsonl record)")
    t = torch.from_numpy(np.ascontiguousarray(target)).bool()
    pos = np.argwhere(t.any(0).numpy()).astype(np.int16)
    return _Item(name, cache.image(root, name).half(), t, pos)


def load_crop_data(cfg: DetectorTrainConfig, data_cfg) -> list[_Item]:
    """Every training volume's image and detector-class voxel maps, in memory (about 3 MB a
    volume at 64 x 128 x 128), read by ``cfg.workers`` processes through the target cache."""
    names = split_volumes(cfg.data_root, cfg.split)[: cfg.max_volumes]
    truth = load_ground_truth(cfg.data_root, cfg.split)
    if not truth:
        raise DataError(
            f"{cfg.data_root}: no ground_truth.jsonl for split {cfg.split!r}: the detector "
            "learns from the dataset's finding truth"
        )
    missing = [n for n in names if n not in truth]
    if missing:
        raise DataError(f"{cfg.data_root}: no finding truth for {missing[:5]} ({len(missing)})")
    cache_dir = cfg.cache_dir or str(Path(cfg.data_root) / ".rgct_cache")
    cache = SegTargetCache(data_cfg, cache_dir, cfg.classes)
    jobs = [(cfg.data_root, n, truth[n], cache) for n in names]
    if cfg.workers <= 1 or len(jobs) < 4:
        items = [_read(j) for j in jobs]
    else:
        with mp.get_context("forkserver").Pool(cfg.workers) as pool:
            items = pool.map(_read, jobs, chunksize=8)
    if not any(len(i.positives) for i in items):
        raise DataError(
            f"{cfg.data_root}: none of {len(items)} volumes holds a {list(cfg.classes)} finding"
        )
    return items


def _start(center: np.ndarray, size: tuple, shape: tuple) -> list[int]:
    """A crop's corner: around ``center``, inside the volume, on the detector's cell grid."""
    out = []
    for c, s, n, t in zip(center, size, shape, STRIDE):
        lo = int(np.clip(int(c) - s // 2, 0, max(n - s, 0)))
        out.append(lo - lo % t)
    return out


def _jitter(j: int) -> tuple[int, int, int]:
    """Largest shift (d, h, w) of a finding crop's centre: half ``j`` across slices."""
    return (j // 2, j, j)


def sample_crops(
    items: list[_Item], cfg: DetectorTrainConfig, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``step``'s batch: ``(images (B, C, d, h, w) float32, targets (B, F, d, h, w))``
    from ``rng([seed, step])`` (the same batch on a resumed run)."""
    rng = np.random.default_rng([cfg.seed, step])
    positive = [i for i, it in enumerate(items) if len(it.positives)]
    size = cfg.crop_shape
    xs, ys = [], []
    for b in range(cfg.crops):
        if b % 2 == 0:
            it = items[int(rng.choice(positive))]
            voxel = it.positives[int(rng.integers(len(it.positives)))].astype(int)
            # jitter within the crop: the finding voxel always lies inside it
            reach = [min(j, s // 2 - 2) for j, s in zip(_jitter(cfg.jitter), size)]
            center = voxel + np.array([rng.integers(-r, r + 1) if r > 0 else 0 for r in reach])
        else:
            it = items[int(rng.integers(len(items)))]
            center = np.array([rng.integers(0, n) for n in it.image.shape[1:]])
        shape = tuple(int(n) for n in it.image.shape[1:])
        z, y, x = _start(center, size, shape)
        sl = (slice(None), slice(z, z + size[0]), slice(y, y + size[1]), slice(x, x + size[2]))
        img, tgt = it.image[sl].float(), it.target[sl].float()
        pad = [p for s, n in zip(reversed(size), reversed(img.shape[1:])) for p in (0, s - n)]
        if any(pad):  # a volume smaller than the crop: pad with air (0) and no finding
            img, tgt = F.pad(img, pad), F.pad(tgt, pad)
        xs.append(img)
        ys.append(tgt)
    x, y = torch.stack(xs), torch.stack(ys)
    if rng.random() < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    return x, y


def detector_loss(logits: torch.Tensor, target: torch.Tensor, pos_weight: float) -> torch.Tensor:
    """BCE of detector cells against the voxel maps max-pooled to the cells' grid."""
    cells = F.adaptive_max_pool3d(target, logits.shape[2:])
    weight = torch.tensor(pos_weight, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits.float(), cells, pos_weight=weight)


# --- the network -----------------------------------------------------------------------------------


def with_detector(init: str | Path, classes: tuple[str, ...], width: int) -> tuple[Segmenter, dict]:
    """The ``init`` segmenter with a (fresh) detector for ``classes``: its own weights kept,
    a detector of the same classes and width kept too (a continued run), any other dropped."""
    base, meta = load_segmenter(init)
    config = {**base.config(), "focal_classes": list(classes), "focal_width": int(width)}
    model = build_segmenter(config)
    state = base.state_dict()
    if base.config() != config:  # another detector (or none): start this one fresh
        state = {k: v for k, v in state.items() if not k.startswith("focal.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("focal.") for k in missing):
        raise ValueError(f"{init}: segmenter weights do not fit ({missing=}, {unexpected=})")
    return model, meta


def _lr_lambda(steps: int):
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step / steps, 1.0)))


def _save_checkpoint(
    out: Path, model: Segmenter, optimizer, scheduler, step: int, volumes: int
) -> None:
    with atomic_dir(out / CHECKPOINT_DIR) as tmp:
        state = {
            k: v.detach().cpu().float().contiguous() for k, v in model.focal.state_dict().items()
        }
        save_file(state, str(tmp / DETECTOR_WEIGHTS))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        write_json(tmp / "state.json", {"step": step, "volumes": volumes, "config": model.config()})


def _load_checkpoint(out: Path, model: Segmenter, optimizer, scheduler) -> tuple[int, int]:
    ck = out / CHECKPOINT_DIR
    state = json.loads((ck / "state.json").read_text())
    if state.get("config") != model.config():
        raise ValueError(
            f"{ck}: checkpoint of another network ({state.get('config')}); this run's is "
            f"{model.config()}: use a new out_dir"
        )
    model.focal.load_state_dict(load_file(str(ck / DETECTOR_WEIGHTS)))
    optimizer.load_state_dict(
        torch.load(ck / "optimizer.pt", weights_only=True, map_location="cpu")
    )
    scheduler.load_state_dict(torch.load(ck / "scheduler.pt", weights_only=True))
    return int(state["step"]), int(state.get("volumes", 0))


def fit_detector(cfg: DetectorTrainConfig) -> Path:
    """Train (or resume) the detector of ``cfg.init``'s segmenter; returns ``out_dir``, which
    then holds the segmenter with its detector.

    Raises:
        DataError: no finding truth, or no finding of the detector's classes in the data.
        ValueError: a checkpoint of another network in ``out_dir``.
    """
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model, init_meta = with_detector(cfg.init, cfg.classes, cfg.width)
    data_cfg = replace(
        data_config_from_meta(init_meta), root=cfg.data_root, cache_dir=cfg.cache_dir
    )
    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    model.requires_grad_(False)
    model.focal.requires_grad_(True)
    params = list(model.focal.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.steps))
    step, rows, volumes = 0, [], 0
    metrics = out / METRICS_FILE
    if (out / CHECKPOINT_DIR / "state.json").is_file():
        step, volumes = _load_checkpoint(out, model, optimizer, scheduler)
        logger.info("resumed %s at step %d", out, step)
        if metrics.is_file():
            rows = [r for _, r in iter_jsonl(metrics) if r.get("step", 0) <= step]
    t0 = time.perf_counter()
    items = load_crop_data(cfg, data_cfg) if step < cfg.steps else []
    volumes = len(items) or volumes
    load_s = time.perf_counter() - t0
    detector, optimizer = accelerator.prepare(model.focal, optimizer)
    detector.train()
    logger.info(
        "training the %s detector on %d volumes (read in %.0f s), steps %d..%d",
        list(cfg.classes),
        volumes,
        load_s,
        step,
        cfg.steps,
    )
    t0, done, window = time.perf_counter(), 0, []
    while step < cfg.steps:
        x, y = sample_crops(items, cfg, step)
        x, y = x.to(accelerator.device), y.to(accelerator.device)
        with accelerator.autocast():
            logits = detector(x)
        loss = detector_loss(logits, y, cfg.pos_weight)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        step += 1
        done += 1
        window.append(float(loss.detach()))
        if step % cfg.log_every == 0 or step == cfg.steps:
            rows.append(
                {
                    "step": step,
                    "loss": round(float(np.mean(window)), 5),
                    "lr": scheduler.get_last_lr()[0],
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            )
            window = []
            write_jsonl(metrics, rows)
            logger.info("detector step %d loss %.4f", step, rows[-1]["loss"])
        if step % cfg.save_every == 0 or step == cfg.steps:
            _save_checkpoint(out, model, optimizer, scheduler, step, volumes)
        if cfg.stop_after is not None and done >= cfg.stop_after:
            return out
    meta = dict(init_meta)
    for key in ("finding_thresholds", "finding_min_voxels"):  # the detector's are new
        meta[key] = {k: v for k, v in (meta.get(key) or {}).items() if k not in cfg.classes}
    meta["detector"] = {
        **{k: v for k, v in asdict(cfg).items() if k not in ("out_dir", "stop_after")},
        "volumes": volumes,
        "steps_done": step,
        "final_loss": rows[-1]["loss"] if rows else None,
        "calibrated": False,
    }
    save_segmenter(out, model.eval(), meta)
    logger.info("wrote %s", out / "segmenter.safetensors")
    return out


def calibrate_detector(
    folder: str | Path,
    data_root: str | Path,
    *,
    out: str | Path | None = None,
    splits: tuple[str, ...] | None = None,
    max_volumes: int | None = None,
    device: str | torch.device = "cpu",
) -> dict:
    """Per detector class, the (threshold, smallest size) with the best detection F1 on
    ``data_root``'s phantoms (:func:`rgct.generate.segment.calibrate_findings` on
    :data:`rgct.generate.segment.DETECTOR_THRESHOLD_GRID`), written into the segmenter's meta
    (in ``out``, default ``folder`` itself); the other classes' thresholds stay.

    Returns:
        the calibration (thresholds, smallest sizes, scores, volumes).
    """
    from rgct.generate.segment import DETECTOR_THRESHOLD_GRID, calibrate_findings

    model, meta = load_segmenter(folder, device)
    if not model.focal_classes:
        raise ValueError(f"{folder}: this segmenter has no detector to calibrate")
    found = calibrate_findings(
        model,
        meta,
        data_root,
        splits,
        max_volumes=max_volumes,
        thresholds=DETECTOR_THRESHOLD_GRID,
        labels=model.focal_classes,
    )
    meta = dict(meta)
    for key in ("finding_thresholds", "finding_min_voxels"):
        meta[key] = {**(meta.get(key) or {}), **found[key]}
    meta["detector"] = {
        **(meta.get("detector") or {}),
        "calibrated": True,
        "calibration": {"volumes": found["volumes"], "scores": found["scores"]},
    }
    save_segmenter(out or folder, model, meta)
    return found
