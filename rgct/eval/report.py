"""Score a predictions file and write ``metrics.json``, ``metrics.md`` and bar charts.

Two language protocols (``protocol``): ``coco`` (default; the COCO-caption pipeline of
pycocoevalcap, see :mod:`rgct.eval.language`) and ``reg2rg`` (the protocol behind Reg2RG's
published RadGenome numbers, see :mod:`rgct.eval.reg2rg`).

``metrics.json`` schema (``schema_version`` 2); every score is a float in [0, 1] unless noted,
null when it could not be computed (no samples, METEOR unavailable, BERTScore switched off)::

    schema_version            2
    protocol                  "coco" or "reg2rg"
    protocol_description      str
    num_predictions           int, valid lines scored
    tokenization              str, how texts were tokenised
    bertscore                 str describing the BERTScore variant, or null when skipped
    meteor                    {available, implementation, reason (why unavailable, or null)}
    labeler                   {vocab, hedges_positive, rule_out_positive}
    bootstrap                 {replicates, seed, unit: "volume", method}
    overall                   report-like lines (tasks "report" and "region_report"; all lines
                              when there are none; the tasks used are listed in "tasks"):
        num_samples, num_volumes, tasks
        language              corpus level; coco: bleu_1..4 meteor rouge_l cider (>= 0)
                              bertscore_f1; reg2rg: bleu_1..4 meteor rouge_1 rouge_2 rouge_l
                              cider
        language_per_sample_mean   the same keys, mean of per-sample scores
        language_per_sample_std    (reg2rg) population std of per-sample scores
        clinical              CT-RATE labels of reference vs prediction (rgct.eval.clinical):
            micro             {precision, recall, f1}
            macro             {precision, recall, f1, num_labels}
            crg               CRG score (VLM3D challenge), or null
            per_label.<label> {precision, recall, f1, support, predicted} (18 labels)
            num_samples
        ci95                  bootstrap 95% intervals [low, high] over volumes:
            language_per_sample_mean.<key>
            clinical          {micro_precision, micro_recall, micro_f1, macro_f1, crg}
    per_region.<region>       report-like lines grouped by their "region" field: the same
                              block without "tasks"
    per_task.<task>           every task present: {num_samples, num_volumes, language,
                              language_per_sample_mean, [language_per_sample_std], ci95}
    vqa.<task>                presence: {accuracy, n, unparsed};
                              abnormality/location/disorders: {exact, normalized, item_f1, n};
                              size: {mae_mm, dims_mae_mm, n, n_scored, unparsed}
                              (see rgct.eval.vqa); each with ci95 of its per-question values
    grounding                 null without ground truth, else (rgct.eval.grounding):
        finding               {precision, recall, f1, tp, fp, fn}
        lobe_accuracy, lobe_n, side_accuracy, side_n, size_mae_mm (mm), size_n,
        num_asked_regions, num_volumes
        ci95                  {finding_precision, finding_recall, finding_f1}
    comparison                only with ``rgct evaluate --compare`` (see compare_predictions),
                              plus ``other`` (the second file)
    invalid_lines             (``rgct evaluate``) [{line, kind, message}] of the lines left out
                              with --skip-invalid (rgct.eval.predictions)

CIDEr's IDF comes from the scored subset, so per-region/per-task CIDEr is not comparable
with the overall value. Intervals of corpus-level numbers are not given; those of the
per-sample means are.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rgct.constants import CT_RATE_LABELS, REGIONS, TASKS, WHOLE_SCAN
from rgct.eval.bootstrap import DEFAULT_REPLICATES, VolumeBootstrap, paired_difference
from rgct.eval.clinical import clinical_scores, crg_score, label_matrix, sample_counts
from rgct.eval.grounding import grounding_with_counts, volume_key
from rgct.eval.labeler import CTRateLabeler, default_labeler
from rgct.eval.language import (
    BERTSCORE_DESCRIPTION,
    LANGUAGE_KEYS,
    TOKENIZATION,
    BertScorer,
    CocoScores,
    MeteorScorer,
)
from rgct.eval.reg2rg import DESCRIPTION as REG2RG_DESCRIPTION
from rgct.eval.reg2rg import REG2RG_KEYS, NltkMeteor, Reg2RGScores
from rgct.eval.vqa import VQA_SCORERS, vqa_per_sample
from rgct.eval.wordnet import load_wordnet, wordnet_source
from rgct.files import atomic_path, write_json, write_text

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
REPORT_TASKS = ("report", "region_report")
PROTOCOLS = ("coco", "reg2rg")
COCO_DESCRIPTION = (
    "pycocoevalcap BLEU-1..4, METEOR 1.5 (Java), ROUGE-L, CIDEr on rgct-tokenised text "
    "(corpus level and per-sample mean), BERTScore F1"
)
VQA_HEADLINE = {
    "presence": ("accuracy",),
    "abnormality": ("normalized", "item_f1"),
    "location": ("exact", "normalized", "item_f1"),
    "disorders": ("normalized", "item_f1"),
    "size": ("mae_mm",),
}


def language_keys(protocol: str) -> tuple[str, ...]:
    """The language metric keys a protocol reports."""
    return REG2RG_KEYS if protocol == "reg2rg" else LANGUAGE_KEYS


def _volumes(rows: list[dict], idx: Sequence[int]) -> list[str]:
    return [volume_key(rows[i].get("volume") or "") for i in idx]


def _clinical_ci(boot: VolumeBootstrap, counts: np.ndarray) -> dict[str, list[float] | None]:
    """Intervals of micro P/R/F1, macro F1 and CRG from per-sample (N, 18, 3) counts."""
    summed = boot.sums(counts)  # (B, 18, 3)
    tp, fp, fn = summed[..., 0], summed[..., 1], summed[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        p = tp.sum(1) / (tp.sum(1) + fp.sum(1))
        r = tp.sum(1) / (tp.sum(1) + fn.sum(1))
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
        lp = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        lr = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        lf = np.where(lp + lr > 0, 2 * lp * lr / (lp + lr), 0.0)
        support = (tp + fn) > 0
        macro = np.where(support.any(1), (lf * support).sum(1) / support.sum(1), np.nan)
    slots = boot.sums(np.full(len(counts), counts.shape[1]))
    crg = crg_score(tp.sum(1), fn.sum(1), fp.sum(1), slots)
    return {
        "micro_precision": boot.ci(np.nan_to_num(p)),
        "micro_recall": boot.ci(np.nan_to_num(r)),
        "micro_f1": boot.ci(f),
        "macro_f1": boot.ci(macro),
        "crg": boot.ci(crg),
    }


class _Scorer:
    """Language scores of a list of rows under one protocol, computed once per row.

    The METEOR jar starts when the scorer is made (it loads for several seconds in its own
    process while the caller labels texts); :meth:`compute` does the scoring.
    """

    def __init__(self, protocol: str, bertscore: bool, meteor: bool, progress: bool) -> None:
        self.protocol = protocol
        self.bertscore, self.meteor, self.progress = bertscore, meteor, progress
        self.meteor_info: dict[str, Any] = {"available": False, "implementation": None}
        self._java: MeteorScorer | None = MeteorScorer() if meteor and protocol == "coco" else None
        self._blocks: dict[tuple[int, ...], dict[str, Any]] = {}
        self.scores: Any = None

    def compute(self, rows: list[dict]) -> _Scorer:
        """Score every row once (per-sample scores, METEOR statistics)."""
        protocol, meteor, progress = self.protocol, self.meteor, self.progress
        preds = [r["prediction"] for r in rows]
        refs = [r["reference"] for r in rows]
        if protocol == "reg2rg":
            wn = load_wordnet() if meteor else None
            self.meteor_info = {
                "available": wn is not None,
                "implementation": f"NLTK meteor_score, WordNet 3.0 from {wordnet_source()}"
                if wn is not None
                else "NLTK meteor_score",
                "reason": None
                if wn is not None
                else ("switched off (--no-meteor)" if not meteor else "WordNet 3.0 not found"),
            }
            with tqdm(
                total=len(rows) * (3 if wn is not None else 2),
                desc="reg2rg scores",
                disable=not progress,
            ) as bar:
                self.scores = Reg2RGScores(
                    preds, refs, NltkMeteor(wn) if wn is not None else None, bar
                )
            return self
        bert_f1 = None
        if self.bertscore and rows:
            log.info("BERTScore on %d pairs (offline MiniLM, CPU)", len(rows))
            _, _, bert_f1 = BertScorer().score(preds, refs)
        available = self._java is not None and self._java.available
        self.meteor_info = {
            "available": available,
            "implementation": "pycocoevalcap METEOR 1.5 (Java)",
            "reason": None
            if available
            else ("switched off (--no-meteor)" if not meteor else "java not found or failed"),
        }
        with tqdm(
            total=len(rows), desc="METEOR alignments", disable=not (progress and available)
        ) as bar:
            self.scores = CocoScores(preds, refs, self._java, bert_f1, bar)
        return self

    def block(self, idx: Sequence[int]) -> dict[str, Any]:
        """Scores of a subset (the same subset asked twice is scored once)."""
        key = tuple(idx)
        if key not in self._blocks:
            self._blocks[key] = self.scores.block(idx)
        return self._blocks[key]

    def close(self) -> None:
        if self._java is not None:
            self._java.close()


def _language_block(
    scorer: _Scorer, rows: list[dict], idx: list[int], boot: VolumeBootstrap | None
) -> dict[str, Any]:
    b = scorer.block(idx)
    out: dict[str, Any] = {
        "num_samples": len(idx),
        "num_volumes": len({v for v in _volumes(rows, idx) if v}),
        "language": b["corpus"],
        "language_per_sample_mean": b["mean"],
    }
    if "std" in b:
        out["language_per_sample_std"] = b["std"]
    keys = language_keys(scorer.protocol)
    out["ci95"] = {
        "language_per_sample_mean": {
            k: boot.mean_ci(b["per_sample"][k]) if boot and k in b["per_sample"] else None
            for k in keys
        }
    }
    out["_per_sample"] = b["per_sample"]
    return out


def _group_indices(rows: list[dict]) -> tuple[dict[str, list[int]], list[int], list[str]]:
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_task[r.get("task", "report")].append(i)
    report_idx = [i for t in REPORT_TASKS for i in by_task.get(t, [])]
    overall_tasks = [t for t in REPORT_TASKS if t in by_task]
    if not report_idx:
        report_idx, overall_tasks = list(range(len(rows))), sorted(by_task)
    return by_task, report_idx, overall_tasks


def _labels(
    rows: list[dict], idx: list[int], lab: CTRateLabeler, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    pred = np.zeros((len(rows), len(CT_RATE_LABELS)), dtype=int)
    ref = np.zeros_like(pred)
    texts = [rows[i]["prediction"] for i in idx] + [rows[i]["reference"] for i in idx]
    log.info("labelling %d report-like predictions and references", len(idx))
    labelled = label_matrix(
        tqdm(texts, desc="CT-RATE labels", disable=not progress, mininterval=1.0), lab
    )
    pred[idx], ref[idx] = labelled[: len(idx)], labelled[len(idx) :]
    return pred, ref


def evaluate_predictions(
    rows: list[dict],
    ground_truth: dict[str, dict] | None = None,
    bertscore: bool = True,
    meteor: bool = True,
    labeler: CTRateLabeler | None = None,
    protocol: str = "coco",
    bootstrap: int = DEFAULT_REPLICATES,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """All metrics for a list of prediction lines (see the module docstring for the schema).

    Args:
        rows: Prediction records (``prediction``, ``reference``, ``task``, ``region`` ...).
        ground_truth: volume -> ground-truth record, or None to skip grounding.
        bertscore: Compute BERTScore (coco protocol; loads the offline MiniLM once).
        meteor: Compute METEOR (coco: one Java process; reg2rg: NLTK with WordNet).
        labeler: Labeler for clinical and grounding scores; the default one if None.
        protocol: "coco" or "reg2rg".
        bootstrap: Bootstrap replicates for the 95% intervals (0 = no intervals).
        seed: Seed of the bootstrap draw.
        progress: Show progress bars (stderr).

    Returns:
        The metrics dictionary written to ``metrics.json``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {PROTOCOLS}")
    lab = labeler or default_labeler()
    by_task, report_idx, overall_tasks = _group_indices(rows)

    def boot_for(idx: list[int]) -> VolumeBootstrap | None:
        return VolumeBootstrap(_volumes(rows, idx), bootstrap, seed) if bootstrap and idx else None

    scorer = _Scorer(protocol, bertscore and protocol == "coco", meteor, progress)
    try:
        pred_labels, ref_labels = _labels(rows, report_idx, lab, progress)
        scorer.compute(rows)
    except BaseException:
        scorer.close()
        raise
    counts = sample_counts(pred_labels, ref_labels)  # (N, 18, 3)

    def text_block(idx: list[int], clinical: bool) -> dict[str, Any]:
        boot = boot_for(idx)
        block = _language_block(scorer, rows, idx, boot)
        block.pop("_per_sample")
        if clinical:
            block["clinical"] = clinical_scores(pred_labels[idx], ref_labels[idx])
            block["ci95"]["clinical"] = _clinical_ci(boot, counts[idx]) if boot else None
        return block

    try:
        overall = text_block(report_idx, clinical=True)
        overall["tasks"] = overall_tasks
        by_region: dict[str, list[int]] = defaultdict(list)
        for i in report_idx:
            by_region[rows[i].get("region") or WHOLE_SCAN].append(i)
        region_order = [r for r in (*REGIONS, WHOLE_SCAN) if r in by_region]
        region_order += sorted(set(by_region) - set(region_order))
        per_region = {r: text_block(by_region[r], clinical=True) for r in region_order}
        per_task = {t: text_block(by_task[t], clinical=False) for t in TASKS if t in by_task}
    finally:
        scorer.close()
    vqa = {}
    for task in TASKS:
        if task not in by_task or task not in VQA_SCORERS:
            continue
        idx = by_task[task]
        preds = [rows[i]["prediction"] for i in idx]
        refs = [rows[i]["reference"] for i in idx]
        block = VQA_SCORERS[task](preds, refs)
        boot = boot_for(idx)
        per = vqa_per_sample(task, preds, refs)
        block["ci95"] = {k: boot.mean_ci(per[k]) if boot else None for k in VQA_HEADLINE[task]}
        vqa[task] = block
    grounding = None
    if ground_truth is not None:
        grounding, vol_counts = grounding_with_counts(rows, ground_truth, lab)
        grounding["ci95"] = _grounding_ci(vol_counts, bootstrap, seed)
    return {
        "schema_version": SCHEMA_VERSION,
        "protocol": protocol,
        "protocol_description": REG2RG_DESCRIPTION if protocol == "reg2rg" else COCO_DESCRIPTION,
        "num_predictions": len(rows),
        "tokenization": (
            "BLEU: 13a (sacrebleu); METEOR: NLTK Punkt + Treebank; ROUGE: rouge-score; "
            "CIDEr: whitespace on untokenised text"
            if protocol == "reg2rg"
            else TOKENIZATION
        ),
        "bertscore": BERTSCORE_DESCRIPTION if bertscore and protocol == "coco" else None,
        "meteor": scorer.meteor_info,
        "labeler": {
            "vocab": lab.vocab_path.name,
            "hedges_positive": lab.hedges_positive,
            "rule_out_positive": lab.rule_out_positive,
        },
        "bootstrap": {
            "replicates": bootstrap,
            "seed": seed,
            "unit": "volume",
            "method": "percentile 2.5-97.5 over resampled volumes",
        },
        "overall": overall,
        "per_region": per_region,
        "per_task": per_task,
        "vqa": vqa,
        "grounding": grounding,
    }


def _grounding_ci(
    vol_counts: dict[str, tuple[int, ...]], replicates: int, seed: int
) -> dict[str, list[float] | None] | None:
    """95% intervals over volumes of the finding scores and of the lobe / side accuracies
    (``vol_counts``: volume -> (tp, fp, fn, lobe hits, lobe n, side hits, side n))."""
    if not replicates or not vol_counts:
        return None
    boot = VolumeBootstrap(list(vol_counts), replicates, seed)
    summed = boot.sums(np.asarray(list(vol_counts.values()), dtype=float))
    tp, fp, fn = summed[:, 0], summed[:, 1], summed[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        r = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
        lobe = summed[:, 3] / summed[:, 4]  # NaN where a replicate drew no placed finding
        side = summed[:, 5] / summed[:, 6]
    return {
        "finding_precision": boot.ci(p),
        "finding_recall": boot.ci(r),
        "finding_f1": boot.ci(f),
        "lobe_accuracy": boot.ci(lobe),
        "side_accuracy": boot.ci(side),
    }


# --- paired comparison ------------------------------------------------------------------------
def _pair_key(row: dict, ordinal: int) -> tuple:
    if row.get("volume"):
        return tuple(str(row.get(k) or "") for k in ("volume", "task", "region", "question"))
    return ("", "#", str(ordinal))


def compare_predictions(
    rows: list[dict],
    other_rows: list[dict],
    protocol: str = "coco",
    meteor: bool = True,
    bertscore: bool = False,
    labeler: CTRateLabeler | None = None,
    bootstrap: int = DEFAULT_REPLICATES,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Paired bootstrap differences (this - other) on the report-like lines both files hold.

    Lines are matched by (volume, task, region, question); bare lines without a volume are
    matched by their order. Each replicate draws volumes once and scores both files on them.

    Returns:
        ``{"num_matched", "num_volumes", "only_in_this", "only_in_other", "metrics":
        {name: {"this", "other", "difference", "ci95", "p_value"}}}`` over the per-sample
        language means, CE micro precision/recall/F1 and CRG.

    Raises:
        ValueError: the files share no report-like line.
    """
    if not bootstrap:
        raise ValueError("a comparison needs bootstrap replicates (> 0)")
    lab = labeler or default_labeler()

    def keyed(rs: list[dict]) -> dict[tuple, dict]:
        out, n = {}, 0
        for r in rs:
            if r.get("task", "report") in REPORT_TASKS:
                out[_pair_key(r, n)] = r
                n += 0 if r.get("volume") else 1
        return out

    a, b = keyed(rows), keyed(other_rows)
    common = [k for k in a if k in b]
    if not common:
        raise ValueError("the two prediction files share no report-like line to compare")
    a_rows, b_rows = [a[k] for k in common], [b[k] for k in common]
    for x, y in zip(a_rows, b_rows):
        if x["reference"] != y["reference"]:
            raise ValueError(
                f"line {x.get('line')} and other line {y.get('line')} pair the same sample "
                "but their references differ"
            )
    idx = list(range(len(common)))
    boot = VolumeBootstrap(_volumes(a_rows, idx), bootstrap, seed)
    results: dict[str, Any] = {}
    per_system = []
    for sys_rows in (a_rows, b_rows):
        scorer = _Scorer(protocol, bertscore and protocol == "coco", meteor, progress)
        try:
            pred, ref = _labels(sys_rows, idx, lab, progress)
            blk = scorer.compute(sys_rows).block(idx)
        finally:
            scorer.close()
        per_system.append((blk, sample_counts(pred, ref)))
    (blk_a, cnt_a), (blk_b, cnt_b) = per_system
    for key in language_keys(protocol):
        if key not in blk_a["per_sample"] or key not in blk_b["per_sample"]:
            continue
        va, vb = blk_a["per_sample"][key], blk_b["per_sample"][key]
        results[f"{key} (per-sample mean)"] = {
            "this": float(va.mean()),
            "other": float(vb.mean()),
            **paired_difference(
                boot,
                boot.mean_replicates(va),
                boot.mean_replicates(vb),
                float(va.mean() - vb.mean()),
            ),
        }

    def clinical_stats(summed: np.ndarray) -> dict[str, np.ndarray]:
        tp, fp, fn = (summed[..., j].sum(-1) for j in range(3))
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
            r = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
            f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
        return {"p": p, "r": r, "f": f, "tp": tp, "fp": fp, "fn": fn}

    slots_rep = boot.sums(np.full(len(idx), len(CT_RATE_LABELS), dtype=float))
    full = {}
    reps = {}
    for name, cnt in (("this", cnt_a), ("other", cnt_b)):
        full[name] = clinical_stats(cnt.sum(0)[None])  # (1, 18, 3) -> arrays of shape (1,)
        reps[name] = clinical_stats(boot.sums(cnt))  # (B, 18, 3) -> (B,)
    for label, key in (
        ("CE micro precision", "p"),
        ("CE micro recall", "r"),
        ("CE micro F1", "f"),
    ):
        this, other = float(full["this"][key][0]), float(full["other"][key][0])
        results[label] = {
            "this": this,
            "other": other,
            **paired_difference(boot, reps["this"][key], reps["other"][key], this - other),
        }
    n_slots = len(idx) * len(CT_RATE_LABELS)
    crg = {
        name: float(
            crg_score(full[name]["tp"][0], full[name]["fn"][0], full[name]["fp"][0], n_slots)
        )
        for name in full
    }
    crg_reps = {
        name: crg_score(reps[name]["tp"], reps[name]["fn"], reps[name]["fp"], slots_rep)
        for name in reps
    }
    results["CRG"] = {
        "this": None if np.isnan(crg["this"]) else crg["this"],
        "other": None if np.isnan(crg["other"]) else crg["other"],
        **paired_difference(
            boot,
            crg_reps["this"],
            crg_reps["other"],
            float(np.nan_to_num(crg["this"] - crg["other"])),
        ),
    }
    return {
        "num_matched": len(common),
        "num_volumes": boot.num_units,
        "only_in_this": len(a) - len(common),
        "only_in_other": len(b) - len(common),
        "protocol": protocol,
        "metrics": results,
    }


# --- writing ---------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, list) and len(v) == 2 and all(isinstance(x, float) for x in v):
        return f"[{v[0]:.4f}, {v[1]:.4f}]"
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _with_ci(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return "–"
    if not ci:
        return f"{value:.4f}"
    return f"{value:.4f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def comparison_markdown(comparison: dict[str, Any]) -> list[str]:
    """Markdown lines of a paired comparison (this vs other)."""
    out = [
        f"{comparison['num_matched']} paired samples over {comparison['num_volumes']} volumes "
        f"({comparison['only_in_this']} only in this file, {comparison['only_in_other']} only "
        "in the other); difference = this - other, paired bootstrap over volumes.",
        "",
    ]
    out += _table(
        ["metric", "this", "other", "difference", "95% CI", "p"],
        [
            [k, v["this"], v["other"], v["difference"], v["ci95"], v["p_value"]]
            for k, v in comparison["metrics"].items()
        ],
    )
    return out


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """Markdown tables of a metrics dictionary."""
    ov = metrics["overall"]
    keys = language_keys(metrics.get("protocol", "coco"))
    meteor = metrics.get("meteor") or {}
    out = [
        "# Evaluation",
        "",
        f"Protocol **{metrics.get('protocol', 'coco')}**: {metrics.get('protocol_description', '')}.",
        "",
        f"{metrics['num_predictions']} predictions; overall = tasks {', '.join(ov['tasks'])} "
        f"({ov['num_samples']} samples). Tokenisation: {metrics['tokenization']}. METEOR: "
        + (meteor.get("implementation") or "–")
        + ("" if meteor.get("available", True) else f" — unavailable ({meteor.get('reason')})")
        + ". Intervals: bootstrap 95% over volumes.",
        "",
        "## Language (overall)",
        "",
    ]
    mean_ci = ov.get("ci95", {}).get("language_per_sample_mean", {})
    rows = [
        ["corpus", *(ov["language"][k] for k in keys)],
        ["per-sample mean", *(ov["language_per_sample_mean"][k] for k in keys)],
    ]
    if "language_per_sample_std" in ov:
        rows.append(["per-sample std", *(ov["language_per_sample_std"][k] for k in keys)])
    rows.append(["mean 95% CI", *(mean_ci.get(k) for k in keys)])
    out += _table(["", *keys], rows)
    out += ["## Per region (per-sample means)", ""]
    region_keys = [k for k in ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider") if k in keys]
    out += _table(
        ["region", "n", *region_keys, "CE micro F1", "CRG"],
        [
            [
                name,
                b["num_samples"],
                *(
                    _with_ci(
                        b["language_per_sample_mean"][k],
                        b["ci95"]["language_per_sample_mean"].get(k),
                    )
                    for k in region_keys
                ),
                _with_ci(
                    b["clinical"]["micro"]["f1"], (b["ci95"].get("clinical") or {}).get("micro_f1")
                ),
                _with_ci(b["clinical"]["crg"], (b["ci95"].get("clinical") or {}).get("crg")),
            ]
            for name, b in metrics["per_region"].items()
        ],
    )
    out += ["## Per task (corpus level)", ""]
    task_keys = [k for k in ("bleu_1", "bleu_4", "rouge_l", "cider", "bertscore_f1") if k in keys]
    out += _table(
        ["task", "n", *task_keys],
        [
            [t, b["num_samples"], *(b["language"][k] for k in task_keys)]
            for t, b in metrics["per_task"].items()
        ],
    )
    clin = ov["clinical"]
    cci = ov.get("ci95", {}).get("clinical") or {}
    out += ["## Clinical efficacy (CT-RATE labels, overall)", ""]
    out += _table(
        ["", "precision", "recall", "F1"],
        [
            [
                "micro",
                _with_ci(clin["micro"]["precision"], cci.get("micro_precision")),
                _with_ci(clin["micro"]["recall"], cci.get("micro_recall")),
                _with_ci(clin["micro"]["f1"], cci.get("micro_f1")),
            ],
            [
                "macro",
                clin["macro"]["precision"],
                clin["macro"]["recall"],
                _with_ci(clin["macro"]["f1"], cci.get("macro_f1")),
            ],
        ],
    )
    out += [f"CRG score: {_with_ci(clin.get('crg'), cci.get('crg'))}", ""]
    out += _table(
        ["label", "precision", "recall", "F1", "support", "predicted"],
        [
            [name, v["precision"], v["recall"], v["f1"], v["support"], v["predicted"]]
            for name, v in clin["per_label"].items()
        ],
    )
    if metrics["vqa"]:
        out += ["## VQA", ""]
        out += _table(
            ["task", "metric", "value", "95% CI"],
            [
                [t, k, v, (block.get("ci95") or {}).get(k)]
                for t, block in metrics["vqa"].items()
                for k, v in block.items()
                if k != "ci95"
            ],
        )
    g = metrics.get("grounding")
    if g:
        gci = g.get("ci95") or {}
        out += ["## Grounding (phantom ground truth)", ""]
        out += _table(
            ["metric", "value", "95% CI"],
            [[f"finding {k}", v, gci.get(f"finding_{k}")] for k, v in g["finding"].items()]
            + [[k, v, None] for k, v in g.items() if k not in ("finding", "ci95")],
        )
    if metrics.get("comparison"):
        out += ["## Comparison", ""]
        out += comparison_markdown(metrics["comparison"])
    return "\n".join(out)


def _save_png(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _plot_per_region(metrics: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regions = list(metrics["per_region"])
    per = metrics["per_region"]
    series = {
        "BLEU-4": [per[r]["language"]["bleu_4"] for r in regions],
        "ROUGE-L": [per[r]["language"]["rouge_l"] for r in regions],
        "METEOR": [per[r]["language"]["meteor"] for r in regions],
        "BERTScore F1": [per[r]["language"].get("bertscore_f1") for r in regions],
        "clinical micro F1": [per[r]["clinical"]["micro"]["f1"] for r in regions],
    }
    series = {k: v for k, v in series.items() if any(x is not None for x in v)}
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(regions) + 3.5), 4.5))
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(regions))
    for j, (name, vals) in enumerate(series.items()):
        ax.bar(x + (j - (len(series) - 1) / 2) * width, [v or 0.0 for v in vals], width, label=name)
    ax.set_xticks(
        x,
        [f"{r}\n(n={per[r]['num_samples']})" for r in regions],
        rotation=30,
        ha="right",
        fontsize=8,
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_title(f"Report metrics per region ({metrics.get('protocol', 'coco')} protocol)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)


def _plot_per_label(metrics: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_label = metrics["overall"]["clinical"]["per_label"]
    names = list(per_label)
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 0.38 * len(names) + 1.5))
    h = 0.27
    for j, key in enumerate(("precision", "recall", "f1")):
        ax.barh(y + (j - 1) * h, [per_label[n][key] for n in names], h, label=key)
    ax.set_yticks(y, [f"{n} (support {per_label[n]['support']})" for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score")
    ax.set_title("Clinical efficacy per CT-RATE label (reference vs prediction)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)


def save_metrics(metrics: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write metrics.json, metrics.md, per_region.png and per_label.png (atomically).

    Args:
        metrics: Output of :func:`evaluate_predictions`.
        out_dir: Folder, created if missing.

    Returns:
        The paths written.
    """
    out = Path(out_dir)
    paths = [
        out / "metrics.json",
        out / "metrics.md",
        out / "per_region.png",
        out / "per_label.png",
    ]
    write_json(paths[0], metrics)
    write_text(paths[1], metrics_markdown(metrics))
    _plot_per_region(metrics, paths[2])
    _plot_per_label(metrics, paths[3])
    return paths
