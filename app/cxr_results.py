"""What the radiograph mode shows: the model's report made uniform, and its HTML (no gradio).

A report (``Predictor.cxr_report``) becomes ``{"text", "sentences": [{"text", "label", "side",
"zone", "place", "boxes"}], "warnings", "truncated"}`` (:func:`normalise_cxr_report`); its
sentences are shown as clickable lines, each led by its place on the film ("right lower zone"),
so a click shows that zone and the boxes where the model found the finding (the page script
:data:`app.results.SENTENCE_JS` sends the sentence's index).
"""

from __future__ import annotations

import html
import math
from typing import Any

from app import viewer
from rgct.data.cxr import ZONES, location_words
from rgct.text import split_sentences

SIDES = ("right", "left", "central")
"""The sides a sentence's place may name (:func:`rgct.data.cxr.box_location`)."""

NO_PLACE = "no place"
EMPTY_REPORT = "<i>Write the findings report to see its sentences here.</i>"


def normalise_cxr_report(raw: dict | str) -> dict:
    """The Predictor's report as ``{"text", "sentences": [{"text", "label", "side", "zone",
    "place", "boxes"}], "warnings", "truncated"}``; ``place`` is "right lower zone" or None (a
    sentence without a side and zone, or with ones the app does not know: then a warning);
    ``boxes`` the [x0, y0, x1, y1] film-pixel boxes where the model found the sentence's finding
    (a box that is not four finite numbers with area is left out with a warning)."""
    if isinstance(raw, str):
        raw = {"text": raw, "sentences": [{"text": s} for s in split_sentences(raw)]}
    report = {
        "text": str(raw.get("text", "")),
        "sentences": [],
        "warnings": [str(w) for w in raw.get("warnings") or []],
        "truncated": bool(raw.get("truncated", False)),
    }
    for s in raw.get("sentences") or []:
        side, zone = s.get("side"), s.get("zone")
        place = location_words(side, zone) if side in SIDES and zone in ZONES else None
        if place is None and (side or zone):
            report["warnings"].append(f"Unknown place {side!r} {zone!r} of '{s.get('text', '')}'.")
        boxes = []
        for box in s.get("boxes") or []:
            if _is_box(box):
                boxes.append([float(v) for v in box])
            else:
                report["warnings"].append(f"Unreadable box {box!r} of '{s.get('text', '')}'.")
        report["sentences"].append(
            {"text": str(s.get("text", "")), "label": s.get("label"), "side": side,
             "zone": zone, "place": place, "boxes": boxes}
        )  # fmt: skip
    if report["truncated"]:
        report["warnings"].append(
            "The text was cut at the token limit: raise 'Max new tokens' for the full text."
        )
    return report


def _is_box(box: Any) -> bool:
    """Four finite numbers x0 < x1, y0 < y1."""
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        return False
    return all(math.isfinite(v) for v in (x0, y0, x1, y1)) and x0 < x1 and y0 < y1


def _colour(place: str | None) -> str:
    r, g, b = viewer.FINDING_COLOUR if place else (150, 150, 150)
    return f"#{r:02x}{g:02x}{b:02x}"


def cxr_report_html(report: dict | None, active: int | None = None) -> str:
    """The report as clickable sentences, each led by its side and zone (``active``:
    the highlighted one)."""
    if not report:
        return EMPTY_REPORT
    rows = []
    for i, s in enumerate(report["sentences"]):
        place, colour = s["place"] or NO_PLACE, _colour(s["place"])
        label = (
            f" <span class='rgct-badge'>▸ {html.escape(s['label'])}</span>" if s["label"] else ""
        )
        cls = "rgct-sentence rgct-active" if i == active else "rgct-sentence"
        rows.append(
            f'<div class="{cls}" data-sentence="{i}" data-source="report" role="button" '
            f'tabindex="0" style="border-left:6px solid {colour}">'
            f'<span class="rgct-region" style="color:{colour}">{html.escape(place)}</span>'
            f'<span class="rgct-text">{html.escape(s["text"])}{label}</span></div>'
        )
    if not rows:
        rows.append(f"<div>{html.escape(report['text']) or 'The model wrote nothing.'}</div>")
    head = (
        '<div class="rgct-source">click a sentence to see its zone (and the box where the model '
        "found it)</div>"
    )
    return f'<div class="rgct-report">{head}' + "\n".join(rows) + "</div>"


def box_answer_html(answer: dict | None) -> str:
    """The answer about the box, led by the box and where it lies."""
    if not answer:
        return ""
    x0, y0, x1, y1 = answer["box"]
    return (
        '<div class="rgct-report"><div class="rgct-source">What is in the given box?</div>'
        f'<div class="rgct-sentence" style="border-left:6px solid #ffdc00">'
        f'<span class="rgct-region">box ({x0}, {y0})-({x1}, {y1}), '
        f"{html.escape(answer['place'])}</span>"
        f'<span class="rgct-text">{html.escape(answer["answer"])}</span></div></div>'
    )
