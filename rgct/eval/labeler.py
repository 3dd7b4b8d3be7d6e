"""Rule-based CT-RATE labeler (SARLE-style): report text -> 18 abnormality labels.

The text is split into sentences (on '.', '!', '?' and line breaks, not on decimal points)
and each sentence into clauses on ';'. In each clause the labeler first blanks out what is
negated or stated as normal, then matches the label rules of ``labeler_vocab.yaml`` on what is
left (the *affirmed* text):

1. "cannot be excluded" statements (``rule_out``) are taken out first, so their "not" is not
   read as a negation; they count as positive unless ``rule_out_positive=False``.
2. Hedges ("possible", "likely", "suspicious for" ...) count as positive unless
   ``hedges_positive=False``, in which case they negate forward like "no".
3. Backward cues ("was not detected", "is normal", "unremarkable", "are open" ...) negate the
   text before them, back to the clause start, a terminator ("but", "however" ...) or the end
   of an affirmative verb phrase ("is observed").
4. Forward cues ("no", "not", "without", "free of", "negative for" ...) negate the text after
   them up to a terminator, an affirmative verb phrase or the clause end. "No X or Y was
   detected" therefore negates both, and the translated double negation of CT-RATE ("No X was
   not observed") reads as a negation, as it is meant.

Each sentence also gets the region it talks about (:data:`rgct.constants.REGIONS`), its side
(``right``/``left``/``bilateral``), the lung lobes it names ("left lung lower lobe") and the
sizes it states in mm ("12x9 mm" -> (12.0, 9.0), "1.2 cm" -> (12.0,)).

Example::

    >>> label_text("No pleural effusion. Emphysema is observed in both lungs.")["Emphysema"]
    1
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rgct.constants import CT_RATE_LABELS, REGIONS
from rgct.text import split_sentences

DEFAULT_VOCAB = Path(__file__).with_name("labeler_vocab.yaml")
_CACHE_SIZE = 200_000  # sentences kept by a labeler's cache before it starts afresh

_SIZE_MULTI = re.compile(
    r"(\d+(?:[.,]\d+)?)\s*(?:mm|cm)?\s*[x×*]\s*(\d+(?:[.,]\d+)?)"
    r"(?:\s*(?:mm|cm)?\s*[x×*]\s*(\d+(?:[.,]\d+)?))?\s*(mm|cm)\b"
)
_SIZE_SINGLE = re.compile(r"(\d+(?:[.,]\d+)?)\s*(mm|cm)\b")
_LOBE_SIDE_FIRST = re.compile(
    r"\b(right|left|both|bilateral)\s+(?:lung\s+)?(upper|middle|lower)\s+lob"
)
_LOBE_LEVEL_FIRST = re.compile(
    r"\b(upper|middle|lower)\s+lobes?\s+of\s+(?:the\s+)?(right|left|both)\s+lungs?"
)
_LOBE_BARE = re.compile(r"\b(upper|middle|lower)\s+lob")
_LINGULA = re.compile(r"\blingul")
_BILATERAL = re.compile(r"\b(?:bilateral\w*|both)\b")
_RIGHT = re.compile(r"\bright\b")
_LEFT = re.compile(r"\bleft\b(?!\s+anterior\s+descending)")


@dataclass(frozen=True)
class SentenceLabel:
    """What the labeler read in one sentence.

    Attributes:
        sentence: The sentence text as written.
        labels: CT-RATE label -> 0/1 for this sentence (all 18 keys).
        region: Region the sentence talks about (one of REGIONS), or None.
        side: "right", "left", "bilateral" or None.
        lobes: Lobes named, canonical anatomy names ("right lung upper lobe"), in text order.
        sizes_mm: Sizes stated, each a tuple of dimensions in mm.
    """

    sentence: str
    labels: dict[str, int]
    region: str | None = None
    side: str | None = None
    lobes: tuple[str, ...] = ()
    sizes_mm: tuple[tuple[float, ...], ...] = field(default_factory=tuple)

    @property
    def lobe(self) -> str | None:
        """The first lobe named, or None."""
        return self.lobes[0] if self.lobes else None

    @property
    def positive(self) -> list[str]:
        """Labels found positive, in CT_RATE_LABELS order."""
        return [name for name in CT_RATE_LABELS if self.labels[name]]


@dataclass(frozen=True)
class _Rule:
    any: tuple[re.Pattern, ...]
    with_any: tuple[re.Pattern, ...] = ()
    without: tuple[re.Pattern, ...] = ()
    strip: tuple[re.Pattern, ...] = ()
    size_min_mm: float | None = None


def _compile(patterns: list[str] | None, where: str) -> tuple[re.Pattern, ...]:
    out = []
    for p in patterns or []:
        try:
            out.append(re.compile(p, re.IGNORECASE))
        except re.error as e:
            raise ValueError(f"labeler vocabulary {where}: bad pattern {p!r}: {e}") from e
    return tuple(out)


def _search_any(patterns: tuple[re.Pattern, ...], text: str) -> bool:
    return any(p.search(text) for p in patterns)


def parse_sizes_mm(text: str) -> tuple[tuple[float, ...], ...]:
    """Sizes stated in a text, in mm.

    Args:
        text: Free text ("a 12x9 mm nodule", "1.2 cm", "6 x 4 mm").

    Returns:
        One tuple of dimensions (mm) per size mention, in text order.
    """
    sizes: list[tuple[int, tuple[float, ...]]] = []
    taken: list[tuple[int, int]] = []
    for m in _SIZE_MULTI.finditer(text):
        scale = 10.0 if m.group(4).lower() == "cm" else 1.0
        dims = tuple(float(g.replace(",", ".")) * scale for g in m.groups()[:3] if g)
        sizes.append((m.start(), dims))
        taken.append(m.span())
    for m in _SIZE_SINGLE.finditer(text):
        if any(a <= m.start() < b for a, b in taken):
            continue
        scale = 10.0 if m.group(2).lower() == "cm" else 1.0
        sizes.append((m.start(), (float(m.group(1).replace(",", ".")) * scale,)))
    return tuple(dims for _, dims in sorted(sizes))


def parse_side(text: str) -> str | None:
    """ "right", "left", "bilateral" (both named, or "both"/"bilateral") or None."""
    low = text.lower()
    right, left = bool(_RIGHT.search(low)), bool(_LEFT.search(low))
    if _BILATERAL.search(low) or (right and left):
        return "bilateral"
    return "right" if right else "left" if left else None


def parse_lobes(text: str) -> tuple[str, ...]:
    """Lung lobes named in a text, as canonical anatomy names, in text order.

    "right lung upper lobe", "lower lobe of the left lung", "left upper lobe", "lingula" (left
    upper lobe), "middle lobe" (right); "both lower lobes" gives both lower lobes.
    """
    low = text.lower()
    found: list[tuple[int, str]] = []
    spans: list[tuple[int, int]] = []

    def add(pos: int, side: str, level: str) -> None:
        sides = ("right", "left") if side in ("both", "bilateral") else (side,)
        for s in sides:
            if level == "middle" and s == "left":
                continue
            found.append((pos, f"{s} lung {level} lobe"))

    for m in _LOBE_SIDE_FIRST.finditer(low):
        add(m.start(), m.group(1), m.group(2))
        spans.append(m.span())
    for m in _LOBE_LEVEL_FIRST.finditer(low):
        add(m.start(), m.group(2), m.group(1))
        spans.append(m.span())
    for m in _LOBE_BARE.finditer(low):
        if any(a <= m.start() < b for a, b in spans):
            continue
        if m.group(1) == "middle":
            found.append((m.start(), "right lung middle lobe"))
        else:
            side = parse_side(low)
            if side in ("right", "left", "bilateral"):
                add(m.start(), side, m.group(1))
    for m in _LINGULA.finditer(low):
        found.append((m.start(), "left lung upper lobe"))
    out: list[str] = []
    for _, name in sorted(found, key=lambda t: t[0]):
        if name not in out:
            out.append(name)
    return tuple(out)


class CTRateLabeler:
    """Rule-based labeler for the 18 CT-RATE abnormality labels.

    Args:
        vocab_path: YAML vocabulary; defaults to ``labeler_vocab.yaml`` next to this module.
        hedges_positive: Hedged findings ("possible atelectasis") count as positive.
        rule_out_positive: "X cannot be excluded" counts X as positive.

    Example::

        labeler = CTRateLabeler()
        labeler.label_text("Possible atelectasis in the left lower lobe.")["Atelectasis"]  # 1
    """

    def __init__(
        self,
        vocab_path: str | Path | None = None,
        hedges_positive: bool = True,
        rule_out_positive: bool = True,
    ) -> None:
        path = Path(vocab_path) if vocab_path is not None else DEFAULT_VOCAB
        vocab = _load_vocab(str(path))
        self.vocab_path = path
        self.hedges_positive = hedges_positive
        self.rule_out_positive = rule_out_positive
        neg = vocab.get("negation") or {}
        self._pre = _compile(neg.get("pre"), f"{path}: negation.pre")
        self._post = _compile(neg.get("post"), f"{path}: negation.post")
        self._term = _compile(neg.get("terminators"), f"{path}: negation.terminators")
        self._affirm = _compile(neg.get("affirmative"), f"{path}: negation.affirmative")
        self._hedges = _compile(vocab.get("hedges"), f"{path}: hedges")
        self._rule_out = _compile(vocab.get("rule_out"), f"{path}: rule_out")
        labels = vocab.get("labels") or {}
        missing = [n for n in CT_RATE_LABELS if n not in labels]
        unknown = [n for n in labels if n not in CT_RATE_LABELS]
        if missing or unknown:
            raise ValueError(
                f"labeler vocabulary {path}: labels must be exactly CT_RATE_LABELS; "
                f"missing {missing}, unknown {unknown}"
            )
        self._rules: dict[str, list[_Rule]] = {}
        for name in CT_RATE_LABELS:
            rules = []
            for i, r in enumerate(labels[name]):
                where = f"{path}: labels.{name}[{i}]"
                if not r.get("any"):
                    raise ValueError(f"labeler vocabulary {where}: needs a non-empty 'any'")
                rules.append(
                    _Rule(
                        any=_compile(r.get("any"), where),
                        with_any=_compile(r.get("with_any"), where),
                        without=_compile(r.get("without"), where),
                        strip=_compile(r.get("strip"), where),
                        size_min_mm=r.get("size_min_mm"),
                    )
                )
            self._rules[name] = rules
        regions = vocab.get("regions") or {}
        bad = [r for r in regions if r not in REGIONS]
        if bad:
            raise ValueError(f"labeler vocabulary {path}: unknown regions {bad}; known {REGIONS}")
        self._regions = {r: _compile(p, f"{path}: regions.{r}") for r, p in regions.items()}
        self._label_regions: dict[str, str | None] = dict(vocab.get("label_regions") or {})
        self._cache: dict[str, SentenceLabel] = {}

    # --- negation ---------------------------------------------------------------------------
    def affirmed(self, clause: str) -> str:
        """The clause with negated and normal statements blanked out (lower case).

        Args:
            clause: One clause (no ';').

        Returns:
            Lower-cased clause of the same length, negated characters replaced by spaces.
        """
        text = clause.lower()
        n = len(text)
        negated = [False] * n
        consumed = [False] * n

        def mark(arr: list[bool], a: int, b: int) -> None:
            for i in range(max(a, 0), min(b, n)):
                arr[i] = True

        def free(m: re.Match) -> bool:
            return not any(consumed[m.start() : m.end()])

        terms = [m.start() for p in self._term for m in p.finditer(text)]
        affirm = [(m.start(), m.end()) for p in self._affirm for m in p.finditer(text)]
        post_spans: list[tuple[int, int]] = []
        for p in self._rule_out:
            for m in p.finditer(text):
                mark(consumed, *m.span())
                if not self.rule_out_positive:
                    post_spans.append(m.span())
        for p in self._hedges:
            for m in p.finditer(text):
                mark(consumed, *m.span())
                if not self.hedges_positive:
                    end = self._forward_end(m.end(), terms, affirm, n)
                    mark(negated, m.start(), end)
        for p in self._post:
            for m in p.finditer(text):
                if free(m):
                    post_spans.append(m.span())
                    mark(consumed, *m.span())
        for a, b in post_spans:
            start = max([0] + [t for t in terms if t < a] + [e for s, e in affirm if e <= a])
            mark(negated, start, b)
        for p in self._pre:
            for m in p.finditer(text):
                if free(m):
                    mark(negated, m.start(), self._forward_end(m.end(), terms, affirm, n))
        return "".join(" " if neg else ch for ch, neg in zip(text, negated))

    @staticmethod
    def _forward_end(pos: int, terms: list[int], affirm: list[tuple[int, int]], n: int) -> int:
        stops = [t for t in terms if t >= pos] + [s for s, _ in affirm if s >= pos]
        return min(stops, default=n)

    # --- labels -------------------------------------------------------------------------------
    def _fires(self, rule: _Rule, text: str) -> bool:
        if not _search_any(rule.any, text) or _search_any(rule.without, text):
            return False
        if not rule.with_any and rule.size_min_mm is None:
            return True
        ctx = text
        for p in rule.strip:
            ctx = p.sub(" ", ctx)
        if rule.with_any and _search_any(rule.with_any, ctx):
            return True
        if rule.size_min_mm is not None:
            return any(min(d) >= rule.size_min_mm for d in parse_sizes_mm(text))
        return False

    def _clause_labels(self, affirmed: str) -> set[str]:
        return {
            name
            for name, rules in self._rules.items()
            if any(self._fires(rule, affirmed) for rule in rules)
        }

    def _region(self, text: str, labels: list[str]) -> str | None:
        low = text.lower()
        best: tuple[int, int, str] | None = None
        for region, patterns in self._regions.items():
            hits = [m.start() for p in patterns for m in p.finditer(low)]
            if hits:
                key = (-len(hits), min(hits), region)
                best = key if best is None or key < best else best
        if best is not None:
            return best[2]
        for name in labels:
            if self._label_regions.get(name):
                return self._label_regions[name]
        return None

    def label_sentences(self, text: str) -> list[SentenceLabel]:
        """Label each sentence of a report.

        Args:
            text: Report text (any number of sentences).

        Returns:
            One :class:`SentenceLabel` per sentence, in text order.
        """
        return [self.label_sentence(sentence) for sentence in split_sentences(text)]

    def label_sentence(self, sentence: str) -> SentenceLabel:
        """Label one sentence (results are cached per labeler: reports repeat sentences).

        Args:
            sentence: One sentence (clauses split on ';').

        Returns:
            Its :class:`SentenceLabel` (shared with later calls: do not modify).
        """
        cached = self._cache.get(sentence)
        if cached is not None:
            return cached
        found: set[str] = set()
        affirmed_parts = []
        for clause in sentence.split(";"):
            aff = self.affirmed(clause)
            found |= self._clause_labels(aff)
            affirmed_parts.append(aff)
        positive = [name for name in CT_RATE_LABELS if name in found]
        # where the sentence names findings, read side and lobe from the affirmed text only
        where = " ; ".join(affirmed_parts) if positive else sentence
        result = SentenceLabel(
            sentence=sentence,
            labels={name: int(name in found) for name in CT_RATE_LABELS},
            region=self._region(sentence, positive),
            side=parse_side(where),
            lobes=parse_lobes(where),
            sizes_mm=parse_sizes_mm(where),
        )
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[sentence] = result
        return result

    def label_text(self, text: str) -> dict[str, int]:
        """The 18 CT-RATE labels of a report (1 when any sentence is positive).

        Args:
            text: Report text.

        Returns:
            Label name -> 0/1, keys in CT_RATE_LABELS order.
        """
        result = dict.fromkeys(CT_RATE_LABELS, 0)
        for s in self.label_sentences(text):
            for name, v in s.labels.items():
                result[name] |= v
        return result


@functools.lru_cache(maxsize=8)
def _load_vocab(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            vocab = yaml.safe_load(f)
    except OSError as e:
        raise FileNotFoundError(f"labeler vocabulary {path}: cannot read ({e})") from e
    if not isinstance(vocab, dict):
        raise ValueError(f"labeler vocabulary {path}: expected a mapping at the top level")
    return vocab


@functools.lru_cache(maxsize=1)
def default_labeler() -> CTRateLabeler:
    """The shared labeler with the default vocabulary and settings (built once)."""
    return CTRateLabeler()


def label_text(text: str) -> dict[str, int]:
    """The 18 CT-RATE labels of a report with the default labeler (see CTRateLabeler)."""
    return default_labeler().label_text(text)


def label_sentences(text: str) -> list[SentenceLabel]:
    """Per-sentence labels, region, side, lobes and sizes with the default labeler."""
    return default_labeler().label_sentences(text)
