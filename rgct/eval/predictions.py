"""Reading the predictions JSONL of ``rgct generate`` and a dataset's ``ground_truth.jsonl``."""

from __future__ import annotations

from pathlib import Path

from rgct.constants import TASKS, WHOLE_SCAN
from rgct.eval.grounding import volume_key
from rgct.jsonl import iter_jsonl

GROUND_TRUTH_FILE = "ground_truth.jsonl"


class PredictionsError(ValueError):
    """A predictions or ground-truth file is missing or malformed."""


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise PredictionsError(f"{path}: no such file")
    return list(iter_jsonl(path, PredictionsError))


def load_predictions(path: str | Path) -> list[dict]:
    """Read prediction lines; fill defaults for the bare ``prediction``/``reference`` form.

    Args:
        path: JSONL file, one object per line with at least ``prediction`` and ``reference``;
            ``task`` defaults to "report", ``region`` to "whole scan", ``volume`` to "".

    Returns:
        The records, in file order.

    Raises:
        PredictionsError: missing file, a line that is not a JSON object, a missing field or an
            unknown task (the message names the file and the line number).
    """
    path = Path(path)
    out = []
    for lineno, rec in _read_jsonl(path):
        missing = [k for k in ("prediction", "reference") if k not in rec]
        if missing:
            raise PredictionsError(f"{path}: line {lineno} lacks field(s) {missing}")
        rec.setdefault("task", "report")
        rec.setdefault("region", WHOLE_SCAN)
        rec.setdefault("volume", "")
        if rec["task"] not in TASKS:
            raise PredictionsError(
                f"{path}: line {lineno} has unknown task {rec['task']!r}; known: {TASKS}"
            )
        rec["prediction"] = "" if rec["prediction"] is None else str(rec["prediction"])
        rec["reference"] = "" if rec["reference"] is None else str(rec["reference"])
        out.append(rec)
    if not out:
        raise PredictionsError(f"{path}: no prediction lines")
    return out


def load_ground_truth(data_dir: str | Path) -> dict[str, dict] | None:
    """volume -> ground-truth record from ``DIR/ground_truth.jsonl`` (or under
    ``radgenome_files/``), all splits; None when the dataset has no such file.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise PredictionsError(f"{root}: data folder does not exist")
    for path in (root / GROUND_TRUTH_FILE, root / "radgenome_files" / GROUND_TRUTH_FILE):
        if path.is_file():
            out = {}
            for lineno, rec in _read_jsonl(path):
                if "volume" not in rec:
                    raise PredictionsError(f"{path}: line {lineno} lacks 'volume'")
                out[volume_key(rec["volume"])] = rec
            return out
    return None
