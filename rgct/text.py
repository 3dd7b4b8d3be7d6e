"""Sentence splitting shared by generation, evaluation and the app (one rule everywhere)."""

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
