"""Training and validating on several datasets at once (``data.sources``).

Each :class:`~rgct.config.DataSource` becomes one :class:`SourceDataset` (its own samples,
transform cache and, for RAD-ChestCT, its metadata table for spacing); :class:`MixedSources`
draws a training mix by the sources' weights. Every item carries ``source`` (the entry's name),
so losses and metrics can be reported per source (:func:`per_source`).

Example::

    train = build_mixed_sources(cfg.data, "train", train=True, num_samples=10_000, seed=0)
    valid = build_source_datasets(cfg.data, "valid", train=False)   # name -> dataset
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from rgct.config import CXR_DEFAULT_TASKS, DataConfig, DataSource
from rgct.constants import CXR_LAYOUTS
from rgct.data.dataset import CACHE_FOLDER, RGCTDataset
from rgct.data.io import DataError
from rgct.data.records import mix_samples
from rgct.data.sample_table import SampleTable
from rgct.data.transforms import TransformCache, build_random_transforms

logger = logging.getLogger(__name__)

DEFAULT_TASKS = {
    "rad-chestct": {"presence": 1.0, "abnormality": 0.5},
    "deeplesion": {"lesion": 1.0, "lesion_size": 0.5, "lesion_type": 0.5},
    **{layout: CXR_DEFAULT_TASKS for layout in CXR_LAYOUTS},
}
"""Task weights of a source whose entry names none (RadGenome: ``data.tasks``)."""


def source_samples(
    source: DataSource,
    split: str,
    tasks: dict[str, float],
    seed: int,
    max_volumes: int | None = None,
    lesion_evidence: bool = False,
) -> dict[str, SampleTable]:
    """task -> samples of one RAD-ChestCT, DeepLesion, VinDr-CXR or ChestX-ray14 split (at most
    ``max_volumes`` volumes, lesions for DeepLesion, images for radiographs); DeepLesion prompts
    with their truth evidence line when ``lesion_evidence``."""
    if source.layout in CXR_LAYOUTS:
        from rgct.data.cxr_samples import layout_samples

        tables, problems = layout_samples(
            source.root, source.layout, split, tasks, seed=seed, max_images=max_volumes
        )
        for p in problems:
            logger.warning("%s", p.message)
        return tables
    if source.layout == "rad-chestct":
        from rgct.data.radchestct import load_radchest
        from rgct.data.source_samples import radchest_samples

        index = load_radchest(source.root, split, max_volumes=max_volumes)
        for p in index.problems:
            logger.warning("%s", p.message)
        return radchest_samples(index, tasks, seed=seed)
    from rgct.data.deeplesion import load_deeplesion
    from rgct.data.source_samples import deeplesion_samples

    index = load_deeplesion(source.root)
    for p in index.problems:
        logger.warning("%s", p.message)
    return deeplesion_samples(
        index, split, tasks, max_lesions=max_volumes, evidence=lesion_evidence
    )


class SourceDataset(RGCTDataset):
    """The samples of one ``data.sources`` entry as model-ready items tagged ``source``.

    A RadGenome entry is an :class:`RGCTDataset` on its root; the others build their samples
    with :mod:`rgct.data.source_samples` and share :class:`RGCTDataset`'s item code.
    """

    def __init__(
        self,
        cfg: DataConfig,
        source: DataSource,
        split: str,
        *,
        train: bool,
        num_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        self.source = source.name
        tasks = source.tasks or DEFAULT_TASKS.get(source.layout) or cfg.tasks
        root = Path(source.root)
        if source.layout == "radgenome":
            sub = dataclasses.replace(cfg, root=str(root), sources=[])
            super().__init__(
                sub, split, train=train, num_samples=num_samples, seed=seed, tasks=tasks
            )
            return
        if not root.is_dir():
            raise DataError(f"data.sources {source.name}: {root}: folder not found")
        if train and source.layout == "rad-chestct" and "region_report" in tasks:
            raise DataError(
                f"data.sources {source.name}: RAD-ChestCT has no report text to train "
                "region_report on (its region reports are generated and scored against labels)"
            )
        metadata = None
        if source.layout == "rad-chestct":
            from rgct.data.radchestct import METADATA_FILE

            metadata = str(root / METADATA_FILE)
        self.cfg = dataclasses.replace(cfg, root=str(root), sources=[], metadata_csv=metadata)
        self.train = train
        self.seed = seed
        self._skipped = multiprocessing.Value("q", 0)
        self.problems = []
        by_task = source_samples(
            source, split, tasks, seed, cfg.max_volumes, lesion_evidence=cfg.lesion_evidence
        )
        self.missing_tasks = [t for t, table in by_task.items() if not len(table)]
        for task in self.missing_tasks:
            logger.warning(
                "data.sources %s: split %r has no rows for task %r (%s): that task is left out "
                "of this %s set",
                source.name,
                split,
                task,
                root,
                "training" if train else "evaluation",
            )
        if all(not len(t) for t in by_task.values()):
            if train:
                raise DataError(f"data.sources {source.name}: split {split!r} has no samples")
            self.samples = SampleTable.concat([])
        elif num_samples is not None:
            self.samples = mix_samples(by_task, tasks, num_samples, seed)
        else:
            self.samples = SampleTable.concat([t for t in by_task.values() if len(t)])
        self.ground_truth = None
        self.cache = TransformCache(self.cfg, self.cfg.cache_dir or root / CACHE_FOLDER)
        self.random = build_random_transforms(self.cfg) if (train and self.cfg.augment) else None

    def __getitem__(self, i: int) -> dict | None:
        item = super().__getitem__(i)
        if item is not None:
            item["source"] = self.source
        return item


def build_source_datasets(
    cfg: DataConfig, split: str, *, train: bool, seed: int = 0
) -> dict[str, SourceDataset]:
    """name -> the split's dataset of each ``data.sources`` entry (all samples, in order)."""
    if not cfg.sources:
        raise DataError("data.sources is empty: list the datasets to read")
    return {s.name: SourceDataset(cfg, s, split, train=train, seed=seed) for s in cfg.sources}


class MixedSources(Dataset):
    """A training mix of several sources: item ``i`` comes from the source drawn by weight.

    Args:
        datasets: name -> dataset (each item tagged ``source``).
        weights: name -> sampling weight.
        num_samples: length of the mix.
        seed: seed of the draw (same arguments -> same order).
    """

    def __init__(
        self, datasets: dict[str, Dataset], weights: dict[str, float], num_samples: int, seed: int
    ) -> None:
        names = [n for n in datasets if len(datasets[n]) and weights.get(n, 0) > 0]
        if not names:
            raise DataError(f"no source has samples and a weight > 0: {list(datasets)}")
        self.datasets = datasets
        rng = np.random.default_rng([seed, 17])
        p = np.array([weights[n] for n in names], dtype=np.float64)
        choice = rng.choice(len(names), size=num_samples, p=p / p.sum())
        self.index: list[tuple[str, int]] = []
        for k in choice.tolist():
            name = names[k]
            self.index.append((name, int(rng.integers(len(datasets[name])))))

    def __len__(self) -> int:
        return len(self.index)

    @property
    def num_skipped(self) -> int:
        return sum(getattr(d, "num_skipped", 0) for d in self.datasets.values())

    def __getitem__(self, i: int) -> dict | None:
        name, j = self.index[i]
        return self.datasets[name][j]


def build_mixed_sources(
    cfg: DataConfig, split: str, *, train: bool, num_samples: int, seed: int = 0
) -> MixedSources:
    """The weighted mix of ``data.sources`` for training."""
    datasets = build_source_datasets(cfg, split, train=train, seed=seed)
    weights = {s.name: s.weight for s in cfg.sources}
    return MixedSources(datasets, weights, num_samples, seed)


def check_root_modality(cfg: DataConfig) -> str:
    """The layout of ``cfg.root`` (:func:`~rgct.data.source_report.detect_layout`), when it holds
    what ``cfg.modality`` reads.

    Raises:
        DataError: radiographs for a CT model, or CT volumes for a radiograph model (both named).
    """
    from rgct.data.source_report import detect_layout

    layout = detect_layout(cfg.root)
    if cfg.modality == "cxr" and layout not in CXR_LAYOUTS:
        raise DataError(
            f"data.root {cfg.root} is a {layout} folder (CT volumes) but data.modality is 'cxr' "
            f"(chest radiographs): point it at a VinDr-CXR or ChestX-ray14 folder"
        )
    if cfg.modality == "ct" and layout in CXR_LAYOUTS:
        raise DataError(
            f"data.root {cfg.root} is a {layout} folder (chest radiographs) but data.modality is "
            f"'ct' (CT volumes): train radiographs with data.modality=cxr "
            f"(configs/model/cxr_smollm2.yaml + configs/train/cxr.yaml)"
        )
    return layout


def radiograph_sources(cfg: DataConfig) -> DataConfig:
    """``cfg`` with its radiograph ``root`` as the one ``data.sources`` entry (its layout read
    from the folder, its tasks ``cfg.tasks``): how a VinDr-CXR or ChestX-ray14 folder trains."""
    if cfg.sources:
        return cfg
    layout = check_root_modality(cfg)
    tasks = {t: w for t, w in cfg.tasks.items() if w > 0}
    source = DataSource(str(cfg.root), layout=layout, tasks=tasks)
    return dataclasses.replace(cfg, sources=[source])


def radiograph_layout(cfg: DataConfig) -> str:
    """The layout of a radiograph model's data: its one ``data.sources`` entry, else its root's."""
    return cfg.sources[0].layout if cfg.sources else check_root_modality(cfg)


def radiograph_labels(cfg: DataConfig) -> tuple[str, ...]:
    """The classes a radiograph folder's samples are labelled with (their order): what the
    region classifier of a model trained on it reads (``model.labels``)."""
    from rgct.data.cxr_samples import VOCABULARY

    return tuple(VOCABULARY[radiograph_layout(cfg)])


def per_source(values: list[float], sources: list[str]) -> dict[str, float]:
    """Mean of ``values`` per source tag (validation loss or a metric per source)."""
    out: dict[str, list[float]] = {}
    for v, s in zip(values, sources):
        out.setdefault(s, []).append(float(v))
    return {s: float(np.mean(v)) for s, v in sorted(out.items())}
