"""Chest-radiograph scoring (``rgct evaluate`` on cxr_* lines): the readers of free answers, the
metrics against hand-counted values, the folder's truth check, the paired comparison."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rgct.cli import main
from rgct.constants import WHOLE_SCAN
from rgct.data.chestxray14 import load_chestxray14
from rgct.data.cxr_samples import image_questions
from rgct.data.vindr import VINDR_SPLITS, load_vindr
from rgct.eval.cxr import compare_cxr, score_cxr
from rgct.eval.cxr_parse import (
    find_classes,
    find_locations,
    infer_layout,
    parse_presence,
    parse_report,
    vocabulary,
)

LAYOUTS = {"vindr": "vindr-cxr", "nih": "chestxray14"}
BLIND = {
    "cxr_presence": "No.",
    "cxr_box": "Pleural effusion.",
    "cxr_location": "right lower zone.",
    "cxr_labels": "Pleural effusion.",
    "cxr_report": "Pleural effusion in the right lower zone.",
}


def _lines(root: Path, layout: str) -> list[dict]:
    """Every task's line for every image of a phantom folder, prediction = reference."""
    if layout == "vindr-cxr":
        images = [
            (i.image_id, i.size, i.boxes, i.labels)
            for s in VINDR_SPLITS
            for i in load_vindr(root, s).images.values()
        ]
    else:
        images = [
            (i.name, i.size, i.boxes, i.labels) for i in load_chestxray14(root).images.values()
        ]
    rng = np.random.default_rng(0)
    out = []
    for name, (width, height), boxes, labels in images:
        for task, question, answer, k in image_questions(
            boxes, labels, (height, width), layout, rng
        ):
            line = {
                "volume": name,
                "task": task,
                "region": "box" if k is not None else WHOLE_SCAN,
                "question": question,
                "prediction": answer,
                "reference": answer,
            }
            if k is not None:
                line["box"] = list(boxes[k].coords)
            out.append(line)
    return out


def _write(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def _evaluate(tmp_path: Path, name: str, *args: str) -> tuple[int, dict | None]:
    out = tmp_path / name
    code = main(["evaluate", *args, "--out", str(out), "--bootstrap", "200"])
    metrics = out / "metrics.json"
    return code, json.loads(metrics.read_text()) if metrics.exists() else None


# --- reading free answers -----------------------------------------------------------------------


def test_presence_reads_yes_and_no_in_free_text() -> None:
    cases = {
        "Yes.": True,
        "yes, in the right lower zone": True,
        "No": False,
        "There is a small pleural effusion.": True,
        "Pleural effusion is present.": True,
        "No evidence of pleural effusion.": False,
        "The effusion is not seen.": False,
        "Normal chest radiograph.": False,
        "There is a nodule, not a mass.": True,  # the first clause that says either
        "Pleural effusion.": None,  # names the finding, says neither
        "": None,
    }
    assert {t: parse_presence(t) for t in cases} == cases


def test_classes_through_the_vocabulary_synonyms_plurals_and_negation() -> None:
    assert find_classes("Effusions and an enlarged heart.", "vindr-cxr") == [
        "Pleural effusion",
        "Cardiomegaly",
    ]
    assert find_classes("Effusion.", "chestxray14") == ["Effusion"]
    assert find_classes("Nodule.", "vindr-cxr") == ["Nodule/Mass"]
    assert find_classes("Nodule or mass.", "chestxray14") == ["Nodule", "Mass"]
    assert find_classes("Pleural_Thickening, Infiltrate.", "chestxray14") == [
        "Pleural_Thickening",
        "Infiltration",
    ]
    # negated before or after, in its own clause only
    assert find_classes("Cardiomegaly, no pneumothorax.", "vindr-cxr") == ["Cardiomegaly"]
    assert find_classes("Pneumothorax is not seen. Atelectasis.", "vindr-cxr") == ["Atelectasis"]
    assert find_classes("No finding.", "vindr-cxr") == []
    # without a layout both datasets' spellings of a finding meet in its words
    assert find_classes("Effusion", None) == find_classes("Pleural effusion", None)
    assert vocabulary(None)["effusion"] == "pleural effusion"
    with pytest.raises(ValueError, match="layout"):
        vocabulary("mimic")


def test_locations_and_reports() -> None:
    assert find_locations("right lower zone and left lower zone.") == [
        "right lower zone",
        "left lower zone",
    ]
    assert find_locations("Bilateral lower zones.") == ["right lower zone", "left lower zone"]
    assert find_locations("In the right upper and mid zones.") == [
        "right upper zone",
        "right middle zone",
    ]
    assert find_locations("The lower zone of the left lung.") == ["left lower zone"]
    assert find_locations("Central middle zone.") == ["central middle zone"]
    assert find_locations("Opacities in the lower zones bilaterally.") == [
        "right lower zone",
        "left lower zone",
    ]
    assert find_locations("The right lower lobe.") == []
    report = parse_report(
        "Pleural effusion in the left lower zone. Pleural effusion in the right lower zone. "
        "Nodule or mass in the left middle zone. COPD.",
        "vindr-cxr",
    )
    assert report == {
        "Pleural effusion": ["left lower zone", "right lower zone"],
        "Nodule/Mass": ["left middle zone"],
        "COPD": [],
    }
    assert infer_layout(["Nodule or mass.", "Yes."]) == "vindr-cxr"
    assert infer_layout(["Nodule.", "Infiltration."]) == "chestxray14"
    assert infer_layout(["Cardiomegaly."]) is None


# --- metrics against hand-counted values --------------------------------------------------------


def _line(volume: str, task: str, prediction: str, reference: str, **extra) -> dict:
    return {
        "volume": volume,
        "task": task,
        "region": "box" if task == "cxr_box" else WHOLE_SCAN,
        "question": extra.pop("question", f"q {task} {reference} {prediction}"),
        "prediction": prediction,
        "reference": reference,
        **extra,
    }


HAND = [
    # presence: 2 right of 4, one answer unreadable (wrong and counted)
    _line("a", "cxr_presence", "Yes, there is.", "Yes."),
    _line("a", "cxr_presence", "Pleural effusion.", "No."),
    _line("b", "cxr_presence", "No pneumothorax is seen.", "No."),
    _line("b", "cxr_presence", "Yes.", "No."),
    # box: 1 right of 3 (the second names two classes, the third none)
    _line("a", "cxr_box", "Effusion.", "Pleural effusion.", box=[0, 0, 5, 5]),
    _line("a", "cxr_box", "Effusion and atelectasis.", "Pleural effusion.", box=[5, 5, 9, 9]),
    _line("b", "cxr_box", "Something.", "Cardiomegaly.", box=[0, 0, 5, 5]),
    # location: exact 1 of 2; phrases tp 2, fp 1, fn 1
    _line("a", "cxr_location", "right lower zone.", "right lower zone."),
    _line(
        "b",
        "cxr_location",
        "left upper zone and left middle zone.",
        "left upper zone and right upper zone.",
    ),  # fmt: skip
    # labels: tp 2, fp 1, fn 2
    _line(
        "a",
        "cxr_labels",
        "Cardiomegaly, pleural effusion, atelectasis.",
        "Cardiomegaly, pleural effusion, COPD.",
    ),  # fmt: skip
    _line("b", "cxr_labels", "No finding.", "Emphysema."),
    # report: classes tp 2 fp 0 fn 1; places of named classes 3, of which 2 right; all places 4
    _line(
        "a",
        "cxr_report",
        "Pleural effusion in the left lower zone. Atelectasis in the right upper zone.",
        "Pleural effusion in the left lower zone. Pleural effusion in the right lower zone. "
        "Atelectasis in the right upper zone. Cardiomegaly in the central lower zone.",
    ),
]


def test_metrics_match_hand_counts() -> None:
    m = score_cxr(HAND, layout="vindr-cxr", replicates=200)
    t = m["tasks"]
    assert (t["cxr_presence"]["accuracy"], t["cxr_presence"]["unparsed"]) == (0.5, 1)
    assert t["cxr_box"]["accuracy"] == pytest.approx(1 / 3) and t["cxr_box"]["unparsed"] == 1
    assert t["cxr_box"]["per_class"] == {
        "Cardiomegaly": {"n": 1, "accuracy": 0.0},
        "Pleural effusion": {"n": 2, "accuracy": 0.5},
    }
    loc = t["cxr_location"]
    assert loc["exact_accuracy"] == 0.5
    assert (loc["precision"], loc["recall"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    lab = t["cxr_labels"]
    assert (lab["tp"], lab["fp"], lab["fn"]) == (2, 1, 2)
    assert lab["f1"] == pytest.approx(4 / 7)
    assert lab["per_class"]["COPD"] == {"precision": None, "recall": 0.0, "f1": 0.0, "support": 1}
    rep = t["cxr_report"]
    assert rep["finding_f1"] == pytest.approx(0.8)  # tp 2, fn 1
    assert rep["location_accuracy"] == pytest.approx(2 / 3)
    assert rep["located_recall"] == pytest.approx(2 / 4)
    assert (rep["named_places"], rep["places"]) == (3, 4)
    # each interval holds its value; two images: the bootstrap can only draw a, b or both
    for block in t.values():
        for name, ci in block["ci95"].items():
            assert ci is not None and ci[0] <= block[name] + 1e-9 <= ci[1] + 2e-9, name
    assert [h["name"] for h in m["headline"]][:3] == [
        "presence accuracy",
        "finding named for a given box",
        "side/zone of a named finding",
    ]


def test_a_blind_baseline_loses_the_paired_comparison() -> None:
    blind = [{**line, "prediction": BLIND[line["task"]]} for line in HAND]
    right = [{**line, "prediction": line["reference"]} for line in HAND]
    comparison = compare_cxr(right, blind, "vindr-cxr", replicates=300)
    assert comparison["num_matched"] == len(HAND)
    presence = comparison["metrics"]["cxr_presence accuracy"]
    assert (presence["this"], presence["other"]) == (1.0, 0.75)
    assert presence["difference"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="references differ"):
        compare_cxr(right, [{**x, "reference": "Yes."} for x in HAND], "vindr-cxr", 10)


# --- rgct evaluate on phantom folders -----------------------------------------------------------


@pytest.mark.parametrize("key", ["vindr", "nih"])
def test_evaluate_scores_a_phantom_folder_with_its_truth(cxr_phantoms, tmp_path, key) -> None:
    root, layout = cxr_phantoms[key], LAYOUTS[key]
    lines = _lines(root, layout)
    assert {x["task"] for x in lines} == set(BLIND)
    perfect = _write(tmp_path / "perfect.jsonl", lines)
    blind = _write(tmp_path / "blind.jsonl", [{**x, "prediction": BLIND[x["task"]]} for x in lines])
    code, m = _evaluate(tmp_path, "m", "--predictions", str(perfect), "--data", str(root))
    assert code == 0 and m["layout"] == layout and m["layout_from"] == "data"
    assert all(h["value"] == 1.0 and h["ci95"] == [1.0, 1.0] for h in m["headline"])
    md = (tmp_path / "m" / "metrics.md").read_text()
    assert "| presence accuracy | 1.0000 [1.000, 1.000] |" in md and "**met**" in md
    # the blind baseline against the model: every headline lower, the difference significant
    code, m = _evaluate(
        tmp_path, "b", "--predictions", str(blind), "--data", str(root), "--compare", str(perfect)
    )
    assert code == 0
    assert m["tasks"]["cxr_presence"]["accuracy"] < 0.85
    diff = m["comparison"]["metrics"]["cxr_box accuracy"]
    assert diff["difference"] < 0 and diff["p_value"] < 0.05 and diff["ci95"][1] < 0
    assert m["comparison"]["num_matched"] == len(lines)
    # without --data the references tell the vocabulary (or leave it to the classes' words)
    code, m = _evaluate(tmp_path, "n", "--predictions", str(perfect))
    assert code == 0 and m["layout"] in (layout, None)
    assert m["tasks"]["cxr_box"]["accuracy"] == 1.0


def test_evaluate_checks_references_against_the_folder(cxr_phantoms, tmp_path, caplog) -> None:
    root = cxr_phantoms["vindr"]
    lines = _lines(root, "vindr-cxr")
    box = next(i for i, x in enumerate(lines) if x["task"] == "cxr_box")
    yes = next(i for i, x in enumerate(lines) if x["task"] == "cxr_presence")
    where = next(i for i, x in enumerate(lines) if x["task"] == "cxr_location")
    bad = [dict(x) for x in lines]
    bad[box]["reference"] = "Pneumothorax."  # another class than the box's
    bad[yes]["reference"] = "No." if lines[yes]["reference"] == "Yes." else "Yes."
    bad[where]["reference"] = "central upper zone."
    moved = dict(lines[box], box=[0.0, 0.0, 1.0, 1.0])  # a box the image does not have
    unknown = dict(lines[0], volume="not_an_image")
    no_box = {k: v for k, v in lines[box].items() if k != "box"}
    flat = dict(lines[box], box=[5.0, 5.0, 5.0, 9.0])
    path = _write(tmp_path / "p.jsonl", [*bad, moved, unknown, no_box, flat])
    code, m = _evaluate(tmp_path, "m", "--predictions", str(path), "--data", str(root))
    assert code == 2 and m is None
    text = caplog.text
    n = len(lines)
    for lineno, kind in (
        (box + 1, "reference mismatch"),
        (yes + 1, "reference mismatch"),
        (where + 1, "reference mismatch"),
        (n + 1, "reference mismatch"),
        (n + 2, "unknown volume"),
        (n + 3, "bad box"),
        (n + 4, "bad box"),
    ):
        assert f"line {lineno}: {kind}" in text, (lineno, kind)
    assert "Pneumothorax" in text and "overlaps no box" in text and "no area" in text
    code, m = _evaluate(
        tmp_path, "s", "--predictions", str(path), "--data", str(root), "--skip-invalid"
    )
    assert code == 0 and len(m["invalid_lines"]) == 7
    assert m["num_predictions"] == n - 3
    assert "7 invalid line(s) skipped" in (tmp_path / "s" / "metrics.md").read_text()


def test_boxes_of_one_image_are_distinct_lines_and_modalities_are_not_mixed(
    cxr_phantoms, tmp_path, caplog
) -> None:
    lines = _lines(cxr_phantoms["vindr"], "vindr-cxr")
    boxes = [x for x in lines if x["task"] == "cxr_box"]
    by_image = {}
    for x in boxes:
        by_image.setdefault(x["volume"], []).append(x)
    assert max(len(v) for v in by_image.values()) > 1  # one question, several boxes
    code, m = _evaluate(tmp_path, "m", "--predictions", str(_write(tmp_path / "b.jsonl", boxes)))
    assert code == 0 and m["tasks"]["cxr_box"]["n"] == len(boxes)
    twice = _write(tmp_path / "twice.jsonl", [boxes[0], boxes[0]])
    assert _evaluate(tmp_path, "t", "--predictions", str(twice))[0] == 2
    assert "line 2: duplicate" in caplog.text
    ct = {
        "volume": "valid_1_a_1",
        "task": "presence",
        "region": "lung",
        "question": "Can nodule be identified in the lung?",
        "prediction": "Yes.",
        "reference": "Yes.",
    }
    mixed = _write(tmp_path / "mixed.jsonl", [*boxes[:3], ct])
    assert _evaluate(tmp_path, "x", "--predictions", str(mixed))[0] == 2
    assert "score each modality on its own" in caplog.text
    ct_folder = tmp_path / "ct"
    ct_folder.mkdir()
    code, _ = _evaluate(tmp_path, "c", "--predictions", str(_write(tmp_path / "b2.jsonl", boxes)),
                        "--data", str(ct_folder))  # fmt: skip
    assert code == 2 and "is a radgenome folder (CT)" in caplog.text
    empty = _write(tmp_path / "empty.jsonl", [])
    for root in cxr_phantoms.values():
        code, m = _evaluate(tmp_path, "e", "--predictions", str(empty), "--data", str(root))
        assert code == 2 and m is None
    assert "no valid prediction lines" in caplog.text


def test_generated_lines_agree_with_the_folder_truth(cxr_checkpoint, cxr_phantoms, tmp_path):
    """What ``rgct generate`` writes for a radiograph folder passes ``--data``'s reference check
    (its references and boxes are the folder's own) and is scored."""
    root = cxr_phantoms["vindr"]
    preds = tmp_path / "p.jsonl"
    args = ["generate", "--checkpoint", str(cxr_checkpoint), "--data", str(root), "--split"]
    args += ["valid", "--max-new-tokens", "4", "--out", str(preds), "--device", "cpu"]
    assert main(args) == 0
    # a few-step model may say nothing, which evaluate lists as bad input: fill those in
    lines = [json.loads(x) for x in preds.read_text().splitlines()]
    lines = [{**x, "prediction": x["prediction"] or "No."} for x in lines]
    _write(preds, lines)
    code, m = _evaluate(tmp_path, "m", "--predictions", str(preds), "--data", str(root))
    assert code == 0 and m["invalid_lines"] == [] and m["layout"] == "vindr-cxr"
    assert m["num_predictions"] == len(lines)
    assert set(m["tasks"]) == {x["task"] for x in lines}
