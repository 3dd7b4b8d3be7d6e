"""A stand-in for ``rgct.inference.Predictor`` with the same interface and no model.

Its text is a deterministic function of its inputs (region name, mask voxel count, volume
shape, question, settings), so tests can check that the app wired the right inputs through.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from rgct.constants import REGIONS
from rgct.data import io as rio


def _array(volume: Any) -> np.ndarray:
    if isinstance(volume, rio.Volume):
        return volume.array
    if isinstance(volume, (str, Path)):
        return rio.load_volume(volume).array
    return np.asarray(volume, dtype=np.float32)


def _voxels(mask: Any, like: np.ndarray) -> int:
    if mask is None:
        return int(like.size)
    if isinstance(mask, (str, Path)):
        mask = rio.load_mask(mask, like=rio.Volume(like, np.eye(4), (1.0, 1.0, 1.0), "fake"))
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != like.shape:
        raise ValueError(f"mask shape {mask.shape} != volume shape {like.shape}")
    return int(mask.sum())


class FakePredictor:
    """Deterministic fake of :class:`rgct.inference.Predictor`.

    Args:
        delay: seconds each call sleeps (lets concurrency tests overlap calls).

    Attributes:
        calls: (method, region-or-question) tuples, in call order (thread-safe).
    """

    regions: tuple[str, ...] = REGIONS

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "auto", merge_lora: bool = False
    ) -> FakePredictor:
        return cls()

    def _log(self, method: str, key: str | None) -> None:
        with self._lock:
            self.calls.append((method, key))
        if self.delay:
            time.sleep(self.delay)

    def region_report(
        self,
        volume: Any,
        mask: Any,
        region: str | None = None,
        *,
        max_new_tokens: int = 64,
        num_beams: int = 1,
    ) -> str:
        """``'<region>: <n> voxels in <D>x<H>x<W> (tokens=<t>, beams=<b>).'``"""
        array = _array(volume)
        n = _voxels(mask, array)
        self._log("region_report", region)
        shape = "x".join(str(s) for s in array.shape)
        return f"{region or 'given region'}: {n} voxels in {shape} (tokens={max_new_tokens}, beams={num_beams})."

    def report(
        self, volume: Any, masks: dict[str, Any], *, max_new_tokens: int = 64, num_beams: int = 1
    ) -> dict:
        """One sentence per region, in :data:`REGIONS` order."""
        array = _array(volume)
        sentences = [
            {"region": r, "text": f"The {r} has {_voxels(masks[r], array)} voxels."}
            for r in REGIONS
            if r in masks
        ]
        self._log("report", ",".join(s["region"] for s in sentences))
        return {
            "text": " ".join(s["text"] for s in sentences),
            "sentences": sentences,
            "regions": {s["region"]: s["text"] for s in sentences},
        }

    def answer(
        self,
        volume: Any,
        question: str,
        mask: Any = None,
        *,
        max_new_tokens: int = 32,
        num_beams: int = 1,
    ) -> str:
        """``'Q=<question> | voxels=<n>'``"""
        array = _array(volume)
        n = _voxels(mask, array)
        self._log("answer", question)
        return f"Q={question} | voxels={n}"
