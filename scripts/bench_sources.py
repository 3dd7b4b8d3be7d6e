"""Held-out scores on the other CT datasets' layouts (issue 17's targets), beside the blind baseline.

The same held-out phantoms (``--seed``, never trained on) are written in the RadGenome,
RAD-ChestCT and DeepLesion layouts (``rgct synth``), then scored by the commands a user runs:

- RAD-ChestCT: region reports (the phantoms' region masks, as ``rgct segment`` writes them)
  scored against the label matrix (``rgct evaluate --data``: per-(region, label) micro F1),
  beside the same model's micro F1 on the RadGenome copy with the same masks (labels of the
  reference sentences): the mapping should lose nothing (target: within 0.05).
- DeepLesion: lesion descriptions from each lesion's box: type accuracy (target >= 0.8) and
  long-diameter error (target <= 3 mm). The DeepLesion copy may hold more phantoms than the
  others (``--lesion-volumes``: more held-out lesions). For a ``data.lesion_evidence`` model the
  evidence lines it measured (written with each prediction) are scored too, as descriptions of
  their own (row ``evidence``): what the measurement gives before the language model states it.

Every step writes into ``--work`` and is skipped when its output is there (a killed run
continues). ::

    python scripts/bench_sources.py --checkpoint rgct/assets/demo_model --work runs/sources_heldout \
        --out bench/sources.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from bench_common import machine_info, offline_env, print_table

from rgct.files import write_json

TARGETS = {"radchest_f1_gap": 0.05, "lesion_type_accuracy": 0.8, "long_diameter_mae_mm": 3.0}
LAYOUTS = {"radgenome": "radgenome", "rad": "rad-chestct", "dl": "deeplesion"}


def rgct(*args: str) -> None:
    """Run an ``rgct`` command in a child process (fails loudly with its output)."""
    cmd = [sys.executable, "-m", "rgct.cli", *args]
    print("$ rgct " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def synth(work: Path, seed: int, volumes: dict[str, int], valid_fraction: float) -> dict[str, Path]:
    """The held-out phantoms in each layout (written once); ``volumes``: layout key -> count."""
    folders = {}
    for key, num_volumes in volumes.items():
        layout = LAYOUTS[key]
        folder = work / f"{key}_{seed}"
        if not (folder / "ground_truth.jsonl").is_file():
            rgct(
                "synth",
                "--out",
                str(folder),
                "--num-volumes",
                str(num_volumes),
                "--seed",
                str(seed),
                "--valid-fraction",
                str(valid_fraction),
                "--layout",
                layout,
                "--overwrite",
            )
        folders[key] = folder
    return folders


def generate(
    checkpoint: str, data: Path, out: Path, tasks: str, masks: str, limit: int, blind: bool
):
    if out.is_file():
        return
    args = ["generate", "--checkpoint", checkpoint, "--data", str(data), "--split", "valid"]
    args += ["--tasks", tasks, "--masks", masks, "--out", str(out), "--limit", str(limit)]
    rgct(*args, *(["--blind"] if blind else []))


def evaluate(predictions: Path, data: Path, out: Path) -> dict:
    if not (out / "metrics.json").is_file():
        rgct("evaluate", "--predictions", str(predictions), "--data", str(data), "--out", str(out))
    return json.loads((out / "metrics.json").read_text())


def find(metrics: dict, *keys: str):
    for key in keys:
        metrics = metrics.get(key) if isinstance(metrics, dict) else None
    return metrics


def score_evidence(predictions: Path, data: Path) -> dict | None:
    """The measured evidence lines of ``predictions`` scored as lesion descriptions (None when
    the model wrote none: not a ``data.lesion_evidence`` model)."""
    from rgct.data.deeplesion import load_deeplesion
    from rgct.eval.sources import score_deeplesion

    rows = [json.loads(line) for line in predictions.read_text().splitlines() if line.strip()]
    if not any("lesion_evidence" in r for r in rows):
        return None
    return {"deeplesion": score_deeplesion(rows, load_deeplesion(data), text_key="lesion_evidence")}


def lesion_row(tag: str, dl: dict) -> dict:
    """The DeepLesion columns of a table row."""
    return {
        "input": tag,
        "lesion_type_accuracy": find(dl, "deeplesion", "type_accuracy"),
        "lesion_type_ci95": find(dl, "deeplesion", "type_accuracy_ci95"),
        "long_diameter_mae_mm": find(dl, "deeplesion", "long_diameter_mae_mm"),
        "long_diameter_ci95": find(dl, "deeplesion", "long_diameter_mae_mm_ci95"),
        "lesions": find(dl, "deeplesion", "lesions"),
        "lesions_without_size": find(dl, "deeplesion", "no_size"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="rgct/assets/demo_model")
    p.add_argument("--work", type=Path, default=Path("runs/sources_heldout"))
    p.add_argument("--seed", type=int, default=4242, help="held-out seed (never trained on)")
    p.add_argument("--num-volumes", type=int, default=50)
    p.add_argument("--valid-fraction", type=float, default=0.9)
    p.add_argument("--limit", type=int, default=40, help="volumes (lesions) scored per layout")
    p.add_argument(
        "--lesion-volumes",
        type=int,
        default=None,
        help="phantom volumes of the DeepLesion copy (default --num-volumes)",
    )
    p.add_argument(
        "--lesion-limit", type=int, default=None, help="lesions scored (default --limit)"
    )
    p.add_argument("--out", default="bench/sources.json")
    p.add_argument(
        "--layouts",
        default="radgenome,rad,dl",
        help="layouts scored (comma list of radgenome, rad, dl); the others' cells stay empty",
    )
    p.add_argument(
        "--blind",
        default="rad,radgenome,dl",
        help="layouts whose blind baseline is run too (comma list of radgenome, rad, dl; "
        "'' for none)",
    )
    args = p.parse_args(argv)
    blind_keys = {k for k in args.blind.split(",") if k}
    run_keys = {k for k in args.layouts.split(",") if k}
    for name, keys in (("--blind", blind_keys), ("--layouts", run_keys)):
        if keys - set(LAYOUTS):
            p.error(f"{name}: unknown layout key(s) {sorted(keys - set(LAYOUTS))}")
    offline_env()
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    volumes = {k: args.num_volumes for k in LAYOUTS if k in run_keys}
    if "dl" in volumes:
        volumes["dl"] = args.lesion_volumes or args.num_volumes
    limits = {k: args.limit for k in LAYOUTS}
    limits["dl"] = args.lesion_limit or args.limit
    data = synth(work, args.seed, volumes, args.valid_fraction)
    ckpt_name = Path(args.checkpoint).name
    result: dict = {
        "machine": machine_info(),
        "checkpoint": ckpt_name,
        "seed": args.seed,
        "limit": args.limit,
        "volumes": volumes,
        "lesion_limit": limits["dl"],
        "layouts": sorted(run_keys),
        "targets": TARGETS,
    }
    rows = []
    for blind in (False, True):
        tag = "blind" if blind else "model"
        scored = {}
        for key, masks, tasks in (
            ("radgenome", "dataset", "region_report"),
            ("rad", "masks/region_mask", "region_report"),  # the folder's own, as segmented
            ("dl", "dataset", "lesion"),
        ):
            if key not in run_keys or (blind and key not in blind_keys):
                scored[key] = {}
                continue
            masks = masks if masks == "dataset" else str(data[key] / masks)
            preds = work / f"{key}_{tag}.jsonl"
            generate(args.checkpoint, data[key], preds, tasks, masks, limits[key], blind)
            scored[key] = evaluate(preds, data[key], work / f"{key}_{tag}")
        rg, rad, dl = scored["radgenome"], scored["rad"], scored["dl"]
        rg_f1 = find(rg, "overall", "clinical", "micro", "f1")  # region_report rows only
        rad_f1 = find(rad, "rad-chestct", "valid", "micro", "f1")
        row = {
            "input": tag,
            "radgenome_region_f1": rg_f1,
            "radchest_region_f1": rad_f1,
            "radchest_f1_gap": None if rg_f1 is None or rad_f1 is None else abs(rg_f1 - rad_f1),
            "radchest_f1_ci95": find(rad, "rad-chestct", "valid", "micro", "f1_ci95"),
            **lesion_row(tag, dl),
        }
        rows.append(row)
        result[tag] = {"row": row, "radgenome": rg.get("per_task"), "rad": rad, "dl": dl}
    model = rows[0]
    evidence = score_evidence(work / "dl_model.jsonl", data["dl"]) if "dl" in run_keys else None
    if evidence is not None:
        result["evidence"] = {"row": lesion_row("evidence", evidence), "dl": evidence}
        rows.append({k: result["evidence"]["row"].get(k) for k in rows[0]})
    result["pass"] = {
        "radchest_f1_gap": model["radchest_f1_gap"] is not None
        and model["radchest_f1_gap"] <= TARGETS["radchest_f1_gap"],
        "lesion_type_accuracy": (model["lesion_type_accuracy"] or 0)
        >= TARGETS["lesion_type_accuracy"],
        "long_diameter_mae_mm": model["long_diameter_mae_mm"] is not None
        and model["long_diameter_mae_mm"] <= TARGETS["long_diameter_mae_mm"],
    }
    print_table(rows, list(rows[0]))
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
