"""The reg2rg protocol against the reference libraries, and coco numbers kept unchanged."""

from __future__ import annotations

import shutil
from fractions import Fraction

import numpy as np
import pytest

from rgct.eval.reg2rg import (
    REG2RG_KEYS,
    NltkMeteor,
    Reg2RGScores,
    bleu_from_stats,
    bleu_stats,
    cider_scores,
    meteor_tokenize,
    rouge_scores,
    smoothed_bleu,
    tokenize_13a,
)
from rgct.eval.report import evaluate_predictions
from rgct.eval.wordnet import load_wordnet

PREDS = [
    "A 6 mm nodule is observed in the right lung upper lobe.",
    "Bilateral pleural effusion is observed, more prominent on the right.",
    "Trachea and both main bronchi are open.",
    "The heart is enlarged. Minimal pericardial effusion (4 mm) is seen.",
]
REFS = [
    "A nodule of 5 mm was observed in the right lung upper lobe.",
    "No pleural effusion was detected in either hemithorax.",
    "Trachea and both main bronchi are open.",
    "The heart size is increased and minimal pericardial effusion is observed.",
]

needs_wordnet = pytest.mark.skipif(
    load_wordnet() is None, reason="WordNet 3.0 not installed (apt-get install wordnet-base)"
)


def _add_one(p_n, **_):
    """NLTK smoothing function that adds one to every order (TF-NMT's smooth=True)."""
    return [Fraction(p.numerator + 1, p.denominator + 1, _normalize=False) for p in p_n]


def test_13a_tokens_are_sacrebleus():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    text = "Nodule (4.6 mm), RIGHT lung; effusion-thickening."
    assert tokenize_13a(text) == Tokenizer13a()(text).split()
    assert tokenize_13a(text)[:4] == ["Nodule", "(", "4.6", "mm"]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_smoothed_bleu_equals_nltk_with_add_one_smoothing(order):
    from nltk.translate.bleu_score import corpus_bleu, sentence_bleu

    weights = tuple([1 / order] * order)
    for p, r in zip(PREDS, REFS):
        expected = sentence_bleu(
            [tokenize_13a(r)], tokenize_13a(p), weights=weights, smoothing_function=_add_one
        )
        assert smoothed_bleu(p, r, order) == pytest.approx(expected, abs=1e-12)
    stats = sum(bleu_stats(tokenize_13a(r), tokenize_13a(p)) for p, r in zip(PREDS, REFS))
    expected = corpus_bleu(
        [[tokenize_13a(r)] for r in REFS],
        [tokenize_13a(p) for p in PREDS],
        weights=weights,
        smoothing_function=_add_one,
    )
    assert float(bleu_from_stats(stats, order)) == pytest.approx(expected, abs=1e-12)


def test_smoothed_bleu_by_hand():
    # pred "a b c" vs ref "a b c d e": orders 1..4 match 3,2,1,0 of 3,2,1,0 possible
    # smoothed precisions 4/4, 3/3, 2/2, 1/1 -> geometric mean 1; brevity exp(1 - 5/3)
    assert smoothed_bleu("a b c", "a b c d e", 4) == pytest.approx(np.exp(1 - 5 / 3))
    # no overlap still scores above 0 with add-one smoothing (NLTK would return 0)
    assert smoothed_bleu("x y", "a b", 1) == pytest.approx(1 / 3)
    assert smoothed_bleu("", "a b", 4) == 0.0 and smoothed_bleu("a", "", 4) == 0.0


def test_rouge_by_hand_and_against_rouge_score():
    from rouge_score.rouge_scorer import RougeScorer

    got = rouge_scores(["a b c d"], ["a c d e"])
    assert got["rouge_1"][0] == pytest.approx(0.75)  # 3 shared unigrams of 4 and 4
    assert got["rouge_2"][0] == pytest.approx(1 / 3)  # "c d" of 3 bigrams each
    assert got["rouge_l"][0] == pytest.approx(0.75)  # LCS "a c d"
    ref = RougeScorer(["rougeL"], use_stemmer=False)
    got = rouge_scores(PREDS, REFS)
    for i, (p, r) in enumerate(zip(PREDS, REFS)):
        assert got["rouge_l"][i] == ref.score(r, p)["rougeL"].fmeasure


def test_rouge_l_equals_rouge_score_on_many_pairs():
    from rouge_score.rouge_scorer import RougeScorer

    rng = np.random.default_rng(0)
    words = "a b c d e nodule lung the is of".split()
    preds = [" ".join(rng.choice(words, int(rng.integers(0, 40)))) for _ in range(300)]
    refs = [" ".join(rng.choice(words, int(rng.integers(0, 40)))) for _ in range(300)]
    got = rouge_scores(preds + PREDS, refs + REFS)
    lib = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    for i, (p, r) in enumerate(zip(preds + PREDS, refs + REFS)):
        s = lib.score(r, p)
        assert got["rouge_l"][i] == s["rougeL"].fmeasure
        assert got["rouge_1"][i] == s["rouge1"].fmeasure
        assert got["rouge_2"][i] == s["rouge2"].fmeasure


def test_cider_per_sample_is_pycocoevalcaps_on_untokenised_text():
    from pycocoevalcap.cider.cider import Cider

    score, per = cider_scores(PREDS, REFS)
    ref_score, ref_per = Cider().compute_score(
        {i: [r] for i, r in enumerate(REFS)}, {i: [p] for i, p in enumerate(PREDS)}
    )
    assert score == pytest.approx(ref_score) and np.allclose(per, ref_per)


@needs_wordnet
def test_meteor_equals_nltk_single_meteor_score():
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.translate.meteor_score import single_meteor_score

    wn = load_wordnet()
    words = NLTKWordTokenizer()
    one_sentence = [(p, r) for p, r in zip(PREDS, REFS) if p.count(". ") == 0]
    got = NltkMeteor(wn, workers=1).scores(*zip(*one_sentence))
    for (p, r), value in zip(one_sentence, got):
        # one sentence: word_tokenize == the Treebank tokeniser on the whole line
        expected = single_meteor_score(words.tokenize(r), words.tokenize(p), wordnet=wn)
        assert value == pytest.approx(expected, abs=1e-12)
    assert meteor_tokenize("Heart enlarged. No effusion.") == [
        "Heart",
        "enlarged",
        ".",
        "No",
        "effusion",
        ".",
    ]
    # WordNet synonyms count: "enlarged" ~ "expanded" scores above an unrelated word
    syn = NltkMeteor(wn, workers=1).scores(["the heart is expanded"], ["the heart is enlarged"])
    other = NltkMeteor(wn, workers=1).scores(["the heart is purple"], ["the heart is enlarged"])
    assert syn[0] >= other[0]


@needs_wordnet
def test_meteor_in_two_processes_equals_one():
    wn = load_wordnet()
    preds, refs = PREDS * 200, REFS * 200
    one = NltkMeteor(wn, workers=1).scores(preds, refs)
    two = NltkMeteor(wn, workers=2).scores(preds, refs)
    assert np.array_equal(one, two)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR 1.5 needs java")
def test_batched_java_meteor_equals_pycocoevalcap():
    """Pipelined SCORE requests, one alignment per distinct pair, EVAL per subset: the same
    numbers as pycocoevalcap's own Meteor.compute_score."""
    from pycocoevalcap.meteor.meteor import Meteor

    from rgct.eval.language import MeteorScorer, tokenize

    preds, refs = PREDS * 3, REFS * 3
    gts = {i: [tokenize(r)] for i, r in enumerate(refs)}
    res = {i: [tokenize(p)] for i, p in enumerate(preds)}
    ref_score, ref_per = Meteor().compute_score(gts, res)
    scorer = MeteorScorer()
    try:
        stats = scorer.stats([res[i][0] for i in res], [gts[i][0] for i in gts])
        score, per = scorer.evaluate(stats)
        sub_score, _ = scorer.evaluate(stats[:4])
    finally:
        scorer.close()
    assert score == ref_score and per == ref_per
    assert (
        sub_score
        == Meteor().compute_score({i: gts[i] for i in range(4)}, {i: res[i] for i in range(4)})[0]
    )


def test_reg2rg_block_mean_std_and_corpus():
    scores = Reg2RGScores(PREDS, REFS, meteor=None)
    b = scores.block(range(len(PREDS)))
    assert set(b["mean"]) == set(REG2RG_KEYS) and b["mean"]["meteor"] is None
    bleu4 = [smoothed_bleu(p, r, 4) for p, r in zip(PREDS, REFS)]
    assert b["mean"]["bleu_4"] == pytest.approx(np.mean(bleu4))
    assert b["std"]["bleu_4"] == pytest.approx(np.std(bleu4))
    assert b["per_sample"]["bleu_4"][2] == pytest.approx(1.0)  # identical pair
    sub = scores.block([0, 2])
    assert sub["mean"]["rouge_l"] == pytest.approx(np.mean(b["per_sample"]["rouge_l"][[0, 2]]))
    # CIDEr of a subset: pycocoevalcap on that subset's strings (its own IDF)
    assert sub["corpus"]["cider"] == cider_scores([PREDS[0], PREDS[2]], [REFS[0], REFS[2]])[0]
    assert b["corpus"]["cider"] == cider_scores(PREDS, REFS)[0]


def _rows() -> list[dict]:
    return [
        {
            "volume": f"valid_{i // 2}_a_1",
            "task": "region_report",
            "region": "lung" if i % 2 else "heart",
            "question": "q",
            "prediction": p,
            "reference": r,
        }
        for i, (p, r) in enumerate(zip(PREDS, REFS))
    ]


def test_protocols_in_metrics_json():
    coco = evaluate_predictions(_rows(), bertscore=False, meteor=False, bootstrap=50)
    reg = evaluate_predictions(
        _rows(), bertscore=False, meteor=False, protocol="reg2rg", bootstrap=50
    )
    assert coco["protocol"] == "coco" and reg["protocol"] == "reg2rg"
    assert "rouge_2" in reg["overall"]["language"] and "rouge_2" not in coco["overall"]["language"]
    assert reg["meteor"]["available"] is False and "no-meteor" in reg["meteor"]["reason"]
    assert set(reg["overall"]["language_per_sample_std"]) == set(REG2RG_KEYS)
    assert set(reg["per_region"]) == {"heart", "lung"}
    assert reg["overall"]["language_per_sample_mean"]["bleu_4"] == pytest.approx(
        np.mean([smoothed_bleu(p, r, 4) for p, r in zip(PREDS, REFS)])
    )
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate_predictions(_rows(), protocol="nope")


def test_coco_numbers_are_pycocoevalcaps():
    """The coco protocol (default) gives exactly pycocoevalcap's numbers, as before."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    from rgct.eval.language import tokenize

    m = evaluate_predictions(_rows(), bertscore=False, meteor=False, bootstrap=0)
    gts = {i: [tokenize(r)] for i, r in enumerate(REFS)}
    res = {i: [tokenize(p)] for i, p in enumerate(PREDS)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    lang = m["overall"]["language"]
    assert lang["bleu_4"] == bleu[3]
    assert lang["rouge_l"] == Rouge().compute_score(gts, res)[0]
    assert lang["cider"] == Cider().compute_score(gts, res)[0]
