"""Predictor: the one inference API (used by the app, `rgct generate` and scripts).

Examples::

    from rgct.inference import Predictor, default_checkpoint
    p = Predictor.from_checkpoint(default_checkpoint())
    p.region_report("ct.nii.gz", "seg_ct/lung.nii.gz", region="lung")
    p.report("ct.nii.gz", {"lung": "seg_ct/lung.nii.gz", "heart": "seg_ct/heart.nii.gz"})
    p.answer("ct.nii.gz", "Can nodule be identified in the lung?", mask="seg_ct/lung.nii.gz")

Volumes are paths (NIfTI, DICOM folder/zip, RAD-ChestCT .npz), :class:`rgct.data.io.Volume`
objects, or float arrays (D, H, W) in HU; masks are paths or bool / 0-1 arrays (D, H, W), or
None for the whole scan. Preprocessing is the training pipeline's deterministic part.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rgct.config import GenerationConfig, RGCTConfig
from rgct.constants import CT_RATE_LABELS, REGIONS, REPORT_PROMPTS, WHOLE_SCAN
from rgct.data.io import Volume, load_mask, load_volume
from rgct.data.transforms import preprocess
from rgct.model.checkpoint import load_checkpoint
from rgct.model.region_classifier import region_probabilities
from rgct.model.rgct_model import RGCTModel
from rgct.text import split_sentences

DEMO_MODEL_DIR = Path(__file__).parent / "assets" / "demo_model"


def default_checkpoint() -> Path:
    """The shipped demo model (trained on phantoms; see its README.md)."""
    if not (DEMO_MODEL_DIR / "rgct_config.yaml").is_file():
        raise FileNotFoundError(f"the shipped demo model is missing from {DEMO_MODEL_DIR}")
    return DEMO_MODEL_DIR


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is visible")
    return torch.device(device)


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; fp32 (no autocast) elsewhere: bf16 matmul crashes these CPUs."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Predictor:
    """A loaded model plus the preprocessing it was trained with."""

    def __init__(self, model: RGCTModel, cfg: RGCTConfig, device: torch.device) -> None:
        self.model = model
        self.cfg = cfg
        self.device = device
        self.regions: tuple[str, ...] = REGIONS

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "auto", merge_lora: bool = False
    ) -> Predictor:
        dev = pick_device(device)
        model, cfg = load_checkpoint(path, device=dev, merge_lora=merge_lora)
        return cls(model, cfg, dev)

    # -- inputs ----------------------------------------------------------------------------------
    def load(self, volume: Any) -> Volume:
        if isinstance(volume, Volume):
            return volume
        if isinstance(volume, np.ndarray):
            if volume.ndim != 3:
                raise ValueError(f"a volume array must be (D, H, W), got shape {volume.shape}")
            return Volume(
                array=volume.astype(np.float32),
                affine=np.eye(4),
                spacing=(1.0, 1.0, 1.0),
                source="array",
            )
        return load_volume(volume)

    def prepare(
        self, volume: Any, masks: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Volume + masks -> model tensors (1,1,D,H,W) and {name: (1,1,D,H,W)}; masks checked."""
        vol = self.load(volume)
        arrays = {
            name: (np.ones(vol.array.shape, bool) if m is None else load_mask(m, vol))
            for name, m in masks.items()
        }
        image, out = preprocess(vol, arrays, self.cfg.data)
        return image[None].to(self.device), {k: v[None].to(self.device) for k, v in out.items()}

    def _gen(self, **overrides: Any) -> GenerationConfig:
        return replace(self.cfg.generation, **{k: v for k, v in overrides.items() if v is not None})

    @torch.no_grad()
    def _run(
        self,
        image: torch.Tensor,
        masks: list[torch.Tensor],
        prompts: list[str],
        gen: GenerationConfig,
    ) -> list[str]:
        """One encoder pass for the volume, then batched generation over (mask, prompt) rows."""
        with autocast_for(self.device):
            grid = self.model.encode_image(image)
            out: list[str] = []
            for i in range(0, len(prompts), gen.batch_size):
                chunk = slice(i, i + gen.batch_size)
                m = torch.cat(masks[chunk])
                g = grid.expand(m.shape[0], *grid.shape[1:])
                out += self.model.generate_from_grid(g, m, prompts[chunk], gen, image=image)
        return out

    # -- public API ------------------------------------------------------------------------------
    @torch.no_grad()
    def detect(self, volume: Any, mask: Any = None) -> dict[str, float]:
        """The region classifier's probability of each CT-RATE label inside ``mask`` (whole scan
        if None). With ``model.evidence_prompt`` the labels at or above
        ``model.evidence_thresholds`` are what the language model is told it sees."""
        image, masks = self.prepare(volume, {"region": mask})
        with autocast_for(self.device):
            probs = region_probabilities(self.model, image, masks["region"])
        return dict(zip(CT_RATE_LABELS, probs[0].tolist()))

    def region_report(
        self,
        volume: Any,
        mask: Any,
        region: str | None = None,
        *,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
    ) -> str:
        """Findings for one region. ``region=None`` lets the mask alone say where to look."""
        prompt = (
            REPORT_PROMPTS["region_report"].format(region=region)
            if region
            else REPORT_PROMPTS["region_report_unnamed"]
        )
        image, masks = self.prepare(volume, {"region": mask})
        return self._run(
            image,
            [masks["region"]],
            [prompt],
            self._gen(max_new_tokens=max_new_tokens, num_beams=num_beams),
        )[0]

    def report(
        self,
        volume: Any,
        masks: dict[str, Any],
        *,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
    ) -> dict:
        """A whole report assembled region by region, each sentence tagged with its region.

        Returns ``{"text", "sentences": [{"region", "text"}], "regions": {region: text}}``.
        """
        if not masks:
            raise ValueError("report() needs at least one region mask")
        order = [r for r in REGIONS if r in masks] + [r for r in masks if r not in REGIONS]
        image, prepared = self.prepare(volume, {r: masks[r] for r in order})
        prompts = [REPORT_PROMPTS["region_report"].format(region=r) for r in order]
        texts = self._run(
            image,
            [prepared[r] for r in order],
            prompts,
            self._gen(max_new_tokens=max_new_tokens, num_beams=num_beams),
        )
        sentences = [
            {"region": r, "text": s} for r, t in zip(order, texts) for s in split_sentences(t)
        ]
        return {
            "text": " ".join(s["text"] for s in sentences),
            "sentences": sentences,
            "regions": dict(zip(order, texts)),
        }

    def answer(
        self,
        volume: Any,
        question: str,
        mask: Any = None,
        *,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
    ) -> str:
        """Answer a question about the volume (optionally about the masked region)."""
        if not question or not question.strip():
            raise ValueError("the question is empty")
        image, masks = self.prepare(volume, {WHOLE_SCAN: mask})
        gen = self._gen(
            max_new_tokens=max_new_tokens or min(self.cfg.generation.max_new_tokens, 32),
            num_beams=num_beams,
        )
        return self._run(image, [masks[WHOLE_SCAN]], [question.strip()], gen)[0]
