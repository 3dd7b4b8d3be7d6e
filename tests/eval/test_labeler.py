"""The rule-based CT-RATE labeler: accuracy on hand-written sentences, negation, hedges."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from rgct.constants import CT_RATE_LABELS, REGIONS
from rgct.eval.labeler import (
    CTRateLabeler,
    label_sentences,
    label_text,
    parse_lobes,
    parse_sizes_mm,
    split_sentences,
)

SENTENCES = Path(__file__).parents[1] / "data" / "labeler_sentences.csv"


def _rows() -> list[dict[str, str]]:
    with SENTENCES.open(newline="") as f:
        return list(csv.DictReader(f))


def test_sentence_file_is_complete():
    rows = _rows()
    assert len(rows) >= 150
    assert list(rows[0]) == ["sentence", *CT_RATE_LABELS]
    for name in CT_RATE_LABELS:
        assert sum(int(r[name]) for r in rows) >= 3, f"{name} is positive fewer than 3 times"
    assert sum(all(r[n] == "0" for n in CT_RATE_LABELS) for r in rows) >= 40


def test_labeler_accuracy_on_hand_written_sentences():
    rows = _rows()
    wrong = []
    for r in rows:
        expected = {n: int(r[n]) for n in CT_RATE_LABELS}
        got = label_text(r["sentence"])
        if got != expected:
            wrong.append((r["sentence"], {n for n in CT_RATE_LABELS if got[n] != expected[n]}))
    accuracy = 1 - len(wrong) / len(rows)
    print(f"labeler sentence-level exact-match accuracy: {accuracy:.4f} on {len(rows)} sentences")
    assert accuracy >= 0.95, f"accuracy {accuracy:.3f}; wrong: {wrong[:10]}"


@pytest.mark.parametrize(
    "text",
    [
        "No pleural effusion was detected.",
        "No pleural or pericardial effusion.",
        "Pleural effusion was not observed.",
        "No consolidation or atelectasis was not observed.",  # CT-RATE double negation
        "The lungs are free of nodules.",
        "Heart size is within normal limits.",
        "Without emphysema.",
        "Negative for lymphadenopathy.",
        "Trachea and both main bronchi are open.",
        "Bronchiectasis is absent.",
    ],
)
def test_negated_and_normal_statements_give_no_labels(text):
    assert sum(label_text(text).values()) == 0


def test_negation_scope_stops_at_terminators_and_affirmations():
    got = label_text("No pleural effusion, but pericardial effusion is observed.")
    assert got["Pericardial effusion"] == 1 and got["Pleural effusion"] == 0
    got = label_text(
        "Atelectasis is observed in the left lower lobe and effusion was not detected."
    )
    assert got["Atelectasis"] == 1 and got["Pleural effusion"] == 0
    got = label_text("Emphysema is observed in both lungs, no nodules.")
    assert got["Emphysema"] == 1 and got["Lung nodule"] == 0


def test_hedges_are_configurable():
    text = "Possible atelectasis in the right lower lobe."
    assert label_text(text)["Atelectasis"] == 1
    assert CTRateLabeler(hedges_positive=False).label_text(text)["Atelectasis"] == 0
    ruled = "A small pleural effusion cannot be excluded."
    assert label_text(ruled)["Pleural effusion"] == 1
    assert CTRateLabeler(rule_out_positive=False).label_text(ruled)["Pleural effusion"] == 0


def test_co_occurrence_rules():
    assert label_text("Calcific plaques in the coronary arteries.") == {
        n: int(n == "Coronary artery wall calcification") for n in CT_RATE_LABELS
    }
    got = label_text("Calcified plaques in the aortic arch and coronary arteries.")
    assert got["Arterial wall calcification"] == 1
    assert got["Coronary artery wall calcification"] == 1
    assert label_text("A 9 mm nodule in the thyroid gland.")["Lung nodule"] == 0
    assert label_text("Subcutaneous emphysema in the chest wall.")["Emphysema"] == 0
    assert label_text("Lymph node with a short axis of 14 mm.")["Lymphadenopathy"] == 1
    assert label_text("Lymph node with a short axis of 6 mm.")["Lymphadenopathy"] == 0


def test_sentence_details():
    labelled = label_sentences(
        "When examined in the lung parenchyma window; a 12x9 mm nodule is observed in the "
        "lower lobe of the left lung. No pleural effusion. Heart size is normal."
    )
    assert len(labelled) == 3
    first = labelled[0]
    assert first.positive == ["Lung nodule"]
    assert first.region == "lung"
    assert first.side == "left"
    assert first.lobe == "left lung lower lobe"
    assert first.sizes_mm == ((12.0, 9.0),)
    assert labelled[1].region == "pleura" and labelled[1].positive == []
    assert labelled[2].region == "heart"
    assert all(s.region in REGIONS for s in labelled)


def test_parsers():
    assert parse_sizes_mm("a 1.2 cm nodule and another of 4.6 mm") == ((12.0,), (4.6,))
    assert parse_sizes_mm("6 x 4 mm") == ((6.0, 4.0),)
    assert parse_lobes("right upper lobe and the lingula") == (
        "right lung upper lobe",
        "left lung upper lobe",
    )
    assert parse_lobes("both lower lobes") == ("right lung lower lobe", "left lung lower lobe")
    assert split_sentences("A nodule (4.6 mm). No effusion.") == [
        "A nodule (4.6 mm).",
        "No effusion.",
    ]


def test_bad_vocabulary_is_rejected(tmp_path):
    bad = tmp_path / "vocab.yaml"
    bad.write_text("labels:\n  Emphysema:\n    - any: ['emphysema']\n")
    with pytest.raises(ValueError, match="missing"):
        CTRateLabeler(vocab_path=bad)
    with pytest.raises(FileNotFoundError, match="cannot read"):
        CTRateLabeler(vocab_path=tmp_path / "nope.yaml")
