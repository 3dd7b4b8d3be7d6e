"""Stages that fit the region classifier of a checkpoint, each writing a new checkpoint folder.

- :func:`fit_classifier_checkpoint`: give the classifier its intensity-histogram head
  (``model.region_stats``) and fit both heads on features of every training region, cached once
  per volume with the encoder frozen (a few hundred epochs in seconds each, where the training
  loop would re-run the encoder every step).
- :func:`calibrate_checkpoint`: per-label detection thresholds for micro F1 on validation volumes
  kept apart from the held-out ones (``skip_volumes``), stored as ``model.evidence_thresholds``.

Both leave their source untouched (``rgct classifier fit|calibrate``; recipe stage kinds
``fit_classifier`` and ``calibrate``). The mechanics live in :mod:`rgct.model.region_classifier`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rgct.config import MAX_SOURCE_EROSION, SOURCE_HEAD_NAMES
from rgct.files import write_json
from rgct.model import region_classifier as rc
from rgct.model.checkpoint import CARD_FILE, load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

HISTORY_FILE = "region_head.json"
CALIBRATION_FILE = "calibration.json"


def _distinct(src: str | Path, out: str | Path) -> tuple[Path, Path]:
    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve():
        raise ValueError(f"the output folder must differ from the source checkpoint {src}")
    return src, out


def _card(src: Path) -> str | None:
    return (src / CARD_FILE).read_text() if (src / CARD_FILE).is_file() else None


def _extras(src: Path, name: str, record: dict):
    """What a classifier stage adds to its new folder: its record, and the source's segmenter
    (the checkpoint's own masks stay with it: refitting the classifier does not change them)."""
    from rgct.model.segmenter import copy_segmenter

    def write(tmp: Path) -> None:
        write_json(tmp / name, record)
        copy_segmenter(src, tmp, required=False)

    return write


MASK_SOURCES = ("dataset",)
"""Default mask source of the classifier stages: the dataset's own region masks."""


def _mask_readers(
    sources: tuple[str, ...] | list[str], checkpoint: Path, cfg, data: str | Path, device
) -> list[tuple[str, Callable | None]]:
    """(source, ``mask_for``) per mask source: None for the dataset's masks, else a reader
    of :class:`rgct.generate.masks.MaskProvider` (``predicted``: the checkpoint's segmenter)."""
    from rgct.generate.masks import build_mask_provider

    if not sources or len(set(sources)) != len(sources):
        raise ValueError(f"masks: give one or more distinct mask sources, got {list(sources)}")
    readers = []
    for name in sources:
        provider = build_mask_provider(str(name), checkpoint, cfg, data, device)
        if provider is None:
            readers.append((str(name), None))
        else:
            reader = lambda s, p=provider: p.mask(s.volume, s.anatomy, s.region)  # noqa: E731
            reader.provider = provider  # the segmenter's findings, reused by DetectorStatements
            readers.append((str(name), reader))
    return readers


class DetectorStatements:
    """The labels a checkpoint states on a region's detections line whatever its classifier
    says (its segmenter's focal detector: :func:`rgct.generate.localize.detected_labels`), per
    (volume, region) row, so the classifier's thresholds are calibrated for the decision
    generation makes (``probs >= threshold or stated``). The segmenter runs once per volume."""

    def __init__(self, provider, classes: tuple[str, ...], names: tuple[str, ...]) -> None:
        self.provider, self.classes, self.names = provider, classes, names
        self._found: dict[str, list[dict]] = {}  # volume -> its detector components

    def note(self, volume: str, findings: list[dict]) -> None:
        """Keep a volume's detector components (label and region: all a row needs)."""
        self._found[volume] = [
            {"label": f["label"], "region": f.get("region")}
            for f in findings
            if f.get("label") in self.classes
        ]

    def noting(self, reader: Callable | None) -> Callable | None:
        """``reader`` noting the components of each volume it segments, when it reads this
        provider's masks (the segmenter then runs once per volume, not twice)."""
        if reader is None or getattr(reader, "provider", None) is not self.provider:
            return reader

        def read(sample):
            mask = reader(sample)
            if sample.volume not in self._found:  # the read loaded it (or, for a whole-scan
                # row, this does: rows() would need it anyway); the provider keeps the volume
                self.note(sample.volume, self.provider.volume(sample.volume)[1])
            return mask

        return read

    @classmethod
    def of(
        cls,
        checkpoint: Path,
        cfg,
        data: str | Path,
        device,
        names: tuple[str, ...],
        providers: list | None = None,
    ) -> DetectorStatements | None:
        """The checkpoint's statements, or None when it states none (no
        ``model.evidence_locations``, no segmenter, or a segmenter without a detector).
        ``providers``: mask providers already built; a ``predicted`` one among them is reused
        (its segmentation of each volume is the one needed)."""
        from rgct.generate.masks import PREDICTED, build_mask_provider
        from rgct.model.segmenter import WEIGHTS_FILE

        if not cfg.model.evidence_locations or not (Path(checkpoint) / WEIGHTS_FILE).is_file():
            return None
        provider = next((p for p in providers or [] if p and p.source == PREDICTED), None)
        if provider is None:
            provider = build_mask_provider(PREDICTED, checkpoint, cfg, data, device)
        classes = tuple(getattr(provider.segmenter[0], "focal_classes", ()) or ())
        return cls(provider, classes, names) if classes else None

    def rows(self, keys: list[tuple[str, str]]) -> np.ndarray:
        """(N, L) bool for ``keys`` ``(volume, region)`` (L: ``names``)."""
        from rgct.generate.localize import detected_labels

        out = np.zeros((len(keys), len(self.names)), bool)
        for i, (volume, region) in enumerate(keys):
            if volume not in self._found:
                self.note(volume, self.provider.volume(volume)[1])
            found = detected_labels(region, self._found[volume], self.classes) or {}
            for label, on in found.items():
                if on and label in self.names:
                    out[i, self.names.index(label)] = True
        return out


def fit_classifier_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    split: str = "train",
    max_volumes: int | None = None,
    tasks: tuple[str, ...] = rc.FIT_TASKS,
    epochs: int = 200,
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    seed: int = 0,
    device: str = "auto",
    masks: tuple[str, ...] | list[str] = MASK_SOURCES,
    head: str | None = None,
    erode: int | None = None,
) -> dict:
    """Fit the region classifier's heads (adding the histogram head) into a new checkpoint.

    ``masks``: the mask sources whose regions it learns from, e.g. ``("dataset",
    "predicted")`` so that it reads the segmenter's masks as well as the dataset's (the
    heads continue from the checkpoint's weights). ``head``: fit a head of that mask source
    instead (``model.source_heads``, e.g. ``predicted`` on the segmenter's masks), starting
    as a copy of the main head, which stays as it is with its thresholds; the new head's
    thresholds are 0.5 until ``calibrate_checkpoint(head=...)``. ``erode``: with ``head``,
    the voxels by which that head reads its masks eroded (``model.source_erosion``; None:
    the checkpoint's). Returns the fitting record (also written to ``OUT/region_head.json``)."""
    if head is not None and head not in SOURCE_HEAD_NAMES:
        raise ValueError(
            f"head {head!r}: a classifier head of its own exists for mask sources "
            f"{list(SOURCE_HEAD_NAMES)} only"
        )
    if erode is not None and head is None:
        raise ValueError(
            f"erode={erode}: the erosion applies to a mask source's own head; pass head= "
            f"(one of {list(SOURCE_HEAD_NAMES)}) too"
        )
    if erode is not None and not (isinstance(erode, int) and 0 <= erode <= MAX_SOURCE_EROSION):
        raise ValueError(
            f"erode must be a whole number of voxels in [0, {MAX_SOURCE_EROSION}], got {erode!r}"
        )
    from rgct.inference import pick_device

    src, out = _distinct(checkpoint, out)
    dev = pick_device(device)
    model, cfg = load_checkpoint(src, device=dev)
    rc.add_region_stats(model)
    if head is not None:
        model.pooler.add_source_head(head)  # a copy of the main head: fitted below
        cfg.model.source_heads = {**cfg.model.source_heads, head: None}
    if erode is not None:
        cfg.model.source_erosion = erode
        model.pooler.source_erosion = erode
    t0 = time.perf_counter()
    parts = [
        rc.collect_region_features(
            model, cfg, data, split, 0, max_volumes, tuple(tasks), mask_for=reader, head=head
        )
        for _, reader in _mask_readers(masks, src, cfg, data, dev)
    ]
    feats = rc.concat_features(parts)
    t1 = time.perf_counter()
    history = rc.fit_region_classifier(
        model, feats, epochs=epochs, lr=lr, weight_decay=weight_decay, seed=seed, head=head
    )
    t2 = time.perf_counter()
    record = {
        "from": str(src),
        "data": str(data),
        "split": split,
        "tasks": list(tasks),
        "masks": list(masks),
        "head": head or "main",
        "erosion": cfg.model.source_erosion if head is not None else 0,
        "regions_per_mask_source": {m: len(p.keys) for m, p in zip(masks, parts)},
        "regions": len(feats.keys),
        "volumes": len({v for v, _ in feats.keys}),
        "epochs": epochs,
        "lr": lr,
        "weight_decay": weight_decay,
        "feature_seconds": round(t1 - t0, 1),
        "fit_seconds": round(t2 - t1, 1),
        "loss": [round(x, 5) for x in history],
    }
    save_checkpoint(model, cfg, out, card=_card(src), extra=_extras(src, HISTORY_FILE, record))
    logger.info(
        "fitted on %d regions: loss %.4f -> %.4f; wrote %s",
        len(feats.keys),
        history[0],
        history[-1],
        out,
    )
    return record


def calibrate_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    split: str = "valid",
    skip_volumes: int = 0,
    max_volumes: int | None = None,
    report_volumes: int = 0,
    device: str = "auto",
    masks: tuple[str, ...] | list[str] = MASK_SOURCES,
    head: str | None = None,
) -> dict:
    """Fit per-label thresholds and write a new checkpoint with ``model.evidence_thresholds``
    (``head``: those of that mask source's own head, ``model.source_heads``, instead).

    Calibrates on the volumes of ``split`` after the first ``skip_volumes`` (sorted by name:
    those a ``limit``-ed held-out check uses); ``report_volumes`` also scores the fitted
    thresholds on the first N skipped volumes. ``masks``: the mask sources whose regions the
    thresholds are fitted on together (one set of thresholds serves them all; the report
    scores each). Returns the report (``OUT/calibration.json``).
    """
    from rgct.inference import pick_device

    src, out = _distinct(checkpoint, out)
    if report_volumes > skip_volumes:
        raise ValueError(
            f"report_volumes={report_volumes} must not exceed skip_volumes={skip_volumes} "
            "(the calibration and report volumes would overlap)"
        )
    dev = pick_device(device)
    model, cfg = load_checkpoint(src, device=dev)
    if head is not None and head not in cfg.model.source_heads:
        raise ValueError(
            f"{src}: its region classifier has no head for mask source {head!r} (it has: "
            f"{sorted(cfg.model.source_heads) or 'none'}); fit one first: rgct classifier fit "
            f"--head {head}"
        )
    readers = _mask_readers(masks, src, cfg, data, dev)
    shared = [getattr(reader, "provider", None) for _, reader in readers]
    statements = DetectorStatements.of(src, cfg, data, dev, model.label_names, shared)
    if statements is not None:
        readers = [(name, statements.noting(reader)) for name, reader in readers]
    fitted = [
        rc.collect_region_probabilities(
            model, cfg, data, split, skip_volumes, max_volumes, mask_for=reader, head=head
        )
        for _, reader in readers
    ]
    probs = np.concatenate([p for p, _, _ in fitted])
    labels = np.concatenate([y for _, y, _ in fitted])
    stated = None
    if statements is not None:
        stated = np.concatenate([statements.rows(keys) for _, _, keys in fitted])
    thresholds, report = rc.fit_thresholds(probs, labels, names=model.label_names, stated=stated)
    report.update(
        {
            "checkpoint": str(src),
            "data": str(data),
            "split": split,
            "skip_volumes": skip_volumes,
            "masks": list(masks),
            "head": head or "main",
            "thresholds": thresholds,
        }
    )
    if statements is not None:
        report["stated_by_detector"] = list(statements.classes)
    if len(readers) > 1:
        report["fitted_per_mask_source"] = {
            name: rc.detection_scores(p, y, thresholds, statements and statements.rows(keys))
            for (name, _), (p, y, keys) in zip(readers, fitted)
        }
    if report_volumes:
        scored = {
            name: rc.collect_region_probabilities(
                model, cfg, data, split, 0, report_volumes, mask_for=reader, head=head
            )
            for name, reader in readers
        }
        p = np.concatenate([p for p, _, _ in scored.values()])
        y = np.concatenate([y for _, y, _ in scored.values()])
        said = None
        if statements is not None:
            said = np.concatenate([statements.rows(k) for _, _, k in scored.values()])
        report["report_volumes"] = report_volumes
        report["report_at_0.5"] = rc.detection_scores(p, y, [0.5] * model.num_labels, said)
        report["report_fitted"] = rc.detection_scores(p, y, thresholds, said)
        if len(readers) > 1:
            report["report_fitted_per_mask_source"] = {
                name: rc.detection_scores(p, y, thresholds, statements and statements.rows(k))
                for name, (p, y, k) in scored.items()
            }
    if head is None:
        cfg.model.evidence_thresholds = thresholds
    else:
        cfg.model.source_heads = {**cfg.model.source_heads, head: thresholds}
    save_checkpoint(
        model,
        cfg,
        out,
        card=_card(src),
        extra=_extras(src, CALIBRATION_FILE, report),
    )
    return report


def calibration_table(report: dict) -> str:
    """The per-label table of a calibration report, as printed by ``rgct classifier calibrate``."""
    lines = [f"{'label':38s} {'pos':>4s} {'F1@0.5':>7s} {'thr':>5s} {'F1':>5s}"]
    for name, row in report["per_label"].items():
        lines.append(
            f"{name:38s} {row['positives']:4d} {row['f1_at_0.5']:7.3f} "
            f"{row['threshold']:5.2f} {row['f1']:5.3f}"
        )
    lines.append(
        f"micro F1 on {report['regions']} calibration regions: "
        f"{report['micro_f1_at_0.5']:.3f} at 0.5 -> {report['micro_f1']:.3f} fitted"
    )
    if "report_fitted" in report:
        r0, r1 = report["report_at_0.5"], report["report_fitted"]
        lines.append(
            f"first {report['report_volumes']} volumes: F1 {r0['f1']:.3f} at 0.5 -> "
            f"{r1['f1']:.3f} fitted (P {r1['precision']:.3f} R {r1['recall']:.3f})"
        )
    return "\n".join(lines)
