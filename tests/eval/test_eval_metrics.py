"""Language, clinical, VQA and grounding metrics."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from rgct.constants import CT_RATE_LABELS
from rgct.eval.clinical import clinical_scores, label_matrix
from rgct.eval.grounding import grounding_scores
from rgct.eval.language import BertScorer, MeteorScorer, language_scores, tokenize
from rgct.eval.vqa import match_scores, normalize_answer, presence_scores, size_scores

PREDS = [
    "A 6 mm nodule is observed in the right lung upper lobe.",
    "Bilateral pleural effusion is observed, more prominent on the right.",
    "Trachea and both main bronchi are open.",
    "Cardiomegaly is observed; no pericardial effusion was detected.",
]
REFS = [
    "A nodule of 5 mm was observed in the right lung upper lobe.",
    "No pleural effusion was detected in either hemithorax.",
    "Trachea and both main bronchi are open.",
    "The heart size is increased and minimal pericardial effusion is observed.",
]
DISJOINT = ["zebra quantum violin harbor", "marble cactus orbit lantern"]


@pytest.fixture(scope="module")
def bert() -> BertScorer:
    return BertScorer(batch_size=4)


def test_tokenize():
    assert tokenize("Nodule (4.6 mm), RIGHT lung.") == "nodule 4.6 mm right lung"


def test_identical_pairs_score_perfectly():
    corpus, mean = language_scores(PREDS, PREDS)
    for key in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l"):
        assert corpus[key] == pytest.approx(1.0, abs=1e-6), key
        assert mean[key] == pytest.approx(1.0, abs=1e-6), key
    assert corpus["cider"] > 5.0  # CIDEr-D style scale, 10 for identical with distinct IDF


def test_disjoint_pairs_score_low():
    corpus, _ = language_scores(DISJOINT, list(reversed(DISJOINT)))
    assert corpus["bleu_1"] < 1e-6
    assert corpus["rouge_l"] == 0.0
    assert corpus["cider"] == 0.0


def test_matches_pycocoevalcap_directly():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    corpus, mean = language_scores(PREDS, REFS)
    gts = {i: [tokenize(r)] for i, r in enumerate(REFS)}
    res = {i: [tokenize(p)] for i, p in enumerate(PREDS)}
    bleu, bleu_per = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, cider_per = Cider().compute_score(gts, res)
    for n in range(4):
        assert corpus[f"bleu_{n + 1}"] == pytest.approx(bleu[n], abs=1e-6)
        assert mean[f"bleu_{n + 1}"] == pytest.approx(np.mean(bleu_per[n]), abs=1e-6)
    assert corpus["rouge_l"] == pytest.approx(rouge, abs=1e-6)
    assert corpus["cider"] == pytest.approx(cider, abs=1e-6)
    assert mean["cider"] == pytest.approx(np.mean(cider_per), abs=1e-6)
    assert 0.0 < corpus["bleu_4"] < 1.0


def test_bertscore_on_a_few_pairs(bert):
    p, r, f = bert.score(PREDS[:3], [PREDS[0], REFS[1], DISJOINT[0]])
    assert f.shape == (3,)
    assert f[0] == pytest.approx(1.0, abs=1e-5)  # identical
    assert p[0] == pytest.approx(1.0, abs=1e-5) and r[0] == pytest.approx(1.0, abs=1e-5)
    assert f[2] < f[1] < f[0]  # unrelated < related < identical
    _, _, f_empty = bert.score([""], ["some text"])
    assert f_empty[0] == 0.0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs java")
def test_meteor_identical_and_disjoint():
    meteor = MeteorScorer()
    try:
        same, _ = language_scores(PREDS, PREDS, meteor=meteor)
        diff, _ = language_scores(DISJOINT, list(reversed(DISJOINT)), meteor=meteor)
    finally:
        meteor.close()
    assert same["meteor"] > 0.95
    assert diff["meteor"] < 0.05


def test_clinical_scores():
    pred = label_matrix(PREDS)
    ref = label_matrix(REFS)
    assert pred.shape == (4, len(CT_RATE_LABELS))
    s = clinical_scores(pred, ref)
    per = s["per_label"]
    assert per["Cardiomegaly"] == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "support": 1,
        "predicted": 1,
    }
    assert per["Pleural effusion"]["precision"] == 0.0  # predicted, not in the reference
    assert per["Pericardial effusion"]["recall"] == 0.0  # in the reference, negated in prediction
    # tp: nodule, cardiomegaly; fp: pleural effusion; fn: pericardial effusion
    assert s["micro"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})
    assert s["macro"]["num_labels"] == 3
    perfect = clinical_scores(ref, ref)
    assert perfect["micro"]["f1"] == 1.0 and perfect["macro"]["f1"] == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        clinical_scores(pred[:2], ref)


def test_vqa_metrics():
    assert presence_scores(["Yes.", "no", "maybe"], ["yes", "No.", "Yes."]) == {
        "accuracy": pytest.approx(2 / 3),
        "n": 3,
        "unparsed": 1,
    }
    assert normalize_answer("Nodule, Emphysema.") == "emphysema, nodule"
    m = match_scores(["Nodule, emphysema.", "lung/lung/right lung"], ["emphysema, nodule", "heart"])
    assert m["exact"] == 0.0 and m["normalized"] == 0.5 and m["item_f1"] == 0.5
    s = size_scores(["7x5 mm", "1.2 cm", "large"], ["6x4 mm", "10 mm", "5 mm"])
    assert s["mae_mm"] == pytest.approx(1.5)  # |7-6| and |12-10|
    assert s["dims_mae_mm"] == pytest.approx(4 / 3)  # (|7-6| + |5-4| + |12-10|) / 3
    assert s["unparsed"] == 1 and s["n_scored"] == 2


def _gt() -> dict[str, dict]:
    nodule = {
        "kind": "nodule",
        "label": "Lung nodule",
        "region": "lung",
        "anatomy": "lung/lung/right lung/right lung upper lobe",
        "side": "right",
        "lobe": "right lung upper lobe",
        "size_mm": 5.0,
        "size_text": "5 mm",
    }
    effusion = {
        "kind": "effusion",
        "label": "Pleural effusion",
        "region": "pleura",
        "anatomy": "pleura",
        "side": "bilateral",
        "lobe": None,
        "size_mm": None,
    }
    return {"valid_1_a_1": {"volume": "valid_1_a_1", "findings": [nodule, effusion]}}


def test_grounding_scores():
    preds = [
        {
            "volume": "valid_1_a_1.nii.gz",
            "task": "region_report",
            "region": "lung",
            "prediction": "A 7 mm nodule is observed in the left lung upper lobe.",
        },
        {
            "volume": "valid_1_a_1",
            "task": "region_report",
            "region": "heart",
            "prediction": "Cardiomegaly is observed.",
        },
        {"volume": "valid_1_a_1", "task": "presence", "region": "lung", "prediction": "Yes."},
    ]
    g = grounding_scores(preds, _gt())
    # asked: lung, heart; pleura not asked so its effusion does not count
    assert g["finding"]["tp"] == 1 and g["finding"]["fp"] == 1 and g["finding"]["fn"] == 0
    assert g["finding"]["precision"] == 0.5 and g["finding"]["recall"] == 1.0
    assert g["lobe_accuracy"] == 0.0 and g["side_accuracy"] == 0.0  # named the wrong side
    assert g["size_mae_mm"] == pytest.approx(2.0)
    report = [
        {
            "volume": "valid_1_a_1",
            "task": "report",
            "region": "whole scan",
            "prediction": "ignored when sentences are given",
            "sentences": [
                {"region": "lung", "text": "A 5 mm nodule in the right lung upper lobe."},
                {"region": "pleura", "text": "No pleural effusion."},
            ],
        }
    ]
    g = grounding_scores(report, _gt())
    assert g["finding"] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "tp": 1,
        "fp": 0,
        "fn": 1,
    }
    assert g["lobe_accuracy"] == 1.0 and g["size_mae_mm"] == 0.0
    assert g["num_asked_regions"] == 10


def test_lobe_and_side_accuracies_get_intervals_over_volumes():
    """Placed findings are counted per volume, so the lobe / side accuracies get a bootstrap
    interval over volumes as finding F1 does, and the held-out card shows them with counts."""
    from rgct.eval.report import evaluate_predictions
    from rgct.generate.heldout import card_section, intervals, summarize

    one = _gt()["valid_1_a_1"]
    truth = {f"valid_{i}_a_1": {**one, "volume": f"valid_{i}_a_1"} for i in (1, 2)}
    preds = [
        {
            "volume": f"valid_{i}_a_1",
            "task": "region_report",
            "region": "lung",
            "prediction": f"A 5 mm nodule is observed in the {lobe}.",
            "reference": "A 5 mm nodule is observed in the right lung upper lobe.",
        }
        for i, lobe in ((1, "right lung upper lobe"), (2, "left lung upper lobe"))
    ]
    metrics = evaluate_predictions(
        preds, ground_truth=truth, bertscore=False, meteor=False, bootstrap=200
    )
    g = metrics["grounding"]
    assert g["lobe_accuracy"] == 0.5 and g["lobe_n"] == 2 and g["side_accuracy"] == 0.5
    assert g["ci95"]["lobe_accuracy"] == [0.0, 1.0]  # two volumes: all right, all wrong
    assert g["ci95"]["finding_f1"] == [1.0, 1.0]  # both volumes found their nodule
    ci = intervals(metrics)
    assert ci["lobe_accuracy"] == [0.0, 1.0] and ci["lobe_n"] == 2 and ci["side_n"] == 2
    card = card_section(
        {"split": "valid", "volumes": 2, "model": summarize(metrics), "ci95": {"model": ci}}
    )
    assert "| lobe_accuracy | 0.500 (1/2) [0.00, 1.00] | - |" in card
    assert "| finding_f1 | 1.000 [1.00, 1.00] | - |" in card
