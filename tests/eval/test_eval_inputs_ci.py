"""Bad prediction lines, bootstrap intervals, paired comparison and the CRG score."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from rgct.cli import main
from rgct.eval.bootstrap import VolumeBootstrap, paired_difference
from rgct.eval.clinical import clinical_scores, crg_score
from rgct.eval.predictions import PredictionsError, load_predictions, read_predictions


def _line(i: int, **kw) -> dict:
    rec = {
        "volume": f"valid_{i}_a_1",
        "task": "region_report",
        "region": "lung",
        "question": "Describe the lung.",
        "prediction": "Emphysema is observed in both lungs.",
        "reference": "Emphysema is observed in both lungs.",
    }
    rec.update(kw)
    return rec


def _write(path, lines: list) -> str:
    with open(path, "wb") as f:
        for x in lines:
            f.write(x if isinstance(x, bytes) else (json.dumps(x) + "\n").encode())
    return str(path)


def test_every_bad_line_is_reported_with_its_number(tmp_path):
    path = _write(
        tmp_path / "p.jsonl",
        [
            _line(1),
            _line(1),  # 2: duplicate of line 1
            {"prediction": "x", "volume": "valid_2_a_1"},  # 3: no reference
            b'{"prediction": "caf\xe9", "reference": "x"}\n',  # 4: latin-1 byte
            _line(3, prediction="  "),  # 5: empty prediction
            _line(4, task="painting"),  # 6: unknown task
            b"{not json\n",  # 7
            _line(5, volume="valid_99_a_1"),  # 8: not in the ground truth
            _line(6, prediction=["a list"]),  # 9: not text
            _line(7),
        ],
    )
    truth = {f"valid_{i}_a_1": {"findings": []} for i in range(1, 8)}
    report = read_predictions(path, truth)
    kinds = {(p.line, p.kind) for p in report.problems}
    assert kinds == {
        (2, "duplicate"),
        (3, "missing field"),
        (4, "encoding"),
        (5, "empty prediction"),
        (6, "bad field"),
        (7, "json"),
        (8, "unknown volume"),
        (9, "bad field"),
    }
    assert [r["line"] for r in report.rows] == [1, 10]
    text = report.summary()
    assert "p.jsonl" in text and "line 2: duplicate" in text and "as line 1" in text
    with pytest.raises(PredictionsError, match="line 4: encoding"):
        load_predictions(path, truth)
    # the library keeps empty predictions unless told not to; the CLI does not
    assert len(load_predictions(path, truth, skip_invalid=True)) == 3
    assert len(load_predictions(path, truth, skip_invalid=True, allow_empty=False)) == 2


def test_evaluate_refuses_bad_lines_unless_skip_invalid(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    data = tmp_path / "data"
    data.mkdir()
    _write(data / "ground_truth.jsonl", [{"volume": f"valid_{i}_a_1"} for i in range(1, 4)])
    preds = _write(
        tmp_path / "p.jsonl",
        [_line(1), _line(2, prediction=""), _line(3), _line(9), _line(3)],
    )
    out = tmp_path / "m"
    args = ["evaluate", "--predictions", preds, "--data", str(data), "--out", str(out)]
    fast = ["--no-meteor", "--no-bertscore", "--no-progress", "--bootstrap", "20"]
    assert main(args + fast) == 2
    assert "line 2: empty prediction" in caplog.text and "line 4: unknown volume" in caplog.text
    assert "line 5: duplicate" in caplog.text and "--skip-invalid" in caplog.text
    assert not out.exists()
    assert main(args + fast + ["--skip-invalid"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_predictions"] == 2
    assert [p["line"] for p in m["invalid_lines"]] == [2, 4, 5]


def test_volume_bootstrap_resamples_volumes():
    boot = VolumeBootstrap(["a", "a", "b", "c", ""], replicates=2000, seed=1)
    assert boot.num_units == 4  # the line without a volume is its own unit
    assert boot.weights.shape == (2000, 4) and np.all(boot.weights.sum(1) == 4)
    # two samples of one volume move together: a constant per-volume value has no spread
    low, high = boot.mean_ci([1.0, 1.0, 1.0, 1.0, 1.0])
    assert low == high == 1.0
    values = np.r_[np.zeros(50), np.ones(50)]
    boot = VolumeBootstrap([f"v{i}" for i in range(100)], replicates=2000, seed=0)
    low, high = boot.mean_ci(values)
    # normal approximation: 0.5 +- 1.96 * 0.05
    assert low == pytest.approx(0.402, abs=0.03) and high == pytest.approx(0.598, abs=0.03)
    assert boot.mean_ci([np.nan] * 100) is None


def test_paired_difference_p_value():
    boot = VolumeBootstrap([f"v{i}" for i in range(60)], replicates=1000, seed=0)
    rng = np.random.default_rng(0)
    a = rng.random(60)
    better = boot.mean_replicates(a + 0.2)
    same = boot.mean_replicates(a)
    d = paired_difference(boot, better, same, 0.2)
    assert d["p_value"] < 0.01 and d["ci95"][0] > 0.15
    noise = boot.mean_replicates(a + rng.normal(0, 0.3, 60))
    d = paired_difference(boot, noise, same, float(np.mean(noise) - np.mean(same)))
    assert d["p_value"] > 0.05 and d["ci95"][0] < 0 < d["ci95"][1]


def test_crg_score_by_definition():
    # T = 10 slots, A = 2 positives: w = (10 - 2) / 4 = 2, S_max = 4
    assert crg_score(2, 0, 0, 10) == pytest.approx(1.0)  # perfect
    assert crg_score(0, 2, 0, 10) == pytest.approx(4 / (8 + 4))  # all negative: 1/3
    # one TP, one FN, one FP: s = 2 - 2 - 1 = -1 -> 4 / (8 + 1)
    assert crg_score(1, 1, 1, 10) == pytest.approx(4 / 9)
    assert np.isnan(crg_score(0, 0, 3, 10))  # no positive reference label
    pred = np.zeros((4, 18), dtype=int)
    ref = np.zeros((4, 18), dtype=int)
    ref[0, 3] = ref[1, 5] = 1
    pred[0, 3] = 1
    # T = 72, A = 2, w = 17.5; TP 1, FN 1 -> s = 0 -> CRG = 1/2
    assert clinical_scores(pred, ref)["crg"] == pytest.approx(0.5)
    assert clinical_scores(pred, np.zeros_like(ref))["crg"] is None


def test_compare_two_prediction_files(tmp_path, capsys):
    refs = [
        "Emphysema is observed in both lungs.",
        "Atelectasis is observed in the left lower lobe.",
        "Pleural effusion is observed on the right.",
        "A 6 mm nodule is observed in the right upper lobe.",
    ] * 10
    good = [_line(i, reference=r, prediction=r) for i, r in enumerate(refs)]
    bad = [_line(i, reference=r, prediction="No pathology.") for i, r in enumerate(refs)]
    a = _write(tmp_path / "good.jsonl", good)
    b = _write(tmp_path / "bad.jsonl", bad)
    out = tmp_path / "cmp"
    fast = ["--no-meteor", "--no-bertscore", "--no-progress", "--bootstrap", "300"]
    assert main(["evaluate", "--predictions", a, "--compare", b, "--out", str(out), *fast]) == 0
    c = json.loads((out / "metrics.json").read_text())["comparison"]
    assert c["num_matched"] == 40 and c["num_volumes"] == 40 and c["other"] == b
    f1 = c["metrics"]["CE micro F1"]
    assert f1["this"] == 1.0 and f1["other"] == 0.0 and f1["difference"] == 1.0
    assert f1["p_value"] < 0.01
    assert c["metrics"]["bleu_4 (per-sample mean)"]["difference"] > 0.5
    assert c["metrics"]["CRG"]["this"] == pytest.approx(1.0)
    assert "## Comparison" in (out / "metrics.md").read_text()
    assert "CE micro F1" in capsys.readouterr().out
    # different references for the same sample are refused
    other = _write(tmp_path / "other.jsonl", [dict(r, reference="x") for r in bad])
    assert main(["evaluate", "--predictions", a, "--compare", other, "--out", str(out), *fast]) == 2
