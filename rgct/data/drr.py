"""Digitally reconstructed radiographs: a PA-like chest film projected from a 3D phantom.

Each voxel's HU becomes a linear attenuation (water :data:`MU_WATER_PER_MM`, air 0, bone
attenuating :data:`BONE_BOOST` times more per HU above water than the CT scale says, as at
radiographic energies); the attenuation is summed front to back along the anterior-posterior
axis (y) into a line integral per (z, x), which is what a log-transformed detector image shows.
The film is hung as a PA view: rows head -> feet, image left = patient right. Rows are resampled
(nearest slice) to square pixels of the in-plane spacing; the image is scaled by its own
:data:`DISPLAY_PERCENTILE` to [0, 1] (bright = attenuating) and a small lead marker is burnt
into the top-left corner (value 1) as on real films.

A finding's box is its painted voxels' 3D box projected the same way; its footprint (the pixels
its voxels project to) lies inside the box by construction. Side and zone come from
:func:`rgct.data.cxr.box_location` with the phantom's own lung band (rows its lungs project to).

Example::

    film = project_phantom(ph)         # ProjectedFilm: image (R, W), spacing, boxes per finding
    film.findings[0]["box"]            # [x_min, y_min, x_max, y_max] pixels
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rgct.data.cxr import box_location
from rgct.data.phantom import Phantom

MU_WATER_PER_MM = 0.02
"""Linear attenuation of water near 60 keV, per mm."""
BONE_BOOST = 1.5
"""Extra attenuation per HU above 0 (bone's photoelectric share at radiographic energies)."""
DISPLAY_PERCENTILE = 99.5
MARKER_FRACTION = 0.05
"""Side of the burnt-in lead marker as a share of the image width."""


def attenuation(hu: np.ndarray) -> np.ndarray:
    """float32 linear attenuation per mm of HU values (>= 0)."""
    hu = hu.astype(np.float32)
    scale = np.where(hu > 0, 1.0 + BONE_BOOST * hu / 1000.0, 1.0 + hu / 1000.0)
    return (MU_WATER_PER_MM * np.clip(scale, 0.0, None)).astype(np.float32)


@dataclass(frozen=True)
class Projection:
    """How a (D, H, W) volume of spacing (dz, dy, dx) maps onto a PA film.

    The film has ``rows`` x W square pixels of ``dx`` mm; row r shows slice ``slice_of_row[r]``
    (head at the top), column c shows x = W - 1 - c (image left = patient right).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    @property
    def pixel_mm(self) -> float:
        return float(self.spacing[2])

    @property
    def rows(self) -> int:
        depth, dz = self.shape[0], self.spacing[0]
        return max(int(round(depth * dz / self.pixel_mm)), 1)

    @property
    def slice_of_row(self) -> np.ndarray:
        depth, dz = self.shape[0], self.spacing[0]
        mm = (np.arange(self.rows) + 0.5) * self.pixel_mm
        return (depth - 1 - np.floor(mm / dz)).clip(0, depth - 1).astype(np.int64)

    def to_film(self, plane: np.ndarray) -> np.ndarray:
        """A (D, W) plane (z up, x = patient left -> right) as (rows, W) film pixels."""
        return plane[self.slice_of_row][:, ::-1]

    def line_integral(self, volume: np.ndarray) -> np.ndarray:
        """float32 (rows, W): attenuation summed along y (mm-weighted)."""
        return self.to_film(attenuation(volume).sum(axis=1) * self.spacing[1])

    def footprint(self, mask: np.ndarray) -> np.ndarray:
        """bool (rows, W): the pixels a (D, H, W) mask projects to."""
        return self.to_film(mask.any(axis=1))

    def box(self, box_voxel: tuple[int, ...]) -> list[float]:
        """The film box [x_min, y_min, x_max, y_max] of a half-open voxel box (z0, y0, x0, z1, y1,
        x1): pixel centres inside it are exactly those its slices and columns project to."""
        depth, _, width = self.shape
        z0, _, x0, z1, _, x1 = box_voxel
        scale = self.spacing[0] / self.pixel_mm
        return [
            float(width - x1),
            round((depth - z1) * scale, 4),
            float(width - x0),
            round((depth - z0) * scale, 4),
        ]


def finding_mask(box_voxel: tuple[int, ...], crop: np.ndarray, shape) -> np.ndarray:
    """bool (D, H, W): a finding's painted voxels from its box and crop."""
    mask = np.zeros(shape, dtype=bool)
    z0, y0, x0, z1, y1, x1 = box_voxel
    mask[z0:z1, y0:y1, x0:x1] = crop
    return mask


def display(integral: np.ndarray) -> np.ndarray:
    """float32 [0, 1] film from a line integral, with the lead marker burnt in."""
    top = float(np.percentile(integral, DISPLAY_PERCENTILE)) or 1.0
    image = np.clip(integral / top, 0.0, 1.0)
    side = max(int(round(MARKER_FRACTION * image.shape[1])), 2)
    image[1 : 1 + side, 1 : 1 + side] = 1.0
    return image.astype(np.float32)


@dataclass
class ProjectedFilm:
    """A phantom as a PA film with its findings' boxes.

    Attributes:
        image: float32 (R, W) in [0, 1], bright = attenuating.
        spacing: (row, column) mm.
        lung_rows: (top, bottom) rows the lungs project to (half-open bottom).
        findings: one dict per phantom finding, its truth plus ``box`` (film pixels),
            ``footprint_pixels`` (count), ``side`` and ``zone``.
        footprints: bool (R, W) per finding, same order (not written to the truth file).
    """

    image: np.ndarray
    spacing: tuple[float, float]
    lung_rows: tuple[int, int]
    findings: list[dict] = field(default_factory=list)
    footprints: list[np.ndarray] = field(default_factory=list)


def project_phantom(ph: Phantom) -> ProjectedFilm:
    """The PA film of a phantom with a box, side and zone per finding."""
    proj = Projection(ph.volume.shape, ph.spacing_mm)
    lungs = proj.footprint(ph.region_masks["lung"].astype(bool)).any(axis=1).nonzero()[0]
    lung_rows = (int(lungs.min()), int(lungs.max()) + 1) if lungs.size else (0, proj.rows)
    film = ProjectedFilm(
        display(proj.line_integral(ph.volume)), (proj.pixel_mm, proj.pixel_mm), lung_rows
    )
    for finding in ph.findings:
        if finding.box_voxel is None or finding.crop is None:
            raise ValueError(f"finding {finding.kind!r} lacks its painted voxels (box_voxel)")
        footprint = proj.footprint(finding_mask(finding.box_voxel, finding.crop, ph.volume.shape))
        box = proj.box(finding.box_voxel)
        side, zone = box_location(box, film.image.shape, lung_rows)
        if finding.side in ("right", "left") and side != "central":
            side = finding.side
        film.findings.append(
            {
                **finding.to_dict(),
                "box": box,
                "footprint_pixels": int(footprint.sum()),
                "side": side,
                "zone": zone,
            }
        )
        film.footprints.append(footprint)
    return film
