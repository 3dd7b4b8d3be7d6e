"""A stand-in for ``rgct.inference.Predictor`` with the same interface and no model.

It implements the Predictor contract the app codes against (``segment``, ``check_scan``,
``report``, ``region_report``, ``answer``, ``chat``, ``detect``) by simple image rules, so
its output is a deterministic function of its inputs and tests can check what the app did
with it:

- regions: "lung" is lung-density voxels (-950 < HU < -500), split into the five lobes by side (larger x is the patient's right) and height;
  "heart" is soft tissue between the lungs. Nothing else is predicted (each missing region
  gets a "no mask predicted" warning only when the scan has no lungs at all).
- a lung finding: the soft-tissue voxels (HU > -300) inside the lung mask when they are a
  small part of it (a nodule, not noise), with its centre, box, lobes and side.
- answers to "where" questions place every finding in the left lung lower lobe on purpose,
  so that a report that says otherwise raises the app's disagreement warning.
- text longer than ``max_new_tokens`` words is cut and flagged ``truncated``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from rgct.constants import CT_RATE_LABELS, LUNG_LOBES, REGIONS, WHOLE_SCAN
from rgct.conversation import MaskNotFound, Resolution, take_turn
from rgct.data import io as rio

LOBES = LUNG_LOBES  # right upper, middle, lower; left upper, lower
NODULE_MAX_FRACTION = 0.1
"""Soft tissue filling more of the lung than this is noise, not a nodule."""


def _array(volume: Any) -> np.ndarray:
    if isinstance(volume, rio.Volume):
        return volume.array
    if isinstance(volume, (str, Path)):
        return rio.load_volume(volume).array
    return np.asarray(volume, dtype=np.float32)


def _spacing(volume: Any) -> tuple[float, float, float]:
    return tuple(volume.spacing) if isinstance(volume, rio.Volume) else (1.0, 1.0, 1.0)


def _mask(mask: Any, like: np.ndarray) -> np.ndarray | None:
    if mask is None:
        return None
    if isinstance(mask, (str, Path)):
        mask = rio.load_mask(mask, like=rio.Volume(like, np.eye(4), (1.0, 1.0, 1.0), "fake"))
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != like.shape:
        raise ValueError(f"mask shape {mask.shape} != volume shape {like.shape}")
    return mask


def _voxels(mask: Any, like: np.ndarray) -> int:
    m = _mask(mask, like)
    return int(like.size) if m is None else int(m.sum())


def _fill_rows(mask: np.ndarray) -> np.ndarray:
    """Fill each row of each slice between its first and last set voxel (holes closed)."""
    idx = np.arange(mask.shape[-1])
    has = mask.any(axis=-1)
    first = np.where(has, mask.argmax(axis=-1), 0)
    last = np.where(has, mask.shape[-1] - 1 - mask[..., ::-1].argmax(axis=-1), -1)
    return (idx >= first[..., None]) & (idx <= last[..., None])


def _lobes(lung: np.ndarray) -> dict[str, np.ndarray]:
    """Five lobes: side by x (x >= W/2 is the patient's right), level by thirds/halves in z."""
    d, _, w = lung.shape
    z = np.arange(d)[:, None, None]
    x = np.arange(w)[None, None, :]
    right, left = lung & (x >= w // 2), lung & (x < w // 2)
    return {
        LOBES[0]: right & (z >= 2 * d // 3),
        LOBES[1]: right & (z >= d // 3) & (z < 2 * d // 3),
        LOBES[2]: right & (z < d // 3),
        LOBES[3]: left & (z >= d // 2),
        LOBES[4]: left & (z < d // 2),
    }


class FakePredictor:
    """Deterministic fake of :class:`rgct.inference.Predictor`.

    Args:
        delay: seconds each call sleeps (lets concurrency tests overlap calls).

    Attributes:
        calls: (method, region-or-question) tuples, in call order (thread-safe).
        histories: the ``history`` each ``chat`` call received.
    """

    regions: tuple[str, ...] = REGIONS

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[tuple[str, str | None]] = []
        self.mask_sources: list[str | None] = []
        """The ``mask_source`` each report call was given (where the app's masks came from)."""
        self.histories: list[list[tuple[str, str]]] = []
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

    @staticmethod
    def _cut(text: str, max_new_tokens: int | None) -> tuple[str, bool]:
        words = text.split()
        if max_new_tokens is not None and len(words) > max_new_tokens:
            return " ".join(words[:max_new_tokens]), True
        return text, False

    # --- masks -----------------------------------------------------------------------------------
    def segment(self, volume: Any) -> dict:
        array = _array(volume)
        self._log("segment", None)
        lung = (array > -950) & (array < -500)
        masks: dict[str, np.ndarray] = {}
        warnings: list[str] = []
        if lung.sum() < 50:
            warnings += [f"{r}: no mask predicted, region skipped" for r in ("lung", "heart")]
            return {"masks": masks, "warnings": warnings}
        masks["lung"] = lung
        heart = (array > -300) & (array < 200) & _fill_rows(lung) & ~lung
        if heart.any():
            masks["heart"] = heart
        else:
            warnings.append("heart: no mask predicted, region skipped")
        masks.update({k: v for k, v in _lobes(lung).items() if v.any()})
        return {"masks": masks, "warnings": warnings}

    def forget(self, volume: Any) -> int:
        self._log("forget", None)
        return 0

    def check_scan(self, volume: Any) -> list[str]:
        array = _array(volume)
        spacing = _spacing(volume)
        out = []
        if array.shape[0] < 16:
            out.append(f"Only {array.shape[0]} slices: a chest CT has many more.")
        fov = array.shape[2] * spacing[2]
        if fov < 150:
            out.append(f"Field of view {fov:.0f} mm is too small for a chest CT.")
        if ((array > -950) & (array < -500)).sum() < 50:
            out.append("No lungs found: this does not look like a chest CT.")
        return out

    # --- findings --------------------------------------------------------------------------------
    def _findings(self, array: np.ndarray, region: str | None, mask: np.ndarray | None) -> list:
        if region != "lung" or mask is None or not mask.any():
            return []
        blob = mask & (array > -300)
        if not blob.any() or blob.sum() > NODULE_MAX_FRACTION * mask.sum():
            return []
        idx = np.argwhere(blob)
        centre = [int(v) for v in np.round(idx.mean(axis=0))]
        lo, hi = idx.min(axis=0), idx.max(axis=0)
        lobes = [n for n, m in _lobes(mask).items() if m[tuple(centre)]] or [
            n for n, m in _lobes(mask).items() if (m & blob).any()
        ][:1]
        size = int(hi[2] - lo[2] + 1)
        return [
            {
                "label": "Lung nodule",
                "lobes": lobes,
                "side": lobes[0].split()[0] if lobes else None,
                "center_voxel": centre,
                "box_voxel": [int(v) for v in (*lo, *hi)],
                "box_mm": [float(v) for v in (*lo, *hi)],
                "probability": 0.9,
                "mask": blob,
                "size": size,
            }
        ]

    def _region_result(self, array, region, mask, max_new_tokens) -> tuple[list, list, bool]:
        n = int(mask.sum()) if mask is not None else int(array.size)
        sentences = [
            {
                "region": region,
                "text": f"The {region} has {n} voxels.",
                "labels": [],
                "finding": None,
            }
        ]
        found = self._findings(array, region, mask)
        for f in found:
            where = f["lobes"][0] if f["lobes"] else "lung"
            sentences.append(
                {
                    "region": region,
                    "text": f"A {f['size']} mm nodule is seen in the {where}.",
                    "labels": ["Lung nodule"],
                    "finding": {k: v for k, v in f.items() if k not in ("mask", "size")},
                }
            )
        cut = False
        for s in sentences:
            s["text"], c = self._cut(s["text"], max_new_tokens)
            cut |= c
        return sentences, [{k: v for k, v in f.items() if k != "size"} for f in found], cut

    # --- text ------------------------------------------------------------------------------------
    def region_report(
        self,
        volume: Any,
        mask: Any = None,
        region: str | None = None,
        *,
        max_new_tokens: int | None = 64,
        num_beams: int | None = 1,
        mask_source: str | None = None,
    ) -> dict:
        """``'<region>: <n> voxels in <D>x<H>x<W> (tokens=<t>, beams=<b>).'`` (+ findings)."""
        array = _array(volume)
        self.mask_sources.append(mask_source)
        source = "uploaded"
        m = _mask(mask, array)
        if m is None:
            m = self.segment(volume)["masks"].get(region)
            source = "predicted"
            if m is None:
                return {
                    "text": "", "sentences": [], "regions": {}, "findings": [],
                    "mask_source": source, "truncated": False,
                    "warnings": [f"{region}: no mask predicted, region skipped"],
                }  # fmt: skip
        self._log("region_report", region)
        shape = "x".join(str(s) for s in array.shape)
        head = (
            f"{region or 'given region'}: {int(m.sum())} voxels in {shape} "
            f"(tokens={max_new_tokens}, beams={num_beams})."
        )
        head, cut = self._cut(head, max_new_tokens)
        sentences, findings, cut2 = self._region_result(array, region, m, max_new_tokens)
        sentences[0]["text"] = head
        text = " ".join(s["text"] for s in sentences)
        return {
            "text": text,
            "sentences": sentences,
            "regions": {region or "given region": text},
            "findings": findings,
            "mask_source": source,
            "warnings": [],
            "truncated": cut or cut2,
        }

    def report(
        self,
        volume: Any,
        masks: dict[str, Any] | None = None,
        *,
        max_new_tokens: int | None = 64,
        num_beams: int | None = 1,
        mask_source: str | None = None,
    ) -> dict:
        """One sentence per region, in :data:`REGIONS` order, plus a sentence per finding."""
        array = _array(volume)
        self.mask_sources.append(mask_source)
        source, warnings = "dataset", []
        if masks is None:
            seg = self.segment(volume)
            masks, warnings, source = seg["masks"], list(seg["warnings"]), "predicted"
        sentences, findings, cut = [], [], False
        for r in REGIONS:
            if r not in masks:
                continue
            s, f, c = self._region_result(array, r, _mask(masks[r], array), max_new_tokens)
            sentences += s
            findings += f
            cut |= c
        self._log("report", ",".join(dict.fromkeys(s["region"] for s in sentences)))
        regions: dict[str, str] = {}
        for s in sentences:
            regions[s["region"]] = (regions.get(s["region"], "") + " " + s["text"]).strip()
        return {
            "text": " ".join(s["text"] for s in sentences),
            "sentences": sentences,
            "regions": regions,
            "findings": findings,
            "mask_source": source,
            "warnings": warnings,
            "truncated": cut,
        }

    def answer(
        self,
        volume: Any,
        question: str,
        mask: Any = None,
        *,
        max_new_tokens: int | None = 32,
        num_beams: int | None = 1,
    ) -> dict:
        """``'Q=<question> | voxels=<n>'``, with ``' | nodule'`` when an abnormality question's
        mask holds the lung finding; "where" questions get the deliberately wrong left lower
        lobe."""
        array = _array(volume)
        m = _mask(mask, array)
        n = _voxels(m, array)
        self._log("answer", question)
        if question.lower().startswith("where"):
            text = "The nodule is located in the left lung lower lobe."
        else:
            text = f"Q={question} | voxels={n}"
            if "abnormalities" in question and m is not None and self._findings(array, "lung", m):
                text += " | nodule"
        text, cut = self._cut(text, max_new_tokens)
        return {
            "text": text,
            "region": None if mask is None else "given region",
            "mask_source": WHOLE_SCAN if mask is None else "given",
            "truncated": cut,
            "warnings": [],
        }

    def chat(
        self,
        volume: Any,
        question: str,
        history: list | None = None,
        mask: Any = None,
        region: str | None = None,
        *,
        masks: dict[str, Any] | None = None,
        mask_sources: dict[str, str] | None = None,
        max_new_tokens: int | None = 32,
        num_beams: int | None = 1,
    ) -> dict:
        """:meth:`answer` behind the real conversation logic (:func:`rgct.conversation.take_turn`);
        an answer after earlier turns ends with ``' | turn=<k>'``. Masks: given, else
        :meth:`segment`'s."""
        array = _array(volume)
        given = {n: _mask(m, array) for n, m in (masks or {}).items()}
        sources = {n: (mask_sources or {}).get(n, "given") for n in given}
        if mask is not None:
            region = region if region and region != WHOLE_SCAN else "given region"
            given[region], sources[region] = _mask(mask, array), "given"
        with self._lock:
            self.histories.append(list(history or []))

        def mask_of(name: str) -> tuple[np.ndarray | None, str]:
            if name == WHOLE_SCAN:
                return None, WHOLE_SCAN
            if name in given:
                return given[name], sources[name]
            found = self.segment(volume)["masks"].get(name)
            if found is None:
                raise MaskNotFound(f"There is no {name} mask for this scan.")
            return found, "predicted"

        def ask(res: Resolution) -> dict:
            m, source = mask_of(res.region)
            out = self.answer(
                array, res.question, m, max_new_tokens=max_new_tokens, num_beams=num_beams
            )
            text = out["text"] + (f" | turn={len(history) + 1}" if history else "")
            return {"answer": text, "mask_source": source, "truncated": out["truncated"]}

        def detections(where: str | None) -> list[dict]:
            lung = given.get("lung")
            if lung is None:
                lung = self.segment(volume)["masks"].get("lung")
            found = self._findings(array, "lung", lung)
            return [{**f, "region": "lung"} for f in found if where in (None, "lung")]

        return take_turn(
            question, history, ask=ask, region=region, detections=detections, names=list(given)
        )

    def detect(self, volume: Any, mask: Any = None) -> dict[str, float]:
        """Probabilities from the mask's voxel count; "Lung nodule" high over a nodule."""
        array = _array(volume)
        m = _mask(mask, array)
        n = int(array.size) if m is None else int(m.sum())
        self._log("detect", None)
        probs = {label: ((n * (i + 1)) % 89) / 100 for i, label in enumerate(CT_RATE_LABELS)}
        if m is not None and self._findings(array, "lung", m):
            probs["Lung nodule"] = 0.9
        return probs
