"""The ``reg2rg`` protocol: the NLG evaluation behind Reg2RG's published RadGenome numbers.

Implemented from the protocol's description (``shared/docs/FIELD.md``), per sample:

- **BLEU-n** (n = 1..4), Hugging Face ``evaluate``'s BLEU with ``max_order=n``,
  ``smooth=True``: the TensorFlow NMT ``compute_bleu`` on 13a tokens (sacrebleu's
  ``Tokenizer13a``, case kept), one reference. Every order's precision is add-one smoothed,
  (matches + 1) / (possible + 1); the score is their geometric mean times the brevity penalty
  exp(1 - r/c) when the prediction (c tokens) is shorter than the reference (r tokens). An
  empty prediction or reference scores 0 (the original divides by zero there).
- **METEOR**, ``evaluate``'s METEOR: NLTK ``single_meteor_score(reference, prediction)``
  (alpha 0.9, beta 3, gamma 0.5; exact, Porter-stem and WordNet-synonym matching) on NLTK
  ``word_tokenize`` tokens. WordNet comes from :mod:`rgct.eval.wordnet`; without it METEOR is
  reported as unavailable. ``word_tokenize`` first splits sentences with NLTK's pretrained
  English Punkt model, which is downloaded data; here the sentences come from NLTK's Punkt
  splitter without that model (no learned abbreviations), then the same Treebank word
  tokeniser runs on each. The two differ only where a period ends a known abbreviation.
- **ROUGE-1/2/L** F-measure, ``evaluate``'s ROUGE: ``rouge_score.RougeScorer`` without
  stemmer, ``score(reference, prediction)``.
- **CIDEr**: pycocoevalcap ``Cider`` on the untokenised strings of the scored set (its IDF
  comes from that set's references), per-sample scores.

Each metric is reported as the mean and the (population) standard deviation of the
per-sample scores, overall and per region. The corpus-level ("overall" column) values are
the same functions called on a whole set: corpus BLEU from the summed n-gram statistics,
the mean METEOR and ROUGE (what ``evaluate`` returns for a list), CIDEr over the set.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing as mp
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

REG2RG_KEYS = (
    "bleu_1",
    "bleu_2",
    "bleu_3",
    "bleu_4",
    "meteor",
    "rouge_1",
    "rouge_2",
    "rouge_l",
    "cider",
)
MAX_ORDER = 4
DESCRIPTION = (
    "per-sample smoothed BLEU-1..4 (TF-NMT compute_bleu, add-one smoothing, 13a "
    "tokens), NLTK METEOR (WordNet 3.0), ROUGE-1/2/L F (rouge-score, no stemmer), CIDEr "
    "(pycocoevalcap, untokenised); mean and std over samples"
)


# --- BLEU -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _tokenizer_13a() -> Any:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()


def tokenize_13a(text: str) -> list[str]:
    """WMT 13a tokens (sacrebleu's ``Tokenizer13a``, case kept): ``"(4.6 mm)."`` ->
    ``["(", "4.6", "mm", ")", "."]``."""
    return _tokenizer_13a()(text or "").split()


def _ngrams(tokens: Sequence[str], max_order: int) -> Counter:
    counts: Counter = Counter()
    for order in range(1, max_order + 1):
        for i in range(len(tokens) - order + 1):
            counts[tuple(tokens[i : i + order])] += 1
    return counts


def bleu_stats(
    reference: Sequence[str], prediction: Sequence[str], max_order: int = MAX_ORDER
) -> np.ndarray:
    """Sufficient statistics of one pair for BLEU up to ``max_order``.

    Returns:
        float array (2 * max_order + 2,): clipped matches per order, possible matches per
        order, prediction length, reference length.
    """
    overlap = _ngrams(prediction, max_order) & _ngrams(reference, max_order)
    out = np.zeros(2 * max_order + 2)
    for ngram, count in overlap.items():
        out[len(ngram) - 1] += count
    for order in range(1, max_order + 1):
        out[max_order + order - 1] = max(len(prediction) - order + 1, 0)
    out[-2], out[-1] = len(prediction), len(reference)
    return out


def bleu_from_stats(stats: np.ndarray, order: int, max_order: int = MAX_ORDER) -> np.ndarray:
    """Smoothed BLEU-``order`` from statistics of :func:`bleu_stats` (any leading shape).

    Args:
        stats: (..., 2 * max_order + 2) statistics (one pair, or sums over pairs).
        order: n of BLEU-n (<= max_order).
        max_order: the order the statistics were collected with.

    Returns:
        (...) BLEU scores; 0 where the prediction or the reference is empty.
    """
    stats = np.asarray(stats, dtype=float)
    matches = stats[..., :order]
    possible = stats[..., max_order : max_order + order]
    c, r = stats[..., -2], stats[..., -1]
    log_p = np.log((matches + 1.0) / (possible + 1.0)).mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_bp = np.where(c < r, 1.0 - r / np.maximum(c, 1e-300), 0.0)
        score = np.exp(log_p + log_bp)
    return np.where((c > 0) & (r > 0), score, 0.0)


def smoothed_bleu(prediction: str, reference: str, order: int = 4) -> float:
    """``evaluate``'s BLEU of one pair (``max_order=order``, ``smooth=True``, 13a tokens)."""
    return float(
        bleu_from_stats(bleu_stats(tokenize_13a(reference), tokenize_13a(prediction)), order)
    )


# --- METEOR ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _word_tokenizers() -> tuple[Any, Any]:
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer(), NLTKWordTokenizer()


def meteor_tokenize(text: str) -> list[str]:
    """NLTK word tokens: Punkt sentences (no pretrained model), Treebank words in each."""
    sentences, words = _word_tokenizers()
    return [tok for sent in sentences.tokenize(text or "") for tok in words.tokenize(sent)]


class _CachedWordNet:
    """The two calls METEOR makes, memoised (same results, each word looked up once)."""

    def __init__(self, wordnet: Any) -> None:
        self.synsets = functools.lru_cache(maxsize=None)(wordnet.synsets)


class _CachedStemmer:
    def __init__(self) -> None:
        from nltk.stem.porter import PorterStemmer

        self.stem = functools.lru_cache(maxsize=None)(PorterStemmer().stem)


_WORKER: dict[str, Any] = {}


def _own_wordnet_files() -> None:
    """Pool initializer: a forked worker opens WordNet's data files afresh. NLTK's reader keeps
    them open and seeks before each read; inherited handles share one file offset with the
    parent and the other workers, so concurrent reads interleave and return wrong lines."""
    reader = _WORKER.get("reader")
    if reader is not None and hasattr(reader, "_data_file_map"):
        reader._data_file_map = {}


def _meteor_chunk(pairs: list[tuple[str, str]]) -> list[float]:
    from nltk.translate.meteor_score import single_meteor_score

    wn, stemmer = _WORKER["wordnet"], _WORKER["stemmer"]
    return [
        single_meteor_score(
            meteor_tokenize(ref), meteor_tokenize(pred), stemmer=stemmer, wordnet=wn
        )
        for pred, ref in pairs
    ]


class NltkMeteor:
    """NLTK METEOR over many pairs, in ``workers`` processes (fork) when there are many.

    Args:
        wordnet: An NLTK WordNet reader (:func:`rgct.eval.wordnet.load_wordnet`).
        workers: Processes; default: the CPUs this process may use.
    """

    def __init__(self, wordnet: Any, workers: int | None = None) -> None:
        self.workers = workers or len(os.sched_getaffinity(0))
        _WORKER["reader"] = wordnet
        _WORKER["wordnet"] = _CachedWordNet(wordnet)
        _WORKER["stemmer"] = _CachedStemmer()

    def scores(
        self, predictions: Sequence[str], references: Sequence[str], progress: Any = None
    ) -> np.ndarray:
        """Per-pair METEOR, shape (N,). ``progress``: a tqdm bar advanced by pairs."""
        pairs = list(zip(predictions, references))
        chunk = 256
        chunks = [pairs[i : i + chunk] for i in range(0, len(pairs), chunk)]
        out: list[float] = []
        if self.workers > 1 and len(pairs) > 2 * chunk and "fork" in mp.get_all_start_methods():
            with mp.get_context("fork").Pool(self.workers, initializer=_own_wordnet_files) as pool:
                for part in pool.imap(_meteor_chunk, chunks):
                    out.extend(part)
                    if progress is not None:
                        progress.update(len(part))
        else:
            for c in chunks:
                out.extend(_meteor_chunk(c))
                if progress is not None:
                    progress.update(len(c))
        return np.asarray(out, dtype=float)


# --- ROUGE and CIDEr ------------------------------------------------------------------------
def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (bit-parallel, Hyyro
    2004: one big-integer step per token of ``b`` instead of a len(a) x len(b) table)."""
    if len(a) > len(b):
        a, b = b, a
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-pair ROUGE-1/2/L F-measure (rouge-score, no stemmer): {rouge_1, rouge_2, rouge_l}.

    ROUGE-1/2 are rouge-score's; ROUGE-L is its formula on its tokens with the LCS length
    from :func:`lcs_length` (rouge-score fills a Python table; the values are equal, tested).
    """
    from rouge_score import scoring
    from rouge_score.rouge_scorer import RougeScorer
    from rouge_score.tokenizers import DefaultTokenizer

    scorer = RougeScorer(["rouge1", "rouge2"], use_stemmer=False)
    tokenizer = DefaultTokenizer(use_stemmer=False)
    out: dict[str, list[float]] = {"rouge_1": [], "rouge_2": [], "rouge_l": []}
    for p, r in zip(predictions, references):
        s = scorer.score(r, p)
        out["rouge_1"].append(s["rouge1"].fmeasure)
        out["rouge_2"].append(s["rouge2"].fmeasure)
        pt, rt = tokenizer.tokenize(p), tokenizer.tokenize(r)
        if not pt or not rt:
            out["rouge_l"].append(0.0)
            continue
        lcs = lcs_length(rt, pt)
        out["rouge_l"].append(scoring.fmeasure(lcs / len(pt), lcs / len(rt)))
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


def cider_scores(predictions: Sequence[str], references: Sequence[str]) -> tuple[float, np.ndarray]:
    """pycocoevalcap CIDEr on untokenised strings: (set score, per-pair scores (N,))."""
    from pycocoevalcap.cider.cider import Cider

    if not predictions:
        return 0.0, np.zeros(0)
    gts = {i: [r] for i, r in enumerate(references)}
    res = {i: [p] for i, p in enumerate(predictions)}
    score, per = Cider().compute_score(gts, res)
    return float(score), np.asarray(per, dtype=float)


# --- the protocol ---------------------------------------------------------------------------
class Reg2RGScores:
    """Per-sample reg2rg scores of N pairs, computed once; CIDEr per subset on demand.

    Args:
        predictions: N generated texts.
        references: N reference texts.
        meteor: A started :class:`NltkMeteor`, or None (METEOR reported as null).
        progress: Optional tqdm-like bar advanced per pair and metric family.
    """

    def __init__(
        self,
        predictions: Sequence[str],
        references: Sequence[str],
        meteor: NltkMeteor | None = None,
        progress: Any = None,
    ) -> None:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        self.predictions = list(predictions)
        self.references = list(references)
        n = len(self.predictions)
        # a repeated (prediction, reference) pair is scored once
        pairs = list(zip(self.predictions, self.references))
        unique = list(dict.fromkeys(pairs))
        where = {pair: k for k, pair in enumerate(unique)}
        back = np.asarray([where[pair] for pair in pairs], dtype=int)
        stats = np.zeros((len(unique), 2 * MAX_ORDER + 2))
        for k, (p, r) in enumerate(unique):
            stats[k] = bleu_stats(tokenize_13a(r), tokenize_13a(p))
        self.stats = stats[back]
        if progress is not None:
            progress.update(n)
        self.per_sample: dict[str, np.ndarray | None] = {
            f"bleu_{k}": bleu_from_stats(self.stats, k) for k in range(1, MAX_ORDER + 1)
        }
        u_pred, u_ref = [p for p, _ in unique], [r for _, r in unique]
        from pycocoevalcap.cider.cider_scorer import CiderScorer

        cooked = CiderScorer(n=4, sigma=6.0)
        for p, r in unique:
            cooked += (p, [r])
        self._cider = [(cooked.crefs[k], cooked.ctest[k]) for k in back]
        for key, values in rouge_scores(u_pred, u_ref).items():
            self.per_sample[key] = values[back]
        if progress is not None:
            progress.update(n)
        self.per_sample["meteor"] = None
        if meteor is not None:
            if progress is not None:
                progress.update(n - len(unique))
            self.per_sample["meteor"] = meteor.scores(u_pred, u_ref, progress)[back]

    def block(self, idx: Sequence[int]) -> dict[str, Any]:
        """Scores of the subset ``idx``: corpus-level, per-sample mean and std, and the
        per-sample arrays (``per_sample``, not written to metrics.json)."""
        idx = np.asarray(idx, dtype=int)
        corpus: dict[str, float | None] = dict.fromkeys(REG2RG_KEYS)
        mean: dict[str, float | None] = dict.fromkeys(REG2RG_KEYS)
        std: dict[str, float | None] = dict.fromkeys(REG2RG_KEYS)
        per: dict[str, np.ndarray] = {}
        if len(idx) == 0:
            return {"corpus": corpus, "mean": mean, "std": std, "per_sample": per}
        from pycocoevalcap.cider.cider_scorer import CiderScorer

        # what pycocoevalcap's Cider() does after counting the subset's n-grams
        scorer = CiderScorer(n=4, sigma=6.0)
        scorer.crefs = [self._cider[i][0] for i in idx]
        scorer.ctest = [self._cider[i][1] for i in idx]
        cider, cider_per = scorer.compute_score()
        summed = self.stats[idx].sum(axis=0)
        for key in REG2RG_KEYS:
            if key == "cider":
                values, corpus[key] = cider_per, cider
            else:
                full = self.per_sample[key]
                if full is None:
                    continue
                values = full[idx]
                if key.startswith("bleu_"):
                    corpus[key] = float(bleu_from_stats(summed, int(key[-1])))
                else:
                    corpus[key] = float(values.mean())
            per[key] = values
            mean[key], std[key] = float(values.mean()), float(values.std())
        return {"corpus": corpus, "mean": mean, "std": std, "per_sample": per}
