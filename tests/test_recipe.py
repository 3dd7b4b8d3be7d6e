"""Recipes (:mod:`rgct.recipe`): every shipped recipe loads; the quick one runs end to end and
resumes at the stage it was in; bad recipes are refused with the stage named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rgct.cli import main
from rgct.recipe import DONE_FILE, GIVEN_CARD, LOG_FILE, RecipeError, RecipeRunner, load_recipe

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "configs" / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_shipped_recipe_loads_and_its_train_stages_are_config_files(path):
    from rgct.config import load_config

    recipe = load_recipe(path)
    assert recipe.stages
    for stage in recipe.stages:
        if stage.kind == "train":
            cfg_path = recipe.train_config(stage)
            assert cfg_path.stem == stage.options.get("config", stage.id)
            load_config(
                [recipe.model, cfg_path], [str(o) for o in stage.options.get("overrides", [])]
            )


def test_quick_recipe_runs_end_to_end_and_resumes(tmp_path):
    work = tmp_path / "work"
    recipe = REPO / "configs/recipes/quick.yaml"
    assert main(["recipe", str(recipe), "--work", str(work), "--until", "stage2_instruct"]) == 0
    assert (work / "stage2_instruct" / DONE_FILE).is_file()
    assert not (work / "classifier_fit").exists()
    # a training stage killed mid-way: its checkpoint is there, its done-marker is not
    from rgct.config import load_config
    from rgct.train.loop import train

    runner = RecipeRunner(load_recipe(recipe), work)
    stage = runner.recipe.stage("stage3_stats")
    cfg = load_config(
        [runner.recipe.model, runner.recipe.train_config(stage)],
        [
            f"data.root={runner.data_dir(stage)}",
            f"train.output_dir={work / 'stage3_stats'}",
            *runner.recipe.overrides,
            *stage.options["overrides"],
            "train.init=" + json.dumps([{"from": str(work / "classifier_fit" / "model")}]),
        ],
    )
    with pytest.raises(FileNotFoundError):  # classifier_fit has not run yet
        train(cfg)
    assert main(["recipe", str(recipe), "--work", str(work), "--until", "classifier_fit"]) == 0
    cfg.train.stop_after = 1
    train(cfg)
    assert not (work / "stage3_stats" / DONE_FILE).exists()
    export = tmp_path / "exported"
    assert main(["recipe", str(recipe), "--work", str(work), "--export", str(export)]) == 0
    steps = [
        json.loads(line)["step"]
        for line in (work / "stage3_stats" / "metrics.jsonl").read_text().splitlines()
        if '"loss"' in line
    ]
    assert steps == [1, 2]  # continued at step 2, not restarted
    log = [json.loads(x) for x in (work / LOG_FILE).read_text().splitlines()]
    assert [r["stage"] for r in log] == runner.recipe.ids  # each stage ran exactly once
    card = (export / "README.md").read_text()
    assert "## How it was made" in card and "rgct classifier calibrate" in card
    assert "--masks dataset" in card  # a stage's list option as its command-line flag
    assert "Held-out check" in card and str(tmp_path) not in card  # no machine paths
    assert json.loads((export / "heldout.json").read_text())["blind_baseline"]  # <stage id>.json
    predicted = json.loads((export / "heldout_predicted.json").read_text())
    assert predicted["mask_source"] == "predicted" and "region masks: predicted" in card
    assert "blind_baseline" not in predicted and "--limit 1 --no-blind --masks predicted" in card
    from rgct.model.segmenter import load_segmenter

    segmenter, meta = load_segmenter(export)  # the detector stage's segmenter was exported
    assert segmenter.focal_classes == ("Lung nodule",) and meta["detector"]["calibrated"]
    assert "scripts/train_detector.py" in card
    from rgct.data.layout import volume_path
    from rgct.data.records import find_volumes
    from rgct.inference import Predictor

    p = Predictor.from_checkpoint(export, device="cpu")
    assert p.cfg.model.evidence_thresholds and p.segmenter is not None
    assert p.cfg.model.evidence_locations
    assert p.lobe_head is not None  # the fit_lobes stage's head travels to the export
    assert "rgct classifier fit-lobes" in card
    # stage3_locations loads the calibrated classifier and leaves it as it is: its thresholds too
    calibrated = Predictor.from_checkpoint(work / "calibrate" / "model", device="cpu")
    located = Predictor.from_checkpoint(work / "stage3_locations" / "model", device="cpu")
    assert located.cfg.model.evidence_thresholds == calibrated.cfg.model.evidence_thresholds
    # stage3_places (scan places) after the detector, then thresholds fitted with its statements
    assert p.cfg.model.scan_locations and p.segmenter[0].focal_classes == ("Lung nodule",)
    assert json.loads((export / "calibration.json").read_text())["stated_by_detector"] == [
        "Lung nodule"
    ]
    scan = volume_path(work / "heldout_synth", find_volumes(work / "heldout_synth", "valid")[0])
    p.cfg.generation.max_new_tokens = 4
    try:  # a 2-step segmenter may find nothing: then the refusal names every region
        report = p.report(scan)
    except ValueError as e:
        assert "no mask predicted" in str(e)
    else:
        assert report["mask_source"] == "predicted" and report["regions"]
    # everything done: a rerun does nothing; --from re-runs that stage and what follows
    assert RecipeRunner(load_recipe(recipe), work).run() == []
    assert RecipeRunner(load_recipe(recipe), work).run("export") == ["export"]
    # a model made elsewhere stands in for a stage: the later stages continue it
    again = tmp_path / "again"
    bundle = work / "bundle" / "model"
    args = ["recipe", str(recipe), "--work", str(again), "--reuse", f"bundle={bundle}"]
    args += ["--reuse", f"synth={work / 'synth'}"]
    assert main([*args, "--from", "stage3_locations", "--until", "grounded"]) == 0
    log = [json.loads(x) for x in (again / LOG_FILE).read_text().splitlines()]
    assert [r["stage"] for r in log] == ["bundle", "synth", "stage3_locations", "grounded"]
    assert log[0]["result"] == {"reused": True} and str(tmp_path) not in log[0]["command"]
    assert sorted(p.name for p in again.iterdir() if p.is_dir()) == [
        "bundle",
        "grounded",
        "stage3_locations",
        "synth",
    ]
    assert (bundle / "adapter_model.safetensors").is_file()  # the source is left as it was
    card = (again / "grounded" / "model" / "README.md").read_text()
    reused = next(line for line in card.splitlines() if "(`--reuse`)" in line)
    assert "`bundle`" in reused and "`synth`" in reused and "history/<stage>/" in reused
    kept = again / "grounded" / "model" / "history" / "bundle" / "README.md"
    assert kept.read_text() == (bundle / "README.md").read_text()
    assert (again / "grounded" / "model" / "training" / "stage3_locations_metrics.jsonl").is_file()
    # continuing that folder in turn keeps both generations of history
    third = RecipeRunner(load_recipe(recipe), tmp_path / "third")
    third.reuse("grounded", again / "grounded" / "model")
    kept = tmp_path / "kept"
    third._keep_records(kept)
    assert (kept / "history" / "bundle" / "README.md").read_text() == (
        bundle / "README.md"
    ).read_text()
    assert (kept / "history" / "grounded" / "README.md").read_text() == card
    # a stage reused again from a folder that kept that stage's first card keeps it first
    fourth = RecipeRunner(load_recipe(recipe), tmp_path / "fourth")
    fourth.reuse("bundle", again / "grounded" / "model")
    fourth._keep_records(tmp_path / "kept4")
    first = tmp_path / "kept4" / "history" / "bundle"
    assert (first / "README.md").read_text() == (bundle / "README.md").read_text()
    assert (first / GIVEN_CARD).read_text() == card
    # --from re-runs that stage and the ones after it, never a stage taken with --reuse
    rerun = RecipeRunner(load_recipe(recipe), again)
    assert rerun.run("bundle", "grounded") == ["stage3_locations", "grounded"]
    assert json.loads((again / LOG_FILE).read_text().splitlines()[0])["result"]["reused"]


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("heldout=x", "cannot be reused"),
        ("no_such=x", "no stage 'no_such'"),
        ("bundle", "expected STAGE=DIR"),
        ("bundle=/no/such/folder", "no_such|not found|does not exist|No such"),
        ("synth=/no/such/folder", "not a radgenome phantom"),
    ],
)
def test_reuse_is_refused_for_what_it_cannot_stand_in_for(tmp_path, item, match):
    recipe = REPO / "configs/recipes/quick.yaml"
    with pytest.raises((RecipeError, FileNotFoundError, ValueError), match=match):
        main(["recipe", str(recipe), "--work", str(tmp_path / "w"), "--reuse", item])


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "recipes").mkdir(exist_ok=True)
    path = tmp_path / "recipes" / "r.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("stages", "match"),
    [
        ("- {id: a, kind: bake}", "unknown kind 'bake'"),
        ("- {id: synth, kind: synth}\n- {id: synth, kind: synth}", "used twice"),
        ("- {id: synth, kind: synth, colour: red}", "unknown key"),
        ("- {id: synth, kind: synth}\n- {id: h, kind: heldout, from: cal}", "unknown stage 'cal'"),
        (
            "- {id: synth, kind: synth}\n- {id: h, kind: heldout, from: c}\n"
            "- {id: c, kind: calibrate, from: h}",
            "comes after it",
        ),
        ("- {id: synth, kind: synth}\n- {id: no_such_stage, kind: train}", "does not exist"),
        ("- {id: h, kind: heldout, from: x}", "unknown stage"),
    ],
)
def test_bad_recipes_are_refused_naming_the_stage(tmp_path, stages, match):
    path = _write(
        tmp_path, f"name: r\nmodel: {REPO / 'configs/model/tiny.yaml'}\nstages:\n{stages}\n"
    )
    with pytest.raises(RecipeError, match=match):
        load_recipe(path)


def test_recipe_file_errors(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "none.yaml")
    with pytest.raises(RecipeError, match="missing 'stages'"):
        load_recipe(_write(tmp_path, f"name: r\nmodel: {REPO / 'configs/model/tiny.yaml'}\n"))
    with pytest.raises(RecipeError, match="model preset"):
        load_recipe(_write(tmp_path, "name: r\nmodel: nowhere.yaml\nstages: []\n"))


def test_folders_beside_the_recipe_are_named_from_the_working_folder(tmp_path, monkeypatch):
    path = _write(
        tmp_path,
        f"name: r\nmodel: {REPO / 'configs/model/tiny.yaml'}\nstages:\n"
        "- {id: synth, kind: synth}\n- {id: h, kind: heldout, from: synth, data: ../d}\n",
    )
    (tmp_path / "d").mkdir()
    monkeypatch.chdir(tmp_path)
    runner = RecipeRunner(load_recipe(path), tmp_path / "w")
    stage = runner.recipe.stage("h")
    # what a stage records (its checkpoint config's train.init) names no machine path
    assert runner._ref("../shipped") == Path("shipped")
    assert runner.data_dir(stage) == Path("d")
    monkeypatch.chdir(REPO)
    assert runner._ref("../shipped") == (tmp_path / "shipped").resolve()


def test_a_detector_stage_needs_a_checkpoint_with_a_segmenter(tmp_path):
    path = _write(
        tmp_path,
        f"name: r\nmodel: {REPO / 'configs/model/tiny.yaml'}\nstages:\n"
        "- {id: synth, kind: synth}\n- {id: cal, kind: calibrate, from: synth}\n"
        "- {id: det, kind: detector, from: cal, steps: 1}\n",
    )
    runner = RecipeRunner(load_recipe(path), tmp_path / "work")
    runner.model_dir("cal").mkdir(parents=True)  # a checkpoint folder without a segmenter
    with pytest.raises(RecipeError, match="holds no segmenter"):
        runner._run_detector(runner.recipe.stage("det"))
    with pytest.raises(RecipeError, match="unknown key"):
        load_recipe(
            _write(
                tmp_path,
                f"name: r\nmodel: {REPO / 'configs/model/tiny.yaml'}\nstages:\n"
                "- {id: synth, kind: synth}\n- {id: det, kind: detector, from: synth, "
                "batch_size: 2}\n",
            )
        )


def test_a_radiograph_synth_stage_reuses_a_folder_of_its_own_layout(
    tmp_path, cxr_phantoms, phantom_root
):
    recipe = _write(
        tmp_path,
        f"name: films\nmodel: {REPO / 'configs/model/tiny.yaml'}\nstages:\n"
        "  - {id: films, kind: synth, layout: vindr-cxr, num_volumes: 4, seed: 3}\n",
    )
    work = tmp_path / "w"
    main(["recipe", str(recipe), "--work", str(work), "--reuse", f"films={cxr_phantoms['vindr']}"])
    assert (work / "films" / "annotations").is_dir()
    with pytest.raises(RecipeError, match="not a vindr-cxr phantom/dataset folder"):
        main(
            [
                "recipe",
                str(recipe),
                "--work",
                str(tmp_path / "w2"),
                "--reuse",
                f"films={phantom_root}",
            ]
        )
