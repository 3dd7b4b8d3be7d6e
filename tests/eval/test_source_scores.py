"""Scoring region reports against RAD-ChestCT labels and lesion descriptions against DeepLesion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rgct.cli import main
from rgct.data.deeplesion import load_deeplesion
from rgct.data.radchestct import load_radchest
from rgct.data.source_maps import map_radchest_pair
from rgct.data.source_samples import lesion_sentence, lesion_truth_line
from rgct.eval.sources import score_deeplesion, score_radchest, sources_markdown


@pytest.fixture(scope="module")
def roots(layout_phantoms) -> dict[str, Path]:
    return layout_phantoms


def _truthful_reports(index) -> list[dict]:
    words = {"Lung nodule": "A 5 mm nodule is seen.", "Pleural effusion": "Pleural effusion."}
    rows = []
    for volume, pairs in index.positives.items():
        for region in ("lung", "pleura"):
            mapped = [map_radchest_pair(a, loc) for a, loc in pairs]
            labels = {m.label for m in mapped if m and m.region == region}
            text = " ".join(words.get(lab, lab + ".") for lab in sorted(labels)) or "Normal."
            rows.append({"volume": volume, "region": region, "prediction": text})
    return rows


def test_radchest_scores_can_be_perfect_and_can_fail(roots) -> None:
    index = load_radchest(roots["rad"], "train")
    rows = _truthful_reports(index)
    good = score_radchest(rows, index)
    assert good["reports"] == len(rows) and good["micro"]["recall"] > 0.5
    low, high = good["micro"]["f1_ci95"]
    assert low <= good["micro"]["f1"] <= high and high - low < 1.0
    page = sources_markdown({"rad-chestct": {"train": good}})
    assert f"{good['micro']['f1']:.3f} [{low:.3f}, {high:.3f}]" in page and "| lung, " in page
    silent = score_radchest([{**r, "prediction": "Normal."} for r in rows], index)
    assert silent["micro"]["recall"] in (0.0, None) and silent["micro"]["f1"] != good["micro"]["f1"]


def test_deeplesion_scores(roots) -> None:
    index = load_deeplesion(roots["dl"])
    rows = [{"volume": les.name, "prediction": lesion_sentence(les)} for les in index.lesions]
    perfect = score_deeplesion(rows, index)
    assert perfect["type_accuracy"] == 1.0 and perfect["long_diameter_mae_mm"] < 0.06
    wrong = [{"volume": r["volume"], "prediction": "A bone lesion of 40 x 30 mm."} for r in rows]
    bad = score_deeplesion(wrong, index)
    assert bad["type_accuracy"] == 0.0 and bad["long_diameter_mae_mm"] > 10
    assert bad["type_accuracy_ci95"] == [0.0, 0.0]
    low, high = bad["long_diameter_mae_mm_ci95"]
    assert 10 < low <= bad["long_diameter_mae_mm"] <= high
    mixed = score_deeplesion(rows[: len(rows) // 2] + wrong[len(rows) // 2 :], index)
    low, high = mixed["type_accuracy_ci95"]
    assert low < mixed["type_accuracy"] < high  # a real interval around a mixed score


def test_deeplesion_evidence_lines_score_as_descriptions(roots) -> None:
    """The measured evidence line ('Lesion in this box: lung, 16 x 12 mm.') read as a
    description: its region names the type, its first size the long diameter."""
    index = load_deeplesion(roots["dl"])
    rows = [
        {"volume": les.name, "prediction": "", "lesion_evidence": lesion_truth_line(les)}
        for les in index.lesions
    ]
    lines = score_deeplesion(rows, index, text_key="lesion_evidence")
    assert lines["type_accuracy"] == 1.0 and lines["long_diameter_mae_mm"] <= 0.5
    assert score_deeplesion(rows, index)["no_size"] == len(rows)  # the predictions say nothing


def test_evaluate_cli_on_a_deeplesion_folder(roots, tmp_path: Path) -> None:
    index = load_deeplesion(roots["dl"])
    preds = tmp_path / "p.jsonl"
    preds.write_text(
        "".join(
            json.dumps(
                {
                    "volume": les.name,
                    "task": "lesion",
                    "region": "lung",
                    "prediction": lesion_sentence(les),
                    "reference": "",
                }
            )
            + "\n"
            for les in index.lesions
        )
    )
    assert (
        main(
            [
                "evaluate",
                "--predictions",
                str(preds),
                "--data",
                str(roots["dl"]),
                "--out",
                str(tmp_path / "m"),
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["deeplesion"]["type_accuracy"] == 1.0
    page = (tmp_path / "m" / "metrics.md").read_text()
    assert "## DeepLesion" in page and "| 1.000 [1.000, 1.000] |" in page
