"""The sample index in columnar form: a few numpy arrays instead of millions of Python objects.

At the RadGenome-Chest CT release size (665k region sentences, 1.3M VQA rows) a list of
:class:`Sample` objects costs gigabytes, and every DataLoader worker copies the pages it
touches, because reading a Python object writes its reference count. :class:`SampleTable`
holds each text field as int32 codes into a :class:`StringPool` (distinct strings stored as one
UTF-8 byte buffer plus offsets) and the labels as an int8 matrix: forked workers read those
buffers without writing to them, so the pages stay shared.

It is a read-only sequence of :class:`Sample`: ``table[i]`` builds the record on demand.

Example::

    table = SampleTable.from_samples(samples)
    table[3].prompt, len(table), table.take(np.array([0, 0, 2])).volume_codes
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rgct.constants import CT_RATE_LABELS


@dataclass
class Sample:
    """One training/evaluation example, any task.

    Attributes:
        volume: volume name without suffix.
        task: one of rgct.constants.TASKS.
        prompt: the question or instruction.
        answer: the target text.
        region: the region named for the sample, or WHOLE_SCAN.
        anatomy: the row's '/' anatomy path, or None.
        mask_path: the mask file, None for an all-ones mask.
        image_path: the volume's NIfTI file.
        labels: 0/1 ints for findings inside ``region`` (the 18 CT-RATE labels in order; a
            radiograph's: its dataset's classes), or None.
    """

    volume: str
    task: str
    prompt: str
    answer: str
    region: str
    anatomy: str | None
    mask_path: str | None
    image_path: str
    labels: list[int] | None


TEXT_FIELDS = ("volume", "task", "prompt", "answer", "region", "anatomy", "mask_path", "image_path")
"""The :class:`Sample` fields stored as string codes (``anatomy`` and ``mask_path`` may be None)."""


class StringPool:
    """Distinct strings as one UTF-8 buffer (uint8) and their end offsets (int64).

    Args:
        strings: the distinct strings, in code order.
    """

    def __init__(self, strings: Sequence[str]) -> None:
        encoded = [s.encode("utf-8") for s in strings]
        self.data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self.ends = np.cumsum([len(b) for b in encoded], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, code: int) -> str:
        start = int(self.ends[code - 1]) if code > 0 else 0
        return self.data[start : int(self.ends[code])].tobytes().decode("utf-8")

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + self.ends.nbytes


def _encode(values: Sequence[str | None]) -> tuple[np.ndarray, StringPool]:
    """Dictionary-encode a column: int32 codes (-1 for None) and the pool of distinct values."""
    codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    return codes.astype(np.int32), StringPool([str(u) for u in uniques])


class SampleTable(Sequence):
    """A read-only, columnar sequence of :class:`Sample` records.

    Attributes:
        codes: field -> (N,) int32 codes into ``pools[field]`` (-1: None).
        pools: field -> :class:`StringPool` of that field's distinct values.
        labels: (N, L) int8 labels inside each sample's region (0 where unknown); L = 18 CT-RATE
            labels, or a radiograph dataset's classes.
        has_labels: (N,) bool, False where a sample's labels are unknown (None).
    """

    def __init__(
        self,
        codes: dict[str, np.ndarray],
        pools: dict[str, StringPool],
        labels: np.ndarray,
        has_labels: np.ndarray,
    ) -> None:
        self.codes = codes
        self.pools = pools
        self.labels = labels
        self.has_labels = has_labels

    # -- building ---------------------------------------------------------------------------------
    @classmethod
    def from_columns(
        cls,
        columns: dict[str, Sequence[str | None]],
        labels: Sequence[Sequence[int] | None],
        num_labels: int | None = None,
    ) -> SampleTable:
        """Build from one list per :data:`TEXT_FIELDS` field and one label list (or None) per row.

        ``num_labels``: width of the label matrix; default the rows' own length (every row the
        same), else the 18 CT-RATE labels (a radiograph dataset's rows hold its classes)."""
        n = len(labels)
        widths = {len(row) for row in labels if row is not None}
        if len(widths) > 1 or (num_labels is not None and widths - {num_labels}):
            raise ValueError(
                f"label rows of different lengths {sorted(widths)}"
                + (f" (expected {num_labels})" if num_labels is not None else "")
            )
        width = num_labels or (widths.pop() if widths else len(CT_RATE_LABELS))
        codes, pools = {}, {}
        for name in TEXT_FIELDS:
            values = columns[name]
            if len(values) != n:
                raise ValueError(f"column {name!r} has {len(values)} values for {n} rows")
            codes[name], pools[name] = _encode(values)
        matrix = np.zeros((n, width), dtype=np.int8)
        has = np.zeros(n, dtype=bool)
        for i, row in enumerate(labels):
            if row is not None:
                matrix[i] = row
                has[i] = True
        return cls(codes, pools, matrix, has)

    @classmethod
    def from_samples(cls, samples: Sequence[Sample]) -> SampleTable:
        """Build from :class:`Sample` records (a SampleTable is returned as it is)."""
        if isinstance(samples, SampleTable):
            return samples
        columns = {name: [getattr(s, name) for s in samples] for name in TEXT_FIELDS}
        return cls.from_columns(columns, [s.labels for s in samples])

    @classmethod
    def concat(cls, tables: Sequence[SampleTable]) -> SampleTable:
        """Rows of ``tables`` one after another (string pools merged)."""
        tables = [t for t in tables if len(t)]
        if not tables:
            return cls.from_columns({name: [] for name in TEXT_FIELDS}, [])
        if len(tables) == 1:
            return tables[0]
        codes, pools = {}, {}
        for name in TEXT_FIELDS:  # merge the distinct values, then remap each table's codes
            merged: dict[str, int] = {}
            parts = []
            for t in tables:
                pool = t.pools[name]
                remap = np.array(
                    [merged.setdefault(pool[k], len(merged)) for k in range(len(pool))] + [-1],
                    dtype=np.int32,
                )
                parts.append(remap[t.codes[name]])  # code -1 (None) picks the trailing -1
            codes[name], pools[name] = np.concatenate(parts), StringPool(list(merged))
        widths = sorted({t.labels.shape[1] for t in tables})
        if len(widths) > 1:
            raise ValueError(f"cannot join samples of different label vocabularies {widths}")
        labels = np.concatenate([t.labels for t in tables])
        has = np.concatenate([t.has_labels for t in tables])
        return cls(codes, pools, labels, has)

    def take(self, rows: np.ndarray) -> SampleTable:
        """The rows at ``rows`` (any order, repeats allowed); the string pools are shared."""
        rows = np.asarray(rows, dtype=np.int64)
        codes = {name: c[rows] for name, c in self.codes.items()}
        return SampleTable(codes, self.pools, self.labels[rows], self.has_labels[rows])

    # -- reading ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.has_labels)

    def text(self, name: str, i: int) -> str | None:
        """Field ``name`` of row ``i`` without building the whole record."""
        code = int(self.codes[name][i])
        return None if code < 0 else self.pools[name][code]

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        values = {name: self.text(name, i) for name in TEXT_FIELDS}
        labels = self.labels[i].tolist() if self.has_labels[i] else None
        return Sample(**values, labels=labels)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def has_finding(self) -> np.ndarray:
        """(N,) bool: the sample's region holds at least one labelled finding."""
        return self.has_labels & self.labels.any(axis=1)

    @property
    def nbytes(self) -> int:
        """Bytes held by the table's arrays and string pools."""
        arrays = sum(c.nbytes for c in self.codes.values()) + self.labels.nbytes
        return arrays + self.has_labels.nbytes + sum(p.nbytes for p in self.pools.values())
