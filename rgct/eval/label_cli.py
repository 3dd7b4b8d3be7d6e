"""``rgct label``: add one 0/1 column per CT-RATE label to a CSV of report texts.

Example::

    rgct label reports.csv --column report --out reports_labelled.csv
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from rgct.constants import CT_RATE_LABELS
from rgct.eval.labeler import CTRateLabeler
from rgct.files import atomic_path

log = logging.getLogger(__name__)


class LabelCSVError(ValueError):
    """The input CSV cannot be labelled (missing file or column)."""


def label_csv(
    in_path: str | Path, column: str, out_path: str | Path, labeler: CTRateLabeler | None = None
) -> pd.DataFrame:
    """Label the texts of one CSV column and write the rows back with 18 label columns.

    Existing columns named like a label are overwritten. The output is written atomically.

    Args:
        in_path: Input CSV.
        column: Column holding the report text (empty cells give all zeros).
        out_path: Output CSV.
        labeler: Labeler to use; a default :class:`CTRateLabeler` if None.

    Returns:
        The written table.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    if not in_path.is_file():
        raise LabelCSVError(f"{in_path}: no such file")
    df = pd.read_csv(in_path, dtype=str, keep_default_na=False)
    if column not in df.columns:
        raise LabelCSVError(f"{in_path}: no column {column!r}; columns present: {list(df.columns)}")
    lab = labeler or CTRateLabeler()
    labels = [lab.label_text(t) for t in df[column]]
    for name in CT_RATE_LABELS:
        df[name] = [row[name] for row in labels]
    with atomic_path(out_path) as tmp:
        df.to_csv(tmp, index=False)
    return df


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="CSV with a column of report texts")
    parser.add_argument("--column", default="report", help="column holding the report text")
    parser.add_argument("--out", required=True, help="output CSV (input rows + 18 label columns)")
    parser.add_argument(
        "--hedges-negative", action="store_true", help="read 'possible X' as negative"
    )
    parser.add_argument(
        "--rule-out-negative", action="store_true", help="read 'X cannot be excluded' as negative"
    )


def run(args: argparse.Namespace) -> int:
    labeler = CTRateLabeler(
        hedges_positive=not args.hedges_negative, rule_out_positive=not args.rule_out_negative
    )
    try:
        df = label_csv(args.input, args.column, args.out, labeler)
    except LabelCSVError as e:
        log.error("%s", e)
        return 2
    counts = df[list(CT_RATE_LABELS)].sum()
    print(f"labelled {len(df)} rows -> {args.out}")
    for name in CT_RATE_LABELS:
        print(f"  {name:36s} {int(counts[name])}")
    return 0
