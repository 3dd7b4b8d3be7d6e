"""Reproduce the demo model: phantoms -> encoder stages -> instruction stages -> held-out check.

    python scripts/make_demo_model.py --work runs/demo --num-volumes 1000 --workers 16 \
        --export rgct/assets/demo_model

Stages (``--stages``, comma list, in this order):
  synth  ``rgct synth`` phantoms (800 train / 200 valid for 1000 volumes)
  0      encoder + pooler on the per-region abnormality loss, no LLM (stage0_encoder.yaml)
  0d     + the dense per-patch finding loss from phantom positions (stage0_dense.yaml)
  0c     the dense loss alone on 32x64x64 crops, half centred on a finding (stage0_crops.yaml)
  0p     the region classifier on the frozen encoder, whole volumes (stage0_pool.yaml)
  h      the region classifier's intensity-histogram head (model.region_stats) and its
         classifier refitted on cached features of every training region
         (scripts/fit_region_classifier.py)
  2      LoRA + projector instruction tuning from the stage-0 encoder (stage2_instruct.yaml)
  3      detect-then-describe prompts (regions with findings oversampled), encoder frozen,
         from stage 2 with the encoder and pooler of the last encoder stage run
         (stage3_evidence.yaml; after ``h`` the fitted classifier stays frozen); then the per-label thresholds are fitted on the validation
         volumes after the first ``--heldout-volumes`` and the held-out check (model, blind
         baseline, true-label detections) runs on those.

Every stage is also a plain ``rgct train`` / ``accelerate launch scripts/train.py`` command;
this script only chains them, calibrates, and writes the model card with the held-out numbers.
"""

import argparse
import logging
import shutil
import subprocess
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
STAGES = ("synth", "0", "0d", "0c", "0p", "h", "2", "3")
VISION_STAGES = ("0", "0d", "0c", "0p", "h")
HEAD_DIR = "region_head"

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
    ap.add_argument("--stage0d-steps", type=int, default=900)
    ap.add_argument("--stage0c-steps", type=int, default=1500)
    ap.add_argument("--stage0p-steps", type=int, default=500)
    ap.add_argument("--head-epochs", type=int, default=200)
    ap.add_argument("--stage2-steps", type=int, default=1500)
    ap.add_argument("--stage3-steps", type=int, default=400)
    ap.add_argument("--heldout-volumes", type=int, default=50)
    ap.add_argument("--export", default=None, help="copy the final model (with its card) here")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma list of {STAGES}")
    ap.add_argument("overrides", nargs="*", help="dotted overrides applied to every stage")
    a = ap.parse_args()
    stages = a.stages.split(",")
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        sys.exit(f"--stages: unknown stage(s) {unknown}; known: {STAGES}")
    work = Path(a.work)
    data = work / "phantoms"
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
    runs = {  # stage -> (config name, steps)
        "0": ("stage0_encoder", a.stage0_steps),
        "0d": ("stage0_dense", a.stage0d_steps),
        "0c": ("stage0_crops", a.stage0c_steps),
        "0p": ("stage0_pool", a.stage0p_steps),
        "2": ("stage2_instruct", a.stage2_steps),
        "3": ("stage3_evidence", a.stage3_steps),
    }

    def model_of(stage: str) -> Path:
        return work / (HEAD_DIR if stage == "h" else runs[stage][0]) / "model"

    def last_vision(before: str) -> str:
        """The latest encoder stage before ``before`` in the pipeline order that ran here."""
        order = (
            VISION_STAGES[: VISION_STAGES.index(before)]
            if before in VISION_STAGES
            else VISION_STAGES
        )
        done = [s for s in order if s in stages or model_of(s).is_dir()]
        if not done:
            sys.exit(f"stage {before} needs an encoder stage (0) before it")
        return done[-1]

    final = None
    for stage in (s for s in STAGES if s in stages and s != "synth"):
        if stage == "h":
            subprocess.run(
                [
                    sys.executable,
                    str(REPO / "scripts/fit_region_classifier.py"),
                    "--checkpoint",
                    str(model_of(last_vision("h"))),
                    "--data",
                    str(data),
                    "--out",
                    str(model_of("h")),
                    "--epochs",
                    str(a.head_epochs),
                    "--seed",
                    str(a.seed),
                ],
                check=True,
            )
            continue
        if stage == "0":
            extra = []
        elif stage in ("0d", "0c", "0p"):
            extra = [f"train.init_from={model_of(last_vision(stage))}"]
        elif stage == "2":
            extra = [f"train.init_from={model_of('0')}"]
        else:  # 3
            vision = last_vision("3")
            extra = [
                f"train.init_from={model_of('2')}",
                f"train.init_vision_from={model_of(vision)}",
            ]
            if vision == "h":  # keep the fitted classifier as it is
                extra += ["model.region_stats=true", "model.train_pooler=false"]
        name, steps = runs[stage]
        cfg = load_config(
            [MODEL, REPO / f"configs/train/{name}.yaml"],
            [*common, f"train.output_dir={work / name}", f"train.max_steps={steps}", *extra],
        )
        final = train(cfg, command=" ".join(sys.argv))
    if "3" not in stages:
        sys.exit(0)
    heldout = a.heldout_volumes
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts/calibrate_evidence.py"),
            "--checkpoint",
            str(final),
            "--data",
            str(data),
            "--skip-volumes",
            str(heldout),
            "--report-volumes",
            str(heldout),
            "--write",
        ],
        check=True,
    )
    device = "cuda" if torch.cuda.is_available() and cfg.train.device != "cpu" else "cpu"
    model, cfg = load_checkpoint(final, device=device)
    result = heldout_eval(model, cfg, data, work / "heldout", limit=heldout, oracle=True)
    card = (
        default_card(cfg, command="python " + " ".join(sys.argv))
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
