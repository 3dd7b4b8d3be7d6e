"""Give a checkpoint's region classifier the intensity-histogram head and fit it.

    python scripts/fit_region_classifier.py --checkpoint rgct/assets/demo_model \
        --data DIR --out runs/stage4/model --max-volumes 800

Loads the checkpoint, adds ``model.region_stats`` (the HU histograms of each region at full
resolution, :mod:`rgct.model.region_stats`) if it lacks it, runs the frozen encoder once per
``--split`` volume to cache every region's pooled features and statistics, trains the
classifier heads on that cache (:func:`rgct.train.region_head.fit_region_classifier`), and
writes a new checkpoint folder atomically (the language model and the rest of the vision side
unchanged). Refit the detection thresholds afterwards with ``scripts/calibrate_evidence.py``.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from rgct.eval.calibrate import collect_region_features
from rgct.inference import pick_device
from rgct.model.builder import CARD_FILE, load_checkpoint, save_checkpoint
from rgct.train.region_head import fit_region_classifier

HISTORY_FILE = "region_head.json"
FIT_TASKS = ("region_report", "abnormality", "presence", "location", "size", "disorders")
"""Every task with a mask: each prompt's detections line comes from this classifier."""

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", required=True, help="checkpoint folder to start from")
    ap.add_argument("--data", required=True, help="dataset with ground_truth.jsonl")
    ap.add_argument("--out", required=True, help="new checkpoint folder")
    ap.add_argument("--split", default="train")
    ap.add_argument("--max-volumes", type=int, default=None, help="fit on at most N volumes")
    ap.add_argument(
        "--tasks",
        default=",".join(FIT_TASKS),
        help="whose masks to fit on (the VQA tasks add lobes, aorta, heart tissue, whole scan)",
    )
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    ckpt, out = Path(a.checkpoint), Path(a.out)
    if out.resolve() == ckpt.resolve():
        sys.exit("--out must differ from --checkpoint (the source stays intact)")
    model, cfg = load_checkpoint(ckpt, device=pick_device(a.device))
    model.add_region_stats()
    t0 = time.perf_counter()
    tasks = tuple(t for t in a.tasks.split(",") if t)
    feats = collect_region_features(model, cfg, a.data, a.split, 0, a.max_volumes, tasks)
    t1 = time.perf_counter()
    history = fit_region_classifier(model, feats, epochs=a.epochs, lr=a.lr, seed=a.seed)
    t2 = time.perf_counter()
    cfg.model.region_stats = True
    card = (ckpt / CARD_FILE).read_text() if (ckpt / CARD_FILE).is_file() else None

    def write_history(tmp: Path) -> None:
        record = {
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "from": str(ckpt),
            "data": str(a.data),
            "split": a.split,
            "tasks": list(tasks),
            "regions": len(feats.keys),
            "volumes": len({v for v, _ in feats.keys}),
            "epochs": a.epochs,
            "lr": a.lr,
            "feature_seconds": round(t1 - t0, 1),
            "fit_seconds": round(t2 - t1, 1),
            "loss": [round(x, 5) for x in history],
        }
        (tmp / HISTORY_FILE).write_text(json.dumps(record, indent=1))

    save_checkpoint(model, cfg, out, card=card, extra=write_history)
    print(
        f"fitted on {len(feats.keys)} regions in {t1 - t0:.0f} s (features) + {t2 - t1:.0f} s: "
        f"loss {history[0]:.4f} -> {history[-1]:.4f}; wrote {out}"
    )
