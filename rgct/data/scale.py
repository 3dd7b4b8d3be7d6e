"""Release-size index benchmark: RadGenome-Chest CT's CSV files at their real size, no images.

:func:`write_release_csvs` writes a dataset folder with the release's row counts (25,692
volumes, 665k region sentences, 1.3M VQA rows, one disorder row per volume) and an empty
placeholder file per volume (the reader checks that volumes exist, never opens them here);
:func:`measure_index` builds the training index from it in a fresh process and measures build
time, peak RSS, the index's own bytes, and the private memory each of two DataLoader workers
adds while it reads every sample record.

Example::

    root = write_release_csvs(tmp / "rg")
    print(measure_index(root, num_samples=320_000))
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from rgct.constants import CSV_COLUMNS, CT_RATE_LABELS, REGIONS
from rgct.data.layout import csv_path, volume_path

logger = logging.getLogger(__name__)

RELEASE = {"volumes": 25_692, "region_sentences": 665_000, "vqa_rows": 1_300_000}
"""RadGenome-Chest CT at release size (../shared/docs/FIELD.md)."""
VALID_FRACTION = 1_304 / 21_304
"""Validation share of the release's patients."""
VQA_SHARES = {"vqa_abnormality": 0.25, "vqa_location": 0.2, "vqa_presence": 0.45, "vqa_size": 0.1}

_LEAVES = {
    "lung": ["left lung upper lobe", "left lung lower lobe", "right lung upper lobe",
             "right lung middle lobe", "right lung lower lobe"],
    "heart": ["heart tissue", "heart atrium"],
    "abdomen": ["liver", "stomach", "spleen"],
    "bone": ["rib 3 left", "thoracic vertebrae 7", "sternum"],
}  # fmt: skip
_SENTENCES = [
    "Several nonspecific nodules are observed in the {region}, the largest {n} mm.",
    "No pathological finding was detected in the {region} ({n}).",
    "Ground glass densities are seen in the {region}, measuring {n} mm.",
    "The {region} appears within normal limits; minimal change {n}.",
]


def _anatomy_path(rng: np.random.Generator) -> str:
    region = REGIONS[int(rng.integers(len(REGIONS)))]
    leaves = _LEAVES.get(region)
    if not leaves:
        return region
    return f"{region}/{region}/{leaves[int(rng.integers(len(leaves)))]}"


def _split_rows(total: int, volumes: list[str], rng: np.random.Generator) -> np.ndarray:
    """Volume index of each of ``total`` rows, grouped by volume (sorted)."""
    return np.sort(rng.integers(0, len(volumes), size=total))


def write_release_csvs(
    root: str | Path, scale: float = 1.0, seed: int = 0, sizes: dict[str, int] | None = None
) -> Path:
    """Write the release-size CSV files and empty volume placeholders under ``root``.

    Args:
        root: dataset folder to create.
        scale: multiply every count (0.01 for a quick test).
        seed: seed of the random contents.
        sizes: override :data:`RELEASE`.

    Returns:
        ``root``.
    """
    root = Path(root)
    sizes = {k: max(1, int(round(v * scale))) for k, v in (sizes or RELEASE).items()}
    rng = np.random.default_rng(seed)
    n_valid = max(1, int(round(sizes["volumes"] * VALID_FRACTION)))
    names = {
        "train": [f"train_{i // 2 + 1}_{'ab'[i % 2]}_1" for i in range(sizes["volumes"] - n_valid)],
        "valid": [f"valid_{i // 2 + 1}_{'ab'[i % 2]}_1" for i in range(n_valid)],
    }
    for split, volumes in names.items():
        share = len(volumes) / sizes["volumes"]
        for name in volumes:
            path = volume_path(root, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        rows_of = {
            "region_report": _split_rows(int(sizes["region_sentences"] * share), volumes, rng),
            **{
                stem: _split_rows(int(sizes["vqa_rows"] * share * f), volumes, rng)
                for stem, f in VQA_SHARES.items()
            },
        }
        for stem, columns in CSV_COLUMNS.items():
            path = csv_path(root, split, stem)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(columns)
                if stem == "case_disorders":
                    for name in volumes:
                        w.writerow([f"{name}.nii.gz", "emphysema, lung nodule"])
                    continue
                if stem == "region_report":
                    for name in volumes:  # the whole report: an empty Anatomy cell
                        w.writerow(
                            [f"{name}.nii.gz", "", "Trachea and both main bronchi are open."]
                        )
                for k, v in enumerate(rows_of[stem].tolist()):
                    w.writerow(_row(stem, f"{volumes[v]}.nii.gz", k, rng))
    logger.info("%s: release-size CSV files written (%s)", root, sizes)
    return root


def _row(stem: str, volume: str, k: int, rng: np.random.Generator) -> list[str]:
    anatomy = _anatomy_path(rng)
    label = CT_RATE_LABELS[k % len(CT_RATE_LABELS)].lower()
    if stem == "region_report":
        text = _SENTENCES[k % len(_SENTENCES)].format(region=anatomy.split("/")[-1], n=k % 97)
        return [volume, anatomy.split("/")[0], text]
    if stem in ("vqa_abnormality", "vqa_location"):
        return [volume, anatomy, label]
    if stem == "vqa_presence":
        return [volume, anatomy, label, "Yes." if k % 2 else "No."]
    return [volume, anatomy, label, f"{k % 30 + 3}x{k % 20 + 2} mm"]


def _private_kb() -> int:
    """Private (unshared) resident memory of this process in KiB (Linux smaps_rollup)."""
    total = 0
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


class _ProbeDataset:
    """Reads one sample record per item (no image): what a worker touches of the index."""

    def __init__(self, samples) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[int, int]:
        s = self.samples[i]
        length = len(s.prompt) + len(s.answer) + len(s.image_path) + len(s.mask_path or "")
        self.reads = getattr(self, "reads", 0) + 1
        # reading /proc costs more than a record: sample the memory at the first and every
        # 997th read (a prime: the reads of both workers get measured)
        return length, _private_kb() if self.reads % 997 == 1 else -1


def _measure(root: str, num_samples: int, workers: int, probe: int, objects: bool = False) -> dict:
    import resource

    from torch.utils.data import DataLoader

    from rgct.config import DataConfig
    from rgct.data.dataset import RGCTDataset

    cfg = DataConfig(root=root, augment=False)
    t0, c0 = time.perf_counter(), time.process_time()
    ds = RGCTDataset(cfg, "train", train=True, num_samples=num_samples, seed=0)
    build, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    samples = list(ds.samples) if objects else ds.samples  # objects: the index as a list
    rss = max(rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    order = np.random.default_rng(0).permutation(len(ds))[:probe]
    loader = DataLoader(
        _ProbeDataset(samples), batch_size=None, sampler=order.tolist(), num_workers=workers
    )
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for n, (_, kb) in enumerate(loader):
        if kb < 0:
            continue
        w = n % workers  # items come round-robin from the workers, in order
        first.setdefault(w, int(kb))
        last[w] = int(kb)
    return {
        "samples_in_index": len(ds),
        "index_build_s": build,
        "index_build_cpu_s": build_cpu,  # this process's CPU time: wall time less contention
        "peak_rss_mb": rss,
        "index_mb": ds.samples.nbytes / 2**20,
        "records_read_per_worker": probe // workers,
        "worker_private_mb_at_start": max(first.values()) / 1024,
        "worker_private_mb_at_end": max(last.values()) / 1024,
        "worker_extra_mb": max(last[w] - first[w] for w in last) / 1024,
    }


def measure_index(
    root: str | Path,
    num_samples: int,
    workers: int = 2,
    probe: int = 200_000,
    objects: bool = False,
) -> dict:
    """Build the training index of ``root`` in a fresh process and measure it (see module doc).

    ``objects`` hands the workers the index as a list of :class:`Sample` objects instead (the
    layout before the columnar table), for comparison.

    Returns:
        ``samples_in_index, index_build_s, index_build_cpu_s, peak_rss_mb, index_mb,
        records_read_per_worker, worker_private_mb_at_start, worker_private_mb_at_end,
        worker_extra_mb``.
    """
    code = (
        "import json, sys; from rgct.data.scale import _measure; "
        f"print(json.dumps(_measure({str(root)!r}, {num_samples}, {workers}, {probe}, {objects})))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"index measurement failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
