"""Training targets of the radiograph segmenter: each boxable class's boxes as a mask.

The radiograph counterpart of :class:`rgct.data.seg_targets.SegmentationDataset` (same items,
so :func:`rgct.train.segmenter.fit_segmenter` trains either): one film of a VinDr-CXR or
ChestX-ray14 split per item, its image preprocessed exactly as the radiograph model sees it
(:func:`rgct.data.cxr_transforms.preprocess_radiograph`, ``data.input_shape`` (H, W)) and one
target channel per class a box can have (:data:`rgct.data.cxr_samples.BOXED` of the layout):
the union of that class's boxes, resized like any box mask (nearest). A film with boxes of no
class leaves its channels empty: "nothing here" is taught too.

Which channels count (``valid``): VinDr-CXR draws a box for every local finding, so every
channel of every film is annotated. ChestX-ray14 has boxes for about 1,000 of its 112,120
films: a film without boxes but with an image label of a boxable class is annotated for every
*other* channel only (its finding is somewhere, not nowhere).

Films are read once and kept in memory (a 256 x 256 film is 256 KiB of float32).

Example::

    ds = FilmSegmentationDataset("data/phantoms_vindr", "train", cfg.data)
    item = ds[0]     # {"image": (1, H, W), "target": (K, H, W) uint8, "valid": (K,), "volume"}
    ds.classes       # ('Aortic enlargement', 'Atelectasis', ...)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rgct.config import DataConfig
from rgct.data.cxr import box_mask, load_radiograph
from rgct.data.cxr_samples import BOXED, Film, load_films
from rgct.data.cxr_transforms import preprocess_radiograph
from rgct.data.io import DataError
from rgct.data.source_report import detect_layout

FILM_LAYOUTS = tuple(BOXED)
"""The radiograph layouts a film segmenter trains on."""


def film_classes(layout: str) -> tuple[str, ...]:
    """The classes a radiograph segmenter of ``layout`` segments (the ones a box can have)."""
    if layout not in BOXED:
        raise DataError(f"layout {layout!r} has no radiograph boxes (one of {FILM_LAYOUTS})")
    return tuple(BOXED[layout])


def film_target(
    film: Film, classes: Sequence[str], cfg: DataConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (K, H, W) at ``cfg.input_shape``, bool (K,) valid) of one film (module notes)."""
    k = len(classes)
    target = np.zeros((k, *film.shape), dtype=bool)
    for box in film.boxes:
        if box.class_name in classes:
            target[list(classes).index(box.class_name)] |= box_mask(box.coords, film.shape)
    valid = np.ones(k, dtype=bool)
    if not film.boxes:  # a film labelled without boxes: its labelled channels are unknown
        for label in film.labels:
            if label in classes:
                valid[list(classes).index(label)] = False
    size = tuple(int(s) for s in cfg.input_shape)
    t = torch.from_numpy(target.astype(np.float32))[None]
    resized = torch.nn.functional.interpolate(t, size=size, mode="nearest")[0]
    return resized.numpy().astype(np.uint8), valid


class FilmSegmentationDataset(torch.utils.data.Dataset):
    """(image, target, valid) per film of a radiograph split, read once and kept in memory.

    Items: ``{"image": (1, H, W) float32, "target": (K, H, W) uint8, "valid": (K,) bool,
    "volume": image name}`` (films sorted by name, the first ``max_films`` kept).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        cfg: DataConfig,
        max_films: int | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        if cfg.modality != "cxr" or len(cfg.input_shape) != 2:
            raise DataError(
                f"a film segmenter needs data.modality=cxr and a 2D input_shape, got "
                f"{cfg.modality!r} {list(cfg.input_shape)}"
            )
        self.root = Path(root)
        self.layout = detect_layout(root)
        self.classes = tuple(classes) if classes is not None else film_classes(self.layout)
        films = load_films(root, self.layout, split)
        self.names = sorted(films)[:max_films]
        if not self.names:
            raise DataError(f"{root} ({self.layout}) split {split!r}: no films to segment")
        self.films = {n: films[n] for n in self.names}
        self.cfg = cfg
        self._items: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict:
        if i not in self._items:
            film = self.films[self.names[i]]
            image, _ = preprocess_radiograph(load_radiograph(film.path), None, self.cfg)
            target, valid = film_target(film, self.classes, self.cfg)
            self._items[i] = {
                "image": image.float(),
                "target": torch.from_numpy(target),
                "valid": torch.from_numpy(valid),
                "volume": film.name,
            }
        return self._items[i]


def box_visibility(dataset: FilmSegmentationDataset) -> dict[str, dict]:
    """How much each boxed finding shows on its film: per class, the z-score of its box's mean
    displayed value against the same box's mean on every other film of ``dataset`` (the
    population's anatomy, most films without that finding there). A finding a reader can see
    moves its box by several standard deviations; one the anatomy hides by a fraction of one.

    Returns:
        ``{class: {"boxes", "mean_z", "share_above_2"}}`` (classes with a box only).
    """
    if len(dataset) < 3:
        raise DataError(f"box visibility needs at least 3 films, got {len(dataset)}")
    images = np.stack([dataset[i]["image"][0].numpy() for i in range(len(dataset))])
    size = images.shape[1:]
    scores: dict[str, list[float]] = {}
    for i, name in enumerate(dataset.names):
        film = dataset.films[name]
        sy, sx = size[0] / film.shape[0], size[1] / film.shape[1]
        for box in film.boxes:
            coords = (box.x_min * sx, box.y_min * sy, box.x_max * sx, box.y_max * sy)
            means = images[:, box_mask(coords, size)].mean(1)
            others = np.delete(means, i)
            z = (means[i] - others.mean()) / max(float(others.std()), 1e-6)
            scores.setdefault(box.class_name, []).append(float(z))
    return {
        c: {
            "boxes": len(z),
            "mean_z": round(float(np.mean(z)), 3),
            "share_above_2": round(float(np.mean(np.abs(z) > 2)), 3),
        }
        for c, z in sorted(scores.items())
    }
