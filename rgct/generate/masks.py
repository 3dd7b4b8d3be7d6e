"""Where generation's region masks come from: the dataset, the segmenter, or a folder.

``rgct generate --masks dataset`` (default) reads the dataset's own masks (the RadGenome
layout; a DeepLesion lesion's box). ``--masks predicted`` segments each volume once with the checkpoint's segmenter
(:mod:`rgct.model.segmenter`) and takes the mask a sample names (its anatomy leaf, then its
parents, then its region). ``--masks DIR`` reads ``DIR/seg_<volume>/<name>.nii.gz`` (what
``rgct segment`` and ``rgct masks from-totalsegmentator`` write). A sample whose mask is missing
or empty from a predicted or folder source is skipped with a warning naming it, never given a
whole-volume mask; whole-scan samples keep the all-ones mask. Every output line records its
``mask_source``. Volumes are read from the dataset folder by name: its RadGenome layout, or a
RAD-ChestCT folder's ``.npz`` files (which come with no masks of their own).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rgct.config import DataConfig
from rgct.constants import OTHERS, WHOLE_SCAN
from rgct.data.io import Volume, load_mask, load_volume
from rgct.data.layout import anatomy_parts, strip_suffix, volume_path
from rgct.data.source_report import detect_layout
from rgct.data.transforms import preprocess

logger = logging.getLogger(__name__)

DATASET = "dataset"
PREDICTED = "predicted"


class MaskUnavailable(LookupError):
    """The source has no (non-empty) mask for a sample; the message says which."""


def candidate_names(anatomy: str | None, region: str) -> list[str]:
    """Mask names to try for a sample, most specific first: the anatomy path's leaf and its
    parents, then the region. Empty for whole-scan samples (their mask is all ones)."""
    parts = anatomy_parts(anatomy)
    names = list(reversed(parts)) + [region]
    out = []
    for n in names:
        if n and n not in out and n not in (WHOLE_SCAN, OTHERS):
            out.append(n)
    return out


class MaskProvider:
    """Region masks on the model grid for (volume, anatomy, region), cached per volume.

    Args:
        source: ``"predicted"`` or a folder of ``seg_<volume>/<name>.nii.gz`` files.
        data_cfg: the model's data settings (preprocessing to the model grid).
        data_root: the dataset (to find each volume's CT): RadGenome or RAD-ChestCT layout.
        segmenter: ``(Segmenter, meta)`` for ``"predicted"``.
    """

    def __init__(
        self,
        source: str | Path,
        data_cfg: DataConfig,
        data_root: str | Path,
        segmenter: tuple[Any, dict] | None = None,
    ) -> None:
        self.source = str(source)
        self.data_cfg = data_cfg
        self.data_root = Path(data_root)
        self.layout = detect_layout(data_root)
        self._npz: dict[str, Path] | None = None
        self.segmenter = segmenter
        if self.source == PREDICTED and segmenter is None:
            raise ValueError(
                "--masks predicted needs a checkpoint with a segmenter (segmenter.safetensors)"
            )
        if self.source != PREDICTED and not Path(self.source).is_dir():
            raise FileNotFoundError(f"--masks {self.source}: no such folder")
        self._volume: str | None = None
        self._masks: dict[str, torch.Tensor] = {}
        self.findings: list[dict] = []
        """The current volume's segmenter finding components (``predicted`` only)."""
        self.warnings: list[str] = []
        self.skipped: list[str] = []
        """Keys of units left out since the last flush (the runner lists them beside the output)."""

    @property
    def label(self) -> str:
        """What output lines record as their ``mask_source``."""
        return PREDICTED if self.source == PREDICTED else f"folder:{Path(self.source).name}"

    def _read_volume(self, volume: str) -> Volume:
        if self.layout == "rad-chestct":
            from rgct.data.radchestct import find_npz, load_radchest_volume

            self._npz = find_npz(self.data_root) if self._npz is None else self._npz
            return load_radchest_volume(self.data_root, volume, self._npz)
        return load_volume(volume_path(self.data_root, volume))

    def _load(self, volume: str) -> None:
        if self._volume == volume:
            return
        vol = self._read_volume(volume)
        if self.source == PREDICTED:
            from rgct.generate.segment import segment_volume

            model, meta = self.segmenter
            seg = segment_volume(model, meta, vol)
            arrays, findings = seg.masks, seg.findings
        else:
            folder = Path(self.source) / f"seg_{strip_suffix(volume)}"
            if not folder.is_dir():
                raise MaskUnavailable(
                    f"{volume}: no mask folder {folder.name} in {self.label}, sample skipped"
                )
            arrays = {
                p.name[: -len(".nii.gz")]: load_mask(p, vol)
                for p in sorted(folder.glob("*.nii.gz"))
            }
            findings = []  # a folder of masks says nothing about findings
        arrays = {k: v for k, v in arrays.items() if np.asarray(v).any()}
        _, tensors = preprocess(vol, arrays, self.data_cfg)
        self._volume, self._masks, self.findings = volume, tensors, findings

    def volume(self, volume: str) -> tuple[dict[str, torch.Tensor], list[dict]]:
        """A volume's non-empty masks on the model grid (name -> (1, D, H, W)) and, for a
        ``predicted`` source, the segmenter's finding components (loaded once per volume)."""
        self._load(volume)
        return self._masks, self.findings

    def mask(self, volume: str, anatomy: str | None, region: str) -> torch.Tensor | None:
        """(1, D, H, W) mask on the model grid; None for a whole-scan sample (all ones).

        Raises :class:`MaskUnavailable` when the source has no mask for it."""
        names = candidate_names(anatomy, region)
        if not names:
            return None
        self._load(volume)
        for n in names:
            if n in self._masks:
                return self._masks[n]
        raise MaskUnavailable(f"{volume} {names[0]}: no mask from {self.label}, sample skipped")


def build_mask_provider(
    source: str, checkpoint: str | Path, cfg: Any, data_root: str | Path, device: Any = "cpu"
) -> MaskProvider | None:
    """None for ``dataset``; else a provider (``predicted`` loads the checkpoint's segmenter)."""
    if source == DATASET:
        return None
    segmenter = None
    if source == PREDICTED:
        from rgct.model.segmenter import WEIGHTS_FILE, load_segmenter

        if not (Path(checkpoint) / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(
                f"--masks predicted: {checkpoint} has no {WEIGHTS_FILE} (a segmenter)"
            )
        segmenter = load_segmenter(checkpoint, device=device)
    return MaskProvider(source, cfg.data, data_root, segmenter)
