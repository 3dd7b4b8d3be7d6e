"""The map-style torch Dataset over RadGenome samples, and its collate function.

Items are dicts::

    image      uint16 (C, D, H, W): round(x * 65535) for x in [0, 1] (C = HU windows)
    mask       uint8 (1, D, H, W) in {0, 1}; all ones for whole-scan samples
    labels     float32 (L,) labels inside the region (zeros when unknown): the 18 CT-RATE
               labels, or a radiograph dataset's classes (:mod:`rgct.data.cxr_samples`)
    has_labels bool
    findings   float32 (1, D, H, W) dense finding bitmask map (only with ``cfg.finding_maps``;
               see :mod:`rgct.data.finding_maps`)
    prompt, answer, task, region, volume: str;  anatomy: str | None

Images and masks stay compact (:mod:`rgct.data.compact`: 3 bytes per voxel instead of 8) through
DataLoader workers and the batch; :func:`~rgct.data.compact.expand_batch` turns a batch into
float32 on the device, and every consumer reads batches through it. Augmentation (when on)
runs in the worker on the expanded sample, which is compacted again.

Bad samples: a sample whose files cannot be read raises a :class:`~rgct.data.io.DataError`
naming the sample and the file. With ``cfg.skip_bad_samples`` the error is logged as a
warning, counted in ``dataset.num_skipped`` (one counter in shared memory: DataLoader workers
add to the count the main process reads), and ``None`` is returned; :func:`collate` drops
``None`` items, so that batch is smaller. Another sample is never silently substituted.

Missing tasks: a split without rows for one of the requested tasks (a small validation split, a
RadGenome subset) leaves that task out with a warning naming the task, the split and its CSV
(``dataset.missing_tasks``); only a split with no rows at all is an error (and a training set
with none of its tasks).

Example::

    ds = RGCTDataset(cfg.data, "train", train=True, num_samples=10_000)
    loader = DataLoader(ds, batch_size=8, shuffle=True, collate_fn=collate)
    inputs = expand_batch(next(iter(loader)), device)   # image, mask float32 on device
"""

from __future__ import annotations

import logging
import multiprocessing
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from rgct.config import DataConfig
from rgct.constants import TASKS
from rgct.data.compact import compact_image, compact_mask, expand_image, expand_mask
from rgct.data.finding_maps import paint_finding_map
from rgct.data.geometry import uses_geometry
from rgct.data.io import DataError
from rgct.data.layout import csv_path, strip_suffix
from rgct.data.records import TASK_CSV, build_samples, load_split, mix_samples
from rgct.data.sample_table import Sample, SampleTable
from rgct.data.transforms import TransformCache, build_random_transforms

logger = logging.getLogger(__name__)

CACHE_FOLDER = ".rgct_cache"


class RGCTDataset(Dataset):
    """Samples of one split as model-ready tensors (see the module docstring for items).

    Args:
        cfg: data settings (root, input_shape, hu_window, tasks, cache_dir, augment ...).
        split: 'train' or 'valid'.
        train: apply random transforms (only when ``cfg.augment`` too).
        num_samples: draw this many samples with :func:`mix_samples` by task weight;
            None: all samples of the tasks, task after task.
        seed: seed of the mixture, of unnamed-region prompts and of augmentation.
        tasks: task names or task -> weight; default ``cfg.tasks``.

    Attributes:
        samples: the :class:`~rgct.data.sample_table.SampleTable` (a read-only sequence of
            :class:`Sample`, held in numpy arrays that DataLoader workers share) items are made
            from.
        num_skipped: bad samples skipped so far (all DataLoader workers together).
        missing_tasks: requested tasks the split has no rows for (left out, warned).
        problems: problems :func:`load_split` found (rows dropped).
    """

    def __init__(
        self,
        cfg: DataConfig,
        split: str,
        *,
        train: bool,
        num_samples: int | None = None,
        seed: int = 0,
        tasks: dict[str, float] | list[str] | None = None,
    ) -> None:
        if not cfg.root:
            raise DataError("data.root is not set: point it at a RadGenome-layout folder")
        root = Path(cfg.root)
        if not root.is_dir():
            raise DataError(f"data.root {root}: folder not found")
        self.cfg = cfg
        self.train = train
        self.seed = seed
        self._skipped = multiprocessing.Value("q", 0)  # shared with forked/spawned workers
        tasks = cfg.tasks if tasks is None else tasks
        weights = dict(tasks) if isinstance(tasks, dict) else {t: 1.0 for t in tasks}
        index = load_split(root, split, max_volumes=cfg.max_volumes)
        self.problems = index.problems
        for p in index.problems:
            logger.warning("%s", p.message)
        if not any(index.tables.values()):
            raise DataError(
                f"{root}: split {split!r} has no rows at all (no CSV rows under "
                f"{csv_path(root, split, 'region_report').parent} name a volume of this split)"
            )
        by_task = build_samples(
            index, weights, unnamed_region_fraction=cfg.unnamed_region_fraction, seed=seed
        )
        self.missing_tasks = [t for t in by_task if weights.get(t, 0.0) > 0 and not by_task[t]]
        for task in self.missing_tasks:
            logger.warning(
                "split %r has no rows for task %r (%s): that task is left out of this %s set",
                split,
                task,
                csv_path(root, split, TASK_CSV[task]),
                "training" if train else "evaluation",
            )
        if len(self.missing_tasks) == len(by_task):
            if train:
                raise DataError(
                    f"{root}: split {split!r} has no rows for any training task {list(weights)}"
                )
            self.samples = SampleTable.concat([])
        elif num_samples is not None:
            # positives oversampled (data.abnormal_fraction) in the training mix only
            abnormal = cfg.abnormal_fraction if train else None
            self.samples = mix_samples(by_task, weights, num_samples, seed, abnormal)
        else:
            self.samples = SampleTable.concat([by_task[t] for t in TASKS if t in by_task])
        self.ground_truth = None  # dense finding maps: training samples only
        if cfg.finding_maps and uses_geometry(cfg):
            raise DataError(
                "data.finding_maps paints phantom positions on the whole, stretched field of "
                "view: it cannot be used with data.crop_foreground, data.spacing or data.fit="
                "pad_crop"
            )
        if cfg.finding_maps and train:
            if index.ground_truth is None:
                raise DataError(
                    f"data.finding_maps is on but {root} has no ground_truth.jsonl "
                    "(dense finding maps need phantom ground truth)"
                )
            self.ground_truth = index.ground_truth
        self.cache = TransformCache(cfg, cfg.cache_dir or root / CACHE_FOLDER)
        self.random = build_random_transforms(cfg) if (train and cfg.augment) else None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_skipped(self) -> int:
        """Bad samples skipped so far, counted across DataLoader worker processes."""
        return int(self._skipped.value)

    def load_tensors(self, sample: Sample) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached deterministic (image (C, D, H, W) uint16, mask (1, D, H, W) uint8), compact."""
        image = self.cache.compact_image(sample.image_path)
        if sample.mask_path is None:
            mask = torch.ones((1, *image.shape[1:]), dtype=torch.uint8)
        else:
            mask = self.cache.compact_mask(sample.mask_path, sample.image_path)
        return image, mask

    def __getitem__(self, i: int) -> dict | None:
        sample = self.samples[i]
        try:
            image, mask = self.load_tensors(sample)
        except (DataError, OSError, EOFError, zlib.error) as e:
            msg = f"sample {i} ({sample.task}, {sample.volume}, region {sample.region!r}): {e}"
            if not self.cfg.skip_bad_samples:
                raise DataError(msg) from e
            with self._skipped.get_lock():
                self._skipped.value += 1
                skipped = self._skipped.value
            logger.warning("skipping bad %s (%d skipped so far)", msg, skipped)
            return None
        arrays = {"image": image, "mask": mask}
        if self.ground_truth is not None:
            arrays["findings"] = self.finding_map(sample)
        if self.random is not None:
            arrays = self.augment(arrays, i)
        labels = torch.zeros(self.samples.labels.shape[1], dtype=torch.float32)
        if sample.labels is not None:
            labels = torch.tensor(sample.labels, dtype=torch.float32)
        item = {
            "image": arrays["image"],
            "mask": arrays["mask"],
            "prompt": sample.prompt,
            "answer": sample.answer,
            "task": sample.task,
            "region": sample.region,
            "volume": sample.volume,
            "anatomy": sample.anatomy,
            "labels": labels,
            "has_labels": sample.labels is not None,
        }
        if "findings" in arrays:
            item["findings"] = arrays["findings"]
        return item

    def augment(self, arrays: dict, i: int) -> dict:
        """The random transforms of item ``i`` (seeded by ``(seed, i)``) on the expanded image and
        mask, compacted again (the image within the cache's tolerance, the mask exactly)."""
        seed = int(np.random.SeedSequence([self.seed, i]).generate_state(1)[0])
        self.random.set_random_state(seed=seed)
        out = self.random(
            {**arrays, "image": expand_image(arrays["image"]), "mask": expand_mask(arrays["mask"])}
        )
        if isinstance(out, list):  # a crop transform returns its samples as a list
            out = out[0]
        return {**out, "image": compact_image(out["image"]), "mask": compact_mask(out["mask"])}

    def finding_map(self, sample: Sample) -> torch.Tensor:
        """(1, D, H, W) dense finding bitmask of the sample's volume (``cfg.finding_maps``)."""
        record = self.ground_truth.get(strip_suffix(sample.volume))
        if record is None:
            raise DataError(
                f"data.finding_maps: volume {sample.volume!r} has no ground_truth.jsonl record"
            )
        return torch.from_numpy(paint_finding_map(record, tuple(self.cfg.input_shape)))[None]


def _stack(values: list[torch.Tensor], shared: bool) -> torch.Tensor:
    """``torch.stack``; in a DataLoader worker straight into shared memory (as torch's own
    collate does), so the batch is not copied a second time on its way to the main process."""
    if not shared:
        return torch.stack(values)
    first = values[0]
    out = torch.empty((len(values), *first.shape), dtype=first.dtype).share_memory_()
    return torch.stack(values, out=out)


def collate(items: list[dict | None]) -> dict:
    """Stack a list of items into a batch; ``None`` (skipped) items are dropped.

    Returns:
        ``image`` (B, C, D, H, W) uint16 (C = HU windows), ``mask`` (B, 1, D, H, W) uint8 (both
        compact: :func:`~rgct.data.compact.expand_batch` makes them float32), ``labels``
        (B, 18), ``has_labels`` (B,) bool, and lists of B strings for the text fields. An
        all-skipped batch gives ``{}``.
    """
    items = [it for it in items if it is not None]
    if not items:
        return {}
    in_worker = get_worker_info() is not None
    batch: dict = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if isinstance(values[0], torch.Tensor):
            batch[key] = _stack(values, shared=in_worker)
        elif key == "has_labels":
            batch[key] = torch.tensor(values, dtype=torch.bool)
        else:
            batch[key] = values
    return batch
