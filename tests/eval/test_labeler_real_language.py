"""The labeler on real report language: held-out sentence files, spelling, time, look-alikes.

Sentence files, each written before the labeler was measured on it:
``labeler_heldout_sentences.csv`` (A, before any rule change), ``labeler_heldout_b_sentences.csv``
(B, after the first round of rules), ``labeler_heldout_c_sentences.csv`` (C, after the second
round) and ``labeler_heldout_d_sentences.csv`` (D, 220 sentences, written and committed before
the third round's rules and before C's misses were looked at). A, B, C and D are development
files now: rules were written from their misses (D's in the fourth round), so they score 1.0.
First measurements: A 0.745 / 0.835 (exact / micro F1), B 0.907 / 0.939, C 0.957 / 0.965,
D 0.936 / 0.958. ``labeler_heldout_e_sentences.csv`` (E, 265 sentences) is the honest measure:
written and committed before the fourth round's rules and before D's misses were looked at, and
no rule was written from it. E after the fourth round: 0.970 / 0.981 (precision 0.990, recall
0.971), which meets the target (exact >= 0.95, micro F1 >= 0.97); with the third round's rules,
which never saw E, it was 0.951 / 0.969.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rgct.constants import CT_RATE_LABELS
from rgct.eval.labeler import CTRateLabeler, edit_distance, label_text
from rgct.eval.labeler_check import LabelFileError, check_labeler

HERE = Path(__file__).parent
HELD_OUT = {
    "A": HERE / "labeler_heldout_sentences.csv",
    "B": HERE / "labeler_heldout_b_sentences.csv",
    "C": HERE / "labeler_heldout_c_sentences.csv",
    "D": HERE / "labeler_heldout_d_sentences.csv",
    "E": HERE / "labeler_heldout_e_sentences.csv",
}
TARGET = (0.95, 0.97)  # issue #15: exact label set, micro F1 on unseen real-style sentences
FLOOR: dict[str, tuple[float, float]] = {}  # held-out files measured below the target


@pytest.mark.parametrize("name", sorted(HELD_OUT))
def test_held_out_sentences(name):
    r = check_labeler(HELD_OUT[name])
    print(f"held-out {name}: n {r['n']} exact {r['exact_match']:.3f} micro {r['micro']}")
    exact, f1 = FLOOR.get(name, TARGET)
    assert r["n"] >= 90
    assert r["exact_match"] >= exact, r["wrong"]
    assert r["micro"]["f1"] >= f1, r["wrong"]
    assert set(r["per_group"]) >= {"misspelling", "synonym", "temporal", "look-alike"}


def _only(text: str) -> set[str]:
    return {n for n, v in label_text(text).items() if v}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Minimal pleural efusion on the right.", {"Pleural effusion"}),
        ("Pericardial efffusion of 5 mm.", {"Pericardial effusion"}),
        ("Lymphadenophaty in the mediastinum.", {"Lymphadenopathy"}),
        ("Enlarged lenf nodes in the hilum.", {"Lymphadenopathy"}),
        ("Plevral effusion on the left.", {"Pleural effusion"}),
        ("Mosaic perfusion pattern in both lungs.", {"Mosaic attenuation pattern"}),
        ("Diffusion restriction is not evaluated on CT.", set()),
        ("A round nodule in the right upper lobe.", {"Lung nodule"}),
    ],
)
def test_misspellings_and_words_that_stay(text, expected):
    assert _only(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The consolidation has regressed.", set()),
        ("Partially regressed consolidation in the left lower lobe.", {"Consolidation"}),
        ("Pleural effusion has resolved; atelectasis persists.", {"Atelectasis"}),
        ("The ground glass areas have turned into fibrotic bands.", {"Pulmonary fibrotic sequela"}),
        ("The nodule has progressed to 12 mm.", {"Lung nodule"}),
        ("No change in the bronchiectasis.", {"Bronchiectasis"}),
        ("The effusion decreased compared to the previous study.", {"Pleural effusion"}),
        ("Total regression of the pleural effusion.", set()),
        ("Slight regression of the pleural effusion.", {"Pleural effusion"}),
        ("The opacity in the lingula is no longer visible.", set()),
        ("The nodules have been replaced by scar tissue.", {"Pulmonary fibrotic sequela"}),
        ("Lymph nodes that were enlarged before have regressed.", set()),
    ],
)
def test_temporal_statements(text, expected):
    assert _only(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Calcification of the aortic valve.", set()),
        ("Calcification of the aortic valve and the aortic wall.", {"Arterial wall calcification"}),
        ("Perihepatic effusion.", set()),
        ("Perihepatic fluid and bilateral pleural effusion.", {"Pleural effusion"}),
        ("Nodular density in the T6 vertebra consistent with a bone island.", set()),
        ("The left atrium is enlarged.", set()),
        ("The heart is larger than normal.", {"Cardiomegaly"}),
        ("Air trapping in both lower lobes.", {"Mosaic attenuation pattern"}),
        ("Increased density in the left clavicle.", set()),
        ("Nodular opacities in the right lower lobe.", {"Lung opacity"}),
        (
            "Fibro-atelectasis at the right lung base.",
            {"Atelectasis", "Pulmonary fibrotic sequela"},
        ),
        ("Fluid layering in the left pleural space.", {"Pleural effusion"}),
        ("Kerley B lines at the lung bases.", {"Interlobular septal thickening"}),
        ("Healed rib fracture with consolidation and callus.", set()),
        ("Cardiothoracic ratio of 0.62.", {"Cardiomegaly"}),
        ("Cardiothoracic ratio of 0.45.", set()),
        ("Hilar lymph nodes with a short axis below 10 mm.", set()),
        ("Hilar lymph nodes with a short axis of 14 mm.", {"Lymphadenopathy"}),
        ("A nodule in the lingula and enlarged lymph nodes.", {"Lung nodule", "Lymphadenopathy"}),
    ],
)
def test_look_alikes_and_synonyms(text, expected):
    assert _only(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Apart from emphysema, the lungs are normal.", {"Emphysema"}),
        ("Except for mild bronchiectasis, the parenchyma is unremarkable.", {"Bronchiectasis"}),
        ("The heart is enlarged, pericardial effusion is not seen.", {"Cardiomegaly"}),
    ],
)
def test_negation_scope(text, expected):
    assert _only(text) == expected


def test_edit_distance():
    assert edit_distance("plueral", "pleural", 1) == 1  # neighbours swapped
    assert edit_distance("nodle", "nodule", 1) == 1
    assert edit_distance("perfusion", "effusion", 1) == 2  # limit + 1: too far
    assert edit_distance("abc", "abcdef", 2) == 3


def test_hedged_mentions_count_as_present_by_default():
    text = "Findings suggestive of atelectasis in the left lower lobe."
    assert label_text(text)["Atelectasis"] == 1
    assert CTRateLabeler(hedges_positive=False).label_text(text)["Atelectasis"] == 0


def test_label_file_errors(tmp_path):
    bad = tmp_path / "gold.csv"
    bad.write_text("sentence,Emphysema\nx,1\n")
    with pytest.raises(LabelFileError, match="missing column"):
        check_labeler(bad)
    bad.write_text("sentence," + ",".join(CT_RATE_LABELS) + "\nx" + ",2" * 18 + "\n")
    with pytest.raises(LabelFileError, match="line 2"):
        check_labeler(bad)
