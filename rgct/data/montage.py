"""Draw a written volume to a PNG: axial, coronal and sagittal slices with masks and findings.

Everything is read back from the dataset folder (the NIfTI files and ``ground_truth.jsonl``),
so the picture shows what a reader of the dataset gets. Slices are shown the radiological way:
patient's right on the left of the image, anterior (axial) or superior (coronal, sagittal) up.

Example::

    save_montage("data/phantoms", "train_1_a_1", "train_1_a_1.png")
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Circle, Patch  # noqa: E402

from rgct.constants import REGIONS  # noqa: E402
from rgct.data.layout import parse_volume_name, region_mask_path, strip_suffix, volume_path  # noqa: E402
from rgct.data.truth import load_ground_truth

LUNG_WINDOW = (-1350.0, 150.0)
"""Display window (HU): level -600, width 1500."""
REGION_COLORS = dict(zip(REGIONS, plt.get_cmap("tab10").colors))


def _read_dhw(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (is this a dataset written by `rgct synth`?)")
    return np.asarray(nib.load(str(path)).dataobj).transpose(2, 1, 0)


def _ground_truth(root: Path, volume: str) -> dict | None:
    return (load_ground_truth(root) or {}).get(strip_suffix(volume))


def _axial_levels(depth: int, findings: list[dict], n: int = 4) -> list[int]:
    levels: list[int] = []
    for f in findings:
        z = int(f["center_voxel"][0])
        if all(abs(z - q) > 1 for q in levels) and len(levels) < n:
            levels.append(z)
    for frac in (0.78, 0.58, 0.4, 0.22, 0.66, 0.3):
        z = int(round(frac * (depth - 1)))
        if len(levels) < n and all(abs(z - q) > max(depth // 12, 1) for q in levels):
            levels.append(z)
    return sorted(levels, reverse=True)


def save_montage(
    root: str | Path, volume: str, out_png: str | Path, split: str | None = None
) -> Path:
    """Draw ``volume`` of the dataset at ``root`` to ``out_png`` and return its path.

    Args:
        root: dataset folder in the RadGenome-Chest CT layout.
        volume: volume name, with or without ``.nii.gz``.
        out_png: PNG to write (parent folders are created).
        split: 'train'/'valid'; taken from the name when None.
    """
    root, volume, out_png = Path(root), strip_suffix(volume), Path(out_png)
    vsplit = parse_volume_name(volume).split
    if split is not None and split != vsplit:
        raise ValueError(f"{volume}: name says split {vsplit!r}, but split={split!r} was given")
    vol_path = volume_path(root, volume)
    ct = _read_dhw(vol_path).astype(np.float32)
    img = nib.load(str(vol_path))
    dx, dy, dz = (float(v) for v in img.header.get_zooms()[:3])
    masks = {}
    for region in REGIONS:
        path = region_mask_path(root, volume, region)
        if path.is_file():
            masks[region] = _read_dhw(path) > 0
    gt = _ground_truth(root, volume)
    findings = gt["findings"] if gt else []
    depth, height, width = ct.shape

    fig, axes = plt.subplots(2, 4, figsize=(17, 9.5), facecolor="black")
    levels = _axial_levels(depth, findings)
    ref = findings[0]["center_voxel"] if findings else [depth // 2, height // 2, int(width * 0.3)]
    views = [("axial", z) for z in levels] + [("coronal", int(ref[1])), ("sagittal", int(ref[2]))]
    for ax, (view, k) in zip(axes.flat, views):
        if view == "axial":
            sl, aspect, axes_idx = (k, slice(None), slice(None)), dy / dx, (2, 1)
        elif view == "coronal":
            sl, aspect, axes_idx = (slice(None), k, slice(None)), dz / dx, (2, 0)
        else:
            sl, aspect, axes_idx = (slice(None), slice(None), k), dz / dy, (1, 0)
        ax.imshow(
            ct[sl],
            cmap="gray",
            vmin=LUNG_WINDOW[0],
            vmax=LUNG_WINDOW[1],
            origin="lower",
            aspect=aspect,
            interpolation="nearest",
        )
        for region, m in masks.items():
            plane = m[sl]
            if plane.any() and not plane.all():
                ax.contour(
                    plane.astype(np.float32),
                    levels=[0.5],
                    colors=[REGION_COLORS[region]],
                    linewidths=0.8,
                )
        plane_axis = {"axial": 0, "coronal": 1, "sagittal": 2}[view]
        for f in findings:
            c, r = f["center_voxel"], f["radius_vox"]
            if abs(c[plane_axis] - k) > max(r[plane_axis], 0.5):
                continue
            col, row = c[axes_idx[0]], c[axes_idx[1]]
            rad = max(r[axes_idx[0]], 1.5)
            ax.add_patch(Circle((col, row), rad, fill=False, color="yellow", lw=1.2))
            ax.plot(col, row, "+", color="yellow", ms=6)
            where = f.get("lobe") or f.get("side") or ""
            ax.annotate(
                f"{f['kind']}\n{where}".strip(),
                (col, row),
                xytext=(col - rad - 2, row + rad + 2),
                color="yellow",
                fontsize=7,
            )
        ax.set_xlim(ct[sl].shape[1] - 0.5, -0.5)  # patient's right on the image's left
        ax.set_title(f"{view} {k}", color="white", fontsize=9)
        ax.axis("off")
    legend_ax, text_ax = axes.flat[6], axes.flat[7]
    legend_ax.axis("off")
    text_ax.axis("off")
    handles = [Patch(color=REGION_COLORS[r], label=r) for r in masks]
    legend_ax.legend(
        handles=handles,
        loc="center",
        fontsize=9,
        frameon=False,
        labelcolor="white",
        title="region masks",
    )
    lines = [
        f"{f['kind']}\n   {f.get('lobe') or f.get('side') or ''} {f['size_mm']} mm @{f['center_voxel']}"
        for f in findings
    ]
    text_ax.text(
        0.0,
        0.95,
        "\n".join(lines) or "no findings",
        color="yellow",
        fontsize=9,
        va="top",
        transform=text_ax.transAxes,
    )
    fig.suptitle(
        f"{volume}   lung window {LUNG_WINDOW}   spacing {dz:.2f}x{dy:.2f}x{dx:.2f} mm",
        color="white",
        fontsize=11,
    )
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=80, facecolor="black")
    plt.close(fig)
    return out_png
