"""One browser session's state and the policies every request meets (free of gradio).

:class:`Session` is what a ``gr.State`` holds; :func:`check_generation` validates generation
settings; :class:`RateLimiter` bounds model calls per session; :func:`public_message` keeps
server paths out of every message.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import re
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.inputs import InputError, Scan

log = logging.getLogger(__name__)

MAX_NEW_TOKENS_RANGE = (1, 512)
NUM_BEAMS_RANGE = (1, 8)
"""Accepted generation settings (inclusive); anything else is refused with these ranges."""


@dataclass
class Session:
    """One browser session's state.

    Attributes:
        workdir: scratch folder (extracted zips, report downloads), deleted with the session.
        key: gradio's session hash (None for one-shot API sessions).
        scan: the loaded scan and its masks, or None.
        selected: name of the mask in use (a key of ``scan.masks``), or None.
        cursor: (z, y, x) voxel the three planes pass through.
        corner: first click of a box being drawn on the axial view, (y, x), or None.
        box_preview: (y0, y1, x0, x1) box outlined on the axial view while drawing, or None.
        box_slice: axial slice the box was drawn on.
        report: the last full report (normalised, see :mod:`app.results`).
        region_result: the last region report (normalised).
        focus: the sentence shown in the viewer: ("report" or "region", its index), or None.
        chat: the conversation, one dict per turn: ``{"question", "answer", "resolved" (the
            standalone question the model was asked), "task", "region" (whose mask answered),
            "finding", "mask_source", "clarify" (a question back), "warnings"}``.
        evidence: region -> label probabilities from the region classifier (cache).
        scan_warnings: warnings about the scan itself (not a chest CT, regions not found).
        settings: the generation settings last used (recorded in exports).
        released: why the server let go of this session's scan, or None.
    """

    workdir: Path
    key: str | None = None
    scan: Scan | None = None
    selected: str | None = None
    cursor: tuple[int, int, int] | None = None
    corner: tuple[int, int] | None = None
    box_preview: tuple[int, int, int, int] | None = None
    box_slice: int | None = None
    report: dict | None = None
    region_result: dict | None = None
    focus: tuple[str, int] | None = None
    chat: list[dict] = field(default_factory=list)
    evidence: dict[str, dict[str, float]] = field(default_factory=dict)
    scan_warnings: list[str] = field(default_factory=list)
    settings: dict[str, int] = field(default_factory=dict)
    released: str | None = None

    @property
    def mask(self) -> np.ndarray | None:
        """The selected (D, H, W) bool mask, or None."""
        if self.scan is None or self.selected is None:
            return None
        return self.scan.masks.get(self.selected)

    @property
    def mask_source(self) -> str | None:
        """Where the selected mask came from: dataset, predicted, uploaded or drawn."""
        if self.scan is None or self.selected is None:
            return None
        return self.scan.sources.get(self.selected)

    def result(self, source: str) -> dict | None:
        """The full report (``"report"``) or the region report (``"region"``)."""
        return self.report if source == "report" else self.region_result

    def focused(self) -> tuple[dict, dict] | None:
        """(result, sentence) of the sentence shown in the viewer, or None."""
        if self.focus is None:
            return None
        result = self.result(self.focus[0])
        if result is None or not 0 <= self.focus[1] < len(result["sentences"]):
            return None
        return result, result["sentences"][self.focus[1]]

    def require_scan(self) -> Scan:
        if self.scan is None:
            if self.released:
                raise InputError(self.released)
            raise InputError("Load a scan first (upload one or pick an example).")
        return self.scan

    def clear_outputs(self) -> None:
        """Forget everything derived from the previous scan."""
        self.selected = self.cursor = self.corner = self.box_preview = self.box_slice = None
        self.report = self.region_result = self.focus = None
        self.chat, self.evidence, self.scan_warnings = [], {}, []
        self.released = None

    def warnings(self) -> list[str]:
        """Every warning that applies to what is on screen."""
        out = list(self.scan_warnings)
        for result in (self.report, self.region_result):
            if result:
                out += result.get("warnings", [])
        if self.chat:
            out += self.chat[-1].get("warnings", [])
        return list(dict.fromkeys(out))


def return_free_memory() -> bool:
    """Hand freed heap memory back to the system (glibc ``malloc_trim``; False elsewhere).

    A closed session's scan, masks and segmentation are hundreds of MB of arrays; freed, much
    of it stays in the allocator's heap as fragments and the server's memory keeps growing
    with every session. Trimming after a scan is released keeps it near its start."""
    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


def delete_session(session: Session | None) -> None:
    """``gr.State`` delete callback: remove the session's scratch folder and scan."""
    if isinstance(session, Session):
        had_scan = session.scan is not None
        session.scan = None
        shutil.rmtree(session.workdir, ignore_errors=True)
        log.debug("deleted session folder %s", session.workdir)
        if had_scan:
            return_free_memory()


def check_generation(max_new_tokens: Any, num_beams: Any) -> dict[str, int]:
    """Validated Predictor keyword arguments.

    Raises:
        InputError: a value that is not a whole number in its range; the message gives it.
    """
    out = {}
    for name, value, (lo, hi) in (
        ("max_new_tokens", max_new_tokens, MAX_NEW_TOKENS_RANGE),
        ("num_beams", num_beams, NUM_BEAMS_RANGE),
    ):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not (number == int(number) if np.isfinite(number) else False) or not lo <= number <= hi:
            raise InputError(f"{name} must be a whole number from {lo} to {hi}; got {value!r}.")
        out[name] = int(number)
    return out


def generation_kwargs(max_new_tokens: float, decoding: str, num_beams: float) -> dict[str, int]:
    """Predictor keyword arguments from the settings accordion (greedy means one beam)."""
    beams = 1 if decoding == "greedy" else num_beams
    return check_generation(max_new_tokens, beams)


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[^\s/'\":,;()]+){2,}/?")


def public_message(text: str) -> str:
    """``text`` with every absolute path reduced to its last part (no server folders shown)."""
    return _PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], text)


class RateLimiter:
    """At most ``limit`` requests per ``window_s`` seconds for each key (a session)."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = int(limit), float(window_s)
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str | None) -> None:
        """Count one request for ``key``.

        Raises:
            InputError: over the limit; the message says how long to wait.
        """
        if self.limit <= 0 or key is None:
            return
        now = time.monotonic()
        with self._lock:
            seen = self._seen.setdefault(key, deque())
            while seen and now - seen[0] > self.window_s:
                seen.popleft()
            if len(seen) >= self.limit:
                wait = self.window_s - (now - seen[0])
                raise InputError(
                    f"Too many requests: at most {self.limit} per {self.window_s:.0f} s per "
                    f"session. Try again in {wait:.0f} s."
                )
            seen.append(now)

    def forget(self, key: str | None) -> None:
        with self._lock:
            self._seen.pop(key, None)
