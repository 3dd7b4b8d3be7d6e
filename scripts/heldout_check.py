"""Does a checkpoint use the image? Score it and its blind baseline on held-out phantoms.

    python scripts/heldout_check.py --checkpoint runs/stage3_evidence/model \
        --data DIR --limit 50 --out runs/heldout [--card]

Generates region reports and VQA answers for the first ``--limit`` volumes of ``--split``
(sorted by name) twice, normally and with the visual input zeroed (the blind baseline), scores
both against ``ground_truth.jsonl``, prints the table and writes ``OUT/heldout.json``.
``--oracle`` (detect-then-describe models) adds a run with the true labels as the detections
line: the language model's own ceiling.
``--card`` also copies ``heldout.json`` into the checkpoint and appends the table to its
model card (README.md).
"""

import argparse
import json
import logging
import os
import shutil
from pathlib import Path

from rgct.generate.heldout import card_section, heldout_eval
from rgct.inference import pick_device
from rgct.model.builder import CARD_FILE, load_checkpoint

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True, help="phantom dataset (with ground_truth.jsonl)")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--limit", type=int, default=None, help="first N volumes of the split")
    ap.add_argument("--out", required=True, help="folder for predictions and heldout.json")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=None, help="generation batch size")
    ap.add_argument("--card", action="store_true", help="add the result to the model card")
    ap.add_argument(
        "--oracle",
        action="store_true",
        help="also run with the true labels as the detections line (evidence-prompt models)",
    )
    a = ap.parse_args()
    ckpt = Path(a.checkpoint)
    overrides = [f"generation.batch_size={a.batch_size}"] if a.batch_size else None
    model, cfg = load_checkpoint(ckpt, device=pick_device(a.device), overrides=overrides)
    result = heldout_eval(model, cfg, a.data, a.out, split=a.split, limit=a.limit, oracle=a.oracle)
    section = card_section(result)
    print(section)
    if a.card:
        shutil.copy(Path(a.out) / "heldout.json", ckpt / "heldout.json")
        card = ckpt / CARD_FILE
        text = card.read_text() if card.is_file() else ""
        tmp = card.with_suffix(".md.tmp")
        tmp.write_text(text + "\n## Held-out check (does it use the image?)\n\n" + section)
        os.replace(tmp, card)
        print(f"added to {card}")
    print(json.dumps(result["model"], indent=1))
