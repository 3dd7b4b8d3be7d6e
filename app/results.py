"""What the model returns, made uniform, checked, shown and exported.

The Predictor's outputs (see ``rgct.inference``) are normalised here to one report shape, so
the rest of the app never asks which version of the Predictor it talks to::

    {"text", "sentences": [{"region", "text", "labels", "finding"}], "regions": {region: text},
     "findings": [{"label", "lobes", "side", "center_voxel", "box_voxel", "box_mm",
                   "probability", "mask"}], "mask_source", "warnings", "truncated"}

Each sentence's ``finding`` also gets ``"index"`` (its position in ``findings``) so the viewer
can show the finding's own mask. Nothing here imports gradio.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from app import viewer
from rgct.constants import CT_RATE_LABELS
from rgct.files import write_text
from rgct.text import split_sentences

REPORT_KEYS = ("text", "sentences", "regions", "findings", "mask_source", "warnings", "truncated")


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays inside ``value`` -> plain Python (for JSON and the API)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _same_finding(a: dict, b: dict) -> bool:
    return a.get("label") == b.get("label") and list(a.get("center_voxel") or []) == list(
        b.get("center_voxel") or []
    )


def normalise_report(raw: dict | str, region: str | None, mask_source: str | None) -> dict:
    """Any Predictor report (a dict, or the plain text of an older ``region_report``) in the
    app's one report shape.

    Args:
        raw: what ``Predictor.report`` / ``region_report`` returned.
        region: region name for plain text (its sentences are tagged with it).
        mask_source: where the masks came from, when the app gave them (it knows better than
            the Predictor, which cannot tell an uploaded mask from a dataset one).
    """
    if isinstance(raw, str):
        sentences = [{"region": region or "given region", "text": s} for s in split_sentences(raw)]
        raw = {"text": raw, "sentences": sentences, "regions": {region or "given region": raw}}
    report = {
        "text": str(raw.get("text", "")),
        "sentences": [],
        "regions": dict(raw.get("regions") or {}),
        "findings": [dict(f) for f in raw.get("findings") or []],
        "mask_source": mask_source or raw.get("mask_source") or "unknown",
        "warnings": [str(w) for w in raw.get("warnings") or []],
        "truncated": bool(raw.get("truncated", False)),
    }
    for s in raw.get("sentences") or []:
        sentence = {
            "region": s.get("region", region or ""),
            "text": s.get("text", ""),
            "labels": list(s.get("labels") or []),
            "finding": dict(s["finding"]) if s.get("finding") else None,
        }
        if sentence["finding"] is not None:
            match = [
                i for i, f in enumerate(report["findings"]) if _same_finding(f, sentence["finding"])
            ]
            sentence["finding"]["index"] = match[0] if match else None
        report["sentences"].append(sentence)
    if report["truncated"] and not any("token limit" in w for w in report["warnings"]):
        report["warnings"].append(
            "The text was cut at the token limit: raise 'Max new tokens' for the full text."
        )
    return report


def public_report(report: dict, **meta: Any) -> dict:
    """The report as plain JSON (finding masks left out), with ``meta`` keys added."""
    out = {k: report[k] for k in REPORT_KEYS if k in report}
    out["findings"] = [
        {k: v for k, v in f.items() if k != "mask"} for f in report.get("findings", [])
    ]
    out["sentences"] = [
        {**s, "finding": {k: v for k, v in s["finding"].items() if k != "index"}}
        if s.get("finding")
        else s
        for s in report.get("sentences", [])
    ]
    out.update(meta)
    return _jsonable(out)


def finding_mask(report: dict, sentence: dict, shape: tuple[int, int, int]) -> np.ndarray | None:
    """The finding's own (D, H, W) mask for a sentence: the model's finding mask, else its box.

    None when the sentence states no located finding.
    """
    finding = sentence.get("finding")
    if not finding:
        return None
    index = finding.get("index")
    if index is not None and report["findings"][index].get("mask") is not None:
        mask = np.asarray(report["findings"][index]["mask"], dtype=bool)
        if mask.shape == tuple(shape) and mask.any():
            return mask
    box = finding.get("box_voxel")
    if box is None or len(box) != 6:
        return None
    z0, y0, x0, z1, y1, x1 = (int(v) for v in box)
    mask = np.zeros(shape, bool)
    mask[max(z0, 0) : z1 + 1, max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
    return mask if mask.any() else None


def finding_centre(sentence: dict, mask: np.ndarray | None) -> tuple[int, int, int] | None:
    """Where to centre the three planes for a finding sentence: its centre voxel, else the
    centre of its mask."""
    finding = sentence.get("finding") or {}
    centre = finding.get("center_voxel")
    if centre is not None and len(centre) == 3:
        return int(centre[0]), int(centre[1]), int(centre[2])
    return viewer.mask_centroid(mask) if mask is not None else None


def finding_words(finding: dict) -> str:
    """``'Lung nodule, right lung upper lobe (p=0.91)'``."""
    where = ", ".join(finding.get("lobes") or []) or (finding.get("side") or "")
    p = finding.get("probability")
    tail = f" (p={float(p):.2f})" if p is not None else ""
    return f"{finding.get('label', 'finding')}{', ' + where if where else ''}{tail}"


# --- disagreement between an answer and the report -------------------------------------------


def _placements(report: dict, labeler: Any) -> dict[str, dict[str, set[str]]]:
    """label -> {"lobes", "sides"}: where the report puts each finding it states, from its
    grounded findings and from the words of its sentences."""
    out: dict[str, dict[str, set[str]]] = {}

    def add(label: str, lobes: Any, side: str | None) -> None:
        entry = out.setdefault(label, {"lobes": set(), "sides": set()})
        entry["lobes"].update(lobes or [])
        if side:
            entry["sides"].add(side)

    for f in report.get("findings") or []:
        add(f.get("label", ""), f.get("lobes"), f.get("side"))
    for sentence in report.get("sentences") or []:
        for read in labeler.label_sentences(sentence.get("text", "")):
            for label in read.positive:
                add(label, read.lobes, read.side)
    return out


def disagreements(report: dict | None, question: str, answer: str) -> list[str]:
    """Warnings where an answer contradicts the report about the same finding.

    Two kinds: the answer places a finding the report also places, but in other lobes (or on
    the other side); or the answer says "no" to a question about a finding the report states.
    A finding is named by the answer, or else by the question ("Where is the nodule?" answered
    with a lobe).

    Args:
        report: the session's normalised full report (None: nothing to compare).
        question: the question asked.
        answer: the model's answer.
    """
    if not report:
        return []
    from rgct.eval.labeler import default_labeler

    labeler = default_labeler()
    placed = _placements(report, labeler)
    if not placed:
        return []
    asked = [label for s in labeler.label_sentences(question) for label in s.positive]
    out: list[str] = []
    for said in labeler.label_sentences(answer):
        for label in said.positive or (asked if said.lobes or said.side else []):
            if label not in placed:
                continue
            lobes, sides = placed[label]["lobes"], placed[label]["sides"]
            if said.lobes and lobes and not lobes & set(said.lobes):
                out.append(
                    f"The answer places the {label.lower()} in the {', '.join(said.lobes)}; "
                    f"the report places it in the {', '.join(sorted(lobes))}."
                )
            elif (
                said.side in ("left", "right")
                and sides
                and "bilateral" not in sides
                and said.side not in sides
            ):
                out.append(
                    f"The answer places the {label.lower()} on the {said.side}; "
                    f"the report places it on the {', '.join(sorted(sides))}."
                )
    if answer.strip().lower().startswith("no"):
        for label in asked:
            if label in placed:
                out.append(f"The answer says no {label.lower()}; the report states one.")
    return list(dict.fromkeys(out))


# --- HTML for the UI ---------------------------------------------------------------------------


def _sentence_div(i: int, s: dict, active: bool = False, source: str = "report") -> str:
    region = s.get("region", "")
    colour = viewer.colour_hex(region)
    finding = s.get("finding")
    badge = (
        f'<span class="rgct-badge" title="located finding">▸ {html.escape(finding_words(finding))}'
        "</span>"
        if finding
        else ""
    )
    cls = "rgct-sentence rgct-active" if active else "rgct-sentence"
    return (
        f'<div class="{cls}" data-sentence="{i}" data-source="{source}" role="button" '
        f'tabindex="0" style="border-left:6px solid {colour}">'
        f'<span class="rgct-region" style="color:{colour}">{html.escape(region)}</span>'
        f'<span class="rgct-text">{html.escape(s.get("text", ""))}{badge}</span></div>'
    )


def report_html(
    report: dict | None,
    active: int | None = None,
    only: str | None = None,
    source: str = "report",
) -> str:
    """The report as clickable sentences, one coloured line each with its region.

    Args:
        report: a normalised report, or None.
        active: index of the highlighted sentence.
        only: show only this region's sentences (the list shown after a click in the viewer).
        source: which result the sentences belong to ("report" or "region"), sent back on a
            click.
    """
    if not report:
        return ""
    rows = [
        _sentence_div(i, s, i == active, source)
        for i, s in enumerate(report.get("sentences", []))
        if only is None or s.get("region") == only
    ]
    if not rows:
        text = report.get("text", "") if only is None else f"The report says nothing about {only}."
        rows.append(f"<div>{html.escape(text)}</div>")
    head = f'<div class="rgct-source">masks: {html.escape(str(report.get("mask_source")))}</div>'
    return f'<div class="rgct-report">{head}' + "\n".join(rows) + "</div>"


SENTENCE_JS = (
    "element.addEventListener('click', (e) => {"
    " const s = e.target.closest('[data-sentence]');"
    " if (s) trigger('click', {sentence: s.dataset.sentence, source: s.dataset.source}); });"
)
"""``js_on_load`` of the report HTML: a click on a sentence sends its index to the server."""


def evidence_html(probabilities: dict[str, float] | None, region: str | None) -> str:
    """A small horizontal bar chart of the region classifier's label probabilities."""
    if not probabilities:
        return ""
    rows = []
    for label in sorted(probabilities, key=lambda k: -probabilities[k]):
        p = float(probabilities[label])
        colour = "#d9534f" if p >= 0.5 else "#8aa4c8"
        rows.append(
            f'<div class="rgct-bar" title="{html.escape(label)}: {p:.3f}">'
            f'<span class="rgct-bar-label">{html.escape(label)}</span>'
            f'<span class="rgct-bar-track"><span style="width:{100 * p:.1f}%;'
            f'background:{colour}"></span></span><span class="rgct-bar-value">{p:.2f}</span></div>'
        )
    title = f"Region classifier: label probabilities in <b>{html.escape(region or '?')}</b>"
    return f'<div class="rgct-evidence"><div>{title}</div>{"".join(rows)}</div>'


def warnings_html(warnings: list[str]) -> str:
    """Warnings as a list (empty string when there are none)."""
    if not warnings:
        return ""
    items = "".join(f"<li>{html.escape(w)}</li>" for w in dict.fromkeys(warnings))
    return f'<div class="rgct-warnings"><b>⚠️ Warnings</b><ul>{items}</ul></div>'


# --- exports -------------------------------------------------------------------------------------


def _png_data_uri(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def key_images(volume: Any, report: dict, masks: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    """(caption, PNG data URI): each located finding on its axial slice, else each region
    with a sentence at its largest axial slice (at most eight images)."""
    array = volume.array
    spacing = tuple(volume.spacing) if getattr(volume, "spacing", None) is not None else None
    images: list[tuple[str, str]] = []
    for s in report.get("sentences", []):
        mask = finding_mask(report, s, array.shape)
        centre = finding_centre(s, mask)
        if mask is None or centre is None:
            continue
        layers = [viewer.Layer(mask, viewer.FINDING_COLOUR, 0.45)]
        if s["region"] in masks:
            layers.insert(0, viewer.Layer(masks[s["region"]], viewer.region_colour(s["region"]), 0))
        p = viewer.plane(array.shape, "axial", centre[0], spacing=spacing, min_size=256)
        rgb = viewer.render_plane(array, p, viewer.WINDOW_PRESETS["lung"], layers, cursor=centre)
        images.append((f"{s['text']} (slice {centre[0]})", _png_data_uri(rgb)))
    if not images:
        for region in dict.fromkeys(s["region"] for s in report.get("sentences", [])):
            if region not in masks:
                continue
            at = viewer.largest_slices(masks[region])
            if at is None:
                continue
            p = viewer.plane(array.shape, "axial", at[0], spacing=spacing, min_size=256)
            layer = viewer.Layer(masks[region], viewer.region_colour(region), 0.3)
            rgb = viewer.render_plane(array, p, viewer.WINDOW_PRESETS["lung"], [layer])
            images.append((f"{region} (slice {at[0]})", _png_data_uri(rgb)))
    return images[:8]


def report_text(report: dict, meta: dict) -> str:
    """Plain-text report: a header with model, settings and mask source, then
    ``region: sentence`` lines and the warnings."""
    head = [
        f"Scan: {meta.get('scan')}",
        f"Model: {meta.get('model')}",
        f"Settings: {json.dumps(meta.get('settings'))}",
        f"Mask source: {report.get('mask_source')}",
        f"Written: {meta.get('written')}",
        "Research demo output: not for clinical use.",
        "",
    ]
    lines = [f"{s['region']}: {s['text']}" for s in report.get("sentences", [])]
    lines = lines or [report.get("text", "")]
    warn = [f"Warning: {w}" for w in report.get("warnings", [])]
    return "\n".join(head + lines + ([""] + warn if warn else [])) + "\n"


def report_page(report: dict, meta: dict, images: list[tuple[str, str]]) -> str:
    """A self-contained HTML report with key images, model, settings and mask source."""
    rows = "".join(
        f"<tr><td style='color:{viewer.colour_hex(s['region'])}'><b>{html.escape(s['region'])}</b>"
        f"</td><td>{html.escape(s['text'])}</td><td>"
        f"{html.escape(finding_words(s['finding'])) if s.get('finding') else ''}</td></tr>"
        for s in report.get("sentences", [])
    )
    figures = "".join(
        f"<figure><img src='{uri}' alt='key image'><figcaption>{html.escape(caption)}"
        "</figcaption></figure>"
        for caption, uri in images
    )
    facts = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in (
            ("Scan", meta.get("scan")),
            ("Model", meta.get("model")),
            ("Settings", json.dumps(meta.get("settings"))),
            ("Mask source", report.get("mask_source")),
            ("Written", meta.get("written")),
        )
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>rgct report</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{padding:4px 8px;"
        "text-align:left;vertical-align:top}figure{display:inline-block;margin:8px}"
        "img{max-width:300px}</style></head><body><h1>Chest CT report (rgct)</h1>"
        "<p><i>Research demo output: not for clinical use.</i></p>"
        f"<table>{facts}</table><h2>Findings</h2><table>{rows}</table>"
        f"{warnings_html(report.get('warnings', []))}<h2>Key images</h2>{figures}</body></html>"
    )


def write_exports(
    folder: Path, stem: str, report: dict, meta: dict, images: list[tuple[str, str]]
) -> tuple[Path, Path, Path]:
    """Write ``<stem>_report.json``, ``.txt`` and ``.html`` into ``folder``; return the paths."""
    meta = {**meta, "written": meta.get("written") or time.strftime("%Y-%m-%d %H:%M:%S")}
    js = folder / f"{stem}_report.json"
    write_text(js, json.dumps(public_report(report, **meta), indent=2) + "\n")
    txt = write_text(folder / f"{stem}_report.txt", report_text(report, meta))
    page = write_text(folder / f"{stem}_report.html", report_page(report, meta, images))
    return js, Path(txt), Path(page)


def probabilities_table(probabilities: dict[str, float]) -> dict[str, float]:
    """Probabilities in CT-RATE order, rounded (for JSON)."""
    return {k: round(float(probabilities[k]), 4) for k in CT_RATE_LABELS if k in probabilities}
