"""Recipes: how a model is made, as data, run by one command (``rgct recipe``).

A recipe YAML lists stages; each stage writes its own folder under ``--work`` and a done-marker
(``DONE.json``), so a killed run resumes at the stage it was in (a training stage also resumes
inside itself from its last checkpoint). ``--from ID`` re-runs that stage and every later one
(stages taken with ``--reuse`` stay as given), ``--until ID`` stops after one. Every stage
appends what it did (the equivalent command, its seconds and its result) to
``WORK/recipe_log.jsonl``; the ``export`` stage writes the model card from that log.

    rgct recipe configs/recipes/quick.yaml --work runs/quick
    rgct recipe configs/recipes/demo.yaml --work runs/demo --from stage3_stats
    rgct recipe configs/recipes/demo.yaml --work runs/demo --reuse bundle=DIR --from locations_synth

Recipe file::

    name: quick
    description: one paragraph for the model card
    model: ../model/tiny.yaml            # the model preset every training stage starts from
    overrides: [data.num_workers=0]      # dotted overrides for every training stage
    stages:
      - {id: synth, kind: synth, num_volumes: 8, seed: 3, shape: [24, 48, 48]}
      - {id: stage0_encoder, kind: train, overrides: [train.max_steps=4]}
      - {id: stage2_instruct, kind: train, init: [{from: stage0_encoder, parts: [encoder, pooler]}]}
      - {id: classifier_fit, kind: fit_classifier, from: stage2_instruct, epochs: 5}
      - {id: calibrate, kind: calibrate, from: classifier_fit, skip_volumes: 1}
      - {id: heldout, kind: heldout, from: calibrate, data: heldout_synth, limit: 2}
      - {id: export, kind: export, from: calibrate, heldout: heldout}

Stage kinds and their keys (paths are relative to the recipe file; ``from`` names an earlier
stage, whose checkpoint is ``WORK/<id>/model``; ``data`` names a synth stage, default the first):

- ``synth``: ``num_volumes``, ``seed``, ``shape``, ``valid_fraction`` (phantoms in ``WORK/<id>``);
  ``layout`` writes them in another layout (``rgct synth --layout``, e.g. ``vindr-cxr``).
- ``train``: the training config is ``configs/train/<id>.yaml`` (stage ids equal file names;
  ``config:`` names another file of that folder); ``init`` entries take a stage id or a
  folder; ``data`` (default the first synth stage); ``overrides``. A stage that loads a
  calibrated classifier and does not train it keeps its thresholds.
- ``--reuse STAGE=DIR`` takes an existing folder as a stage's output (a checkpoint, or phantoms
  for a synth stage), e.g. to continue a model made before the recipe had its later stages.
- ``fit_classifier`` / ``calibrate``: :mod:`rgct.train.classifier` (new checkpoint folders).
- ``fit_lobes``: :mod:`rgct.train.lobe_head`, the ``from`` checkpoint plus a lobe head fitted on
  the ``data`` phantoms' lobes (``split``, ``max_volumes``, ``masks``, ``hidden``, ``epochs``,
  ``lr``, ``weight_decay``, ``seed``).
- ``segmenter``: :func:`rgct.train.segmenter.fit_segmenter` on the dataset's own region, lobe
  and anatomy masks (``steps``, ``batch_size``, ``lr``, ``finding_pos_weight``, ``model``:
  network keyword arguments; ``calibrate``: a synth stage whose phantoms set the per-label
  finding thresholds); on a radiograph synth (``input_shape: [H, W]``) the film segmenter of
  the boxes, calibrated on the ``calibrate`` stage's test split
  (:func:`rgct.generate.localize_cxr.calibrate_film_segmenter`); resumable inside the stage.
- ``detector``: :func:`rgct.train.detector.fit_detector`: the ``from`` checkpoint's segmenter
  gets a full-resolution detector for ``classes`` (default ``[Lung nodule]``), trained on crops
  of the ``data`` phantoms (``steps``, ``crops``, ``width``, ``lr``, ``pos_weight``, ``seed``,
  ``max_volumes``, ``split``) and calibrated on the ``calibrate`` synth stage
  (``calibrate_volumes``); the stage's checkpoint is the ``from`` one with that segmenter;
  resumable inside the stage.
- ``heldout``: :func:`rgct.generate.heldout.heldout_eval` (``limit``, ``oracle``, ``masks``:
  ``dataset`` or ``predicted``).
- ``export``: the ``from`` checkpoint plus a model card written from the log; ``segmenter``
  names the segmenter stage whose weights go into the folder (masks-free inference);
  ``heldout`` one held-out stage or a list.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rgct.files import atomic_dir, write_json, write_text

logger = logging.getLogger(__name__)

KINDS = (
    "synth",
    "train",
    "segmenter",
    "detector",
    "fit_classifier",
    "fit_lobes",
    "calibrate",
    "heldout",
    "export",
)
DONE_FILE = "DONE.json"
REUSABLE_KINDS = frozenset(
    {
        "synth",
        "train",
        "fit_classifier",
        "fit_lobes",
        "calibrate",
        "segmenter",
        "detector",
        "export",
    }
)
"""Stage kinds ``--reuse`` can stand in for: those whose output is one folder."""
LOG_FILE = "recipe_log.jsonl"
MODEL_DIR = "model"
_FIT_CLASSIFIER_FLAGS = (
    "split",
    "max_volumes",
    "epochs",
    "lr",
    "weight_decay",
    "seed",
    "head",
    "erode",
)
"""Options of a ``fit_classifier`` stage passed on as they are (in the command's flag order);
``from``, ``data`` and ``masks`` are resolved first. Likewise for the two below."""
_FIT_LOBES_FLAGS = ("split", "max_volumes", "hidden", "epochs", "lr", "weight_decay", "seed")
_CALIBRATE_FLAGS = ("split", "skip_volumes", "max_volumes", "report_volumes", "head")
_DETECTOR_FLAGS = (
    "classes",
    "split",
    "steps",
    "crops",
    "width",
    "lr",
    "pos_weight",
    "seed",
    "max_volumes",
)
_KEYS = {
    "synth": {"num_volumes", "seed", "shape", "valid_fraction", "workers", "layout"},
    "train": {"config", "data", "init", "overrides"},
    "fit_classifier": {"from", "data", "masks", *_FIT_CLASSIFIER_FLAGS},
    "fit_lobes": {"from", "data", "masks", *_FIT_LOBES_FLAGS},
    "calibrate": {"from", "data", "masks", *_CALIBRATE_FLAGS},
    "heldout": {
        "from",
        "data",
        "split",
        "limit",
        "oracle",
        "batch_size",
        "masks",
        "blind",
        "tasks",
    },
    "segmenter": {
        "data",
        "steps",
        "batch_size",
        "lr",
        "max_volumes",
        "seed",
        "model",
        "input_shape",
        "finding_pos_weight",
        "loss",
        "calibrate",
    },
    "detector": {"from", "data", "calibrate", "calibrate_volumes", *_DETECTOR_FLAGS},
    "export": {"from", "heldout", "calibration", "segmenter"},
}


GIVEN_CARD = "README_given.md"
"""``history/<stage>/`` name of a reused folder's card when its first maker's card is there."""


class RecipeError(ValueError):
    """A recipe that cannot run (the message names the file and the stage)."""


@dataclass
class Stage:
    id: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    path: Path
    name: str
    description: str
    model: Path
    overrides: list[str]
    stages: list[Stage]

    def stage(self, stage_id: str) -> Stage:
        for s in self.stages:
            if s.id == stage_id:
                return s
        raise RecipeError(f"{self.path}: no stage {stage_id!r}; stages: {self.ids}")

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.stages]

    def train_config(self, stage: Stage) -> Path:
        """``configs/train/<id>.yaml`` beside ``configs/recipes/`` (or the stage's ``config``)."""
        name = stage.options.get("config", stage.id)
        return (self.path.parent.parent / "train" / f"{name}.yaml").resolve()


def load_recipe(path: str | Path) -> Recipe:
    """Read and check a recipe: kinds, keys, references to earlier stages, config files."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from e
    unknown = set(raw) - {"name", "description", "model", "overrides", "stages"}
    if unknown:
        raise RecipeError(f"{path}: unknown top-level key(s) {sorted(unknown)}")
    for key in ("name", "model", "stages"):
        if key not in raw:
            raise RecipeError(f"{path}: missing '{key}'")
    stages: list[Stage] = []
    for i, entry in enumerate(raw["stages"] or []):
        if not isinstance(entry, dict) or "id" not in entry or "kind" not in entry:
            raise RecipeError(f"{path}: stage {i + 1} needs 'id' and 'kind', got {entry!r}")
        sid, kind = str(entry["id"]), str(entry["kind"])
        if kind not in KINDS:
            raise RecipeError(f"{path}: stage {sid!r}: unknown kind {kind!r}; kinds: {KINDS}")
        if sid in (s.id for s in stages):
            raise RecipeError(f"{path}: stage id {sid!r} is used twice")
        options = {k: v for k, v in entry.items() if k not in ("id", "kind")}
        bad = set(options) - _KEYS[kind]
        if bad:
            raise RecipeError(
                f"{path}: stage {sid!r} ({kind}): unknown key(s) {sorted(bad)}; "
                f"known: {sorted(_KEYS[kind])}"
            )
        stages.append(Stage(sid, kind, options))
    recipe = Recipe(
        path=path,
        name=str(raw["name"]),
        description=str(raw.get("description", "")).strip(),
        model=(path.parent / raw["model"]).resolve(),
        overrides=[str(o) for o in raw.get("overrides") or []],
        stages=stages,
    )
    if not recipe.model.is_file():
        raise RecipeError(f"{path}: model preset {recipe.model} does not exist")
    seen: list[Stage] = []
    for s in stages:
        refs = [
            r
            for k in ("from", "heldout", "calibration", "segmenter", "calibrate")
            for r in (s.options[k] if isinstance(s.options.get(k), list) else [s.options.get(k)])
            if r is not None
        ]
        refs += [
            e.get("from") for e in s.options.get("init", []) if isinstance(e, dict)
        ]  # folders are allowed for init entries: only ids of later stages are errors
        for ref in refs:
            if ref in recipe.ids and ref not in (x.id for x in seen):
                raise RecipeError(f"{path}: stage {s.id!r} uses {ref!r}, which comes after it")
            if ref not in recipe.ids and s.kind != "train":
                raise RecipeError(f"{path}: stage {s.id!r} names unknown stage {ref!r}")
        if "data" in s.options and s.options["data"] not in (x.id for x in seen):
            if not (path.parent / str(s.options["data"])).is_dir():
                raise RecipeError(
                    f"{path}: stage {s.id!r}: data {s.options['data']!r} is neither an earlier "
                    "synth stage nor a folder"
                )
        if s.kind == "train" and not recipe.train_config(s).is_file():
            raise RecipeError(
                f"{path}: stage {s.id!r}: training config {recipe.train_config(s)} does not "
                "exist (a train stage's id is its config file's name)"
            )
        seen.append(s)
    if not any(s.kind == "synth" for s in stages) and any(
        s.kind != "export" and "data" not in s.options for s in stages
    ):
        raise RecipeError(f"{path}: stages need data: add a synth stage or give 'data'")
    return recipe


class RecipeRunner:
    """Runs a recipe's stages in a work folder, skipping those already done."""

    def __init__(self, recipe: Recipe, work: str | Path, device: str = "auto") -> None:
        self.recipe = recipe
        self.work = Path(work)
        self.device = device

    # -- paths -------------------------------------------------------------------------------
    def stage_dir(self, stage_id: str) -> Path:
        return self.work / stage_id

    def model_dir(self, stage_id: str) -> Path:
        return self.stage_dir(stage_id) / MODEL_DIR

    def is_done(self, stage_id: str) -> bool:
        return (self.stage_dir(stage_id) / DONE_FILE).is_file()

    def _ref(self, ref: str) -> Path:
        """A stage id -> its checkpoint folder; anything else -> a folder beside the recipe."""
        if ref in self.recipe.ids:
            return self.model_dir(ref)
        return _near((self.recipe.path.parent / ref).resolve())

    def data_dir(self, stage: Stage) -> Path:
        ref = stage.options.get("data")
        if ref is None:
            synths = [s.id for s in self.recipe.stages if s.kind == "synth"]
            return self.stage_dir(synths[0])
        if ref in self.recipe.ids:
            return self.stage_dir(ref)
        return _near((self.recipe.path.parent / ref).resolve())

    # -- running ------------------------------------------------------------------------------
    def reuse(self, stage_id: str, source: str | Path) -> None:
        """Take an existing folder as a stage's finished output (``--reuse STAGE=DIR``): a
        model folder for a stage that makes a checkpoint, a phantom folder for a synth stage.
        Copied in (the source is never touched) and logged like a stage that ran."""
        stage = self.recipe.stage(stage_id)
        if stage.kind not in REUSABLE_KINDS:
            raise RecipeError(
                f"--reuse {stage_id}: a {stage.kind} stage cannot be reused; "
                f"reusable kinds: {sorted(REUSABLE_KINDS)}"
            )
        src = Path(source)
        if stage.kind == "synth":
            from rgct.data.source_report import detect_layout

            layout = str(stage.options.get("layout", "radgenome"))
            radgenome = (src / "radgenome_files").is_dir()
            found = detect_layout(src) if src.is_dir() else None
            if not (radgenome if layout == "radgenome" else found == layout):
                raise RecipeError(
                    f"--reuse {stage_id}={src}: not a {layout} phantom/dataset folder (the "
                    f"layout stage {stage_id} writes)"
                )
            target = self.stage_dir(stage_id)
        else:
            from rgct.model.checkpoint import check_checkpoint

            check_checkpoint(src)
            target = self.model_dir(stage_id)
        self.work.mkdir(parents=True, exist_ok=True)
        (self.stage_dir(stage_id) / DONE_FILE).unlink(missing_ok=True)
        with atomic_dir(target) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
        where = self._portable(str(src.resolve()))
        if Path(where).is_absolute():  # outside the repository and the work folder: no path
            where = f"a folder named {src.name!r}"
        record = {
            "stage": stage_id,
            "kind": stage.kind,
            "command": f"(reused {where}: made before this run)",
            "seconds": 0.0,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "result": {"reused": True},
        }
        with (self.work / LOG_FILE).open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        write_json(self.stage_dir(stage_id) / DONE_FILE, record)
        logger.info("stage %s: reused %s", stage_id, src)

    def run(self, start: str | None = None, until: str | None = None) -> list[str]:
        """Run the stages (from ``start`` through ``until``); return the ids that ran.

        Without ``start`` a stage already done is skipped (a killed run resumes). With it,
        ``start`` and every stage after it through ``until`` run again, since they are made
        from what it makes; stages taken with ``--reuse`` stay as they were given."""
        ids = self.recipe.ids
        first = ids.index(self.recipe.stage(start).id) if start else 0
        last = ids.index(self.recipe.stage(until).id) if until else len(ids) - 1
        if last < first:
            raise RecipeError(f"--until {until!r} comes before --from {start!r}")
        self.work.mkdir(parents=True, exist_ok=True)
        reused = set(_reused(self.log()))
        ran = []
        for stage in self.recipe.stages[first : last + 1]:
            again = start is not None and stage.id not in reused
            if self.is_done(stage.id) and not again:
                why = "reused" if stage.id in reused else "done already"
                logger.info("stage %s: %s (%s), skipped", stage.id, why, self.stage_dir(stage.id))
                continue
            if again:
                (self.stage_dir(stage.id) / DONE_FILE).unlink(missing_ok=True)
            logger.info("stage %s (%s): running", stage.id, stage.kind)
            t0 = time.time()
            command, result = getattr(self, f"_run_{stage.kind}")(stage)
            record = {
                "stage": stage.id,
                "kind": stage.kind,
                "command": self._portable(command),
                "seconds": round(time.time() - t0, 1),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "result": result,
            }
            with (self.work / LOG_FILE).open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            write_json(self.stage_dir(stage.id) / DONE_FILE, record)
            ran.append(stage.id)
        return ran

    def _portable(self, command: str) -> str:
        """The command with the work folder as ``$WORK`` and the recipe's repository as ``.``,
        so the card names no machine path."""
        repo = self.recipe.path.resolve().parent.parent.parent
        for path, name in ((self.work.resolve(), "$WORK"), (self.work, "$WORK"), (repo, ".")):
            command = command.replace(str(path) + "/", name + "/")
        return command

    def log(self) -> list[dict]:
        """The latest record of every stage that finished, in recipe order."""
        latest: dict[str, dict] = {}
        path = self.work / LOG_FILE
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rec = json.loads(line)
                    latest[rec["stage"]] = rec
        return [latest[i] for i in self.recipe.ids if i in latest]

    def _run_synth(self, stage: Stage) -> tuple[str, dict]:
        from rgct.data.synth import write_dataset

        o = stage.options
        out = self.stage_dir(stage.id)
        kwargs = {
            "num_volumes": int(o.get("num_volumes", 100)),
            "seed": int(o.get("seed", 0)),
            "valid_fraction": float(o.get("valid_fraction", 0.2)),
            "workers": int(o.get("workers", 2)),
        }
        if "shape" in o:
            kwargs["shape"] = tuple(int(v) for v in o["shape"])
        layout = o.get("layout", "radgenome")
        if layout == "radgenome":
            write_dataset(out, overwrite=True, **kwargs)
        else:
            from rgct.data.synth_layouts import write_layout_dataset

            kwargs.pop("workers")
            write_layout_dataset(out, layout, overwrite=True, progress=False, **kwargs)
        shape = " --shape " + " ".join(map(str, kwargs["shape"])) if "shape" in kwargs else ""
        flag = f" --layout {layout}" if layout != "radgenome" else ""
        command = (
            f"rgct synth --out {out} --num-volumes {kwargs['num_volumes']} --seed {kwargs['seed']} "
            f"--valid-fraction {kwargs['valid_fraction']}{shape}{flag}"
        )
        return command, {"volumes": kwargs["num_volumes"], "seed": kwargs["seed"]}

    def _run_train(self, stage: Stage) -> tuple[str, dict]:
        from rgct.config import load_config
        from rgct.train.loop import train

        init = [
            {"from": str(self._ref(str(e["from"]))), "parts": list(e.get("parts") or [])}
            if e.get("parts")
            else {"from": str(self._ref(str(e["from"])))}
            for e in stage.options.get("init", [])
        ]
        out = self.stage_dir(stage.id)
        overrides = [
            f"data.root={self.data_dir(stage)}",
            f"train.output_dir={out}",
            *self.recipe.overrides,
            *[str(o) for o in stage.options.get("overrides", [])],
        ]
        if init:
            overrides.append("train.init=" + json.dumps(init))
        paths = [self.recipe.model, self.recipe.train_config(stage)]
        cfg = load_config(paths, overrides)
        if any(p.name.startswith("step_") for p in (out / "checkpoints").glob("step_*")):
            cfg.train.resume, cfg.train.init = "auto", []  # continue the stage where it stopped
        command = shlex.join(
            ["rgct", "train", *sum((["--config", str(p)] for p in paths), []), *overrides]
        )
        train(cfg, command=command)
        metrics = _last_metrics(out)
        return command, {"steps": cfg.train.max_steps, **metrics}

    def _run_fit_classifier(self, stage: Stage) -> tuple[str, dict]:
        from rgct.train.classifier import fit_classifier_checkpoint

        o = stage.options
        src, out, data = self._ref(o["from"]), self.model_dir(stage.id), self.data_dir(stage)
        kwargs = {k: o[k] for k in _FIT_CLASSIFIER_FLAGS if k in o}
        if "masks" in o:
            kwargs["masks"] = _mask_list(o["masks"])
        record = fit_classifier_checkpoint(src, data, out, device=self.device, **kwargs)
        flags = " ".join(f"--{k.replace('_', '-')} {_flag(v)}" for k, v in kwargs.items())
        command = f"rgct classifier fit --checkpoint {src} --data {data} --out {out} {flags}"
        return command.strip(), {
            k: record[k] for k in ("regions", "volumes", "feature_seconds", "fit_seconds")
        } | {"final_loss": record["loss"][-1]}

    def _run_fit_lobes(self, stage: Stage) -> tuple[str, dict]:
        from rgct.train.lobe_head import fit_lobe_head_checkpoint

        o = stage.options
        src, out, data = self._ref(o["from"]), self.model_dir(stage.id), self.data_dir(stage)
        kwargs = {k: o[k] for k in _FIT_LOBES_FLAGS if k in o}
        if "masks" in o:
            kwargs["masks"] = _mask_list(o["masks"])
        record = fit_lobe_head_checkpoint(src, data, out, device=self.device, **kwargs)
        flags = " ".join(f"--{k.replace('_', '-')} {_flag(v)}" for k, v in kwargs.items())
        command = f"rgct classifier fit-lobes --checkpoint {src} --data {data} --out {out} {flags}"
        keep = ("volumes", "lobes", "train_lobe_accuracy", "feature_seconds", "fit_seconds")
        return command.strip(), {k: record[k] for k in keep}

    def _run_calibrate(self, stage: Stage) -> tuple[str, dict]:
        from rgct.train.classifier import calibrate_checkpoint

        o = stage.options
        src, out, data = self._ref(o["from"]), self.model_dir(stage.id), self.data_dir(stage)
        kwargs = {k: o[k] for k in _CALIBRATE_FLAGS if k in o}
        if "masks" in o:
            kwargs["masks"] = _mask_list(o["masks"])
        report = calibrate_checkpoint(src, data, out, device=self.device, **kwargs)
        flags = " ".join(f"--{k.replace('_', '-')} {_flag(v)}" for k, v in kwargs.items())
        command = f"rgct classifier calibrate --checkpoint {src} --data {data} --out {out} {flags}"
        keep = (
            "regions",
            "micro_f1_at_0.5",
            "micro_f1",
            "report_fitted",
            "report_fitted_per_mask_source",
        )
        return command.strip(), {k: report[k] for k in keep if k in report}

    def _run_heldout(self, stage: Stage) -> tuple[str, dict]:
        from rgct.generate.heldout import heldout_eval
        from rgct.inference import pick_device
        from rgct.model.checkpoint import load_checkpoint

        o = stage.options
        src, data, out = self._ref(o["from"]), self.data_dir(stage), self.stage_dir(stage.id)
        overrides = [f"generation.batch_size={o['batch_size']}"] if "batch_size" in o else None
        model, cfg = load_checkpoint(src, device=pick_device(self.device), overrides=overrides)
        from rgct.generate.masks import build_mask_provider

        masks = build_mask_provider(
            o.get("masks", "dataset"), src, cfg, data, next(model.parameters()).device
        )
        from rgct.generate.localize import build_localizer

        localizer = build_localizer(model, cfg, src, data, masks)
        result = heldout_eval(
            model,
            cfg,
            data,
            out,
            split=o.get("split", "valid"),
            limit=o.get("limit"),
            oracle=bool(o.get("oracle", False)),
            masks=masks,
            localizer=localizer,
            blind=bool(o.get("blind", True)),
            tasks=list(o["tasks"]) if "tasks" in o else None,
        )
        flags = f" --limit {o['limit']}" if "limit" in o else ""
        flags += f" --tasks {','.join(o['tasks'])}" if "tasks" in o else ""
        flags += "" if o.get("blind", True) else " --no-blind"
        flags += " --oracle" if o.get("oracle") else ""
        flags += f" --masks {o['masks']}" if "masks" in o else ""
        return f"rgct heldout --checkpoint {src} --data {data} --out {out}{flags}", result

    def _run_segmenter(self, stage: Stage) -> tuple[str, dict]:
        from rgct.train.segmenter import SegmenterTrainConfig, fit_segmenter

        o = stage.options
        data, out = self.data_dir(stage), self.model_dir(stage.id)
        keys = (
            "steps",
            "batch_size",
            "lr",
            "max_volumes",
            "seed",
            "input_shape",
            "finding_pos_weight",
            "loss",
        )
        kwargs = {k: o[k] for k in keys if k in o}
        cfg = SegmenterTrainConfig(
            data_root=str(data), out_dir=str(out), model=dict(o.get("model") or {}), **kwargs
        )
        run_dir = out.parent / "run" if "calibrate" in o else out
        cfg.out_dir = str(run_dir)
        fit_segmenter(cfg)
        metrics = _last_metrics(run_dir)
        flags = " ".join(
            f"--shape {' '.join(str(int(s)) for s in v)}"
            if k == "input_shape"
            else f"--{k.replace('_', '-')} {v}"
            for k, v in kwargs.items()
        )
        flags += "".join(f" --set {k}={_flag(v)}" for k, v in (o.get("model") or {}).items())
        command = f"python scripts/train_segmenter.py --data {data} --out {run_dir} {flags}"
        if "calibrate" in o:  # per-label finding thresholds on phantoms of their own
            from rgct.generate.segment import calibrate_findings
            from rgct.model.segmenter import load_segmenter, save_segmenter

            cal = self.stage_dir(str(o["calibrate"]))
            model, meta = load_segmenter(run_dir)
            if cfg.films:  # per-class box thresholds on the calibration films
                from rgct.generate.localize_cxr import calibrate_film_segmenter

                found = calibrate_film_segmenter(model, meta, cal, "test")
                meta = {
                    **meta,
                    "finding_thresholds": found["finding_thresholds"],
                    "finding_calibration": {"films": found["films"], "scores": found["scores"]},
                }
            else:
                found = calibrate_findings(model, meta, cal)  # the splits it has
                meta = {
                    **meta,
                    "finding_thresholds": found["finding_thresholds"],
                    "finding_min_voxels": found["finding_min_voxels"],
                    "finding_calibration": {"volumes": found["volumes"], "scores": found["scores"]},
                }
            save_segmenter(out, model, meta)
            command += (
                f"\npython scripts/calibrate_segmenter.py --checkpoint {run_dir} --data {cal} "
                f"--out {out}" + (" --splits test" if cfg.films else "")
            )
        return command.strip(), {"steps": cfg.steps, **metrics}

    def _run_detector(self, stage: Stage) -> tuple[str, dict]:
        from rgct.model.segmenter import CONFIG_FILE, WEIGHTS_FILE, copy_segmenter
        from rgct.train.detector import DetectorTrainConfig, calibrate_detector, fit_detector

        o = stage.options
        src, data, out = self._ref(o["from"]), self.data_dir(stage), self.model_dir(stage.id)
        if not (src / WEIGHTS_FILE).is_file():
            raise RecipeError(
                f"{self.recipe.path}: stage {stage.id!r}: {src} holds no segmenter "
                f"({WEIGHTS_FILE}, {CONFIG_FILE}) for the detector to join"
            )
        kwargs = {k: o[k] for k in _DETECTOR_FLAGS if k in o}
        if "classes" in kwargs:
            kwargs["classes"] = tuple(_mask_list(kwargs["classes"]))
        run_dir = self.stage_dir(stage.id) / "run"
        cfg = DetectorTrainConfig(
            data_root=str(data), init=str(src), out_dir=str(run_dir), **kwargs
        )
        fit_detector(cfg)
        flags = " ".join(
            f"--{k.replace('_', '-')} {shlex.quote(_flag(v))}" for k, v in o.items() if k in kwargs
        )
        command = (
            f"python scripts/train_detector.py --init {src} --data {data} --out {run_dir} {flags}"
        )
        result = {"steps": cfg.steps, **_last_metrics(run_dir)}
        if "calibrate" in o:
            cal = self.stage_dir(str(o["calibrate"]))
            limit = o.get("calibrate_volumes")
            found = calibrate_detector(run_dir, cal, max_volumes=limit)
            command += f" --calibrate {cal}" + (f" --calibrate-volumes {limit}" if limit else "")
            for label, score in found["scores"].items():
                if score:
                    result[f"{label.lower().replace(' ', '_')}_f1"] = round(score["f1"], 4)
        with atomic_dir(out) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            copy_segmenter(run_dir, tmp)
        command += f"\n(the checkpoint: a copy of {src} with the segmenter of {run_dir})"
        return command, result

    def _keep_records(self, folder: Path) -> None:
        """Into an exported model folder: each training stage's ``metrics.jsonl`` (as
        ``training/<stage>_metrics.jsonl``), and the card and training records of each reused
        stage (``history/<stage>/``) with the history that folder kept itself, so the folder
        tells how all of it was made. A reused folder whose own history already holds that
        stage's card (a model reused again) keeps it: its present card is added beside it as
        :data:`GIVEN_CARD`."""
        log = self.log()
        for rec in log:
            metrics = self.stage_dir(rec["stage"]) / "metrics.jsonl"
            if rec["kind"] == "train" and metrics.is_file():
                (folder / "training").mkdir(exist_ok=True)
                shutil.copy2(metrics, folder / "training" / f"{rec['stage']}_metrics.jsonl")
        for sid in _reused(log):
            made = self.model_dir(sid)
            if (made / "history").is_dir():  # what the reused folder kept of its own makers
                shutil.copytree(made / "history", folder / "history", dirs_exist_ok=True)
            keep = folder / "history" / sid
            if (made / "README.md").is_file():  # its card; the first maker's card stays first
                keep.mkdir(parents=True, exist_ok=True)
                first = not (keep / "README.md").is_file()
                shutil.copy2(made / "README.md", keep / ("README.md" if first else GIVEN_CARD))
            if (made / "training").is_dir():
                shutil.copytree(made / "training", keep / "training", dirs_exist_ok=True)

    def _run_export(self, stage: Stage) -> tuple[str, dict]:
        from rgct.model.segmenter import copy_segmenter

        o = stage.options
        src = self._ref(o["from"])
        names = o.get("heldout", [])
        names = [names] if isinstance(names, str) else list(names)
        heldouts = [json.loads((self.stage_dir(n) / "heldout.json").read_text()) for n in names]
        card = model_card(self.recipe, self.log(), heldouts)
        with atomic_dir(self.model_dir(stage.id)) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            if "segmenter" in o:
                copy_segmenter(self._ref(str(o["segmenter"])), tmp)
            write_text(tmp / "README.md", card)
            for n, h in zip(names, heldouts):
                write_json(tmp / f"{n}.json", h)
            write_text(tmp / "recipe.yaml", self.recipe.path.read_text())
            self._keep_records(tmp)
        files = sorted(p.name for p in self.model_dir(stage.id).iterdir())
        return f"(copy of {self._portable(str(src))} with the model card)", {"files": len(files)}


def _near(path: Path) -> Path:
    """``path`` relative to the working folder when it lies inside it (what a stage records in
    its checkpoint config then names no machine path), else as it is."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _reused(log: list[dict]) -> list[str]:
    """Ids of the stages a run took from elsewhere (``--reuse``)."""
    return [r["stage"] for r in log if (r.get("result") or {}).get("reused")]


def _mask_list(value: Any) -> list[str]:
    """A stage's ``masks`` (one source or a list) as a list of names."""
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _flag(value: Any) -> str:
    """A stage option as its command-line flag value (lists comma-joined)."""
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _last_metrics(run_dir: Path) -> dict:
    """The last logged training losses of a run (for the log and the card)."""
    path = run_dir / "metrics.jsonl"
    out: dict = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            for k in ("loss", "lm_loss", "aux_loss", "dense_loss"):
                if k in row:
                    out[f"final_{k}"] = round(float(row[k]), 5)
    return out


def model_card(recipe: Recipe, log: list[dict], heldouts: list[dict]) -> str:
    """The model card, written from the recipe and its run log (nothing by hand)."""
    lines = [
        f"# rgct model: recipe `{recipe.name}`",
        "",
        recipe.description or "Region-grounded chest-CT report model made by an rgct recipe.",
        "",
        f"Made by `rgct recipe {recipe.path.name}` (the recipe is copied here as `recipe.yaml`); "
        "every stage below is also a plain command.",
        "",
        "## How it was made",
        "",
        "| stage | kind | seconds | result |",
        "|---|---|---|---|",
    ]
    for rec in log:
        res = rec.get("result") or {}
        short = {k: v for k, v in res.items() if isinstance(v, int | float | str)}
        if rec["kind"] == "heldout" and res.get("modality") == "cxr":
            short = {"presence_accuracy": (res.get("model") or {}).get("cxr_presence accuracy")}
        elif rec["kind"] == "heldout":
            short = {"finding_f1": (res.get("model") or {}).get("finding_f1")}
        lines.append(
            f"| {rec['stage']} | {rec['kind']} | {rec['seconds']} | "
            f"{', '.join(f'{k}={_fmt(v)}' for k, v in short.items())} |"
        )
    reused = _reused(log)
    if reused:
        lines += [
            "",
            "Stages taken from a model made before this run (`--reuse`): "
            + ", ".join(f"`{sid}`" for sid in reused)
            + "; each one's own card and training records are kept in `history/<stage>/`.",
        ]
    lines += ["", "Commands, in order:", "", "```"]
    lines += [rec["command"] for rec in log if rec["kind"] != "export"]
    lines += ["```"]
    if heldouts:
        from rgct.generate.heldout import card_section

        lines += ["", "## Held-out check (does it use the image?)"]
        for h in heldouts:
            lines += ["", card_section(h)]
    lines += ["", "Load with `rgct.inference.Predictor.from_checkpoint(path)`."]
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# --- the `rgct recipe` command ---------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML (configs/recipes/<name>.yaml)")
    parser.add_argument("--work", required=True, help="work folder: one subfolder per stage")
    parser.add_argument("--from", dest="start", default=None, help="re-run from this stage")
    parser.add_argument("--until", default=None, help="stop after this stage")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (non-training stages)")
    parser.add_argument(
        "--export", default=None, help="copy the last export stage's model folder here"
    )
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="STAGE=DIR",
        help="take DIR as STAGE's finished output (e.g. continue from a shipped model); repeatable",
    )


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe)
    runner = RecipeRunner(recipe, args.work, device=args.device)
    for item in args.reuse:
        stage_id, sep, folder = item.partition("=")
        if not sep or not stage_id or not folder:
            raise RecipeError(f"--reuse {item!r}: expected STAGE=DIR")
        runner.reuse(stage_id, folder)
    ran = runner.run(args.start, args.until)
    print(f"recipe {recipe.name}: ran {ran or 'nothing (all stages done)'} in {runner.work}")
    if args.export:
        exports = [s.id for s in recipe.stages if s.kind == "export" and runner.is_done(s.id)]
        if not exports:
            raise RecipeError(f"--export: no finished export stage in {runner.work}")
        with atomic_dir(args.export) as tmp:
            shutil.copytree(runner.model_dir(exports[-1]), tmp, dirs_exist_ok=True)
        print(f"exported {runner.model_dir(exports[-1])} to {args.export}")
    return 0
