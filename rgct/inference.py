"""Predictor: the one inference API (used by the app, `rgct generate` and scripts).

Examples::

    from rgct.inference import Predictor, default_checkpoint
    p = Predictor.from_checkpoint(default_checkpoint())
    p.region_report("ct.nii.gz", "seg_ct/lung.nii.gz", region="lung")
    p.report("ct.nii.gz", {"lung": "seg_ct/lung.nii.gz", "heart": "seg_ct/heart.nii.gz"})
    p.answer("ct.nii.gz", "Can nodule be identified in the lung?", mask="seg_ct/lung.nii.gz")
    turn = p.chat("ct.nii.gz", "What are the abnormalities in the lung?", region="lung")
    turn = p.chat("ct.nii.gz", "How big is it?", turn["history"])  # resolved, see rgct.conversation

Volumes are paths (NIfTI, DICOM folder/zip, RAD-ChestCT .npz), :class:`rgct.data.io.Volume`
objects, or float arrays (D, H, W) in HU; masks are paths or bool / 0-1 arrays (D, H, W), or
None for the whole scan. Preprocessing is the training pipeline's deterministic part.

A chest-radiograph checkpoint (``data.modality: cxr``; ``predictor.modality == "cxr"``) answers
through :meth:`Predictor.cxr_ask` and :meth:`Predictor.cxr_report` (:mod:`rgct.inference_cxr`)::

    p = Predictor.from_checkpoint("rgct/assets/cxr_demo_model")
    p.cxr_ask("film.dicom", "What is in the given box?", box=(120, 300, 260, 420))
    p.cxr_report("film.png")  # {"text", "sentences": [{"text", "label", "side", "zone"}]}

Each refuses the other modality's input by name (a CT volume to a radiograph checkpoint and the
reverse).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rgct.config import GenerationConfig, RGCTConfig
from rgct.constants import (
    LUNG_LOBES,
    LUNG_SIDES,
    REGIONS,
    REPORT_PROMPTS,
    WHOLE_SCAN,
)
from rgct.conversation import MaskNotFound, Resolution, take_turn
from rgct.data.io import Volume, load_mask, load_volume
from rgct.data.transforms import preprocess
from rgct.generate.masks import PREDICTED
from rgct.model.checkpoint import load_checkpoint
from rgct.model.lobe_head import has_lobe_head, load_lobe_head
from rgct.model.region_classifier import region_probabilities
from rgct.model.rgct_model import RGCTModel
from rgct.model.segmenter import WEIGHTS_FILE as SEGMENTER_FILE
from rgct.model.segmenter import load_segmenter
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

    def __init__(
        self,
        model: RGCTModel,
        cfg: RGCTConfig,
        device: torch.device,
        segmenter: tuple[Any, dict] | None = None,
        lobe_head: Any = None,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.device = device
        self.regions: tuple[str, ...] = REGIONS
        self.segmenter = segmenter
        """(Segmenter, meta) when the checkpoint has one: masks-free inference and grounding."""
        self.lobe_head = lobe_head
        """The checkpoint's lobe head (:mod:`rgct.model.lobe_head`): which lobe holds a label."""
        self._segmentations: OrderedDict[tuple[int, str], Any] = OrderedDict()
        """The last few volumes' segmentations (a report, its details and the app's viewer ask
        for the same volume's masks several times)."""

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "auto",
        merge_lora: bool = False,
        segmenter: str | Path | None = None,
    ) -> Predictor:
        """Load a checkpoint folder; its ``segmenter.safetensors`` (or the folder ``segmenter``)
        gives the predictor its own region masks."""
        dev = pick_device(device)
        model, cfg = load_checkpoint(path, device=dev, merge_lora=merge_lora)
        seg_dir = Path(segmenter) if segmenter is not None else Path(path)
        seg = None
        if segmenter is not None or (seg_dir / SEGMENTER_FILE).is_file():
            seg = load_segmenter(seg_dir, device=dev)
        head = load_lobe_head(path, dev)[0] if has_lobe_head(path) else None
        return cls(model, cfg, dev, seg, head)

    @property
    def modality(self) -> str:
        """'ct' (CT volumes) or 'cxr' (chest radiographs): what the checkpoint reads."""
        return self.cfg.data.modality

    def _require(self, modality: str, given: str) -> None:
        """Refuse a method of the other modality, naming the checkpoint's and the input's."""
        if self.modality != modality:
            kinds = {"ct": "CT volumes", "cxr": "chest radiographs"}
            use = "cxr_ask / cxr_report" if self.modality == "cxr" else "a radiograph checkpoint"
            raise ValueError(
                f"this checkpoint reads {kinds[self.modality]} (data.modality={self.modality}); "
                f"got {given}: use {use}"
            )

    def cxr_ask(
        self,
        image: Any,
        question: str,
        box: tuple[float, float, float, float] | None = None,
        generation: GenerationConfig | dict | None = None,
    ) -> str:
        """Answer a question about a radiograph (a :class:`rgct.data.cxr.Radiograph` or a
        DICOM/PNG path), about the ``(x_min, y_min, x_max, y_max)`` pixel box when given."""
        from rgct import inference_cxr

        self._require("cxr", inference_cxr.describe_input(image) or "a radiograph")
        return inference_cxr.ask(self, image, question, box, generation)

    def cxr_report(self, image: Any, generation: GenerationConfig | dict | None = None) -> dict:
        """The radiograph's findings report: ``{"text", "sentences": [{"text", "label",
        "side", "zone"}]}`` (see :func:`rgct.inference_cxr.report`)."""
        from rgct import inference_cxr

        self._require("cxr", inference_cxr.describe_input(image) or "a radiograph")
        return inference_cxr.report(self, image, generation)

    # -- inputs ----------------------------------------------------------------------------------
    def load(self, volume: Any) -> Volume:
        if self.modality != "ct" or not isinstance(volume, Volume):
            from rgct.inference_cxr import describe_input

            what = describe_input(volume)
            self._require("ct", what or "a CT volume")
            if what is not None and what.startswith("a radiograph"):
                raise ValueError(
                    f"this checkpoint reads CT volumes (data.modality=ct); got {what}: use a "
                    "chest-radiograph checkpoint (data.modality=cxr) and cxr_ask / cxr_report"
                )
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
        locations: list[dict[str, str] | None] | None = None,
        mask_source: str | None = None,
        detected: list[dict[str, bool] | None] | None = None,
    ) -> list[str]:
        """One encoder pass for the volume, then batched generation over (mask, prompt) rows
        (``locations``: label -> place per row, for ``model.evidence_locations``;
        ``mask_source``: where the masks came from, ``predicted`` detects with the segmenter's
        own classifier head where the checkpoint has one, ``model.source_heads``;
        ``detected``: per row, labels stated whatever the classifier says, :meth:`_detected`)."""
        with autocast_for(self.device):
            grids = self.model.encode_rows(image.expand(len(prompts), *image.shape[1:]))
            out: list[str] = []
            for i in range(0, len(prompts), gen.batch_size):
                chunk = slice(i, i + gen.batch_size)
                m = torch.cat(masks[chunk])
                where = None if locations is None else locations[chunk]
                out += self.model.generate_from_grid(
                    grids[chunk],
                    m,
                    prompts[chunk],
                    gen,
                    image=image,
                    locations=where,
                    detected=None if detected is None else detected[chunk],
                    mask_source=mask_source,
                )
        return out

    # -- masks the predictor finds itself -----------------------------------------------------------
    def segmentation(self, volume: Any):
        """The checkpoint segmenter's :class:`rgct.generate.segment.Segmentation` of a volume."""
        if self.segmenter is None:
            raise ValueError(
                "this checkpoint has no segmenter (segmenter.safetensors): give region masks, "
                "or load one with Predictor.from_checkpoint(..., segmenter=DIR)"
            )
        from rgct.generate.segment import segment_volume

        vol = self.load(volume)
        key = (id(self.segmenter[0]), _fingerprint(vol))  # a swapped segmenter recomputes
        if key not in self._segmentations:
            model, meta = self.segmenter
            self._segmentations[key] = segment_volume(model, meta, vol)
            while len(self._segmentations) > SEGMENTATION_CACHE:
                self._segmentations.popitem(last=False)
        self._segmentations.move_to_end(key)
        return self._segmentations[key]

    def forget(self, volume: Any) -> int:
        """Drop the cached segmentations of ``volume`` (a server frees a closed session's
        scan); returns how many were dropped."""
        fingerprint = _fingerprint(self.load(volume))
        keys = [k for k in self._segmentations if k[1] == fingerprint]
        for k in keys:
            del self._segmentations[k]
        return len(keys)

    def clear_cache(self) -> None:
        """Forget the cached segmentations (a benchmark times the segmenter every call; a
        server frees memory)."""
        self._segmentations.clear()

    def segment(self, volume: Any) -> dict:
        """Predicted masks: ``{"masks": {name: bool (D, H, W)}, "findings": [...], "warnings"}``
        (ten regions, five lobes, the prompt anatomy; an empty mask is warned, never filled)."""
        seg = self.segmentation(volume)
        return {"masks": seg.masks, "findings": seg.findings, "warnings": list(seg.warnings)}

    def check_scan(self, volume: Any) -> list[str]:
        """Warnings for a scan that does not look like a chest CT (a few slices, a small field
        of view, no lungs found by the segmenter)."""
        vol = self.load(volume)
        d, h, w = vol.array.shape
        sd, sh, sw = vol.spacing
        out = []
        if d * sd < MIN_CHEST_EXTENT_MM:
            out.append(
                f"The scan covers {d * sd:.0f} mm head to foot ({d} slices): a chest CT covers "
                f"at least {MIN_CHEST_EXTENT_MM:.0f} mm."
            )
        if min(h * sh, w * sw) < MIN_CHEST_EXTENT_MM:
            out.append(
                f"The field of view is {h * sh:.0f} x {w * sw:.0f} mm: too small for a chest."
            )
        if self.segmenter is not None:
            seg = self.segmentation(vol)
            if not seg.masks.get("lung", np.zeros(1, bool)).any():
                out.append("No lungs were found: is this a chest CT?")
        return out

    def _masks(
        self, vol: Volume, masks: dict[str, Any] | None, wanted: list[str], source: str | None
    ) -> tuple[dict[str, Any], str, list[str], Any]:
        """Given masks as they are, or the segmenter's; plus the segmentation when there is one
        (it grounds the findings either way)."""
        seg = self.segmentation(vol) if self.segmenter is not None else None
        if masks is not None:
            return masks, source or "given", [], seg
        if seg is None:
            self.segmentation(vol)  # raises the no-segmenter message
        chosen = {r: seg.masks[r] for r in wanted if r in seg.masks and seg.masks[r].any()}
        warnings = [w for w in seg.warnings if w.split(":")[0] in wanted]
        return chosen, PREDICTED, warnings, seg

    def _places(
        self, vol: Volume, regions: list[str], findings: list[dict], seg: Any
    ) -> list[dict[str, str]] | None:
        """Label -> place per region for ``model.evidence_locations`` (None otherwise, or
        without a segmenter: the detections line then names no place)."""
        if not self.cfg.model.evidence_locations or seg is None:
            return None
        from rgct.generate.localize import LOBE_REGIONS, lobe_probabilities, place_labels

        lobe_probs: dict[str, np.ndarray] = {}
        lobes = {lb: m for lb in LUNG_LOBES if (m := seg.masks.get(lb)) is not None and m.any()}
        scan = self.cfg.model.scan_locations
        if lobes and any(r in LOBE_REGIONS or (scan and r == WHOLE_SCAN) for r in regions):
            image, masks = self.prepare(vol, lobes)
            with autocast_for(self.device):
                lobe_probs = lobe_probabilities(
                    self.model, image, {k: v[0] for k, v in masks.items()}, self.lobe_head
                )
        return [place_labels(r, findings, lobe_probs, whole_scan=scan) for r in regions]

    def _stated_classes(self) -> tuple[str, ...]:
        """The segmenter's focal detector classes whose findings this checkpoint states (none
        without a detector or without ``model.evidence_locations``)."""
        if self.segmenter is None or not self.cfg.model.evidence_locations:
            return ()
        return tuple(getattr(self.segmenter[0], "focal_classes", ()))

    def _detected(
        self, regions: list[str], seg: Any, question: str | None = None
    ) -> list[dict[str, bool] | None] | None:
        """Per region, the labels stated on the detections line whatever the classifier says
        (as the held-out runner's localiser, :func:`rgct.generate.localize.detected_labels`):
        the segmenter's focal detector's found there, and on a whole-scan row the label a
        "where is X?" ``question`` asks about; None when no row states anything (or for a
        checkpoint without ``model.evidence_locations``)."""
        if not self.cfg.model.evidence_locations:
            return None
        from rgct.generate.localize import detected_labels

        classes = self._stated_classes()
        findings = seg.findings if seg is not None and classes else []
        rows = [detected_labels(r, findings, classes, question=question) for r in regions]
        return rows if any(rows) else None

    def _truncated(self, text: str, gen: GenerationConfig) -> bool:
        n = len(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])
        return n >= gen.max_new_tokens - 1

    # -- public API ------------------------------------------------------------------------------
    @torch.no_grad()
    def detect(
        self, volume: Any, mask: Any = None, mask_source: str | None = None
    ) -> dict[str, float]:
        """The region classifier's probability of each CT-RATE label inside ``mask`` (whole scan
        if None). With ``model.evidence_prompt`` the labels at or above
        ``model.evidence_thresholds`` are what the language model is told it sees
        (``mask_source`` ``predicted``: the segmenter's head and thresholds where the
        checkpoint has them, ``model.source_heads``)."""
        image, masks = self.prepare(volume, {"region": mask})
        with autocast_for(self.device):
            probs = region_probabilities(self.model, image, masks["region"], mask_source)
        return dict(zip(self.model.label_names, probs[0].tolist()))

    def region_report(
        self,
        volume: Any,
        mask: Any = None,
        region: str | None = None,
        *,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
        mask_source: str | None = None,
    ) -> str:
        """Findings for one region. ``region=None`` lets the mask alone say where to look;
        ``mask=None`` takes the segmenter's mask of ``region`` (``mask_source``: where a given
        mask came from; ``predicted`` is read as the segmenter's)."""
        vol = self.load(volume)
        if mask is None and not region:
            raise ValueError("region_report needs a mask, or a region name to predict it")
        seg = None
        if mask is None or self.cfg.model.evidence_locations:
            given = None if mask is None else {region or "region": mask}
            found, _, warnings, seg = self._masks(vol, given, [region] if region else [], None)
            if mask is None:
                if region not in found:
                    raise ValueError("; ".join(warnings) or f"{region}: no mask predicted")
                mask, mask_source = found[region], PREDICTED
        prompt = (
            REPORT_PROMPTS["region_report"].format(region=region)
            if region
            else REPORT_PROMPTS["region_report_unnamed"]
        )
        image, masks = self.prepare(vol, {"region": mask})
        places = detected = None
        if region and seg is not None:
            places = self._places(vol, [region], seg.findings, seg)
            detected = self._detected([region], seg)
        return self._run(
            image,
            [masks["region"]],
            [prompt],
            self._gen(max_new_tokens=max_new_tokens, num_beams=num_beams),
            places,
            mask_source,
            detected,
        )[0]

    def report(
        self,
        volume: Any,
        masks: dict[str, Any] | None = None,
        *,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
        mask_source: str | None = None,
    ) -> dict:
        """A whole report assembled region by region, each sentence tagged with its region.

        ``masks=None`` uses the segmenter's masks (regions it finds empty are skipped with a
        warning). Returns ``{"text", "sentences": [{"region", "text", "labels", "finding"}],
        "regions": {region: text}, "findings", "mask_source", "warnings", "truncated"}``:
        ``finding`` grounds a finding sentence (label, lobes, side, centre and box in voxels
        and mm) when the checkpoint has a segmenter; ``findings`` adds each finding's voxel mask.
        """
        vol = self.load(volume)
        if masks is not None and not masks:
            raise ValueError("report() needs at least one region mask (or masks=None)")
        masks, source, warnings, seg = self._masks(vol, masks, list(REGIONS), mask_source)
        if not masks:
            raise ValueError("no region was found in this scan: " + "; ".join(warnings))
        order = [r for r in REGIONS if r in masks] + [r for r in masks if r not in REGIONS]
        image, prepared = self.prepare(vol, {r: masks[r] for r in order})
        prompts = [REPORT_PROMPTS["region_report"].format(region=r) for r in order]
        gen = self._gen(max_new_tokens=max_new_tokens, num_beams=num_beams)
        if gen.drafted:
            # drafted decoding checks every region's draft in one pass: one batch for all
            gen = replace(gen, batch_size=max(gen.batch_size, len(order)))
        findings = seg.findings if seg is not None else []
        places = self._places(vol, order, findings, seg)
        detected = self._detected(order, seg)
        texts = self._run(
            image, [prepared[r] for r in order], prompts, gen, places, source, detected
        )
        sentences = [
            _ground(r, s, findings) for r, t in zip(order, texts) for s in split_sentences(t)
        ]
        truncated = [r for r, t in zip(order, texts) if self._truncated(t, gen)]
        warnings += [f"{r}: text cut at the {gen.max_new_tokens}-token limit" for r in truncated]
        return {
            "text": " ".join(s["text"] for s in sentences),
            "sentences": sentences,
            "regions": dict(zip(order, texts)),
            "findings": findings,
            "mask_source": source,
            "warnings": warnings,
            "truncated": bool(truncated),
        }

    def region_report_details(
        self,
        volume: Any,
        mask: Any = None,
        region: str | None = None,
        *,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
        mask_source: str | None = None,
    ) -> dict:
        """:meth:`region_report` with its grounding: the same dict as :meth:`report` for one
        region. ``mask=None`` takes the segmenter's mask of ``region``."""
        vol = self.load(volume)
        if mask is None and not region:
            raise ValueError("give a region mask, or a region name to predict its mask")
        given = None if mask is None else {region or "region": mask}
        masks, source, warnings, seg = self._masks(
            vol, given, [region] if region else [], mask_source
        )
        if not masks:
            raise ValueError("; ".join(warnings) or f"{region}: no mask predicted")
        gen = self._gen(max_new_tokens=max_new_tokens, num_beams=num_beams)
        text = self.region_report(
            vol,
            next(iter(masks.values())),
            region,
            max_new_tokens=gen.max_new_tokens,
            num_beams=gen.num_beams,
            mask_source=source,
        )
        name = region or "region"
        findings = [
            f
            for f in (seg.findings if seg is not None else [])
            if not region or f.get("region") == region
        ]
        truncated = self._truncated(text, gen)
        if truncated:
            warnings.append(f"{name}: text cut at the {gen.max_new_tokens}-token limit")
        return {
            "text": text,
            "sentences": [_ground(name, s, findings) for s in split_sentences(text)],
            "regions": {name: text},
            "findings": findings,
            "mask_source": source,
            "warnings": warnings,
            "truncated": truncated,
        }

    def answer(
        self,
        volume: Any,
        question: str,
        mask: Any = None,
        *,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
        mask_source: str | None = None,
    ) -> str:
        """Answer a question about the volume (optionally about the masked region;
        ``mask_source`` as :meth:`region_report`'s)."""
        if not question or not question.strip():
            raise ValueError("the question is empty")
        image, masks = self.prepare(volume, {WHOLE_SCAN: mask})
        gen = self._gen(
            max_new_tokens=max_new_tokens or min(self.cfg.generation.max_new_tokens, 32),
            num_beams=num_beams,
        )
        places = detected = None
        if mask is None:  # a whole-scan question
            seg = None
            stated = self._stated_classes()  # the detector's findings, stated on the line
            if (self.cfg.model.scan_locations or stated) and self.segmenter:
                vol = self.load(volume)  # where each finding is, per region
                seg = self.segmentation(vol)
                if self.cfg.model.scan_locations:
                    places = self._places(vol, [WHOLE_SCAN], seg.findings, seg)
            detected = self._detected([WHOLE_SCAN], seg, question.strip())
        source = None if mask is None else mask_source
        return self._run(
            image, [masks[WHOLE_SCAN]], [question.strip()], gen, places, source, detected
        )[0]

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
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
    ) -> dict:
        """One turn of a conversation about the volume.

        The question is resolved against ``history`` (:mod:`rgct.conversation`: "where is it?"
        after an answer naming a nodule becomes "Where is the nodule located in the image?")
        and answered with the mask of the region it resolves to; a reference that cannot be
        resolved gets a question back (``clarify``), not a guess.

        Args:
            history: earlier turns as this method returns them (``turn["history"]``), or
                ``[question, answer]`` pairs.
            mask, region: the region in view (``mask`` is ``region``'s mask; ``region`` alone:
                its mask from ``masks`` or the segmenter; ``WHOLE_SCAN``: no mask). A region
                the question names wins; without either, the conversation's region in focus.
            masks: further named masks the conversation may move to ("what about the
                heart?"); regions missing here come from the segmenter when there is one.
            mask_sources: name -> where the mask came from (dataset, uploaded, drawn ...).

        Returns:
            ``{"question", "answer", "resolved", "task", "region", "finding", "mask_source",
            "clarify", "warnings", "truncated", "history"}`` (see
            :func:`rgct.conversation.take_turn`).
        """
        vol = self.load(volume)
        given = dict(masks or {})
        sources = {n: (mask_sources or {}).get(n, "given") for n in given}
        if mask is not None:
            name = region if region and region != WHOLE_SCAN else "given region"
            given[name], region = mask, name
            sources[name] = (mask_sources or {}).get(name, "given")

        def predicted() -> dict[str, np.ndarray]:
            return self.segmentation(vol).masks if self.segmenter is not None else {}

        def mask_of(name: str) -> tuple[Any, str]:
            if name in given:
                return given[name], sources[name]
            lobes = [given[lb] for lb in LUNG_SIDES.get(name, ()) if lb in given]
            if lobes and len(lobes) == len(LUNG_SIDES[name]):  # a lung side from given lobes
                union = np.logical_or.reduce([load_mask(m, vol) for m in lobes])
                return union, sources[LUNG_SIDES[name][0]]
            found = predicted().get(name)
            if found is not None and found.any():
                return found, PREDICTED
            have = sorted({*given, *(n for n, m in predicted().items() if m.any())})
            raise MaskNotFound(
                f"There is no {name} mask for this scan, so I cannot answer about it "
                f"(masks: {', '.join(have) or 'none'}). Which region do you mean?"
            )

        def detections(where: str | None) -> list[dict]:
            if self.segmenter is None:
                return []
            found = self.segmentation(vol).findings
            return [f for f in found if where is None or f.get("region") in (where, None)]

        def ask(res: Resolution) -> dict:
            m, source = (None, WHOLE_SCAN) if res.region == WHOLE_SCAN else mask_of(res.region)
            default = self.cfg.generation.max_new_tokens
            if res.task != "region_report":
                default = min(default, 32)  # a short answer, as :meth:`answer`
            gen = self._gen(max_new_tokens=max_new_tokens or default, num_beams=num_beams)
            text = self.answer(
                vol,
                res.question,
                m,
                max_new_tokens=gen.max_new_tokens,
                num_beams=gen.num_beams,
                mask_source=source,
            )
            cut = self._truncated(text, gen)
            warnings = [f"answer cut at the {gen.max_new_tokens}-token limit"] if cut else []
            return {"answer": text, "mask_source": source, "truncated": cut, "warnings": warnings}

        return take_turn(
            question,
            history,
            ask=ask,
            region=region,
            detections=detections,
            names=list(given),
        )


MIN_CHEST_EXTENT_MM = 120.0
"""A chest CT covers at least this much head to foot and across (an adult thorax ~250-350 mm)."""


def _ground(region: str, sentence: str, findings: list[dict]) -> dict:
    """A report sentence with its labels and, for a finding sentence, the localised finding of
    that label in that region (the most probable one): lobes, side, centre and box."""
    from rgct.eval.labeler import default_labeler

    read = default_labeler().label_sentence(sentence)
    labels = read.positive
    match = next(
        (f for f in findings if f.get("label") in labels and f.get("region") in (region, None)),
        None,
    )
    finding = None
    if match is not None:
        finding = {k: v for k, v in match.items() if k != "mask"}
    return {"region": region, "text": sentence, "labels": labels, "finding": finding}


SEGMENTATION_CACHE = 4
"""Segmentations a Predictor keeps (least recently used dropped first)."""


def _fingerprint(vol: Volume) -> str:
    """A key for a volume's content: shape, spacing, affine, a hash of every 256th voxel (a
    regular sub-grid) and the sum of all of them (a real CT hashes in a fraction of a second)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(vol.array[::4, ::8, ::8]).tobytes())
    h.update(np.float64(vol.array.sum(dtype=np.float64)).tobytes())
    h.update(np.asarray(vol.affine, np.float64).tobytes())
    h.update(repr((vol.array.shape, tuple(vol.spacing))).encode())
    return h.hexdigest()
