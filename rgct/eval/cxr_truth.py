"""Checking radiograph prediction lines against a VinDr-CXR or ChestX-ray14 folder's own truth
(``rgct evaluate --data``), through :func:`rgct.eval.predictions.read_predictions`.

The truth is what the task samples were made from (:mod:`rgct.data.cxr_samples`): the readers'
fused or consensus boxes and the image labels. An image the folder lacks is an ``unknown
volume``; a reference that disagrees with the truth is a ``reference mismatch``: a ``cxr_box``
line whose box no truth box overlaps with IoU >= :data:`BOX_MATCH_IOU`, or whose reference names
another class than those boxes; another yes/no; other places; other labels; another report
(each compared in the form it is scored in, :mod:`rgct.eval.cxr_parse`).

Example::

    check = truth_check(load_cxr_truth(root, "vindr-cxr"), "vindr-cxr", root)
    report = read_predictions("preds.jsonl", check=check)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rgct.constants import CXR_TASKS
from rgct.data.cxr import Box, iou
from rgct.data.cxr_samples import NO_FINDINGS, box_locations, findings_report
from rgct.eval.cxr_parse import find_classes, find_locations, parse_presence, parse_report
from rgct.eval.predictions import LineCheck

BOX_MATCH_IOU = 0.5
"""A ``cxr_box`` line's box is the truth box it overlaps with at least this IoU."""


@dataclass
class ImageTruth:
    """One radiograph of a VinDr-CXR or ChestX-ray14 folder, as its task samples see it."""

    shape: tuple[int, int]
    boxes: list[Box] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


def load_cxr_truth(root: str | Path, layout: str) -> dict[str, ImageTruth]:
    """Image id (VinDr-CXR) or ``Image Index`` (ChestX-ray14) -> its truth, every split (the
    readers' fused or consensus boxes and image labels: what the samples were made from)."""
    if layout == "vindr-cxr":
        from rgct.data.vindr import VINDR_SPLITS, load_vindr

        images = [i for s in VINDR_SPLITS for i in load_vindr(root, s).images.values()]
        return {i.image_id: ImageTruth((i.size[1], i.size[0]), i.boxes, i.labels) for i in images}
    if layout == "chestxray14":
        from rgct.data.chestxray14 import load_chestxray14

        index = load_chestxray14(root)
        return {
            i.name: ImageTruth((i.size[1], i.size[0]), i.boxes, i.labels)
            for i in index.images.values()
        }
    raise ValueError(f"layout must be 'vindr-cxr' or 'chestxray14', got {layout!r}")


def _asked(question: str, layout: str) -> str | None:
    named = find_classes(question, layout)
    return named[0] if len(named) == 1 else None


def _expected(rec: dict, image: ImageTruth, layout: str) -> tuple[Any, Any] | str:
    """(what the reference says, what the truth says) in the scored form, or why the line
    cannot be checked."""
    task, reference = rec["task"], rec["reference"]
    present = [lab for lab in image.labels if lab not in NO_FINDINGS]
    if task == "cxr_box":
        box = tuple(float(v) for v in rec["box"])
        overlaps = [(iou(box, b.coords), b) for b in image.boxes]
        hits = [b.class_name for o, b in overlaps if o >= BOX_MATCH_IOU]
        if not hits:
            best = max((o for o, _ in overlaps), default=0.0)
            return f"box {list(box)} overlaps no box of the image (best IoU {best:.2f})"
        said = set(find_classes(reference, layout))
        return said, (said if len(said) == 1 and said <= set(hits) else set(hits))
    if task in ("cxr_presence", "cxr_location"):
        asked = _asked(rec.get("question") or "", layout)
        if asked is None:
            return f"the question names no single {layout} class"
        if task == "cxr_presence":
            return parse_presence(reference), asked in present
        places = zip(image.boxes, box_locations(image.boxes, image.shape))
        return set(find_locations(reference)), {w for b, w in places if b.class_name == asked}
    if task == "cxr_labels":
        return set(find_classes(reference, layout)), set(present)
    report = findings_report(image.boxes, image.labels, image.shape)
    return parse_report(reference, layout), parse_report(report, layout)


def truth_check(truth: dict[str, ImageTruth], layout: str, root: str | Path) -> LineCheck:
    """A :func:`rgct.eval.predictions.read_predictions` check of radiograph lines against a
    folder's truth (see the module notes); other tasks' lines get an ``unknown task`` problem."""

    def check(rec: dict) -> list[tuple[str, str]]:
        if rec.get("task") not in CXR_TASKS:
            return [("bad field", f"task {rec.get('task')!r} is not a radiograph task")]
        volume = rec.get("volume") or ""
        image = truth.get(volume)
        if image is None:
            return [("unknown volume", f"image {volume!r} is not in {root} ({len(truth)} images)")]
        found = _expected(rec, image, layout)
        if isinstance(found, str):
            return [("reference mismatch", f"{rec['task']} of {volume}: {found}")]
        said, wanted = found
        if said != wanted:
            return [
                (
                    "reference mismatch",
                    f"{rec['task']} of {volume}: the reference {rec['reference']!r} reads "
                    f"{_show(said)}; the folder's truth is {_show(wanted)}",
                )
            ]
        return []

    return check


def _show(value: Any) -> str:
    if isinstance(value, set):
        return "{" + ", ".join(sorted(map(str, value))) + "}" if value else "nothing"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "neither yes nor no"
    return str(value)
