"""Reading chest-radiograph answers: class names, yes/no, side/zone phrases, findings reports.

The texts are those of the radiograph tasks (:mod:`rgct.data.cxr_samples`) and a model's free
answers to them. One vocabulary per dataset, built from :mod:`rgct.data.cxr_maps` (each class's
release spelling and its words, ``class_words``) plus the free-text synonyms of
:data:`SYNONYMS`:

- :func:`vocabulary` maps a phrase to the layout's class (``'effusion'`` and ``'pleural
  effusion'`` -> ``'Pleural effusion'`` on VinDr-CXR, ``'Effusion'`` on ChestX-ray14); without a
  layout, to the class's words, so both datasets' spellings of one finding meet.
- :func:`find_classes`: the classes a text names, longest phrase first, plurals allowed, a class
  left out where its clause negates it ("No pneumothorax.", "Effusion is not seen.").
- :func:`parse_presence`: yes / no / None. A leading "yes"/"no" decides
  (:func:`rgct.eval.vqa.parse_yes_no`); else the first clause that says either: a negation
  ("no", "not", "without", "absent", "normal" ...) reads no, an assertion ("there is",
  "present", "seen", "shows" ...) reads yes ("There is a nodule, not a mass." is yes);
  anything else is None (scored wrong, counted as unparsed).
- :func:`find_locations`: ``'right lower zone'`` phrases (sides right/left/central, zones
  upper/middle/lower): "right lower zone", "right upper and lower zones", "bilateral lower
  zones" and "lower zones bilaterally" (both sides), "lower zone of the left lung"; "mid" reads
  middle.
- :func:`parse_report`: per sentence, its classes and its locations; each class gets the
  locations of the sentences naming it.

Example::

    >>> sorted(find_classes("Cardiomegaly and bilateral effusions. No pneumothorax.", "vindr-cxr"))
    ['Cardiomegaly', 'Pleural effusion']
    >>> find_locations("Right upper and lower zones.")
    ['right upper zone', 'right lower zone']
    >>> parse_presence("Pleural effusion is not seen.")
    False
"""

from __future__ import annotations

import functools
import re

from rgct.data.cxr import ZONES, location_words
from rgct.data.cxr_maps import (
    CXR14_ALIASES,
    CXR14_LABELS,
    VINDR_ALIASES,
    VINDR_GLOBAL,
    VINDR_LOCAL,
    VINDR_NO_FINDING,
    class_words,
)
from rgct.eval.vqa import parse_yes_no
from rgct.text import split_sentences

LAYOUTS = ("vindr-cxr", "chestxray14")
SIDES = ("right", "left", "central")

CLASSES: dict[str, tuple[str, ...]] = {
    "vindr-cxr": tuple(c for c in (*VINDR_LOCAL, *VINDR_GLOBAL) if c != VINDR_NO_FINDING),
    "chestxray14": CXR14_LABELS,
}
"""Layout -> the classes a text can name (no-finding labels are the empty set)."""

SYNONYMS: dict[str, tuple[str, ...]] = {
    "Aortic enlargement": ("enlarged aorta", "dilated aorta", "aortic dilatation"),
    "Cardiomegaly": ("enlarged heart", "cardiac enlargement", "enlarged cardiac silhouette"),
    "Edema": ("oedema", "pulmonary edema", "pulmonary oedema"),
    "Effusion": ("effusion", "pleural fluid"),
    "Enlarged PA": ("enlarged pa", "pulmonary artery enlargement"),
    "Fibrosis": ("fibrosis",),
    "Hernia": ("hernia",),
    "Infiltration": ("infiltrate",),
    "Lung Opacity": ("opacity", "pulmonary opacity"),
    "Lung tumor": ("lung tumour", "tumor", "tumour"),
    "Nodule": ("lung nodule", "pulmonary nodule"),
    "Nodule/Mass": ("nodule", "mass", "lung nodule", "pulmonary nodule"),
    "Pleural effusion": ("effusion", "pleural fluid"),
    "Pulmonary fibrosis": ("fibrosis",),
    "COPD": ("chronic obstructive pulmonary disease",),
    "Tuberculosis": ("tb",),
}
"""Class -> free-text phrases that also name it (besides its release spelling and its words)."""

assert set(SYNONYMS) <= {c for classes in CLASSES.values() for c in classes}

_NEGATION_BEFORE = re.compile(
    r"\b(?:no|not|without|negative for|free of|absence of|neither|nor|rules? out|ruled out)\b"
)
_NEGATION_AFTER = re.compile(
    r"^[^,]*?\b(?:not (?:seen|present|identified|visible|evident|detected)|absent|is excluded"
    r"|are excluded|ruled out|has resolved|have resolved)\b"
)
_CLAUSE = re.compile(r"[.;:!?\n]|\bbut\b|\bhowever\b")
_NO = re.compile(
    r"\b(?:no|not|without|absent|negative|none|normal|free of|nothing|cannot be seen|isn'?t"
    r"|aren'?t|doesn'?t)\b"
)
_YES = re.compile(
    r"\b(?:yes|there (?:is|are)|present|seen|visible|shows?|showing|demonstrates?|evident"
    r"|identified|noted|positive|consistent with|suggests?|detected)\b"
)
_ZONE = r"(upper|middle|mid|lower)"
_ZONES = _ZONE + r"(?:\s*(?:,|and|&)\s*" + _ZONE + r")?(?:\s*(?:,|and|&)\s*" + _ZONE + r")?"
_SIDE_FIRST = re.compile(
    r"\b(right|left|central|bilateral|both)\s+(?:lungs?\s+|hemithora(?:x|ces)\s+)?"
    + _ZONES
    + r"\s+(?:lung\s+)?(?:zones?|fields?)\b"
)
_BILATERALLY = re.compile(r"\b" + _ZONES + r"\s+(?:lung\s+)?(?:zones?|fields?)\s+bilaterally\b")
_ZONE_FIRST = re.compile(
    r"\b" + _ZONES + r"\s+(?:lung\s+)?(?:zones?|fields?)\s+of\s+(?:the\s+)?(right|left|both)"
    r"\s+(?:lungs?|hemithora(?:x|ces)|sides?)\b"
)


def _normal(text: str) -> str:
    return " ".join((text or "").lower().replace("_", " ").split())


@functools.cache
def vocabulary(layout: str | None) -> dict[str, str]:
    """Phrase (lower case) -> class: the layout's class names, or (``layout`` None) the classes'
    words, so that both datasets' spellings meet (``'Effusion'`` and ``'Pleural effusion'`` ->
    ``'pleural effusion'``).

    Raises:
        ValueError: an unknown layout.
    """
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS} or None, got {layout!r}")
    layouts = (layout,) if layout else LAYOUTS
    aliases = {**VINDR_ALIASES, **CXR14_ALIASES}
    out: dict[str, str] = {}
    # synonyms first, so that a class's own name or words win over another class's synonym
    for pass_ in ("synonyms", "names"):
        for lay in layouts:
            for name in CLASSES[lay]:
                key = class_words(name) if layout is None else name
                if pass_ == "synonyms":
                    phrases = SYNONYMS.get(name, ())
                else:
                    spelled = [a for a, target in aliases.items() if target == name]
                    phrases = (name, class_words(name), *spelled)
                for phrase in phrases:
                    out[_normal(phrase)] = key
    return out


@functools.cache
def _pattern(layout: str | None) -> re.Pattern[str]:
    phrases = sorted(vocabulary(layout), key=len, reverse=True)
    body = "|".join(re.escape(p) for p in phrases)
    return re.compile(r"(?<![\w/])(" + body + r")(?:e?s)?(?![\w/])")


def find_classes(text: str, layout: str | None = None) -> list[str]:
    """The classes ``text`` names and does not negate, in order of first mention (rules in the
    module notes)."""
    vocab = _pattern(layout), vocabulary(layout)
    found: list[str] = []
    for clause in _CLAUSE.split(_normal(text)):
        for match in vocab[0].finditer(clause):
            if _NEGATION_BEFORE.search(clause[: match.start()]):
                continue
            if _NEGATION_AFTER.search(clause[match.end() :]):
                continue
            found.append(vocab[1][match.group(1)])
    return list(dict.fromkeys(found))


def parse_presence(text: str) -> bool | None:
    """True (yes), False (no) or None (neither) for a presence answer (rules in the module
    notes)."""
    said = parse_yes_no(text)
    if said is not None:
        return said == "yes"
    for clause in re.split(r"[,.;:!?\n]", _normal(text)):  # the first clause that says either
        if _NO.search(clause):
            return False
        if _YES.search(clause):
            return True
    return None


def _zones(groups: tuple[str | None, ...]) -> list[str]:
    return [("middle" if z == "mid" else z) for z in groups if z]


def find_locations(text: str) -> list[str]:
    """``'<side> <zone> zone'`` phrases named in ``text``, in order, each once."""
    words = _normal(text)
    found: list[tuple[int, str]] = []
    for match in _SIDE_FIRST.finditer(words):
        side, zones = match.group(1), _zones(match.groups()[1:])
        sides = ("right", "left") if side in ("bilateral", "both") else (side,)
        found += [(match.start(), location_words(s, z)) for s in sides for z in zones]
    for match in _ZONE_FIRST.finditer(words):
        side, zones = match.groups()[-1], _zones(match.groups()[:-1])
        sides = ("right", "left") if side == "both" else (side,)
        found += [(match.start(), location_words(s, z)) for s in sides for z in zones]
    for match in _BILATERALLY.finditer(words):
        zones = _zones(match.groups())
        found += [(match.start(), location_words(s, z)) for s in ("right", "left") for z in zones]
    ordered = [phrase for _, phrase in sorted(found, key=lambda x: x[0])]
    assert all(p.split()[1] in ZONES and p.split()[0] in SIDES for p in ordered)
    return list(dict.fromkeys(ordered))


def parse_report(text: str, layout: str | None = None) -> dict[str, list[str]]:
    """Class -> the locations of the sentences that name it ([] when none says where), for a
    findings report ("Pleural effusion in the right lower zone. COPD.")."""
    out: dict[str, list[str]] = {}
    for sentence in split_sentences(text):
        places = find_locations(sentence)
        for name in find_classes(sentence, layout):
            out.setdefault(name, [])
            out[name] += [p for p in places if p not in out[name]]
    return out


def infer_layout(texts: list[str]) -> str | None:
    """The dataset whose vocabulary the reference ``texts`` use: a class name only one layout
    has decides ("nodule or mass": VinDr-CXR; "nodule" alone: ChestX-ray14); None when no text
    tells."""
    votes = dict.fromkeys(LAYOUTS, 0)
    only = {
        lay: {class_words(c) for c in CLASSES[lay]}
        - {class_words(c) for o in LAYOUTS if o != lay for c in CLASSES[o]}
        for lay in LAYOUTS
    }
    union, concepts = _pattern(None), vocabulary(None)
    for text in texts:
        for match in union.finditer(_normal(text)):
            for lay in LAYOUTS:
                votes[lay] += concepts[match.group(1)] in only[lay]
    best = max(votes, key=votes.get)
    return best if votes[best] and votes[best] > min(votes.values()) else None
