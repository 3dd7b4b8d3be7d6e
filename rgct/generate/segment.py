"""Running the learned segmenter on a volume and writing its masks in the RadGenome layout.

:func:`segment_volume` preprocesses a :class:`~rgct.data.io.Volume` exactly as training did
(the checkpoint's ``data`` settings), runs the segmenter once, and returns masks and findings
on the volume's own grid. :func:`write_segmentation` writes them where
:func:`rgct.data.totalseg.output_dirs` puts a mask source (for a CT-RATE name the output folder
reads as a dataset root), each file on the input's own grid and affine (a NIfTI input keeps
its stored orientation), plus ``mask_source.json``: per-mask voxel counts, warnings for masks
predicted empty ("lung: no mask predicted, region skipped") and the findings with boxes.

Example::

    model, meta = load_segmenter("runs/segmenter")
    seg = segment_volume(model, meta, load_volume("ct.nii.gz"))
    write_segmentation(seg, "out/", "ct", source="ct.nii.gz")
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from rgct.constants import LUNG_LOBES, LUNG_SIDES, REGIONS, SEGMENT_ANATOMY
from rgct.data.io import Volume, is_nifti
from rgct.data.totalseg import SUMMARY_FILE, output_dirs
from rgct.data.transforms import preprocess
from rgct.files import atomic_path, write_json
from rgct.model.seg_postprocess import finding_probabilities, localize_findings, predict_masks
from rgct.model.segmenter import Segmenter, data_config_from_meta

logger = logging.getLogger(__name__)

MASK_SOURCE = "learned"
DEFAULT_FINDING_THRESHOLD = 0.5
DEFAULT_MIN_VOXELS = 2
THRESHOLD_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Finding thresholds :func:`calibrate_findings` tries."""
DETECTOR_THRESHOLD_GRID = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995)
"""Thresholds tried for a focal detector's classes: trained with a positive weight (30 for
nodules), its probabilities of a true cell sit high, and the useful thresholds lie above 0.9."""
MIN_VOXEL_GRID = (2, 5, 10, 20, 40)
"""Smallest finding sizes (voxels) :func:`calibrate_findings` tries."""
DISABLED_THRESHOLD = 1.01
"""Threshold of a finding channel that never localised a finding in calibration: no
probability reaches it, so the label is never reported from the voxel map."""


@dataclass
class Segmentation:
    """A volume's predicted masks and findings, on the volume's own grid.

    Attributes:
        masks: name -> bool (D, H, W): the ten regions, the lobes, the prompt anatomy and the
            two lungs (unions of their lobes). Empty masks stay in (all False).
        findings: :func:`rgct.model.seg_postprocess.localize_findings` output.
        shape: the volume's (D, H, W).
        affine: its canonical affine.
        spacing: its voxel size (d, h, w) mm.
        warnings: one line per mask predicted empty.
    """

    masks: dict[str, np.ndarray]
    findings: list[dict]
    shape: tuple[int, int, int]
    affine: np.ndarray
    spacing: tuple[float, float, float]
    warnings: list[str] = field(default_factory=list)

    @property
    def empty(self) -> list[str]:
        """Names of the masks predicted empty."""
        return [n for n, m in self.masks.items() if not m.any()]


def empty_mask_warning(name: str) -> str:
    """The one wording of a mask that segmentation did not find."""
    kind = "region" if name in REGIONS else "anatomy"
    return f"{name}: no mask predicted, {kind} skipped"


@torch.no_grad()
def segment_volume(
    model: Segmenter,
    meta: dict,
    volume: Volume,
    *,
    threshold: float | Mapping[str, float] = 0.5,
    finding_threshold: float | Mapping[str, float] | None = None,
) -> Segmentation:
    """Segment one volume: preprocess, run the network once, post-process on the volume's grid.

    Args:
        model: the segmenter (its device is used).
        meta: the checkpoint meta (``data``: input shape and HU windows).
        volume: the CT.
        threshold: mask probability threshold (one, or per class).
        finding_threshold: finding probability threshold (one, or per label); None takes the
            checkpoint's calibrated ``finding_thresholds`` (else 0.5).
    """
    data_cfg = data_config_from_meta(meta)
    if data_cfg.in_channels != model.in_channels:
        raise ValueError(
            f"checkpoint data settings give {data_cfg.in_channels} input channels, "
            f"the network takes {model.in_channels}"
        )
    image, _ = preprocess(volume, None, data_cfg)  # (C, D, H, W)
    device = next(model.parameters()).device
    model.eval()
    logits = model(image[None].to(device))[0].float().cpu()  # (K, D, H, W)
    masks = predict_masks(logits, model.classes, threshold=threshold, out_shape=volume.shape)
    bone = masks.get("bone")
    if bone is not None and bone.any():
        # The bone region is disjoint from every other region in the RadGenome layout (and in
        # the phantoms); soft-tissue channels that leak into sternum or spine bring in
        # calcium-bright voxels the region classifier reads as calcification.
        for name in masks:
            if name != "bone":
                masks[name] = masks[name] & ~bone
    for lung, lobes in LUNG_SIDES.items():
        if all(lb in masks for lb in lobes):
            masks[lung] = np.logical_or.reduce([masks[lb] for lb in lobes])
    probs = finding_probabilities(logits, model.classes, out_shape=volume.shape)
    findings = localize_findings(
        probs,
        lobe_masks={n: masks[n] for n in LUNG_LOBES if n in masks},
        region_masks={n: masks[n] for n in REGIONS if n in masks},
        spacing_mm=volume.spacing,
        thresholds=(
            meta.get("finding_thresholds", DEFAULT_FINDING_THRESHOLD)
            if finding_threshold is None
            else finding_threshold
        ),
        min_voxels=meta.get("finding_min_voxels", DEFAULT_MIN_VOXELS),
        affine=volume.affine,
    )
    seg = Segmentation(masks, findings, volume.shape, volume.affine, volume.spacing)
    seg.warnings = [empty_mask_warning(n) for n in seg.empty]
    for w in seg.warnings:
        logger.info("%s: %s", volume.source, w)  # returned in .warnings: callers report them
    return seg


def _to_stored(mask: np.ndarray, source: str | Path | None, affine: np.ndarray):
    """(array (X, Y, Z), affine) in the stored orientation of NIfTI ``source`` if it is one."""
    xyz = np.ascontiguousarray(mask.transpose(2, 1, 0)).astype(np.uint8)
    if source is None or not is_nifti(str(source)) or not Path(source).is_file():
        return xyz, np.asarray(affine)
    img = nib.load(str(source))
    to_orig = ornt_transform(axcodes2ornt(("R", "A", "S")), io_orientation(img.affine))
    return apply_orientation(xyz, to_orig).astype(np.uint8), img.affine


def _save(path: Path, mask: np.ndarray, source: str | Path | None, affine: np.ndarray) -> None:
    data, aff = _to_stored(mask, source, affine)
    img = nib.Nifti1Image(data, aff)
    img.header.set_xyzt_units("mm")
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    with atomic_path(path, suffix=".nii.gz") as tmp:
        nib.save(img, str(tmp))


def write_segmentation(
    seg: Segmentation, out_dir: str | Path, volume_name: str, *, source: str | Path | None = None
) -> dict:
    """Write the masks (regions and anatomy) and ``mask_source.json``; return the summary.

    Args:
        seg: :func:`segment_volume` output.
        out_dir: output root (layout of :func:`rgct.data.totalseg.output_dirs`).
        volume_name: the ``<volume>`` of ``seg_<volume>``.
        source: the input file; a NIfTI input's stored orientation and affine are kept.
    """
    region_dir, anatomy_dir = output_dirs(out_dir, volume_name)
    anatomy_names = (*LUNG_LOBES, *SEGMENT_ANATOMY, *LUNG_SIDES)
    written: dict[str, dict[str, str]] = {"regions": {}, "anatomy": {}}
    for name, mask in seg.masks.items():
        if not mask.any():
            continue
        kind, folder = ("regions", region_dir) if name in REGIONS else ("anatomy", anatomy_dir)
        if kind == "anatomy" and name not in anatomy_names:
            continue
        path = folder / f"{name}.nii.gz"
        _save(path, mask, source, seg.affine)
        written[kind][name] = str(path)
    summary = {
        "mask_source": MASK_SOURCE,
        "volume": volume_name,
        "source": None if source is None else str(source),
        "shape": list(seg.shape),
        "spacing_mm": [round(float(s), 4) for s in seg.spacing],
        "region_dir": str(region_dir),
        "anatomy_dir": str(anatomy_dir),
        "voxels": {n: int(m.sum()) for n, m in seg.masks.items()},
        **written,
        "missing": seg.empty,
        "warnings": list(seg.warnings),
        "findings": [{k: v for k, v in f.items() if k != "mask"} for f in seg.findings],
    }
    write_json(region_dir / SUMMARY_FILE, summary)
    return summary


def _distance_mm(a: dict, b: dict, spacing: tuple[float, float, float]) -> float:
    diff = np.subtract(a["center_voxel"], b["center_voxel"]) * np.asarray(spacing)
    return float(np.linalg.norm(diff))


def evaluate_segmenter(
    model: Segmenter,
    meta: dict,
    root: str | Path,
    splits: str | tuple[str, ...] = ("train", "valid"),
    *,
    max_volumes: int | None = None,
    finding_threshold: float | Mapping[str, float] | None = None,
) -> dict:
    """Dice per class and finding-box accuracy of a segmenter on volumes with truth masks.

    Runs :func:`segment_volume` on each volume (its own grid) and scores against the dataset's
    mask files and, where ``ground_truth.jsonl`` exists, its findings
    (:mod:`rgct.eval.segmentation`).

    Returns:
        ``{"dice": summarize_dice(...), "boxes": summarize_boxes(...) or None,
        "lobe_accuracy", "side_accuracy" (of detections matched to a true lung/pleura
        finding), "seconds_per_volume", "volumes"}``.
    """
    import time

    from rgct.data.io import load_volume
    from rgct.data.layout import volume_path
    from rgct.data.seg_targets import load_true_masks, split_volumes, true_findings
    from rgct.data.truth import load_ground_truth
    from rgct.eval.segmentation import box_accuracy, summarize_boxes, summarize_dice, volume_dice

    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    names = [n for sp in splits for n in split_volumes(root, sp)][:max_volumes]
    truth = load_ground_truth(root)
    dices, boxes, lobe_hits, side_hits = [], [], [], []
    seconds = 0.0
    for name in names:
        volume = load_volume(volume_path(root, name))
        t0 = time.perf_counter()
        seg = segment_volume(model, meta, volume, finding_threshold=finding_threshold)
        seconds += time.perf_counter() - t0
        true = load_true_masks(root, name, volume)
        dices.append(volume_dice(seg.masks, true, [c for c in model.classes if c in true]))
        if truth is None or name not in truth:
            continue
        found = true_findings(truth[name], true, volume)
        boxes.append(box_accuracy(seg.findings, found, volume.spacing))
        for p in seg.findings:
            same = [t for t in found if t["label"] == p["label"] and t.get("side")]
            if not same:
                continue
            t = min(same, key=lambda t: _distance_mm(p, t, volume.spacing))
            side_hits.append(p["side"] == t["side"])
            if t.get("lobe"):
                lobe_hits.append(bool(p["lobes"]) and p["lobes"][0] == t["lobe"])
    return {
        "dice": summarize_dice(dices),
        "boxes": summarize_boxes(boxes) if boxes else None,
        "lobe_accuracy": sum(lobe_hits) / len(lobe_hits) if lobe_hits else None,
        "side_accuracy": sum(side_hits) / len(side_hits) if side_hits else None,
        "seconds_per_volume": seconds / max(len(names), 1),
        "volumes": len(names),
    }


@torch.no_grad()
def calibrate_findings(
    model: Segmenter,
    meta: dict,
    root: str | Path,
    splits: str | tuple[str, ...] | None = None,
    *,
    max_volumes: int | None = None,
    thresholds: tuple[float, ...] = THRESHOLD_GRID,
    min_voxels: tuple[int, ...] = MIN_VOXEL_GRID,
    labels: tuple[str, ...] | None = None,
) -> dict:
    """Per finding label, the (threshold, smallest size) with the best detection F1.

    ``splits``: None takes those of ``train`` and ``valid`` the folder has (a calibration synth
    may have one). ``labels`` limits it to those finding channels (e.g. a focal detector's
    classes, on a grid of its own: :data:`DETECTOR_THRESHOLD_GRID`); None calibrates every
    finding channel.

    A detection is correct as in :func:`rgct.eval.segmentation.box_accuracy`; precision is
    correct / detected, recall is true findings hit / true findings; among equal F1 the
    highest threshold and size win (fewest detections). Run it on phantoms that are neither
    training nor held-out data. Labels without a true finding there keep the defaults; labels
    whose channel never localised one get :data:`DISABLED_THRESHOLD`.

    Returns:
        ``{"finding_thresholds": {label: t}, "finding_min_voxels": {label: n},
        "scores": {label: {"f1", "precision", "recall", "true"}}, "volumes": N}``.
    """
    from rgct.data.io import load_volume
    from rgct.data.layout import volume_path
    from rgct.data.seg_targets import load_true_masks, split_volumes, true_findings
    from rgct.data.truth import load_ground_truth
    from rgct.eval.segmentation import box_accuracy

    if splits is None:
        from rgct.data.records import find_volumes

        splits = tuple(sp for sp in ("train", "valid") if find_volumes(root, sp))
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    names = [n for sp in splits for n in split_volumes(root, sp)][:max_volumes]
    truth = load_ground_truth(root)
    if truth is None:
        raise ValueError(f"{root}: no ground_truth.jsonl to calibrate finding thresholds on")
    data_cfg = data_config_from_meta(meta)
    device = next(model.parameters()).device
    model.eval()
    keys = [
        (t, m) for t in sorted(thresholds, reverse=True) for m in sorted(min_voxels, reverse=True)
    ]
    counts: dict[str, dict] = {}
    for name in names:
        volume = load_volume(volume_path(root, name))
        image, _ = preprocess(volume, None, data_cfg)
        logits = model(image[None].to(device))[0].float().cpu()
        probs = finding_probabilities(logits, model.classes, out_shape=volume.shape)
        found = true_findings(truth[name], load_true_masks(root, name, volume), volume)
        if labels is not None:
            probs = {k: v for k, v in probs.items() if k in labels}
        for label, prob in probs.items():
            mine = [f for f in found if f["label"] == label]
            c = counts.setdefault(label, {k: [0, 0, 0, 0] for k in keys})
            for thr in thresholds:
                dets = localize_findings({label: prob}, {}, {}, volume.spacing, thr, min_voxels=1)
                for m in min_voxels:
                    kept = [d for d in dets if d["num_voxels"] >= m]
                    r = box_accuracy(kept, mine, volume.spacing)
                    row = c[(thr, m)]
                    row[0] += r["correct"]
                    row[1] += r["detected"]
                    row[2] += r["found"]
                    row[3] += r["true"]
    out: dict = {"finding_thresholds": {}, "finding_min_voxels": {}, "scores": {}}
    for label, c in counts.items():
        best, best_key = None, (DEFAULT_FINDING_THRESHOLD, DEFAULT_MIN_VOXELS)
        for key in keys:
            correct, detected, hit, true = c[key]
            if true == 0:
                continue
            p = correct / detected if detected else 0.0
            r = hit / true
            f1 = 2 * p * r / (p + r) if p + r else 0.0
            if best is None or f1 > best["f1"] + 1e-9:
                best, best_key = {"f1": f1, "precision": p, "recall": r, "true": true}, key
        if best is not None and best["f1"] == 0.0:
            best_key = (DISABLED_THRESHOLD, DEFAULT_MIN_VOXELS)
        out["finding_thresholds"][label] = best_key[0]
        out["finding_min_voxels"][label] = best_key[1]
        out["scores"][label] = best
    out["volumes"] = len(names)
    return out
