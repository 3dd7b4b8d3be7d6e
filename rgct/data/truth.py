"""Reading a dataset's ``ground_truth.jsonl`` (phantom truth): the one reader in rgct.

``rgct synth`` writes one line per volume: ``{"volume", "split", "shape", "spacing_mm",
"findings": [{"kind", "label", "region", "anatomy", "side", "lobe", "size_mm", "size_text",
"center_voxel", "radius_vox"}], "normal_regions"}``. Real datasets have no such file; every
reader returns None for them and the features that need truth (dense finding maps,
grounding scores) say so.
"""

from __future__ import annotations

from pathlib import Path

from rgct.constants import SPLIT_ALIASES, WHOLE_SCAN
from rgct.data.io import DataError
from rgct.data.layout import strip_suffix
from rgct.jsonl import iter_jsonl

GROUND_TRUTH_FILE = "ground_truth.jsonl"


class GroundTruthError(DataError):
    """A ``ground_truth.jsonl`` that cannot be read (the message names file and line)."""


def ground_truth_path(root: str | Path) -> Path | None:
    """``ROOT/ground_truth.jsonl`` or ``ROOT/radgenome_files/ground_truth.jsonl``; None if neither."""
    root = Path(root)
    for path in (root / GROUND_TRUTH_FILE, root / "radgenome_files" / GROUND_TRUTH_FILE):
        if path.is_file():
            return path
    return None


def load_ground_truth(root: str | Path, split: str | None = None) -> dict[str, dict] | None:
    """volume name (no NIfTI suffix) -> its truth record; None when the dataset has none.

    Args:
        root: dataset folder.
        split: keep only this split's volumes (``train``/``valid``/``validation``); None = all.
    """
    root = Path(root)
    if not root.is_dir():
        raise GroundTruthError(f"{root}: data folder does not exist")
    path = ground_truth_path(root)
    if path is None:
        return None
    want = SPLIT_ALIASES.get(split, split) if split else None
    out: dict[str, dict] = {}
    for lineno, rec in iter_jsonl(path, GroundTruthError):
        if "volume" not in rec:
            raise GroundTruthError(f"{path}:{lineno}: line {lineno} lacks 'volume'")
        if want and SPLIT_ALIASES.get(rec.get("split", want), rec.get("split")) != want:
            continue
        out[strip_suffix(str(rec["volume"]))] = rec
    return out


def location_phrase(finding: dict) -> str | None:
    """Where a ground-truth finding is, in report words: its lobe ("right lung upper lobe"),
    else its side ("left") for a sided finding, else None."""
    if finding.get("lobe"):
        return str(finding["lobe"])
    if finding.get("side"):
        return str(finding["side"])
    return None


def finding_locations(
    record: dict | None, region: str, *, whole_scan: bool = False
) -> dict[str, str]:
    """CT-RATE label -> location phrase of the record's findings in ``region`` (phrases of
    several findings of one label joined with " and ", in the record's order).

    ``whole_scan`` (``model.scan_locations``): a whole-scan row places the findings of every
    region (a lung finding by its lobe, a pleural one by its side); without it a whole-scan row
    has no places."""
    if region == WHOLE_SCAN and not whole_scan:
        return {}
    out: dict[str, list[str]] = {}
    for f in (record or {}).get("findings", []):
        if region != WHOLE_SCAN and f.get("region") != region:
            continue
        phrase = location_phrase(f)
        if phrase and phrase not in out.setdefault(f["label"], []):
            out[f["label"]].append(phrase)
    return {label: " and ".join(p) for label, p in out.items() if p}
