"""Held-out check of a chest-radiograph checkpoint: the model vs its blind baseline.

The radiograph counterpart of :func:`rgct.generate.heldout.heldout_eval` (which calls it for a
``data.modality: cxr`` checkpoint): every radiograph task (:data:`rgct.constants.CXR_TASKS`) is
generated for a split of a VinDr-CXR or ChestX-ray14 folder twice, once normally and once with
the visual tokens replaced by zeros (same weights, same prompts), both scored by
:func:`rgct.eval.cxr.score_cxr`; ``heldout.json`` holds the headline numbers of both, the
issue #18 targets and whether each is met.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rgct.config import RGCTConfig
from rgct.constants import CXR_TASKS
from rgct.data.source_report import detect_layout
from rgct.eval.cxr import HEADLINE, score_cxr
from rgct.eval.predictions import load_predictions
from rgct.files import write_json
from rgct.generate.localize_cxr import PRESUPPOSED, ZoneLocalizer, build_zone_localizer
from rgct.generate.runner import merge_parts, run_generation
from rgct.model.rgct_model import RGCTModel

logger = logging.getLogger(__name__)

PRESENCE = ("cxr_presence", "accuracy")
BLIND_MARGIN = 0.25
"""Issue #18: presence accuracy must beat the blind baseline by at least this much."""


def summarize(metrics: dict) -> dict[str, float | None]:
    """``"<task> <metric>"`` -> value of :func:`score_cxr`'s headline (None where absent)."""
    values = {f"{h['task']} {h['metric']}": h["value"] for h in metrics["headline"]}
    return {f"{task} {metric}": values.get(f"{task} {metric}") for task, metric, *_ in HEADLINE}


def targets(model: dict, blind: dict | None) -> list[dict]:
    """Each issue #18 target with the model's value and whether it is met."""
    out = []
    for task, metric, name, target in HEADLINE:
        value = model.get(f"{task} {metric}")
        if target is None:
            continue
        out.append(
            {
                "name": name,
                "value": value,
                "target": target,
                "met": value is not None and value >= target,
            }
        )
    key = " ".join(PRESENCE)
    if blind is not None and model.get(key) is not None and blind.get(key) is not None:
        gain = model[key] - blind[key]
        out.append(
            {
                "name": "presence accuracy above the blind baseline",
                "value": gain,
                "target": BLIND_MARGIN,
                "met": gain >= BLIND_MARGIN,
            }
        )
    return out


def heldout_cxr(
    model: RGCTModel,
    cfg: RGCTConfig,
    data_root: str | Path,
    out_dir: str | Path,
    split: str = "test",
    limit: int | None = None,
    blind: bool = True,
    tasks: list[str] | None = None,
    localizer: ZoneLocalizer | None = None,
) -> dict:
    """Generate + score (model and blind baseline); return and write ``heldout.json``.

    A ``model.evidence_locations`` model places its detections with its zone localiser
    (:mod:`rgct.generate.localize_cxr`: ``localizer``, e.g. with the checkpoint's film
    segmenter; by default the classifier's zones); the blind baseline gets no places. The
    folder resumes only for the same model, localiser and settings (``run.json``). ``tasks``: some of
    :data:`rgct.constants.CXR_TASKS` (default all; the issue #18 targets need presence, box and
    location)."""
    from rgct.generate.heldout import fresh_or_resumed, run_identity

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layout = detect_layout(data_root)
    tasks = list(CXR_TASKS) if tasks is None else list(tasks)
    unknown = [t for t in tasks if t not in CXR_TASKS]
    if unknown or not tasks:
        raise ValueError(f"held-out radiograph tasks must be some of {CXR_TASKS}, got {tasks}")
    if localizer is None:
        localizer = build_zone_localizer(model, cfg)  # model.evidence_locations: zone places
    fresh_or_resumed(
        out_dir,
        run_identity(
            model,
            cfg,
            data_root,
            split,
            limit,
            blind=blind,
            tasks=tasks,
            localizer=None if localizer is None else localizer.identity(),
            presupposed=PRESUPPOSED,
        ),
    )
    result: dict = {
        "modality": "cxr",
        "layout": layout,
        "split": split,
        "tasks": tasks,
        "volumes": None,
    }
    runs = [("model", False)] + ([("blind_baseline", True)] if blind else [])
    for name, zeroed in runs:
        preds = out_dir / f"predictions_{name}.jsonl"
        run_generation(
            model,
            cfg,
            data_root,
            split,
            tasks,
            preds,
            limit=limit,
            blind=zeroed,
            localizer=localizer,
        )
        merge_parts(preds)
        rows = load_predictions(preds)
        metrics = score_cxr(rows, layout=layout)
        write_json(out_dir / f"metrics_{name}.json", metrics)
        result[name] = summarize(metrics)
        result["volumes"] = metrics["num_images"]
        logger.info("%s: %s", name, result[name])
    result["targets"] = targets(result["model"], result.get("blind_baseline"))
    write_json(out_dir / "heldout.json", result)
    return result


def card_section(result: dict) -> str:
    """Markdown of a radiograph held-out result for the model card."""

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    lines = [
        f"Held-out split `{result['split']}` of a {result['layout']} phantom folder: "
        f"{result['volumes']} radiographs of a seed never trained on. The blind baseline is the "
        "same model with its visual tokens replaced by zeros (same prompts).",
        "",
        "| metric | model | blind baseline |",
        "|---|---|---|",
    ]
    for key, value in result["model"].items():
        lines.append(
            f"| {key} | {fmt(value)} | {fmt((result.get('blind_baseline') or {}).get(key))} |"
        )
    lines += ["", "| issue #18 target | value | target | met |", "|---|---|---|---|"]
    for t in result["targets"]:
        lines.append(
            f"| {t['name']} | {fmt(t['value'])} | {t['target']} | {'yes' if t['met'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"
