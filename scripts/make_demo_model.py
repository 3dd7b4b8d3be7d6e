"""Reproduce the shipped demo model: phantoms -> stage 0 (encoder) -> stage 2 (LoRA) -> held-out check.

    python scripts/make_demo_model.py --work runs/demo --num-volumes 1000 --workers 16 \
        --stage0-steps 3000 --stage2-steps 1500 --export rgct/assets/demo_model

Every stage is also a plain `rgct train` / `accelerate launch scripts/train.py` command; this
script only chains them and writes the model card with the held-out numbers.
"""

import argparse
import logging
import shutil
import sys
from pathlib import Path

import torch

from rgct.config import load_config
from rgct.data.synth import write_dataset
from rgct.generate.heldout import card_section, heldout_eval
from rgct.model.builder import CARD_FILE, default_card, load_checkpoint
from rgct.train.loop import train

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "configs" / "model" / "smollm2.yaml"

if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--work", default="runs/demo")
    ap.add_argument("--num-volumes", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stage0-steps", type=int, default=3000)
    ap.add_argument("--stage2-steps", type=int, default=1500)
    ap.add_argument("--heldout-volumes", type=int, default=None)
    ap.add_argument("--export", default=None, help="copy the final model (with its card) here")
    ap.add_argument(
        "--stages",
        default="synth,0,2",
        help="comma list of synth, 0, 2 (held-out check runs after 2)",
    )
    ap.add_argument("overrides", nargs="*", help="dotted overrides applied to both stages")
    a = ap.parse_args()
    work = Path(a.work)
    data = work / "phantoms"
    stages = set(a.stages.split(","))
    if "synth" in stages:
        write_dataset(
            data, num_volumes=a.num_volumes, seed=a.seed, workers=a.workers, overwrite=True
        )
    common = [
        f"data.root={data}",
        f"data.num_workers={a.workers}",
        f"train.seed={a.seed}",
        *a.overrides,
    ]
    stage0 = work / "stage0_encoder"
    cfg0 = load_config(
        [MODEL, REPO / "configs/train/stage0_encoder.yaml"],
        [*common, f"train.output_dir={stage0}", f"train.max_steps={a.stage0_steps}"],
    )
    if "0" in stages:
        train(cfg0, command=" ".join(sys.argv))
    if "2" not in stages:
        sys.exit(0)
    stage2 = work / "stage2_instruct"
    cfg2 = load_config(
        [MODEL, REPO / "configs/train/stage2_instruct.yaml"],
        [
            *common,
            f"train.output_dir={stage2}",
            f"train.max_steps={a.stage2_steps}",
            f"train.init_from={stage0 / 'model'}",
        ],
    )
    final = train(cfg2, command=" ".join(sys.argv))
    model, cfg = load_checkpoint(
        final, device="cuda" if torch.cuda.is_available() and cfg2.train.device != "cpu" else "cpu"
    )
    result = heldout_eval(model, cfg, data, work / "heldout", limit=a.heldout_volumes)
    command = (
        f"python scripts/make_demo_model.py --work {a.work} --num-volumes {a.num_volumes} --seed {a.seed} "
        f"--stage0-steps {a.stage0_steps} --stage2-steps {a.stage2_steps} {' '.join(a.overrides)}"
    ).strip()
    card = (
        default_card(cfg, command=command)
        + "\n## Held-out check (does it use the image?)\n\n"
        + card_section(result)
    )
    (final / CARD_FILE).write_text(card)
    shutil.copy(work / "heldout" / "heldout.json", final / "heldout.json")
    if a.export:
        dest = Path(a.export)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(final, dest)
        print(f"exported to {dest}")
    print(card)
