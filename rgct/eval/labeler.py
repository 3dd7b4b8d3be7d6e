"""Rule-based CT-RATE labeler (SARLE-style): report text -> 18 abnormality labels.

The text is split into sentences (on '.', '!', '?' and line breaks, not on decimal points;
:func:`rgct.text.split_sentences`) and each sentence into clauses on ';'. Words written wrong
are first read as the label term they are one edit away from, doubled letters aside
(``spelling`` in the vocabulary:
"efusion", "nodle", "plevral", "cardiomegali"; two edits for long words that start right,
"lymphadenophaty"; a few regular rewrites such as Turkish "lenf" -> "lymph"; words listed
under ``spelling.keep``, such as "perfusion", are never changed). In each clause the labeler first blanks out what is
negated or stated as normal, then matches the label rules of ``labeler_vocab.yaml`` on what is
left (the *affirmed* text):

1. "cannot be excluded" statements (``rule_out``) are taken out first, so their "not" is not
   read as a negation; they count as positive unless ``rule_out_positive=False``.
2. Hedges ("possible", "likely", "suspicious for" ...) count as positive unless
   ``hedges_positive=False``, in which case they negate forward like "no".
3. Backward cues ("was not detected", "is normal", "unremarkable", "are open" ...) negate the
   text before them, back to the clause start, a terminator ("but", "however" ...) or the end
   of an affirmative verb phrase ("is observed", "is increased"). An exceptive phrase ("apart
   from", "except") is a terminator that also ends at the comma after it: in "apart from
   emphysema, the parenchyma is normal" the emphysema stays affirmed.
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
    """One label rule; each pattern list is joined into one alternation (same matches as
    trying the patterns one by one, one regex call)."""

    any: re.Pattern
    with_any: re.Pattern | None = None
    without: re.Pattern | None = None
    strip: tuple[re.Pattern, ...] = ()
    size_min_mm: float | None = None


def _join(patterns: tuple[re.Pattern, ...]) -> re.Pattern | None:
    """One pattern matching where any of ``patterns`` matches (None for none).

    The labeler matches lower-cased text (see :func:`_case_flag`).
    """
    if not patterns:
        return None
    source = "|".join(f"(?:{p.pattern})" for p in patterns)
    return re.compile(source, _case_flag(source))


def _case_flag(source: str) -> int:
    """IGNORECASE only where a pattern has upper-case letters: the labeler matches lower-cased
    text, so the others give the same matches without it (and run about a third faster)."""
    return re.IGNORECASE if any(c.isupper() for c in re.sub(r"\\.", "", source)) else 0


def _flatten(patterns: list | None) -> list[str]:
    """Patterns with nested lists spliced in (a YAML anchor such as ``*outside_lung`` used
    inside a list)."""
    out: list[str] = []
    for p in patterns or []:
        out.extend(_flatten(p) if isinstance(p, list) else [p])
    return out


def _compile(patterns: list | None, where: str) -> tuple[re.Pattern, ...]:
    out = []
    for p in _flatten(patterns):
        try:
            out.append(re.compile(p, _case_flag(p)))
        except re.error as e:
            raise ValueError(f"labeler vocabulary {where}: bad pattern {p!r}: {e}") from e
    return tuple(out)


def edit_distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance (insert, delete, substitute, swap two neighbours),
    or ``limit + 1`` as soon as it must exceed ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


def _squeeze(word: str) -> str:
    """Runs of one letter as one ("effusion" -> "efusion"): doubling errors cost nothing."""
    return re.sub(r"(.)\1+", r"\1", word)


class _Speller:
    """Reads a misspelt word as the label term it is nearest to (see the module docstring)."""

    _WORD = re.compile(r"[^\W\d_]{5,}")

    def __init__(self, spec: dict[str, Any], where: str) -> None:
        self.terms = tuple(sorted({str(t).lower() for t in spec.get("terms") or []}))
        self._squeezed = tuple(_squeeze(t) for t in self.terms)
        self._letters = tuple(frozenset(t) for t in self._squeezed)
        self.keep = {str(t).lower() for t in spec.get("keep") or []} | set(self.terms)
        self.variants = [
            (p, str(repl))
            for p, repl in zip(
                _compile(list((spec.get("variants") or {}).keys()), f"{where}.variants"),
                (spec.get("variants") or {}).values(),
            )
        ]
        self._any_variant = _join(tuple(p for p, _ in self.variants))
        self._memo: dict[str, str] = {}

    def word(self, word: str) -> str:
        """The term a word stands for (the word itself when none is near enough)."""
        hit = self._memo.get(word)
        if hit is not None:
            return hit
        best, best_d = word, 3
        if word not in self.keep:
            squeezed = _squeeze(word)
            letters = set(squeezed)
            for term, term_squeezed, term_letters in zip(self.terms, self._squeezed, self._letters):
                limit = 2 if len(word) >= 10 and word[:2] == term[:2] else 1
                # each edit changes the set of letters by at most two: a cheap lower bound
                if len(letters ^ term_letters) > 2 * limit:
                    continue
                d = edit_distance(squeezed, term_squeezed, limit)
                if d <= limit and d < best_d:
                    best, best_d = term, d
        if len(self._memo) < 100_000:
            self._memo[word] = best
        return best

    def __call__(self, text: str) -> str:
        """Lower-cased text with variants rewritten and misspelt words corrected."""
        low = text.lower()
        if self._any_variant is not None and self._any_variant.search(low):
            for pattern, repl in self.variants:
                low = pattern.sub(repl, low)
        return self._WORD.sub(lambda m: self.word(m.group(0)), low)


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
        self._except = _compile(neg.get("exceptive"), f"{path}: negation.exceptive")
        self._affirm = _compile(neg.get("affirmative"), f"{path}: negation.affirmative")
        self._hedges = _compile(vocab.get("hedges"), f"{path}: hedges")
        self._rule_out = _compile(vocab.get("rule_out"), f"{path}: rule_out")
        self._cues = {
            kind: (patterns, _join(patterns))
            for kind, patterns in (
                ("pre", self._pre),
                ("post", self._post),
                ("terminators", self._term),
                ("exceptive", self._except),
                ("affirmative", self._affirm),
                ("hedges", self._hedges),
                ("rule_out", self._rule_out),
            )
        }
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
                        any=_join(_compile(r.get("any"), where)),
                        with_any=_join(_compile(r.get("with_any"), where)),
                        without=_join(_compile(r.get("without"), where)),
                        strip=_compile(r.get("strip"), where),
                        size_min_mm=r.get("size_min_mm"),
                    )
                )
            self._rules[name] = rules
        # a clause none of whose words starts any rule has no label: one search decides
        self._any_keyword = _join(tuple(r.any for rules in self._rules.values() for r in rules))
        regions = vocab.get("regions") or {}
        bad = [r for r in regions if r not in REGIONS]
        if bad:
            raise ValueError(f"labeler vocabulary {path}: unknown regions {bad}; known {REGIONS}")
        self._regions = {r: _compile(p, f"{path}: regions.{r}") for r, p in regions.items()}
        self._region_any = {r: _join(p) for r, p in self._regions.items()}
        self._label_regions: dict[str, str | None] = dict(vocab.get("label_regions") or {})
        self._speller = _Speller(vocab.get("spelling") or {}, f"{path}: spelling")
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
        negated: list[tuple[int, int]] = []
        consumed = bytearray(n)

        def mark(arr: bytearray | list, a: int, b: int) -> None:
            a, b = max(a, 0), min(b, n)
            if b <= a:
                return
            if isinstance(arr, bytearray):
                arr[a:b] = b"\x01" * (b - a)
            else:
                arr.append((a, b))

        def free(m: re.Match) -> bool:
            return consumed.find(1, m.start(), m.end()) == -1

        terms = [m.start() for m in self._cue_matches("terminators", text)]
        for m in self._cue_matches("exceptive", text):
            comma = text.find(",", m.end())
            terms += [m.start()] + ([comma] if comma != -1 else [])
        affirm = [m.span() for m in self._cue_matches("affirmative", text)]
        post_spans: list[tuple[int, int]] = []
        for m in self._cue_matches("rule_out", text):
            mark(consumed, *m.span())
            if not self.rule_out_positive:
                post_spans.append(m.span())
        for m in self._cue_matches("hedges", text):
            mark(consumed, *m.span())
            if not self.hedges_positive:
                end = self._forward_end(m.end(), terms, affirm, n)
                mark(negated, m.start(), end)
        for m in self._cue_matches("post", text):
            if free(m):
                post_spans.append(m.span())
                mark(consumed, *m.span())
        for a, b in post_spans:
            start = max([0] + [t for t in terms if t < a] + [e for s, e in affirm if e <= a])
            mark(negated, start, b)
        for m in self._cue_matches("pre", text):
            if free(m):
                mark(negated, m.start(), self._forward_end(m.end(), terms, affirm, n))
        if not negated:
            return text
        chars = list(text)
        for a, b in negated:
            chars[a:b] = " " * (b - a)
        return "".join(chars)

    def _cue_matches(self, kind: str, text: str) -> list[re.Match]:
        """Matches of one cue class, pattern by pattern (one joined search skips the rest)."""
        patterns, joined = self._cues[kind]
        if joined is None or not joined.search(text):
            return []
        return [m for p in patterns for m in p.finditer(text)]

    @staticmethod
    def _forward_end(pos: int, terms: list[int], affirm: list[tuple[int, int]], n: int) -> int:
        stops = [t for t in terms if t >= pos] + [s for s, _ in affirm if s >= pos]
        return min(stops, default=n)

    # --- labels -------------------------------------------------------------------------------
    def _fires(self, rule: _Rule, text: str) -> bool:
        if not rule.any.search(text) or (rule.without and rule.without.search(text)):
            return False
        if not rule.with_any and rule.size_min_mm is None:
            return True
        ctx = text
        for p in rule.strip:
            ctx = p.sub(" ", ctx)
        if rule.with_any and rule.with_any.search(ctx):
            return True
        if rule.size_min_mm is not None:  # sizes left after strip ("below 10 mm" is stripped)
            return any(min(d) >= rule.size_min_mm for d in parse_sizes_mm(ctx))
        return False

    def _clause_labels(self, affirmed: str) -> set[str]:
        if self._any_keyword is None or not self._any_keyword.search(affirmed):
            return set()
        return {
            name
            for name, rules in self._rules.items()
            if any(self._fires(rule, affirmed) for rule in rules)
        }

    def _region(self, text: str, labels: list[str]) -> str | None:
        low = text.lower()
        best: tuple[int, int, str] | None = None
        for region, patterns in self._regions.items():
            joined = self._region_any[region]
            if joined is None or not joined.search(low):
                continue
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
        text = self._speller(sentence)
        for clause in text.split(";"):
            aff = self.affirmed(clause)
            found |= self._clause_labels(aff)
            affirmed_parts.append(aff)
        positive = [name for name in CT_RATE_LABELS if name in found]
        # where the sentence names findings, read side and lobe from the affirmed text only
        where = " ; ".join(affirmed_parts) if positive else text
        result = SentenceLabel(
            sentence=sentence,
            labels={name: int(name in found) for name in CT_RATE_LABELS},
            region=self._region(text, positive),
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
