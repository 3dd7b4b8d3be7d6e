"""Reading the predictions JSONL of ``rgct generate``, with a report of every bad line.

Each line is a JSON object with ``prediction`` and ``reference`` (both strings) and, from
``rgct generate``, ``volume``, ``task``, ``region`` and ``question``. The bare form (only
``prediction``/``reference``) gets ``task`` "report", ``region`` "whole scan", ``volume`` "".

:func:`read_predictions` checks every line and lists each problem with its line number:

- ``encoding``: the line is not UTF-8;
- ``json``: the line is not a JSON object;
- ``missing field``: ``prediction`` or ``reference`` is absent;
- ``bad field``: a field that is not a string (``prediction``, ``reference``, ``volume``,
  ``region``, ``question``), or an unknown ``task``;
- ``empty prediction``: the prediction is empty or only whitespace;
- ``duplicate``: the same (volume, task, region, question) as an earlier line;
- ``unknown volume``: with ``--data``, a volume its ``ground_truth.jsonl`` does not hold;
- ``bad box``: a ``cxr_box`` line without ``box: [x_min, y_min, x_max, y_max]`` (pixels, with
  area);
- whatever a caller's ``check`` finds (the radiograph scorer's ``unknown image`` and
  ``reference mismatch`` against a VinDr-CXR or ChestX-ray14 folder, :mod:`rgct.eval.cxr`).

Radiograph lines (tasks :data:`rgct.constants.CXR_TASKS`) are read the same way; a ``cxr_box``
line's box is part of its identity (an image's boxes share one question).

A line with a problem is left out of ``rows``; :func:`load_predictions` raises unless told
to skip them. Ground truth is read by :func:`rgct.data.truth.load_ground_truth`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rgct.constants import CXR_TASKS, TASKS, WHOLE_SCAN
from rgct.data.truth import load_ground_truth
from rgct.eval.grounding import volume_key

__all__ = [
    "PredictionsError",
    "PredictionsReport",
    "Problem",
    "load_ground_truth",
    "load_predictions",
    "read_predictions",
]

_TEXT_FIELDS = ("prediction", "reference", "volume", "region", "question")
KNOWN_TASKS = tuple(dict.fromkeys((*TASKS, *CXR_TASKS)))

LineCheck = Callable[[dict], list[tuple[str, str]]]
"""A caller's extra check of one well-formed record: (kind, message) of each problem."""


class PredictionsError(ValueError):
    """A predictions file that is missing or has bad lines (the message lists them)."""


@dataclass(frozen=True)
class Problem:
    """One bad line: its number (1-based), the kind of problem and what is wrong."""

    line: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.kind}: {self.message}"


@dataclass
class PredictionsReport:
    """What :func:`read_predictions` found.

    Attributes:
        path: The file read.
        rows: Valid records in file order (each with ``line``: its line number).
        problems: Every problem, in line order.
        num_lines: Non-blank lines read.
    """

    path: Path
    rows: list[dict] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    num_lines: int = 0

    def summary(self, limit: int = 50) -> str:
        """A multi-line text naming the file and each problem (the first ``limit``)."""
        kinds: dict[str, int] = {}
        for p in self.problems:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
        head = (
            f"{self.path}: {len(self.problems)} problem(s) in {self.num_lines} line(s) ("
            + ", ".join(f"{k}: {v}" for k, v in kinds.items())
            + ")"
        )
        lines = [head, *(f"  {p}" for p in self.problems[:limit])]
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        return "\n".join(lines)


def _check(
    rec: dict, lineno: int, ground_truth: dict[str, dict] | None, allow_empty: bool
) -> list[Problem]:
    problems = []
    missing = [k for k in ("prediction", "reference") if k not in rec]
    if missing:
        problems.append(Problem(lineno, "missing field", f"lacks {missing}"))
    for key in _TEXT_FIELDS:
        if key in rec and rec[key] is not None and not isinstance(rec[key], str):
            problems.append(
                Problem(lineno, "bad field", f"{key!r} is {type(rec[key]).__name__}, not text")
            )
    task = rec.get("task", "report")
    if task not in KNOWN_TASKS:
        problems.append(
            Problem(lineno, "bad field", f"unknown task {task!r}; known: {KNOWN_TASKS}")
        )
    if task == "cxr_box" and (why := box_field_problem(rec.get("box"))):
        problems.append(Problem(lineno, "bad box", why))
    pred = rec.get("prediction")
    if (
        not allow_empty
        and "prediction" in rec
        and (pred is None or (isinstance(pred, str) and not pred.strip()))
    ):
        problems.append(Problem(lineno, "empty prediction", "the prediction is empty"))
    volume = rec.get("volume")
    if ground_truth is not None and isinstance(volume, str) and volume:
        if volume_key(volume) not in ground_truth:
            problems.append(
                Problem(
                    lineno,
                    "unknown volume",
                    f"volume {volume!r} is not in the --data ground truth "
                    f"({len(ground_truth)} volumes)",
                )
            )
    return problems


def box_field_problem(box: object) -> str | None:
    """Why a ``cxr_box`` line's ``box`` cannot be used (None when it can)."""
    if box is None:
        return "a cxr_box line needs 'box': [x_min, y_min, x_max, y_max] (pixels)"
    if (
        not isinstance(box, list)
        or len(box) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
        or not all(math.isfinite(v) for v in box)
    ):
        return f"'box' must be 4 numbers [x_min, y_min, x_max, y_max], got {box!r}"
    if box[2] <= box[0] or box[3] <= box[1]:
        return f"box {box} has no area (x_max <= x_min or y_max <= y_min)"
    return None


def line_key(rec: dict) -> tuple:
    """What makes a line one sample: (volume, task, region, question[, box])."""
    key = tuple(str(rec.get(k) or "") for k in ("volume", "task", "region", "question"))
    box = rec.get("box")
    return key + (tuple(float(v) for v in box),) if isinstance(box, list) else key


def read_predictions(
    path: str | Path,
    ground_truth: dict[str, dict] | None = None,
    allow_empty: bool = False,
    check: LineCheck | None = None,
) -> PredictionsReport:
    """Read a predictions JSONL and check every line (see the module docstring).

    Args:
        path: The JSONL file.
        ground_truth: volume -> truth record (``--data``); volumes are checked against it.
        allow_empty: An empty prediction is not a problem (it is scored as empty text).
        check: further checks of each record that passed the format checks.

    Returns:
        The report: valid rows (with defaults filled in) and every problem found.

    Raises:
        PredictionsError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise PredictionsError(f"{path}: no such file")
    report = PredictionsReport(path=path)
    seen: dict[tuple, int] = {}
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                report.num_lines += 1
                report.problems.append(
                    Problem(lineno, "encoding", f"not UTF-8 (byte {e.start}: {e.reason})")
                )
                continue
            if not line.strip():
                continue
            report.num_lines += 1
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                report.problems.append(Problem(lineno, "json", f"not valid JSON ({e.msg})"))
                continue
            if not isinstance(rec, dict):
                report.problems.append(Problem(lineno, "json", "not a JSON object"))
                continue
            problems = _check(rec, lineno, ground_truth, allow_empty)
            if check is not None and not problems:
                problems = [Problem(lineno, kind, why) for kind, why in check(rec)]
            key = None
            if rec.get("volume") and not any(p.kind == "bad box" for p in problems):
                key = line_key(rec)
                if key in seen:
                    problems.append(
                        Problem(
                            lineno,
                            "duplicate",
                            f"same (volume, task, region, question) as line {seen[key]}",
                        )
                    )
                else:
                    seen[key] = lineno
            if problems:
                report.problems.extend(problems)
                continue
            rec.setdefault("task", "report")
            rec["region"] = rec.get("region") or WHOLE_SCAN
            rec["volume"] = rec.get("volume") or ""
            rec["prediction"] = rec.get("prediction") or ""
            rec["reference"] = rec.get("reference") or ""
            rec["line"] = lineno
            report.rows.append(rec)
    return report


def load_predictions(
    path: str | Path,
    ground_truth: dict[str, dict] | None = None,
    skip_invalid: bool = False,
    allow_empty: bool = True,
) -> list[dict]:
    """The valid prediction records of a file.

    Args:
        path: JSONL file (see the module docstring).
        ground_truth: volume -> truth record; volumes are checked against it when given.
        skip_invalid: Leave bad lines out instead of raising.
        allow_empty: Keep lines whose prediction is empty (scored as empty text) instead of
            counting them as problems.

    Returns:
        The records, in file order.

    Raises:
        PredictionsError: missing file, any problem (unless ``skip_invalid``), or no valid
            line at all; the message names the file and each bad line.
    """
    report = read_predictions(path, ground_truth, allow_empty=allow_empty)
    if report.problems and not skip_invalid:
        raise PredictionsError(report.summary())
    if not report.rows:
        raise PredictionsError(f"{report.path}: no valid prediction lines")
    return report.rows
