"""``rgct evaluate`` and ``rgct label`` end to end, and their errors on bad input."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from rgct.cli import main
from rgct.constants import CT_RATE_LABELS

LINES = [
    {
        "volume": "valid_1_a_1",
        "task": "region_report",
        "region": "lung",
        "question": "Describe the findings in the lung.",
        "prediction": "A 6 mm nodule is observed in the right lung upper lobe.",
        "reference": "A nodule of 5 mm was observed in the right lung upper lobe.",
    },
    {
        "volume": "valid_1_a_1",
        "task": "region_report",
        "region": "pleura",
        "question": "Describe the findings in the pleura.",
        "prediction": "No pleural effusion was detected.",
        "reference": "Bilateral pleural effusion is observed.",
    },
    {
        "volume": "valid_2_a_1",
        "task": "report",
        "region": "whole scan",
        "question": "Write the radiology report for this chest CT.",
        "prediction": "Emphysema is observed in both lungs. No pleural effusion.",
        "reference": "Emphysematous changes are observed in both lungs.",
        "sentences": [
            {"region": "lung", "text": "Emphysema is observed in both lungs."},
            {"region": "pleura", "text": "No pleural effusion."},
        ],
    },
    {
        "volume": "valid_1_a_1",
        "task": "presence",
        "region": "lung",
        "question": "Can nodule be identified in the lung?",
        "prediction": "yes",
        "reference": "Yes.",
    },
    {
        "volume": "valid_1_a_1",
        "task": "size",
        "region": "lung",
        "question": "What is the approximate size of the nodule in the lung?",
        "prediction": "7x5 mm",
        "reference": "6x4 mm",
    },
]
GROUND_TRUTH = [
    {
        "volume": "valid_1_a_1",
        "split": "valid",
        "shape": [32, 64, 64],
        "spacing_mm": [2, 1, 1],
        "findings": [
            {
                "kind": "nodule",
                "label": "Lung nodule",
                "region": "lung",
                "anatomy": "lung/lung/right lung/right lung upper lobe",
                "side": "right",
                "lobe": "right lung upper lobe",
                "size_mm": 5.0,
                "size_text": "5 mm",
                "center_voxel": [10, 20, 30],
                "radius_vox": 3,
            },
            {
                "kind": "effusion",
                "label": "Pleural effusion",
                "region": "pleura",
                "anatomy": "pleura",
                "side": "bilateral",
                "lobe": None,
                "size_mm": None,
                "size_text": None,
                "center_voxel": None,
                "radius_vox": None,
            },
        ],
        "normal_regions": ["heart"],
    },
    {
        "volume": "valid_2_a_1",
        "split": "valid",
        "shape": [32, 64, 64],
        "spacing_mm": [2, 1, 1],
        "findings": [
            {
                "kind": "emphysema",
                "label": "Emphysema",
                "region": "lung",
                "anatomy": "lung",
                "side": "bilateral",
                "lobe": None,
                "size_mm": None,
                "size_text": None,
                "center_voxel": None,
                "radius_vox": None,
            }
        ],
        "normal_regions": [],
    },
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_evaluate_end_to_end(tmp_path, capsys):
    preds = _jsonl(tmp_path / "preds.jsonl", LINES)
    data = tmp_path / "data"
    data.mkdir()
    _jsonl(data / "ground_truth.jsonl", GROUND_TRUTH)
    out = tmp_path / "metrics"
    rc = main(
        [
            "evaluate",
            "--predictions",
            str(preds),
            "--data",
            str(data),
            "--out",
            str(out),
            "--no-meteor",
        ]
    )
    assert rc == 0
    for name in ("metrics.json", "metrics.md", "per_region.png", "per_label.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "per_region.png").read_bytes()[:4] == b"\x89PNG"
    m = json.loads((out / "metrics.json").read_text())
    assert m["schema_version"] == 2 and m["num_predictions"] == 5
    assert m["protocol"] == "coco" and m["invalid_lines"] == []
    assert "lower-case" in m["tokenization"]
    lang = m["overall"]["language"]
    for key in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider", "bertscore_f1"):
        assert isinstance(lang[key], float), key
        assert isinstance(m["overall"]["language_per_sample_mean"][key], float), key
    assert lang["meteor"] is None  # --no-meteor
    clin = m["overall"]["clinical"]
    assert set(clin["per_label"]) == set(CT_RATE_LABELS)
    for avg in ("micro", "macro"):
        assert set(clin[avg]) >= {"precision", "recall", "f1"}
    # nodule and emphysema found, the pleural effusion of the reference missed
    assert clin["micro"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8})
    assert set(m["per_region"]) == {"lung", "pleura", "whole scan"}
    assert set(m["per_region"]["lung"]) >= {"language", "clinical"}
    assert set(m["per_task"]) == {"report", "region_report", "presence", "size"}
    assert m["vqa"]["presence"]["accuracy"] == 1.0
    assert m["vqa"]["size"]["mae_mm"] == 1.0
    g = m["grounding"]
    assert g["finding"] == {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "tp": 2, "fp": 0, "fn": 1}
    assert g["lobe_accuracy"] == 1.0 and g["size_mae_mm"] == 1.0
    md = (out / "metrics.md").read_text()
    assert "## Per region" in md and "## Grounding" in md and "| Lung nodule |" in md
    out_text = capsys.readouterr().out
    assert "bleu_4" in out_text and "CRG" in out_text and "95% CI" in out_text


def test_evaluate_bare_jsonl(tmp_path):
    preds = _jsonl(
        tmp_path / "bare.jsonl",
        [
            {"prediction": "Emphysema is observed.", "reference": "Emphysema is observed."},
            {"prediction": "No effusion.", "reference": "Atelectasis in the left lower lobe."},
        ],
    )
    out = tmp_path / "m"
    assert (
        main(
            [
                "evaluate",
                "--predictions",
                str(preds),
                "--out",
                str(out),
                "--no-meteor",
                "--no-bertscore",
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["overall"]["tasks"] == ["report"] and m["overall"]["num_samples"] == 2
    assert m["overall"]["language"]["bertscore_f1"] is None and m["bertscore"] is None
    assert list(m["per_region"]) == ["whole scan"]
    assert m["grounding"] is None and m["vqa"] == {}


def test_evaluate_bad_inputs(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    out = str(tmp_path / "m")
    missing = tmp_path / "nope.jsonl"
    assert main(["evaluate", "--predictions", str(missing), "--out", out]) == 2
    assert "no such file" in caplog.text and "nope.jsonl" in caplog.text
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prediction": "a", "reference": "b"}) + "\n{not json\n")
    caplog.clear()
    assert main(["evaluate", "--predictions", str(bad), "--out", out]) == 2
    assert "line 2" in caplog.text and "bad.jsonl" in caplog.text
    nofield = _jsonl(tmp_path / "nofield.jsonl", [{"prediction": "a"}])
    caplog.clear()
    assert main(["evaluate", "--predictions", str(nofield), "--out", out]) == 2
    assert "line 1" in caplog.text and "reference" in caplog.text
    badtask = _jsonl(tmp_path / "task.jsonl", [{"prediction": "a", "reference": "b", "task": "x"}])
    caplog.clear()
    assert main(["evaluate", "--predictions", str(badtask), "--out", out]) == 2
    assert "unknown task" in caplog.text
    assert not (tmp_path / "m").exists()


def test_label_round_trip(tmp_path):
    src = tmp_path / "reports.csv"
    pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "report": [
                "Emphysema and a 5 mm nodule in the right lung. No pleural effusion.",
                "No pleural or pericardial effusion. Heart size is normal.",
                "",
            ],
        }
    ).to_csv(src, index=False)
    dst = tmp_path / "out" / "labelled.csv"
    assert main(["label", str(src), "--column", "report", "--out", str(dst)]) == 0
    df = pd.read_csv(dst, keep_default_na=False)
    assert list(df.columns) == ["id", "report", *CT_RATE_LABELS]
    assert list(df["id"]) == ["a", "b", "c"]
    assert df.loc[0, "report"].startswith("Emphysema and a 5 mm nodule")
    assert {n for n in CT_RATE_LABELS if df.loc[0, n] == 1} == {"Emphysema", "Lung nodule"}
    assert df.loc[1, list(CT_RATE_LABELS)].sum() == 0
    assert df.loc[2, list(CT_RATE_LABELS)].sum() == 0
    assert not [p for p in dst.parent.iterdir() if p.name.endswith(".tmp")]


def test_label_missing_column_and_file(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    src = tmp_path / "r.csv"
    pd.DataFrame({"id": [1], "text": ["x"]}).to_csv(src, index=False)
    assert main(["label", str(src), "--column", "report", "--out", str(tmp_path / "o.csv")]) == 2
    assert "'report'" in caplog.text and "['id', 'text']" in caplog.text
    caplog.clear()
    assert main(["label", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o.csv")]) == 2
    assert "no such file" in caplog.text
    assert not (tmp_path / "o.csv").exists()
