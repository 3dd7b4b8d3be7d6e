"""The lesion evidence line at generation: what the model itself finds at a DeepLesion box.

A checkpoint trained with ``data.lesion_evidence`` learned to describe a lesion from the line
``Lesion in this box: lung, 16 x 12 mm.`` that training wrote from ``DL_info.csv``. At
generation nothing comes from the truth:

- the region: the checkpoint's segmenter (:mod:`rgct.model.segmenter`) segments the lesion's
  volume once; the region of :data:`~rgct.data.source_maps.LESION_REGIONS` holding most of the
  box widened by :data:`REGION_MARGIN_PX` is the lesion's (none when it lies in none of them):
  the margin adds the tissue around a small lesion, which the segmenter sees better than the
  lesion itself (on 35 DeepLesion phantom lesions of a training seed: 34 right, 32 on the box
  alone);
- the diameters: measured from the pixels under the box
  (:func:`rgct.data.lesion_measure.measure_lesion`).

The detections line of ``model.evidence_prompt`` models is the CT-RATE label of the lesion type
of that region (:func:`~rgct.data.source_maps.lesion_region_label`): training put the lesion
type's label there, and the region classifier, fitted on whole regions, does not see a box on
one slice (on DeepLesion phantoms of a training seed it named no lymph node under any node's
box). The blind baseline's line says ``not measured`` (its image is blank) and its detections
come from the classifier on the blank image, as for every other blind row.

Example::

    lesions = build_lesion_evidence(cfg, "runs/stage3_lesions/model", device)
    reading = lesions.read(sample.image_path, sample.mask_path)
    reading.line      # 'Lesion in this box: lung, 15 x 12 mm.'
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rgct.constants import CT_RATE_LABELS
from rgct.data.io import load_mask, load_volume
from rgct.data.lesion_measure import (
    LesionMeasure,
    lesion_evidence_line,
    measure_lesion,
    widen_box,
)
from rgct.data.source_maps import LESION_REGIONS, lesion_region_label

logger = logging.getLogger(__name__)

BLIND_LINE = lesion_evidence_line(None, None, None)
"""The evidence line of the blind baseline: nothing measured."""
REGION_MARGIN_PX = 2
"""The box is widened by this many pixels on each side before the regions are counted."""


@dataclass(frozen=True)
class LesionReading:
    """What the model finds at one lesion box.

    Attributes:
        region: the region of :data:`LESION_REGIONS` holding most of the box, or None.
        measure: the pixel measurement, or None when nothing stands out under the box.
    """

    region: str | None
    measure: LesionMeasure | None

    @property
    def line(self) -> str:
        """The lesion evidence line."""
        m = self.measure
        return lesion_evidence_line(
            self.region, m.long_mm if m else None, m.short_mm if m else None
        )

    @property
    def label(self) -> str | None:
        """The CT-RATE label of the region's lesion type (the detections line), or None."""
        return lesion_region_label(self.region)


def region_at_box(masks: dict[str, np.ndarray], box: np.ndarray) -> str | None:
    """The region of :data:`LESION_REGIONS` whose mask holds most of ``box`` widened by
    :data:`REGION_MARGIN_PX` (None: none holds any of it).

    Args:
        masks: region name -> bool (D, H, W) (other names are ignored).
        box: bool (D, H, W), the lesion's box on one slice.
    """
    near = widen_box(box, REGION_MARGIN_PX)
    counts = {r: int((masks[r] & near).sum()) for r in LESION_REGIONS if r in masks}
    best = max(counts, key=counts.get, default=None)
    return best if best is not None and counts[best] > 0 else None


class LesionEvidence:
    """Reads lesion boxes with a segmenter; each volume is segmented once (a few kept).

    Args:
        segmenter: ``(Segmenter, meta)`` as :func:`rgct.model.segmenter.load_segmenter` gives.
        keep: how many volumes' region masks are kept (a series' lesions come together).
    """

    def __init__(self, segmenter: tuple[Any, dict], keep: int = 4) -> None:
        self.net, self.meta = segmenter
        self.keep = keep
        self._regions: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()

    def _region_masks(self, image_path: str, volume) -> dict[str, np.ndarray]:
        from rgct.generate.segment import segment_volume

        if image_path not in self._regions:
            seg = segment_volume(self.net, self.meta, volume)
            self._regions[image_path] = {r: seg.masks[r] for r in LESION_REGIONS if r in seg.masks}
            while len(self._regions) > self.keep:
                self._regions.popitem(last=False)
        return self._regions[image_path]

    def read(self, image_path: str | Path, mask_path: str | Path) -> LesionReading:
        """The region and measurement at the box ``mask_path`` on the volume ``image_path``.

        Raises:
            DataError: an unreadable volume or a mask that does not fit it (named).
        """
        volume = load_volume(image_path)
        box = load_mask(mask_path, volume)
        region = region_at_box(self._region_masks(str(image_path), volume), box)
        return LesionReading(region, measure_lesion(volume.array, box, volume.spacing))

    @staticmethod
    def detections(readings: list[LesionReading]) -> torch.Tensor:
        """(B, 18) bool: each reading's region label (CT_RATE_LABELS order) for the detections
        line."""
        out = torch.zeros(len(readings), len(CT_RATE_LABELS), dtype=torch.bool)
        for row, reading in enumerate(readings):
            if reading.label is not None:
                out[row, CT_RATE_LABELS.index(reading.label)] = True
        return out


def build_lesion_evidence(
    cfg: Any, checkpoint: str | Path, device: Any = "cpu"
) -> LesionEvidence | None:
    """The lesion reader a ``data.lesion_evidence`` checkpoint needs (None for other models).

    Raises:
        FileNotFoundError: the checkpoint has no segmenter to find the lesion's region with.
    """
    if not cfg.data.lesion_evidence:
        return None
    from rgct.model.segmenter import WEIGHTS_FILE, load_segmenter

    if not (Path(checkpoint) / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"{checkpoint}: data.lesion_evidence needs the checkpoint's segmenter "
            f"({WEIGHTS_FILE}) to find the region holding each lesion box"
        )
    return LesionEvidence(load_segmenter(checkpoint, device=device))


def lesion_prompts(
    lesions: LesionEvidence, samples: list[Any], prompts: list[str], blind: bool
) -> tuple[list[str], list[str], torch.Tensor | None]:
    """The prompts of a batch of lesion rows with their evidence lines.

    Args:
        lesions: the reader.
        samples: the rows' samples (``task``, ``image_path``, ``mask_path``).
        prompts: their plain prompts.
        blind: the blind baseline (nothing measured; no detections given).

    Returns:
        ``(prompts, evidence lines, detections (B, 18) bool or None)``; unchanged prompts,
        no lines and None when no row is a lesion task.

    Raises:
        ValueError: lesion rows mixed with other tasks in one batch (a DeepLesion folder
            gives only lesion tasks).
    """
    from rgct.constants import LESION_TASKS

    lesion_rows = [s.task in LESION_TASKS for s in samples]
    if not any(lesion_rows):
        return prompts, [], None
    if not all(lesion_rows):
        raise ValueError(
            f"lesion rows mixed with {sorted({s.task for s in samples} - set(LESION_TASKS))} "
            "in one batch: the lesion evidence replaces every row's detections"
        )
    if blind:
        lines = [BLIND_LINE] * len(samples)
        detections = None
    else:
        readings = [lesions.read(s.image_path, s.mask_path) for s in samples]
        lines = [r.line for r in readings]
        detections = lesions.detections(readings)
    return [f"{line} {p}" for line, p in zip(lines, prompts)], lines, detections
