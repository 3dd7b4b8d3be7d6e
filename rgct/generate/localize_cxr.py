"""Where a radiograph model's detected findings are: the zone localiser and the film segmenter.

The radiograph counterpart of :class:`rgct.generate.localize.Localizer` (the same
``locations(volume, region, image)`` call, so generation takes either): a
``model.evidence_locations`` radiograph model's detections line says where each finding is
("pleural effusion (right lower zone)"). In training the places come from the boxes
(:func:`rgct.data.cxr_samples.places_by_film`); at generation from this localiser. Only
whole-film rows get places (a box row asks what the box holds), only labels a box can have
are placed, and the blind baseline gets none. Two sources:

- with a **film segmenter** in the checkpoint (``segmenter.safetensors`` with
  ``spatial_dims: 2``, trained on the boxes by :func:`rgct.train.segmenter.fit_segmenter`):
  each class's probability map, thresholded at its calibrated threshold
  (:func:`calibrate_film_segmenter`), gives the class's boxes (connected components), each
  box its place by the rule the truth uses (:func:`rgct.data.cxr.box_location`); the film's
  whole-film detections of the boxable classes are the classes with a box
  (:meth:`ZoneLocalizer.detected`), so the model says a finding is there when it has found it;
- without one: the region classifier run under the nine zone masks of the film, each label
  placed in the zones where it is probable (:func:`rgct.model.film_regions.zone_places`).

Example::

    localizer = build_zone_localizer(model, cfg, checkpoint)  # None unless evidence_locations
    localizer.locations(film_name, "whole scan", image)  # {'Pleural effusion': 'right lower zone', ...}
    film_boxes(probs, classes, thresholds)["Nodule/Mass"]  # [{"box": (x0, y0, x1, y1), ...}]
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from rgct.constants import CXR_PROMPTS, WHOLE_SCAN
from rgct.data.cxr import box_location, location_words
from rgct.data.cxr_samples import BOX_REGION, asked_location, placeable_labels
from rgct.model import region_classifier as rc
from rgct.model.film_regions import zone_places, zone_probabilities

FILM_THRESHOLD_GRID = tuple(np.round(np.arange(0.1, 0.96, 0.05), 2))
"""Candidate per-class thresholds of a film segmenter's calibration."""
DEFAULT_FILM_THRESHOLD = 0.5
"""The threshold of a class the calibration films never show (or an uncalibrated segmenter)."""


def is_film_segmenter(segmenter: Any) -> bool:
    """Whether a loaded segmenter reads radiographs (``spatial_dims`` 2)."""
    return getattr(segmenter, "spatial_dims", 3) == 2


@torch.no_grad()
def film_probabilities(segmenter: Any, image: torch.Tensor) -> np.ndarray:
    """float32 (K, H, W) class probabilities of one film (1, C, H, W) or (C, H, W)."""
    image = image if image.ndim == 4 else image[None]
    segmenter.eval()
    dev = next(segmenter.parameters()).device
    logits = segmenter(image.to(dev, torch.float32))[0]
    return torch.sigmoid(logits.float()).cpu().numpy()


def _components(on: np.ndarray) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """(mask, (x0, y0, x1, y1) pixel box, x1/y1 exclusive) of each 8-connected component."""
    if not on.any():
        return []
    labels = sitk.GetArrayFromImage(
        sitk.ConnectedComponent(sitk.GetImageFromArray(on.astype(np.uint8)), True)
    )
    out = []
    for k in range(1, int(labels.max()) + 1):
        comp = labels == k
        rows, cols = np.flatnonzero(comp.any(1)), np.flatnonzero(comp.any(0))
        out.append((comp, (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)))
    return out


def film_boxes(
    probs: np.ndarray,
    classes: tuple[str, ...] | list[str],
    thresholds: dict[str, float] | None = None,
) -> dict[str, list[dict]]:
    """Each class's found boxes on one film's probability maps (K, H, W): the connected
    components at or above the class's threshold (:data:`DEFAULT_FILM_THRESHOLD` when
    ``thresholds`` has none), most probable first.

    Returns:
        ``{class: [{"box": (x0, y0, x1, y1) model-grid pixels, "score": peak probability,
        "place": "right lower zone", "pixels": n}]}`` (classes with no box are absent).
    """
    if probs.ndim != 3 or probs.shape[0] != len(classes):
        raise ValueError(f"film probabilities must be ({len(classes)}, H, W), got {probs.shape}")
    shape = probs.shape[1:]
    out: dict[str, list[dict]] = {}
    for k, name in enumerate(classes):
        thr = (thresholds or {}).get(name, DEFAULT_FILM_THRESHOLD)
        found = []
        for comp, box in _components(probs[k] >= thr):
            found.append(
                {
                    "box": box,
                    "score": float(probs[k][comp].max()),
                    "place": location_words(*box_location(box, shape)),
                    "pixels": int(comp.sum()),
                }
            )
        if found:
            out[name] = sorted(found, key=lambda d: -d["score"])
    return out


def peak_place(prob: np.ndarray) -> str:
    """The place of one class's most probable spot (its component at half the peak): where a
    class found nowhere would most likely be."""
    peak = float(prob.max())
    y, x = np.unravel_index(int(prob.argmax()), prob.shape)
    for comp, box in _components(prob >= peak / 2.0):
        if comp[y, x]:
            return location_words(*box_location(box, prob.shape))
    return location_words(*box_location((x, y, x + 1, y + 1), prob.shape))


def boxes_places(boxes: list[dict]) -> str:
    """One class's places from its boxes ("right lower zone and left lower zone")."""
    return " and ".join(dict.fromkeys(d["place"] for d in boxes))


PRESUPPOSED = "exactly one: the detection furthest above its threshold, else the most probable"
"""How a row that presupposes a finding names it (:func:`rgct.model.region_classifier.
exactly_one`; part of a radiograph held-out run's identity: predictions made by another rule
are never resumed)."""


def presupposes_finding(region: str, prompt: str) -> bool:
    """Whether a radiograph row's question presupposes a finding in its region: "What is in
    the given box?" on a box row (a reader drew the box around something)."""
    return region == BOX_REGION and prompt.strip() == CXR_PROMPTS["cxr_box"]


class ZoneLocalizer:
    """Places (and, with a film segmenter, whole-film detections) of a radiograph model's
    labels; the last film's answer is kept (generation groups the rows of one film).

    Args:
        model: the radiograph :class:`~rgct.model.rgct_model.RGCTModel`.
        segmenter: ``(film segmenter, meta)`` (:func:`rgct.model.segmenter.load_segmenter`)
            or None for the classifier under the zone masks. ``meta["finding_thresholds"]``
            holds its calibrated per-class thresholds.
    """

    def __init__(self, model: Any, segmenter: tuple[Any, dict] | None = None) -> None:
        self.model = model
        self.placeable = placeable_labels(model.label_names)
        self.segmenter = None
        self.thresholds: dict[str, float] = {}
        if segmenter is not None:
            net, meta = segmenter
            if not is_film_segmenter(net):
                raise ValueError("a radiograph model's localiser needs a 2D (film) segmenter")
            self.segmenter = net
            self.thresholds = dict(meta.get("finding_thresholds") or {})
        self._last: tuple[str, dict] | None = None

    def identity(self) -> str:
        """What decides the places: ``"classifier zones"``, or a digest of the film
        segmenter's weights and thresholds (a held-out folder resumes only predictions placed
        by the same ones)."""
        if self.segmenter is None:
            return "classifier zones"
        h = hashlib.sha256(json.dumps(self.thresholds, sort_keys=True).encode())
        for name, tensor in sorted(self.segmenter.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def film(self, image: torch.Tensor) -> dict:
        """``{"places": {label: places}, "boxes": {label: [box dicts]} | None,
        "detected": {label: bool} | None}`` of one film's model input (C, H, W) or
        (1, C, H, W): boxes and detections only with a film segmenter."""
        image = image if image.ndim == 4 else image[None]
        if self.segmenter is None:
            places = zone_places(zone_probabilities(self.model, image), self.model.label_names)
            return {
                "places": {label: places[label] for label in self.placeable},
                "boxes": None,
                "detected": None,
            }
        classes = tuple(self.segmenter.classes)
        probs = film_probabilities(self.segmenter, image)
        boxes = film_boxes(probs, classes, self.thresholds)
        places, detected = {}, {}
        for label in self.placeable:
            if label not in classes:
                continue
            found = boxes.get(label, [])
            detected[label] = bool(found)
            places[label] = (
                boxes_places(found) if found else peak_place(probs[classes.index(label)])
            )
        return {"places": places, "boxes": boxes, "detected": detected}

    def film_places(self, image: torch.Tensor) -> dict[str, str]:
        """{label: places} of one film's model input (C, H, W) or (1, C, H, W)."""
        return self.film(image)["places"]

    def _film_of(self, volume: str, image: torch.Tensor) -> dict:
        if self._last is None or self._last[0] != volume:
            self._last = (volume, self.film(image))
        return self._last[1]

    def locations(self, volume: str, region: str, image: torch.Tensor) -> dict[str, str] | None:
        """{label: places} for a whole-film row of ``volume``; None for a box row."""
        if region != WHOLE_SCAN:
            return None
        return self._film_of(volume, image)["places"]

    def detected(
        self, volume: str, region: str, image: torch.Tensor, prompt: str | None = None
    ) -> dict[str, bool] | None:
        """Label -> found, replacing the classifier's detections on a whole-film row of
        ``volume`` (None: nothing to replace; box rows never): the film segmenter's boxable
        labels when it localises, and the label a "where is X?" ``prompt`` asks about (the
        question presupposes it, as in training, where X is always in the row's line: its
        places are written whether or not the classifier found it)."""
        if region != WHOLE_SCAN:
            return None
        out = dict(self._film_of(volume, image)["detected"] or {}) if self.segmenter else {}
        asked = asked_location(prompt) if prompt else None
        if asked in self.placeable:
            out[asked] = True
        return out or None


def build_zone_localizer(
    model: Any, cfg: Any, checkpoint: str | Path | None = None
) -> ZoneLocalizer | None:
    """The localiser a ``model.evidence_locations`` radiograph model needs (else None), with
    the ``checkpoint`` folder's film segmenter when it has one."""
    if not cfg.model.evidence_locations:
        return None
    if cfg.data.modality != "cxr":
        raise ValueError("the zone localiser places findings on chest radiographs only")
    device = next(model.parameters()).device
    segmenter = None if checkpoint is None else load_film_segmenter(checkpoint, device)
    return ZoneLocalizer(model, segmenter)


def load_film_segmenter(folder: str | Path, device: Any = "cpu") -> tuple[Any, dict] | None:
    """A checkpoint folder's film segmenter ``(net, meta)``, or None when it has none."""
    from rgct.model.segmenter import WEIGHTS_FILE, load_segmenter

    if not (Path(folder) / WEIGHTS_FILE).is_file():
        return None
    net, meta = load_segmenter(folder, device=device)
    if not is_film_segmenter(net):
        raise ValueError(f"{folder}: its segmenter reads CT volumes, not radiographs")
    return net, meta


def _film_maps(segmenter: Any, meta: dict, root: str | Path, split: str, max_films: int | None):
    """[(film, probs (K, H, W))] of a radiograph split, the segmenter's classes' maps at its
    own input size."""
    from rgct.data.film_targets import FilmSegmentationDataset
    from rgct.model.segmenter import data_config_from_meta

    cfg = data_config_from_meta(meta)
    ds = FilmSegmentationDataset(root, split, cfg, max_films, classes=segmenter.classes)
    out = []
    for i in range(len(ds)):
        out.append((ds.films[ds.names[i]], film_probabilities(segmenter, ds[i]["image"])))
    return out


def _truth_places(film: Any, classes: tuple[str, ...]) -> dict[str, set[str]]:
    from rgct.data.cxr_samples import film_places

    return {
        label: set(where.split(" and "))
        for label, where in film_places(film.boxes, film.shape).items()
        if label in classes
    }


def calibrate_film_segmenter(
    segmenter: Any,
    meta: dict,
    root: str | Path,
    split: str = "test",
    *,
    max_films: int | None = None,
    thresholds: tuple[float, ...] = FILM_THRESHOLD_GRID,
) -> dict:
    """Per class, the threshold with the best film-level detection F1 (a class is detected
    on a film when it has a box there) on films that are neither training nor held-out data;
    ties go to the higher threshold, and a class those films never show gets the highest.

    Returns:
        ``{"finding_thresholds": {class: t}, "scores": {class: {"f1", "true"}}, "films": N}``.
    """
    classes = tuple(segmenter.classes)
    maps = _film_maps(segmenter, meta, root, split, max_films)
    peaks = np.array([[float(p.max()) for p in probs] for _, probs in maps]).reshape(
        -1, len(classes)
    )
    truth = np.array([[c in _truth_places(film, classes) for c in classes] for film, _ in maps])
    truth = truth.reshape(-1, len(classes))
    grid = sorted(thresholds, reverse=True)
    found: dict = {"finding_thresholds": {}, "scores": {}, "films": len(maps)}
    for k, c in enumerate(classes):
        best_t, best_f1 = grid[0], -1.0
        for t in grid:  # highest first: a tie keeps the higher threshold
            f1 = rc.detection_scores(peaks[:, k : k + 1], truth[:, k : k + 1], [t])["f1"]
            if f1 > best_f1:
                best_t, best_f1 = t, f1
        found["finding_thresholds"][c] = float(best_t)
        found["scores"][c] = {"f1": round(best_f1, 4), "true": int(truth[:, k].sum())}
    return found


def score_film_segmenter(
    segmenter: Any,
    meta: dict,
    root: str | Path,
    split: str = "test",
    *,
    max_films: int | None = None,
    thresholds: dict[str, float] | None = None,
) -> dict:
    """What a film segmenter alone scores on a radiograph split (its calibrated thresholds by
    default): film-level detection of the boxable classes (accuracy over every (film, class),
    precision / recall / F1), the exact places of each true (film, class) as the localiser
    states them, and the true boxes the segmenter finds (a box of that class whose centre
    lies inside the true box)."""
    from rgct.data.cxr import Box

    classes = tuple(segmenter.classes)
    thresholds = thresholds if thresholds is not None else meta.get("finding_thresholds") or {}
    maps = _film_maps(segmenter, meta, root, split, max_films)
    said_rows, want_rows = [], []
    places_right = places_total = boxes_found = boxes_total = 0
    for film, probs in maps:
        truth = _truth_places(film, classes)
        found = film_boxes(probs, classes, thresholds)
        said_rows.append([c in found for c in classes])
        want_rows.append([c in truth for c in classes])
        for k, c in enumerate(classes):
            if c in truth:
                where = boxes_places(found[c]) if c in found else peak_place(probs[k])
                places_right += set(where.split(" and ")) == truth[c]
                places_total += 1
        sy, sx = probs.shape[1] / film.shape[0], probs.shape[2] / film.shape[1]
        for box in film.boxes:
            if box.class_name not in classes:
                continue
            scaled = Box(
                box.class_name, box.x_min * sx, box.y_min * sy, box.x_max * sx, box.y_max * sy
            )
            boxes_total += 1
            boxes_found += any(
                scaled.x_min <= (d["box"][0] + d["box"][2]) / 2 <= scaled.x_max
                and scaled.y_min <= (d["box"][1] + d["box"][3]) / 2 <= scaled.y_max
                for d in found.get(box.class_name, [])
            )
    said = np.array(said_rows, dtype=float).reshape(-1, len(classes))
    want = np.array(want_rows, dtype=bool).reshape(-1, len(classes))
    detection = rc.detection_scores(said, want, [0.5] * len(classes))
    tn = int(want.size - detection["tp"] - detection["fp"] - detection["fn"])
    return {
        "films": len(maps),
        "detection": {
            "accuracy": (detection["tp"] + tn) / max(want.size, 1),
            **detection,
            "tn": tn,
        },
        "places": {
            "exact": places_right / max(places_total, 1),
            "right": places_right,
            "findings": places_total,
        },
        "boxes": {
            "found": boxes_found / max(boxes_total, 1),
            "right": boxes_found,
            "boxes": boxes_total,
        },
    }
