"""Benchmark ``rgct evaluate`` at the size of the RadGenome validation region reports.

Synthesises 11,462 region report pairs (1,042 volumes x 10 regions + whole report) from the
phantom report templates with perturbed findings, plus real-style sentences from the labeler
sentence files; runs ``rgct evaluate`` once per protocol in a child process (wall time, peak
RSS of the process tree, Java included); measures the labeler on the unique sentences; and
checks the coco numbers against pycocoevalcap called directly (the pre-batching code path).

    python scripts/bench_eval.py --out bench/eval.json
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from bench_common import REPO, machine_info, print_table, write_json

from rgct.constants import REGIONS, WHOLE_SCAN
from rgct.data.phantom_findings import plan_findings
from rgct.data.phantom_text import region_sentences, whole_report
from rgct.eval.labeler import CTRateLabeler
from rgct.files import write_jsonl
from rgct.text import split_sentences

POOLS = [REPO / "tests/data/labeler_sentences.csv", *sorted(REPO.glob("tests/eval/labeler_*.csv"))]


def _findings(rng: np.random.Generator) -> list[dict]:
    out = plan_findings(rng)
    for f in out:
        f["size_mm"] = float(rng.uniform(3, 30))
        f["size_text"] = f"{f['size_mm']:.0f} mm"
    return out


def synth_pairs(n: int, seed: int = 0) -> list[dict]:
    """``n`` region-report prediction lines: reference and a perturbed prediction."""
    rng = np.random.default_rng(seed)
    pool = [r["sentence"] for p in POOLS for r in csv.DictReader(p.open(encoding="utf-8"))]
    rows: list[dict] = []
    for v in range(-(-n // (len(REGIONS) + 1))):
        truth = _findings(rng)
        said = [f for f in truth if rng.random() > 0.3] + _findings(rng)[: int(rng.random() < 0.3)]
        ref, pred = (
            region_sentences(truth, list(REGIONS), rng),
            region_sentences(said, list(REGIONS), rng),
        )
        for texts in (ref, pred):
            for region in texts:
                if rng.random() < 0.3:
                    texts[region] += " " + pool[int(rng.integers(len(pool)))]
        ref[WHOLE_SCAN], pred[WHOLE_SCAN] = whole_report(ref), whole_report(pred)
        for region in (*REGIONS, WHOLE_SCAN):
            rows.append(
                {
                    "volume": f"valid_{v}_a_1",
                    "task": "region_report",
                    "region": region,
                    "question": f"Describe the findings in the {region}.",
                    "prediction": pred[region],
                    "reference": ref[region],
                }
            )
    return rows[:n]


def run_evaluate(preds: Path, out: Path, protocol: str, bertscore: bool) -> dict:
    """Wall and CPU seconds and peak RSS (MiB, process tree) of one ``rgct evaluate`` run."""
    cmd = [sys.executable, "-m", "rgct.cli", "evaluate", "--predictions", str(preds)]
    cmd += ["--out", str(out), "--protocol", protocol] + ([] if bertscore else ["--no-bertscore"])
    t0, peak = time.perf_counter(), 0.0
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = psutil.Popen(cmd, cwd=REPO)
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree) / 2**20)
        except psutil.Error:
            pass
        time.sleep(0.2)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"rgct evaluate --protocol {protocol} failed ({proc.returncode})")
    return {
        "protocol": protocol,
        "bertscore": bertscore and protocol == "coco",
        "seconds": time.perf_counter() - t0,
        # CPU seconds of the run and every process it waited for (Java, METEOR workers):
        # what the run costs whatever else the machine is doing
        "cpu_seconds": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "peak_rss_mib": peak,
        "load_average_1min": os.getloadavg()[0],
    }


def labeler_speed(rows: list[dict]) -> dict:
    texts = [r[k] for r in rows for k in ("prediction", "reference")]
    sentences = [s for t in texts for s in split_sentences(t)]
    unique = list(dict.fromkeys(sentences))
    lab = CTRateLabeler()
    t0 = time.perf_counter()
    for s in unique:
        lab.label_sentence(s)
    cold = time.perf_counter() - t0
    lab = CTRateLabeler()
    t0 = time.perf_counter()
    for t in texts:
        lab.label_text(t)
    stream = time.perf_counter() - t0
    return {
        "sentences": len(sentences),
        "unique_sentences": len(unique),
        "unique_sentences_per_s": len(unique) / cold,
        "stream_sentences_per_s": len(sentences) / stream,
    }


def bertscore_speed(rows: list[dict], n: int = 300) -> float:
    """BERTScore pairs per second on ``n`` distinct pairs (offline MiniLM, CPU)."""
    from rgct.eval.language import BertScorer

    sub = list({(r["prediction"], r["reference"]): r for r in rows}.values())[:n]
    scorer = BertScorer()
    t0 = time.perf_counter()
    scorer.score([r["prediction"] for r in sub], [r["reference"] for r in sub])
    return len(sub) / (time.perf_counter() - t0)


def coco_identity(rows: list[dict], n: int = 1500) -> dict:
    """Largest difference between rgct's coco numbers and pycocoevalcap called directly."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    from rgct.eval.language import MeteorScorer, language_scores, tokenize

    sub = rows[:n]
    gts = {i: [tokenize(r["reference"])] for i, r in enumerate(sub)}
    res = {i: [tokenize(r["prediction"])] for i, r in enumerate(sub)}
    meteor = MeteorScorer()
    try:
        ours, _ = language_scores(
            [r["prediction"] for r in sub], [r["reference"] for r in sub], meteor
        )
    finally:
        meteor.close()
    ref = dict(
        zip(("bleu_1", "bleu_2", "bleu_3", "bleu_4"), Bleu(4).compute_score(gts, res, verbose=0)[0])
    )
    ref["rouge_l"], ref["cider"] = (
        Rouge().compute_score(gts, res)[0],
        Cider().compute_score(gts, res)[0],
    )
    ref["meteor"] = Meteor().compute_score(gts, res)[0]
    return {"pairs": n, "max_abs_diff": max(abs(ours[k] - v) for k, v in ref.items())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--pairs", type=int, default=11462)
    p.add_argument("--protocols", nargs="+", default=["coco", "reg2rg"])
    p.add_argument("--bertscore", action="store_true", help="include BERTScore in the coco run")
    p.add_argument("--out", default="bench/eval.json")
    args = p.parse_args()
    rows = synth_pairs(args.pairs)
    with tempfile.TemporaryDirectory() as tmp:
        preds = write_jsonl(Path(tmp) / "preds.jsonl", rows)
        runs = [
            run_evaluate(preds, Path(tmp) / f"m_{x}", x, args.bertscore) for x in args.protocols
        ]
    result = {
        "pairs": len(rows),
        "volumes": len({r["volume"] for r in rows}),
        "runs": runs,
        "labeler": labeler_speed(rows),
        "coco_identity": coco_identity(rows),
        "bertscore_pairs_per_s": bertscore_speed(rows),
        "targets": {"seconds": 120, "peak_rss_mib": 2048, "labeler_sentences_per_s": 2000},
        "machine": machine_info(),
    }
    print_table(runs)
    print_table([result["labeler"]])
    print(f"coco vs pycocoevalcap directly: {result['coco_identity']}")
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
