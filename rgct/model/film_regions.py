"""The regions a radiograph model's classifier reads, and where it places a finding.

A radiograph has three kinds of region rows, each a mask on the film with its truth over the
model's labels (``model.labels``: the dataset's classes):

- ``film``: the whole film; truth: the image's labels and every boxed class.
- ``box``: each box; truth: its class (and the class of any box drawn on the same pixels).
- ``zone``: each of the nine places :func:`rgct.data.cxr.box_location` names (right, central,
  left x upper, middle, lower zone: :func:`rgct.data.cxr.zone_masks`); truth: the classes of
  the boxes *named by* that place (the box's centre lies there), so the classifier under a zone
  mask learns "a finding of this class is placed here", the same rule the ``cxr_location``
  answers follow.

:func:`collect_film_features` caches the classifier's inputs of every row (the encoder runs
once per film) for :func:`rgct.model.region_classifier.fit_region_classifier` and the
thresholds. The localiser (the radiograph analogue of the CT one, which runs the classifier
under each lobe): :func:`zone_probabilities` runs the classifier under the nine zone masks,
:func:`zone_places` keeps, per label, the zones whose probability reaches
:data:`ZONE_THRESHOLD` (the most probable one when none does): "right lower zone and left lower
zone".

Example::

    feats = collect_film_features(model, cfg, "data/phantoms_vindr", "train")
    probs = zone_probabilities(model, image)            # (9, L) for one film (1, 1, H, W)
    zone_places(probs, model.label_names)["Pleural effusion"]   # 'right lower zone'
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from rgct.data.cxr import PLACES, box_location, location_words, zone_masks
from rgct.model.region_classifier import RegionFeatures, region_probabilities

if TYPE_CHECKING:
    from rgct.config import RGCTConfig
    from rgct.model.rgct_model import RGCTModel

logger = logging.getLogger(__name__)

FILM_ROWS = ("film", "box", "zone")
"""The kinds of region rows of a film (module notes)."""
DETECTION_ROWS = ("film", "box")
"""The rows whose detections are written into prompts (and whose thresholds are fitted)."""
ZONE_THRESHOLD = 0.5
"""A label is placed in every zone whose probability reaches this (else in its most probable
zone)."""


def zone_truth(
    boxes, shape: tuple[int, int], labels: tuple[str, ...]
) -> tuple[list[str], np.ndarray]:
    """(zone names, bool (9, L)): which labels each of the nine places names on a film of
    ``shape`` (H, W) with ``boxes`` (:class:`rgct.data.cxr.Box`), by :func:`box_location`."""
    names = list(PLACES)
    truth = np.zeros((len(names), len(labels)), dtype=bool)
    for box in boxes:
        if box.class_name in labels:
            place = location_words(*box_location(box.coords, shape))
            truth[names.index(place), labels.index(box.class_name)] = True
    return names, truth


def zone_mask_tensor(shape: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """The nine zone masks of a model input (H, W) as float (9, 1, H, W)."""
    _, masks = zone_masks(tuple(shape))
    return torch.from_numpy(masks[:, None].astype(np.float32)).to(device)


@torch.no_grad()
def zone_probabilities(model: RGCTModel, image: torch.Tensor) -> torch.Tensor:
    """(9, L) classifier probabilities of one film (1, C, H, W) under the nine zone masks (in
    :func:`rgct.data.cxr.zone_masks` order)."""
    masks = zone_mask_tensor(tuple(image.shape[2:]), image.device)
    return region_probabilities(model, image, masks)


def zone_places(
    probs: torch.Tensor | np.ndarray, labels: tuple[str, ...], threshold: float = ZONE_THRESHOLD
) -> dict[str, str]:
    """Label -> its places ("right lower zone and left lower zone") from (9, L) zone
    probabilities: every zone at or above ``threshold``, else the most probable one."""
    p = probs.detach().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
    if p.shape != (9, len(labels)):
        raise ValueError(f"zone probabilities must be (9, {len(labels)}), got {p.shape}")
    names = list(PLACES)
    out = {}
    for j, label in enumerate(labels):
        picked = [names[z] for z in np.flatnonzero(p[:, j] >= threshold)]
        out[label] = " and ".join(picked or [names[int(p[:, j].argmax())]])
    return out


@torch.no_grad()
def collect_film_features(
    model: RGCTModel,
    cfg: RGCTConfig,
    data_root: str | Path,
    split: str = "train",
    skip_volumes: int = 0,
    max_volumes: int | None = None,
    rows: tuple[str, ...] = FILM_ROWS,
) -> RegionFeatures:
    """The classifier's inputs and truth for every ``rows`` region of a radiograph split
    (films sorted by name, the first ``skip_volumes`` skipped, at most ``max_volumes`` kept;
    no augmentation). Keys are ``(film, "film" | "box K" | "<side> <zone> zone")``."""
    from rgct.config import DataSource
    from rgct.data.compact import expand_batch
    from rgct.data.cxr_samples import BOX_REGION, load_films
    from rgct.data.dataset import collate
    from rgct.data.source_report import detect_layout
    from rgct.data.sources import SourceDataset

    unknown = set(rows) - set(FILM_ROWS)
    if unknown or not rows:
        raise ValueError(f"film rows must be some of {FILM_ROWS}, got {list(rows)}")
    labels = model.label_names
    layout = detect_layout(data_root)
    films = load_films(data_root, layout, split)
    names = sorted(films)[skip_volumes:]
    names = names if max_volumes is None else names[:max_volumes]
    if not names:
        raise ValueError(
            f"{data_root} split {split!r}: no films left after skipping {skip_volumes}"
        )
    data = replace(cfg.data, root=str(data_root), augment=False, sources=[])
    source = DataSource(str(data_root), layout=layout, tasks={"cxr_box": 1.0, "cxr_labels": 1.0})
    ds = SourceDataset(data, source, split, train=False)
    if ds.samples.labels.shape[1] != len(labels):
        raise ValueError(
            f"{data_root} ({layout}) has {ds.samples.labels.shape[1]} classes but the model's "
            f"classifier reads {len(labels)} (model.labels)"
        )
    by_film: dict[str, list[int]] = {}
    for i in range(len(ds.samples)):
        by_film.setdefault(ds.samples.text("volume", i), []).append(i)
    device = next(model.parameters()).device
    model.eval()
    pooler = model.pooler
    zones = zone_mask_tensor(tuple(cfg.data.input_shape), device)
    regions, stats, truth, keys = [], [], [], []
    for name in names:
        film = films[name]
        items, row_keys = [], []
        boxes = 0
        for i in by_film.get(name, []):
            region = ds.samples.text("region", i)
            kind = "box" if region == BOX_REGION else "film"
            if kind in rows:
                items.append(ds[i])
                row_keys.append((name, f"box {boxes}" if kind == "box" else "film"))
            boxes += kind == "box"
        if not items and "zone" not in rows:
            continue
        if items:
            batch = expand_batch(collate(items), device)
            image, masks = batch["image"][:1], batch["mask"]
            row_truth = [it["labels"].numpy() > 0.5 for it in items]
        else:  # zones only: the film from the first of its samples
            first = expand_batch(collate([ds[by_film[name][0]]]), device)
            image, masks, row_truth = first["image"][:1], zones[:0], []
        if "zone" in rows:
            zone_names, zone_labels = zone_truth(film.boxes, film.shape, labels)
            masks = torch.cat([masks, zones])
            row_truth += list(zone_labels)
            row_keys += [(name, z) for z in zone_names]
        grid = model.encode_image(image)  # (1, C, h, w): once per film
        region = pooler.region_tokens(grid.expand(len(masks), *grid.shape[1:]), masks)
        regions.append(region.float().cpu())
        if pooler.stats is not None:
            stats.append(pooler.stats(image, masks).float().cpu())
        truth += row_truth
        keys += row_keys
    if not keys:
        raise ValueError(f"{data_root} split {split!r}: no {list(rows)} rows")
    logger.info("film features: %d rows of %d films (%s)", len(keys), len(names), ", ".join(rows))
    return RegionFeatures(
        region=torch.cat(regions),
        stats=torch.cat(stats) if stats else None,
        labels=np.stack(truth),
        keys=keys,
    )


def zone_place_accuracy(
    probs: np.ndarray, feats: RegionFeatures, labels: tuple[str, ...], threshold: float
) -> dict:
    """How often :func:`zone_places` names exactly the true places of a boxed class, over
    every (film, boxed class) of zone-row features ``feats`` with probabilities ``probs``
    (N, L): the ``cxr_location`` exact match the localiser alone would score."""
    names = list(PLACES)
    by_film: dict[str, dict[str, int]] = {}
    for n, (film, key) in enumerate(feats.keys):
        if key in names:
            by_film.setdefault(film, {})[key] = n
    right = total = 0
    for places in by_film.values():
        idx = [places[z] for z in names]
        truth = feats.labels[idx]  # (9, L)
        said = zone_places(probs[idx], labels, threshold)
        for j in np.flatnonzero(truth.any(0)):
            want = {names[z] for z in np.flatnonzero(truth[:, j])}
            total += 1
            right += set(said[labels[j]].split(" and ")) == want
    return {"exact": right / max(total, 1), "right": right, "findings": total}
