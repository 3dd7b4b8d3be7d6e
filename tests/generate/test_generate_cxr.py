"""``rgct generate`` and ``rgct heldout`` on radiograph folders: the standard predictions JSONL
(cxr_box lines with their box in image pixels), resume, wrong-modality refusals, the blind
baseline."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from rgct.cli import main
from rgct.constants import CXR_TASKS
from rgct.data.io import DataError
from rgct.generate.heldout import card_section, heldout_eval
from rgct.generate.localize_cxr import PRESUPPOSED
from rgct.generate.runner import merge_parts, run_generation
from rgct.model.checkpoint import load_checkpoint

FIELDS = {"volume", "task", "region", "question", "prediction", "reference", "mask_source"}


@pytest.fixture(scope="module")
def cxr_model(cxr_checkpoint):
    model, cfg = load_checkpoint(cxr_checkpoint)
    cfg.generation.max_new_tokens = 4
    return model, cfg


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def truth_boxes(root: Path) -> dict[str, list[list[float]]]:
    rows = [json.loads(line) for line in (root / "ground_truth.jsonl").read_text().splitlines()]
    return {r["volume"]: [f["box"] for f in r["cxr_findings"] if f.get("class_name")] for r in rows}


@pytest.mark.parametrize("key", ["vindr", "nih"])
def test_generate_writes_standard_lines_with_boxes(cxr_model, cxr_phantoms, tmp_path, key):
    model, cfg = cxr_model
    root = cxr_phantoms[key]
    out = tmp_path / "preds.jsonl"
    merge_parts(run_generation(model, cfg, root, "valid", list(CXR_TASKS), out).parent / out.name)
    rows = read(out)
    assert rows and {r["task"] for r in rows} <= set(CXR_TASKS)
    assert all(FIELDS <= set(r) for r in rows)
    boxes = truth_boxes(root)
    box_rows = [r for r in rows if r["task"] == "cxr_box"]
    assert box_rows
    for r in box_rows:  # the box in image pixels: the truth's box, on whole-pixel edges
        assert r["region"] == "box"
        assert any(
            r["box"] == [int(b[0]), int(b[1]), int(-(-b[2] // 1)), int(-(-b[3] // 1))]
            for b in boxes[r["volume"]]
        )
    assert all("box" not in r for r in rows if r["task"] != "cxr_box")
    # every box of an image is its own line (the question is the same for each)
    assert len(box_rows) == sum(
        len(b) for v, b in boxes.items() if v in {r["volume"] for r in rows}
    )
    # a rerun resumes: nothing generated twice
    merge_parts(run_generation(model, cfg, root, "valid", list(CXR_TASKS), out).parent / out.name)
    assert read(out) == rows


def test_cli_generates_from_a_radiograph_folder(cxr_checkpoint, cxr_phantoms, tmp_path):
    out = tmp_path / "cli.jsonl"
    args = ["generate", "--checkpoint", str(cxr_checkpoint), "--data", str(cxr_phantoms["vindr"])]
    args += ["--tasks", "cxr_box,cxr_presence", "--max-new-tokens", "3", "--out", str(out)]
    assert main([*args, "--device", "cpu"]) == 0
    assert {r["task"] for r in read(out)} == {"cxr_box", "cxr_presence"}


def test_wrong_modality_is_refused_naming_both(
    cxr_checkpoint, tiny_checkpoint, cxr_phantoms, phantom_root, tmp_path, caplog
):
    for checkpoint, data, says in (
        (
            tiny_checkpoint,
            cxr_phantoms["vindr"],
            "vindr-cxr folder (chest radiographs) but this checkpoint reads CT volumes",
        ),
        (
            cxr_checkpoint,
            phantom_root,
            "radgenome folder (CT volumes) but this checkpoint reads chest radiographs",
        ),
    ):
        caplog.clear()
        args = ["generate", "--checkpoint", str(checkpoint), "--data", str(data)]
        with caplog.at_level(logging.ERROR):
            assert main([*args, "--out", str(tmp_path / "p.jsonl"), "--device", "cpu"]) == 2
        assert says in caplog.text
    model, cfg = load_checkpoint(cxr_checkpoint)
    with pytest.raises(DataError, match="--masks must be 'dataset'"):
        from rgct.generate.runner import check_generation_inputs

        check_generation_inputs(cxr_phantoms["nih"], ["cxr_box"], "predicted")


def test_heldout_scores_model_and_blind_baseline(cxr_model, cxr_phantoms, tmp_path):
    model, cfg = cxr_model
    result = heldout_eval(model, cfg, cxr_phantoms["vindr"], tmp_path, split="test")
    assert result["modality"] == "cxr" and result["volumes"] >= 1
    assert set(result["model"]) == set(result["blind_baseline"])
    assert "cxr_presence accuracy" in result["model"]
    names = {t["name"] for t in result["targets"]}
    assert "presence accuracy above the blind baseline" in names
    blind = read(tmp_path / "predictions_blind_baseline.jsonl")
    assert len(blind) == len(read(tmp_path / "predictions_model.jsonl"))
    assert json.loads((tmp_path / "heldout.json").read_text())["model"] == result["model"]
    # the rule naming a presupposed finding is part of the run: another rule never resumes it
    assert json.loads((tmp_path / "run.json").read_text())["presupposed"] == PRESUPPOSED
    card = card_section(result)
    assert "| cxr_presence accuracy |" in card and "issue #18 target" in card
    with pytest.raises(ValueError, match="no oracle"):
        heldout_eval(model, cfg, cxr_phantoms["vindr"], tmp_path / "o", split="test", oracle=True)


def test_a_box_question_presupposes_a_finding_without_a_localiser(
    cxr_model, cxr_phantoms, tmp_path, monkeypatch
):
    """``rgct generate`` flags box questions as the Predictor does, whether or not the model
    has a zone localiser (``model.evidence_locations``); whole-film questions are not flagged."""
    from rgct.model.rgct_model import RGCTModel

    model, cfg = cxr_model
    assert not cfg.model.evidence_locations  # no localiser is built for this model
    seen: list[tuple[str, bool]] = []
    real = RGCTModel.generate

    def spy(self, image, mask, prompts, gen, **kw):
        flags = kw.get("presupposed") or [False] * len(prompts)
        seen.extend(zip(prompts, flags))
        return real(self, image, mask, prompts, gen, **kw)

    monkeypatch.setattr(RGCTModel, "generate", spy)
    out = tmp_path / "preds.jsonl"
    run_generation(model, cfg, cxr_phantoms["vindr"], "valid", ["cxr_box", "cxr_presence"], out)
    flagged = {p for p, f in seen if f}
    assert flagged and all("box" in p.lower() for p in flagged)
    assert any(not f for _, f in seen)
