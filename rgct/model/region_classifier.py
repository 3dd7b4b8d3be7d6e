"""The region classifier: everything about it, in one place.

The region classifier says which CT-RATE labels a region holds. Its logits are
``classifier([masked mean, masked max of the patch features]) + stats_head(histograms)``, where
the histograms (``model.region_stats``) are first-order intensity statistics of the voxels under
the exact region mask at full input resolution (:class:`RegionIntensityStats`). Its
probabilities become the region-evidence token, and with ``model.evidence_prompt`` its
detections (probabilities at per-label thresholds) are written into the prompt:
detect, then describe.

Public API (the Predictor, generation, the ``rgct classifier`` commands and the recipe call
these; nobody else reaches into ``model.pooler``):

- :func:`region_logits` / :func:`region_probabilities`: (B, L) for a batch of grids + masks.
- :func:`detections` and :func:`evidence_prompts`: thresholded labels and the detections line.
- :func:`add_region_stats`: give a model the histogram head (logits unchanged until fitted).
- :class:`RegionFeatures`, :func:`collect_region_features`, :func:`feature_probabilities`: the
  classifier's inputs cached once per volume (the encoder runs once per volume).
- :func:`fit_region_classifier`: fit both heads on cached features (encoder frozen).
- :func:`fit_thresholds`, :func:`detection_scores`: per-label thresholds for micro F1, and
  the scores of a set of thresholds.

The intensity statistics: for the image's first channel (the ``data.hu_window`` channel,
mapped back to Hounsfield units), the histogram of the voxels inside the region mask of

- the HU value itself (low-attenuation areas: emphysema, LAA-950; ground glass -700..-400;
  fluid and soft tissue 0..60; calcium above 130 HU: the quantities radiologists measure),
- the value minus its local 3x3x3 and 7x7x7 mean (small bright or dark spots against their
  surroundings: calcifications, nodules, airway walls),
- the local 3x3x3 and 3x5x5 minimum (a grey-scale erosion: thin vessels vanish, a solid
  nodule or a thickened wall survives).

Each histogram is returned as sqrt(fraction of the region) and log1p(voxel count) / 5, plus
log(region voxels) / 10: bounded features an MLP takes as they are. The mask is used exactly,
so a finding just outside the region never counts inside it (the patch grid is 8 voxels
coarse).

Thresholds: the classifier's probabilities are not calibrated (rare labels sit well below 0.5
even when present), so each label gets its own threshold, chosen to maximise the micro F1 over
all (volume, region, label) decisions of a calibration set. Keep that set apart from the
volumes you report on (``skip_volumes``).

Examples::

    stats = RegionIntensityStats(hu_window=(-1000.0, 200.0))
    f = stats(torch.rand(2, 1, 32, 64, 64), torch.ones(2, 1, 32, 64, 64))
    f.shape  # torch.Size([2, stats.num_features])
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rgct.constants import CT_RATE_LABELS, EVIDENCE_PREFIX

if TYPE_CHECKING:  # imported for annotations only: the model module imports this one
    from rgct.config import RGCTConfig
    from rgct.model.rgct_model import RGCTModel

logger = logging.getLogger(__name__)

FIT_TASKS = ("region_report", "abnormality", "presence", "location", "size", "disorders")
"""Every task with a mask: each prompt's detections line comes from this classifier."""

# --- intensity statistics ----------------------------------------------------------------------

VALUE_EDGES_HU = (
    -990, -970, -950, -930, -910, -890, -870, -850, -830, -800, -750, -700, -650, -600,
    -550, -500, -400, -300, -200, -100, -50, -20, 0, 10, 20, 30, 40, 50, 60, 80, 100, 130,
    200, 300, 500, 800,
)  # fmt: skip
"""Interior bin edges (HU) for the value and local-minimum histograms; edges outside the
window are dropped (the window clips those values)."""

CONTRAST_EDGES_HU = (-300, -150, -80, -50, -30, -15, 15, 30, 50, 80, 150, 300)
"""Interior bin edges (HU) for value minus local mean."""

FILTERS = ("value", "contrast3", "contrast7", "min3", "min355")
"""The filtered images whose histograms are taken, in feature order."""


def _separable(pool, x: torch.Tensor, k: tuple[int, int, int], **kw) -> torch.Tensor:
    """Apply a box ``pool`` (stride 1, same size) one axis at a time: exact for mean and max."""
    for axis, size in enumerate(k):
        if size > 1:
            kernel, pad = [1, 1, 1], [0, 0, 0]
            kernel[axis], pad[axis] = size, size // 2
            x = pool(x, tuple(kernel), 1, tuple(pad), **kw)
    return x


def _box_mean(x: torch.Tensor, k: tuple[int, int, int]) -> torch.Tensor:
    """Mean over a k-box around each voxel (at the borders: over the voxels inside)."""
    return _separable(F.avg_pool3d, x, k, count_include_pad=False)


def _box_min(x: torch.Tensor, k: tuple[int, int, int]) -> torch.Tensor:
    """Minimum over a k-box around each voxel (a grey-scale erosion)."""
    return -_separable(F.max_pool3d, -x, k)


def unique_images(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``image`` (B, ...) without repeats: ``(unique (U, ...), inverse (B,))`` with
    ``unique[inverse] == image``. Batches that ask several questions of one volume repeat it;
    the encoder and the filters then run once per volume.

    Two host syncs whatever B (a GPU step is not stalled once per pair of rows): per-row
    fingerprints (sum, sum of squares, max) propose repeats, one elementwise comparison of every
    proposed pair confirms them; a row whose proposal is not confirmed stays its own."""
    b = image.shape[0]
    if b <= 1:
        return image, torch.zeros(b, dtype=torch.long, device=image.device)
    flat = image.reshape(b, -1)
    with torch.no_grad():
        prints = torch.stack([flat.sum(1), flat.square().sum(1), flat.amax(1)], 1).tolist()
    first: dict[tuple[float, ...], int] = {}
    proposed = [first.setdefault(tuple(fp), i) for i, fp in enumerate(prints)]
    pairs = [(i, j) for i, j in enumerate(proposed) if j != i]
    same: list[bool] = []
    if pairs:
        rows, reps = (torch.tensor(x, device=image.device) for x in zip(*pairs))
        with torch.no_grad():
            same = (flat[rows] == flat[reps]).all(1).tolist()
    confirmed = {i: j for (i, j), ok in zip(pairs, same) if ok}
    keep = [i for i in range(b) if i not in confirmed]
    slot = {i: k for k, i in enumerate(keep)}
    inverse = [slot[confirmed.get(i, i)] for i in range(b)]
    return image[keep], torch.tensor(inverse, device=image.device)


class RegionIntensityStats(nn.Module):
    """Histograms of filtered HU values under a region mask (no parameters).

    Args:
        hu_window: (low, high) of the image's first channel, which holds
            ``(clip(HU, low, high) - low) / (high - low)``.
    """

    def __init__(self, hu_window: tuple[float, float]) -> None:
        super().__init__()
        lo, hi = (float(v) for v in hu_window)
        if not hi > lo:
            raise ValueError(f"region stats: hu_window must be (low, high), got {hu_window}")
        self.hu_window = (lo, hi)
        value = [e for e in VALUE_EDGES_HU if lo < e < hi]
        self.register_buffer("value_edges", torch.tensor(value, dtype=torch.float32), False)
        self.register_buffer(
            "contrast_edges", torch.tensor(CONTRAST_EDGES_HU, dtype=torch.float32), False
        )
        self.bins = {
            name: (len(value) if name in ("value", "min3", "min355") else len(CONTRAST_EDGES_HU))
            + 1
            for name in FILTERS
        }

    @property
    def num_features(self) -> int:
        return 2 * sum(self.bins.values()) + 1

    def filtered(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, C, D, H, W) image in window units -> {filter: (B, D*H*W) HU}."""
        lo, hi = self.hu_window
        hu = lo + image[:, :1].float() * (hi - lo)
        out = {
            "value": hu,
            "contrast3": hu - _box_mean(hu, (3, 3, 3)),
            "contrast7": hu - _box_mean(hu, (7, 7, 7)),
            "min3": _box_min(hu, (3, 3, 3)),
            "min355": _box_min(hu, (3, 5, 5)),
        }
        return {k: out[k].flatten(1) for k in FILTERS}

    def edges(self, name: str) -> torch.Tensor:
        """The interior bin edges of filter ``name``."""
        return self.contrast_edges if name.startswith("contrast") else self.value_edges

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Features (B, num_features) of each mask's region in ``image``.

        Args:
            image: (B, C, D, H, W) or (1, C, D, H, W) shared by all B masks.
            mask: (B, 1, D, H, W) in {0, 1}, same spatial size as the image.
        """
        if image.ndim != 5 or mask.ndim != 5 or image.shape[2:] != mask.shape[2:]:
            raise ValueError(
                f"region stats need a (B,C,D,H,W) image and a (B,1,D,H,W) mask of the same "
                f"size, got {tuple(image.shape)} and {tuple(mask.shape)}"
            )
        return masked_histograms(self, image, mask)


def masked_histograms(stats: nn.Module, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The histogram features (B, 2 * bins + 1) of each mask's region of ``image`` (B or 1
    images, B masks): per filter of ``stats`` (``stats.bins``: filter -> bins, in feature order;
    ``stats.filtered(image)``: filter -> (1, N) values; ``stats.edges(filter)``), sqrt(fraction
    of the region) and log1p(count) / 5 of every bin, then log(region size) / 10. Shared by the
    CT histograms and the radiograph's (:class:`rgct.model.film_stats.FilmRegionStats`)."""
    b = mask.shape[0]
    if image.shape[0] not in (1, b):
        raise ValueError(f"{image.shape[0]} images for {b} masks")
    weight = (mask[:, 0] > 0.5).flatten(1).float()  # (B, N)
    n = weight.sum(1, keepdim=True)
    if (n <= 0).any():
        raise ValueError("a region mask is empty: it covers no voxel (pixel) of the image")
    counts = _histogram_counts(stats, image, weight)
    feats, start = [], 0
    for bins in stats.bins.values():
        c = counts[:, start : start + bins]
        feats += [torch.sqrt(c / n), torch.log1p(c) / 5.0]
        start += bins
    feats.append(torch.log(n) / 10.0)
    return torch.cat(feats, dim=1)


def _histogram_counts(stats: nn.Module, image: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Histogram counts (B, sum of bins) of B masks (B, N) over 1 or B images (., C, ...): the
    filters run once per distinct image, all of them in one batch."""
    if image.shape[0] == 1:
        uniq, inverse = image, None
    else:
        uniq, inverse = unique_images(image)
    out = []
    for name, values in stats.filtered(uniq).items():
        idx = torch.bucketize(values, stats.edges(name))  # (U, N)
        idx = idx.expand(weight.shape[0], -1) if inverse is None else idx[inverse]
        counts = torch.zeros(weight.shape[0], stats.bins[name], device=weight.device)
        out.append(counts.scatter_add_(1, idx, weight))
    return torch.cat(out, dim=1)


# --- the heads -----------------------------------------------------------------------------------


def build_classifier_head(channels: int, num_labels: int) -> nn.Sequential:
    """MLP on the two pooled region tokens [mean, max] (B, 2*C) -> logits (B, L)."""
    return nn.Sequential(
        nn.Linear(2 * channels, channels), nn.GELU(), nn.Linear(channels, num_labels)
    )


def build_stats_head(num_features: int, num_labels: int, hidden: int = 256) -> nn.Sequential:
    """MLP on the intensity histograms (B, F) -> logits (B, L), output layer at zero: added to
    a trained classifier it changes nothing until fitted."""
    head = nn.Sequential(
        nn.Linear(num_features, hidden),
        nn.GELU(),
        nn.Dropout(0.1),
        nn.Linear(hidden, hidden),
        nn.GELU(),
        nn.Linear(hidden, num_labels),
    )
    nn.init.zeros_(head[-1].weight)
    nn.init.zeros_(head[-1].bias)
    return head


def add_region_stats(model: RGCTModel) -> None:
    """Give ``model``'s region classifier the intensity-histogram head (``model.region_stats``);
    logits are unchanged until the head is trained. No-op if it has one."""
    pooler = model.pooler
    if pooler.stats is None:
        pooler.add_region_stats(model.hu_window, model.num_labels)
        pooler.to(next(pooler.classifier.parameters()).device)
        pooler.stats_head.requires_grad_(model.trainable_groups()["pooler"])
    model.cfg.region_stats = True


def has_region_stats(model: RGCTModel) -> bool:
    """Whether the model's classifier reads the intensity histograms."""
    return model.pooler.stats is not None


def region_logits(
    model: RGCTModel,
    grid: torch.Tensor,
    mask: torch.Tensor,
    image: torch.Tensor | None = None,
    head: str | None = None,
) -> torch.Tensor:
    """Classifier logits (B, L) for grids (B, C, d, h, w) under masks (B, 1, D, H, W).

    ``image`` (B or 1, C_in, D, H, W): the model input (needed with ``model.region_stats``).
    ``head``: the mask source whose head classifies (``model.source_heads``; None: the main)."""
    return model.pooler(grid, mask, image, head)[2]


@torch.no_grad()
def region_probabilities(
    model: RGCTModel, image: torch.Tensor, masks: torch.Tensor, head: str | None = None
) -> torch.Tensor:
    """(R, L) probabilities for one volume (1, C_in, D, H, W) under R masks (R, 1, D, H, W):
    the encoder runs once (``head``: as :func:`region_logits`)."""
    rows = image.expand(masks.shape[0], *image.shape[1:])
    logits = region_logits(model, model.encode_rows(rows), masks, image, head)
    return torch.sigmoid(logits.float())


def detections(logits: torch.Tensor, thresholds: list[float] | None) -> torch.Tensor:
    """(B, L) logits -> (B, L) bool detections at per-label ``thresholds`` (None: 0.5 each)."""
    th = thresholds or [0.5] * logits.shape[1]
    if len(th) != logits.shape[1]:
        raise ValueError(f"{len(th)} thresholds for {logits.shape[1]} labels")
    return torch.sigmoid(logits.float()) >= torch.tensor(th, device=logits.device)


def exactly_one(
    present: torch.Tensor,
    logits: torch.Tensor,
    rows: list[bool] | torch.Tensor,
    thresholds: list[float] | None = None,
) -> torch.Tensor:
    """(B, L) detections where each flagged row names exactly one label: of its detections the
    one furthest above its threshold (logit minus the threshold's logit), and when it detects
    nothing its most probable label. A question that presupposes one finding asks for it
    ("What is in the given box?": a reader's box outlines one finding of one class, and in
    training its line names exactly that class). ``thresholds``: per-label probabilities the
    detections were made at (None: 0.5 each, as :func:`detections`)."""
    flag = torch.as_tensor(list(rows) if not isinstance(rows, torch.Tensor) else rows)
    if flag.shape != (present.shape[0],):
        raise ValueError(f"{tuple(flag.shape)} row flags for {present.shape[0]} rows")
    flag = flag.to(present.device).bool()
    if not bool(flag.any()):
        return present.clone()
    th = torch.tensor(thresholds or [0.5] * logits.shape[1], device=logits.device)
    if th.shape != (logits.shape[1],):
        raise ValueError(f"{th.shape[0]} thresholds for {logits.shape[1]} labels")
    margin = logits.float() - torch.logit(th.clamp(1e-6, 1 - 1e-6))
    found = present.bool().any(1, keepdim=True)
    pick = torch.where(found, margin.masked_fill(~present.bool(), float("-inf")), logits.float())
    one = torch.zeros_like(present, dtype=torch.bool)
    one[torch.arange(len(one), device=one.device), pick.argmax(1)] = True
    return torch.where(flag[:, None], one, present.bool())


def label_words(labels: tuple[str, ...] | list[str], modality: str = "ct") -> tuple[str, ...]:
    """How the detections line writes each label: a CT-RATE label in lower case ("lung
    nodule"), a radiograph class as its words (``rgct.data.cxr_maps.class_words``: "nodule or
    mass", "COPD")."""
    if modality == "cxr":
        from rgct.data.cxr_maps import class_words

        return tuple(class_words(label) for label in labels)
    return tuple(label.lower() for label in labels)


def evidence_line(
    present: list[bool] | torch.Tensor,
    locations: dict[str, str] | None = None,
    labels: tuple[str, ...] = CT_RATE_LABELS,
    words: tuple[str, ...] | None = None,
) -> str:
    """The detections line for one row of (L,) bools ("Image findings in this region: ...").

    ``locations`` (``model.evidence_locations``): label -> where it is ("right lung upper
    lobe", "left"), written after the label it belongs to: "lung nodule (right lung upper lobe)".
    ``labels``: the classifier's vocabulary (CT-RATE's by default); ``words``: how each is
    written (default :func:`label_words` of a CT model).
    """
    row = present.tolist() if isinstance(present, torch.Tensor) else list(present)
    if len(row) != len(labels):
        raise ValueError(f"{len(row)} detections for {len(labels)} labels")
    words = words or label_words(labels)
    names = []
    for label, word, on in zip(labels, words, row):
        if on:
            where = (locations or {}).get(label)
            names.append(f"{word} ({where})" if where else word)
    return f"{EVIDENCE_PREFIX}{', '.join(names) or 'none'}."


def evidence_prompts(
    prompts: list[str],
    present: torch.Tensor,
    locations: list[dict[str, str] | None] | None = None,
    labels: tuple[str, ...] = CT_RATE_LABELS,
    words: tuple[str, ...] | None = None,
) -> list[str]:
    """Prefix each prompt with its detections line; ``present`` (B, L) bool; ``locations``
    one label -> place dict (or None) per row; ``labels`` / ``words`` as
    :func:`evidence_line`."""
    if len(prompts) != present.shape[0]:
        raise ValueError(f"{len(prompts)} prompts for {present.shape[0]} detection rows")
    if locations is not None and len(locations) != len(prompts):
        raise ValueError(f"{len(locations)} location rows for {len(prompts)} prompts")
    rows = locations if locations is not None else [None] * len(prompts)
    words = words or label_words(labels)
    return [
        f"{evidence_line(row, where, labels, words)}\n{prompt}"
        for prompt, row, where in zip(prompts, present, rows)
    ]


# --- cached features, fitting, thresholds ---------------------------------------------------------

THRESHOLD_GRID = np.round(np.linspace(0.02, 0.98, 49), 2)
"""Candidate thresholds."""


@dataclass
class RegionFeatures:
    """What the region classifier reads for every (volume, region) of a split, cached so its
    heads can be fitted (:func:`fit_region_classifier`) and scored without the encoder."""

    region: torch.Tensor
    """(N, 2, C) pooled region tokens [mean, max] (after the pooler's LayerNorm)."""
    stats: torch.Tensor | None
    """(N, F) intensity statistics (``model.region_stats``), else None."""
    labels: np.ndarray
    """(N, L) bool ground truth (L: the model's labels)."""
    keys: list[tuple[str, str]]
    """(volume, region) of each row."""


@torch.no_grad()
def collect_region_features(
    model: RGCTModel,
    cfg: RGCTConfig,
    data_root: str | Path,
    split: str = "valid",
    skip_volumes: int = 0,
    max_volumes: int | None = None,
    tasks: tuple[str, ...] = ("region_report",),
    mask_for: Callable[[Any], torch.Tensor | None] | None = None,
    head: str | None = None,
) -> RegionFeatures:
    """Run the encoder once per volume and pool every region of a split (no augmentation).

    Skips the first ``skip_volumes`` volumes (sorted by name) and keeps at most
    ``max_volumes`` of the rest; every region needs ground-truth labels. ``tasks`` picks whose
    masks count: the ten regions of ``region_report``, and with the VQA tasks also lobes,
    aorta, heart tissue and the whole scan (each (volume, region) once).

    ``mask_for(sample)`` gives each region's mask from another source (e.g. the segmenter's,
    :class:`rgct.generate.masks.MaskProvider`): a (1, D, H, W) mask on the model grid, None for
    the whole scan; a region it raises ``LookupError`` for (no such mask) is left out.
    ``head``: the features that mask source's head reads (its masks eroded by
    ``model.source_erosion``, :meth:`RegionPooler.source_mask`); None: the main head's.
    """
    if cfg.data.modality == "cxr":  # a radiograph's regions: the film, its boxes, its zones
        from rgct.model.film_regions import collect_film_features

        if mask_for is not None:
            raise ValueError("a radiograph's regions come from its folder's boxes and zones")
        return collect_film_features(model, cfg, data_root, split, skip_volumes, max_volumes)
    # data never imports model; the reverse is fine
    from rgct.data.compact import expand_batch
    from rgct.data.dataset import RGCTDataset, collate

    data = replace(
        cfg.data, root=str(data_root), augment=False, finding_maps=False, crop_shape=None
    )
    ds = RGCTDataset(data, split, train=False, tasks=list(tasks))
    volumes = sorted({s.volume for s in ds.samples})
    keep = set(volumes[skip_volumes:])
    if max_volumes is not None:
        keep = set(sorted(keep)[:max_volumes])
    if not keep:
        raise ValueError(
            f"{data_root} split {split!r}: no volumes left after skipping {skip_volumes}"
        )
    device = next(model.parameters()).device
    model.eval()
    pooler = model.pooler
    by_volume: dict[str, list[int]] = {}
    seen: set[tuple[str, str]] = set()
    for i, sample in enumerate(ds.samples):
        if sample.volume in keep and (sample.volume, sample.region) not in seen:
            if sample.labels is None:
                raise ValueError(
                    f"{sample.volume} region {sample.region!r} has no ground-truth labels"
                )
            seen.add((sample.volume, sample.region))
            by_volume.setdefault(sample.volume, []).append(i)
    regions, stats, labels, keys = [], [], [], []
    missing = 0
    for volume, rows in by_volume.items():
        if mask_for is not None:
            kept = []
            for i in rows:
                try:
                    kept.append((i, mask_for(ds.samples[i])))
                except LookupError:
                    missing += 1
            if not kept:
                continue
            rows = [i for i, _ in kept]
        items = [ds[i] for i in rows]
        batch = expand_batch(collate(items), device)
        masks = batch["mask"]  # (B, 1, D, H, W)
        if mask_for is not None:
            for row, (_, m) in enumerate(kept):
                masks[row] = 1.0 if m is None else m.to(device)
        image = batch["image"][:1]  # (1, C, D, H, W): every row is this volume
        grid = model.encode_rows(image.expand(len(rows), *image.shape[1:]))
        masks = pooler.source_mask(masks, head)
        region = pooler.region_tokens(grid, masks)
        regions.append(region.float().cpu())
        if pooler.stats is not None:  # the image's filters once, every region's histograms
            stats.append(pooler.stats(image, masks).float().cpu())
        labels += [it["labels"].numpy() > 0.5 for it in items]
        keys += [(volume, ds.samples[i].region) for i in rows]
    if not keys:
        raise ValueError(f"{data_root} split {split!r}: no region has a mask from the source")
    logger.info(
        "region features for %d regions of %d volumes%s",
        len(keys),
        len(keep),
        f" ({missing} without a mask from the source, left out)" if missing else "",
    )
    return RegionFeatures(
        region=torch.cat(regions),
        stats=torch.cat(stats) if stats else None,
        labels=np.stack(labels),
        keys=keys,
    )


def concat_features(parts: list[RegionFeatures]) -> RegionFeatures:
    """Features of several mask sources (or splits) as one set, rows in order."""
    if not parts:
        raise ValueError("no features to join")
    stats = [p.stats for p in parts]
    if any(s is None for s in stats) and not all(s is None for s in stats):
        raise ValueError("features with and without region statistics cannot be joined")
    return RegionFeatures(
        region=torch.cat([p.region for p in parts]),
        stats=None if stats[0] is None else torch.cat(stats),
        labels=np.concatenate([p.labels for p in parts]),
        keys=[k for p in parts for k in p.keys],
    )


@torch.no_grad()
def feature_probabilities(
    model: RGCTModel, feats: RegionFeatures, head: str | None = None
) -> np.ndarray:
    """The region classifier's (N, L) probabilities for cached features (``head``: the mask
    source whose head classifies; None: the main head)."""
    pooler = model.pooler
    device = next(pooler.classifier.parameters()).device
    stats = None if feats.stats is None else feats.stats.to(device)
    logits = pooler.classify(
        feats.region.to(device), stats if pooler.stats is not None else None, head
    )
    return torch.sigmoid(logits.float()).cpu().numpy()


def collect_region_probabilities(
    model: RGCTModel,
    cfg: RGCTConfig,
    data_root: str | Path,
    split: str = "valid",
    skip_volumes: int = 0,
    max_volumes: int | None = None,
    mask_for: Callable[[Any], torch.Tensor | None] | None = None,
    head: str | None = None,
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Classifier probabilities and true labels for every (volume, region) of a split
    (``mask_for``: masks from another source, as in :func:`collect_region_features`; ``head``:
    the mask source whose classifier head reads them, None: the main head); of a
    radiograph split, every film and box (:mod:`rgct.model.film_regions`).

    Returns:
        ``(probs (N, L), labels (N, L) bool, [(volume, region)] * N)``; the encoder runs
        once per volume.
    """
    if cfg.data.modality == "cxr":  # detections are read on the film and its boxes
        from rgct.model.film_regions import DETECTION_ROWS, collect_film_features

        if mask_for is not None:
            raise ValueError("a radiograph's regions come from its folder's boxes")
        feats = collect_film_features(
            model, cfg, data_root, split, skip_volumes, max_volumes, rows=DETECTION_ROWS
        )
    else:
        feats = collect_region_features(
            model, cfg, data_root, split, skip_volumes, max_volumes, mask_for=mask_for, head=head
        )
    return feature_probabilities(model, feats, head), feats.labels, feats.keys


def _f1(pred: np.ndarray, gold: np.ndarray) -> tuple[float, int, int, int]:
    tp, fp, fn = int((pred & gold).sum()), int((pred & ~gold).sum()), int((~pred & gold).sum())
    return 2 * tp / max(2 * tp + fp + fn, 1), tp, fp, fn


def fit_thresholds(
    probs: np.ndarray,
    labels: np.ndarray,
    rounds: int = 3,
    names: tuple[str, ...] = CT_RATE_LABELS,
    stated: np.ndarray | None = None,
) -> tuple[list[float], dict]:
    """Thresholds that maximise the micro F1 over all (region, label) decisions.

    Coordinate ascent from 0.5: each label in turn takes the grid threshold that gives the best
    micro F1 with the others fixed (``rounds`` passes). Micro, not per-label, F1 is the goal,
    because that is what the held-out finding F1 counts: a weak label's own best threshold
    buys a few true positives with many false ones, and the micro optimum then keeps it quiet.
    Labels never positive keep 0.5.

    ``names``: the labels of the columns (the model's ``label_names``; CT-RATE's by default).
    ``stated``: (N, L) bool, labels a row states whatever the classifier says (the segmenter's
    focal detector, :func:`rgct.generate.localize.detected_labels`): a row's decision is then
    ``probs >= threshold or stated``, the one generation makes, so a label the detector finds
    gets the classifier threshold that adds most to the detector (up to the grid's top: the
    detector alone).

    Returns:
        ``(thresholds (L,), report)`` where ``report`` has per-label ``positives``,
        ``f1_at_0.5``, ``threshold``, ``f1`` and the micro ``f1`` over all labels at 0.5 and
        at the fitted thresholds.
    """
    if probs.shape != labels.shape or probs.ndim != 2 or probs.shape[1] != len(names):
        raise ValueError(
            f"probs and labels must both be (N, {len(names)}), got {probs.shape} and {labels.shape}"
        )
    if stated is not None and stated.shape != probs.shape:
        raise ValueError(f"stated must be {probs.shape} like probs, got {stated.shape}")
    said = np.zeros(probs.shape, bool) if stated is None else stated.astype(bool)

    def decide(j: int, t: float) -> np.ndarray:
        return (probs[:, j] >= t) | said[:, j]

    th = np.full(probs.shape[1], 0.5)
    counted = [j for j in range(probs.shape[1]) if labels[:, j].any()]
    # per-label (tp, fp, fn) at every grid threshold, then ascent on the summed counts
    table = {j: [_f1(decide(j, t), labels[:, j])[1:] for t in THRESHOLD_GRID] for j in counted}
    current = {j: _f1(decide(j, 0.5), labels[:, j])[1:] for j in range(probs.shape[1])}
    for _ in range(rounds):
        for j in counted:
            rest = np.sum([c for k, c in current.items() if k != j], axis=0)

            def micro(c, rest=rest):
                tp, fp, fn = rest + np.array(c)
                return 2 * tp / max(2 * tp + fp + fn, 1)

            best = max(
                range(len(THRESHOLD_GRID)),
                key=lambda i: (micro(table[j][i]), -abs(THRESHOLD_GRID[i] - 0.5)),
            )
            th[j], current[j] = float(THRESHOLD_GRID[best]), table[j][best]
    per_label = {
        names[j]: {
            "positives": int(labels[:, j].sum()),
            "f1_at_0.5": _f1(decide(j, 0.5), labels[:, j])[0],
            "threshold": float(th[j]),
            "f1": _f1(decide(j, th[j]), labels[:, j])[0],
        }
        for j in counted
    }
    report = {
        "regions": int(len(probs)),
        "micro_f1_at_0.5": _f1((probs >= 0.5) | said, labels)[0],
        "micro_f1": _f1((probs >= th) | said, labels)[0],
        "per_label": per_label,
    }
    if stated is not None:
        report["stated"] = {names[j]: int(said[:, j].sum()) for j in np.flatnonzero(said.any(0))}
    return [float(t) for t in th], report


def detection_scores(
    probs: np.ndarray,
    labels: np.ndarray,
    thresholds: list[float],
    stated: np.ndarray | None = None,
) -> dict:
    """Micro precision / recall / F1 of the detections at ``thresholds`` (e.g. on held-out);
    ``stated`` as :func:`fit_thresholds`'s."""
    found = probs >= np.array(thresholds)
    f1, tp, fp, fn = _f1(found if stated is None else found | stated.astype(bool), labels)
    return {
        "precision": tp / max(tp + fp, 1),
        "recall": tp / max(tp + fn, 1),
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def fit_region_classifier(
    model: RGCTModel,
    feats: RegionFeatures,
    epochs: int = 200,
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    batch_size: int = 256,
    seed: int = 0,
    head: str | None = None,
) -> list[float]:
    """Train ``pooler.classifier`` (and ``pooler.stats_head`` if present) on ``feats`` with the
    per-label BCE of the auxiliary loss; every other weight stays as it is. ``head``: train
    that mask source's head instead (``model.source_heads``; the pooler must hold it).

    Returns:
        The mean training loss of each epoch.
    """
    if epochs < 1 or lr <= 0 or batch_size < 1:
        raise ValueError(
            f"epochs, lr and batch_size must be positive, got {epochs}, {lr}, {batch_size}"
        )
    pooler = model.pooler
    if (pooler.stats is None) != (feats.stats is None):
        raise ValueError(
            "the features and the model disagree on region statistics: collect them with the "
            "same model (model.add_region_stats() before collecting)"
        )
    n = len(feats.keys)
    if (
        n == 0
        or feats.region.shape[0] != n
        or feats.labels.shape != (n, pooler.classifier[-1].out_features)
    ):
        raise ValueError(
            f"inconsistent features: {n} keys, region {tuple(feats.region.shape)}, labels {feats.labels.shape}"
        )
    if head is not None and head not in pooler.source_heads:
        raise ValueError(
            f"the region classifier has no head for mask source {head!r} "
            f"(it has: {sorted(pooler.source_heads) or 'none'}); add it first (add_source_head)"
        )
    classifier, stats_head = pooler.heads(head)
    heads = [classifier] + ([stats_head] if stats_head is not None else [])
    params = [p for h in heads for p in h.parameters()]
    flags = [p.requires_grad for p in params]
    device = params[0].device
    region = feats.region.to(device)
    stats = None if feats.stats is None else feats.stats.to(device)
    target = torch.as_tensor(feats.labels, dtype=torch.float32, device=device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    history = []
    try:
        for p in params:
            p.requires_grad_(True)
        for h in heads:
            h.train()
        for epoch in range(epochs):
            order = torch.randperm(n, generator=gen).to(device)
            total = 0.0
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                logits = pooler.classify(region[idx], None if stats is None else stats[idx], head)
                loss = F.binary_cross_entropy_with_logits(logits.float(), target[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            history.append(total / n)
            if epoch == 0 or (epoch + 1) % max(1, epochs // 10) == 0:
                logger.info(
                    "region classifier epoch %d/%d: loss %.4f", epoch + 1, epochs, history[-1]
                )
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        for h in heads:
            h.eval()
    return history
