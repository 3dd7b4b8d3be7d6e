"""The lesion evidence a model reads at a box: the region around it, its detections label."""

from __future__ import annotations

import numpy as np

from rgct.constants import CT_RATE_LABELS
from rgct.data.lesion_measure import LesionMeasure
from rgct.generate.lesion_evidence import (
    REGION_MARGIN_PX,
    LesionEvidence,
    LesionReading,
    region_at_box,
)

SHAPE = (3, 32, 32)


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    mask[1, y0:y1, x0:x1] = True
    return mask


def test_the_region_around_a_box_decides() -> None:
    lung = np.zeros(SHAPE, bool)
    lung[:, :, :16] = True
    mediastinum = ~lung
    masks = {"lung": lung, "mediastinum": mediastinum, "pleura": np.ones(SHAPE, bool)}
    assert region_at_box(masks, box(10, 14, 4, 8)) == "lung"  # pleura is no lesion region
    assert region_at_box(masks, box(10, 14, 20, 24)) == "mediastinum"
    # a small lesion the segmenter calls mediastinum, in lung all around: the margin decides
    inside = box(10, 12, 8, 10)
    masks["mediastinum"] = mediastinum | inside
    masks["lung"] = lung & ~inside
    assert REGION_MARGIN_PX >= 2 and region_at_box(masks, inside) == "lung"
    assert region_at_box({"heart": np.ones(SHAPE, bool)}, inside) is None


def test_readings_give_the_line_and_the_detections() -> None:
    m = LesionMeasure(15.6, 11.4, 140.0, 30.0, -850.0, 20)
    readings = [LesionReading("lung", m), LesionReading("mediastinum", None)]
    readings.append(LesionReading(None, None))
    assert [r.line for r in readings] == [
        "Lesion in this box: lung, 16 x 11 mm.",
        "Lesion in this box: mediastinum.",
        "Lesion in this box: not measured.",
    ]
    detections = LesionEvidence.detections(readings)
    assert detections.shape == (3, len(CT_RATE_LABELS))
    named = [[CT_RATE_LABELS[j] for j in row.nonzero().flatten().tolist()] for row in detections]
    assert named == [["Lung nodule"], ["Lymphadenopathy"], []]
