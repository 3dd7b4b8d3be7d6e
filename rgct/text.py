"""Sentence splitting and question reading shared by generation, evaluation and the app (one
rule everywhere)."""

from __future__ import annotations

import re

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")


def split_sentences(text: str | None) -> list[str]:
    """Split report text into sentences on ``. ! ?`` + whitespace or a newline.

    A decimal point ("4.6 mm") is not followed by whitespace, so it never splits.

    >>> split_sentences("A 4.6 mm nodule. No effusion.")
    ['A 4.6 mm nodule.', 'No effusion.']
    """
    return [s.strip() for s in _SENTENCE_SPLIT.split(text or "") if s and s.strip()]


_WHERE = re.compile(
    r"^\s*where\s+(?:is|are)\s+(?:the\s+|an?\s+)?(?P<what>.+?)"
    r"(?:\s+(?:located|seen|found))?"
    r"(?:\s+in\s+(?:this|the)\s+(?:chest\s+)?(?:radiograph|film|image|scan|ct))?"
    r"\s*\??\s*$",
    re.IGNORECASE,
)


def asked_subject(question: str | None) -> str | None:
    """The words a "where is X?" question asks about (the location template's "Where is the
    {abnormality} located in the image?", or a chat question such as "Where is the pleural
    effusion?"), None for any other question.

    >>> asked_subject("Where is the ground glass opacity located in the image?")
    'ground glass opacity'
    >>> asked_subject("Is there a nodule?") is None
    True
    """
    found = _WHERE.match(question or "")
    return found["what"].strip() if found else None
