"""Reading JSON-lines files with errors that name the file and the line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def iter_jsonl(path: str | Path, error: type[Exception] = ValueError) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file.

    Raises ``error`` naming ``path:line`` for a line that is not a JSON object.
    """
    with Path(path).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}:{lineno}: line {lineno} is not valid JSON ({e.msg})") from e
            if not isinstance(rec, dict):
                raise error(f"{path}:{lineno}: line {lineno} is not a JSON object")
            yield lineno, rec
