"""A stand-in for a chest-radiograph ``rgct.inference.Predictor`` (``modality == "cxr"``), with
its interface and no model: ``cxr_ask(image, question, box=None, generation=None) -> str`` and
``cxr_report(image, generation=None) -> {"text", "sentences": [{"text", "label", "side",
"zone"}]}``. Its output is a deterministic function of its input, so tests can check what the
app did with it:

- a finding is the bright pixels (> :data:`BRIGHT`) of the film; the report has one sentence
  "Lung opacity in the <side> <zone> zone." placed by :func:`rgct.data.cxr.box_location` of their
  bounding box, which is its ``boxes`` (as a film detector's; "No finding." without any), then
  "COPD." with no place;
- the answer about a box says what the box holds: "Lung opacity." when it covers half of the
  finding, else "No finding.", followed by ``| box=[...] | tokens=<max_new_tokens>``; a free
  question is echoed with the film's size;
- a box outside the film, without area, or smaller than :data:`MIN_BOX` pixels a side raises
  ``ValueError`` (the real Predictor refuses bad boxes the same way);
- text longer than ``max_new_tokens`` words is cut.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from rgct.data.cxr import Radiograph, box_location, box_mask, box_problem, load_radiograph

BRIGHT = 0.8
MIN_BOX = 2


def _array(image: Any) -> np.ndarray:
    if isinstance(image, Radiograph):
        return image.array
    if isinstance(image, (str, Path)):
        return load_radiograph(image).array
    raise ValueError(f"expected a Radiograph or a path, got {type(image).__name__}")


def _cut(text: str, generation: dict | None) -> str:
    limit = (generation or {}).get("max_new_tokens")
    words = text.split()
    return " ".join(words[:limit]) if limit is not None and len(words) > limit else text


class FakeCxrPredictor:
    """Deterministic fake of a radiograph Predictor.

    Attributes:
        calls: (method, question or None, box or None, generation) tuples, in call order.
    """

    modality = "cxr"

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self._lock = threading.Lock()

    def _finding(self, array: np.ndarray) -> np.ndarray:
        return array > BRIGHT

    def cxr_ask(
        self,
        image: Any,
        question: str,
        box: tuple[float, float, float, float] | None = None,
        generation: dict | None = None,
    ) -> str:
        array = _array(image)
        with self._lock:
            self.calls.append(("cxr_ask", question, box, generation))
        if box is None:
            return _cut(f"Q={question} | film {array.shape[1]}x{array.shape[0]}", generation)
        problem = box_problem(tuple(float(v) for v in box), array.shape[1], array.shape[0])
        if problem is not None:
            raise ValueError(problem[1])
        if min(box[2] - box[0], box[3] - box[1]) < MIN_BOX:
            raise ValueError(f"box {list(box)} is smaller than {MIN_BOX}x{MIN_BOX} pixels")
        finding = self._finding(array)
        inside = (finding & box_mask(box, array.shape)).sum()
        said = "Lung opacity." if finding.any() and inside >= 0.5 * finding.sum() else "No finding."
        tokens = (generation or {}).get("max_new_tokens")
        return _cut(f"{said} | box={list(box)} | tokens={tokens}", generation)

    def cxr_report(self, image: Any, generation: dict | None = None) -> dict:
        array = _array(image)
        with self._lock:
            self.calls.append(("cxr_report", None, None, generation))
        finding = self._finding(array)
        sentences = []
        if finding.any():
            rows, cols = np.flatnonzero(finding.any(1)), np.flatnonzero(finding.any(0))
            box = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
            side, zone = box_location(box, array.shape)
            text = f"Lung opacity in the {side} {zone} zone."
            sentences.append(
                {
                    "text": text,
                    "label": "Lung Opacity",
                    "side": side,
                    "zone": zone,
                    "boxes": [[float(v) for v in box]],
                }
            )
        else:
            sentences.append({"text": "No finding.", "label": None, "side": None, "zone": None})
        sentences.append({"text": "COPD.", "label": "COPD", "side": None, "zone": None})
        return {
            "text": _cut(" ".join(s["text"] for s in sentences), generation),
            "sentences": sentences,
        }
