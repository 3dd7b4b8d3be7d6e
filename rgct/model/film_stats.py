"""Region statistics of a radiograph box: the 2D counterpart of the CT histograms.

The region classifier of a radiograph model (``data.modality: cxr`` with ``model.region_stats``)
also reads, under the exact box mask at the model's input resolution:

- histograms of the displayed value (bright = attenuating: an effusion or consolidation is
  brighter than aerated lung, emphysema darker), of the value minus its local 5x5 and 15x15
  mean (a nodule or calcification against its surroundings), and of the local 3x3 minimum (a
  solid spot survives it, a one-pixel line does not), each as sqrt(fraction of the region) and
  log1p(pixel count) / 5, plus log(region pixels) / 10;
- the region's geometry as fractions of the film: the mask's bounding box (left, top, right,
  bottom), its centre, width and height, the area fraction and how much of its bounding box the
  mask fills. Where a box lies and how big it is is evidence of what it holds (a heart-sized
  box low in the middle, a small round one in a lung) and, under a zone mask, of which zone is
  asked about.

The patch grid is 8 pixels coarse and a phantom nodule's box a few pixels wide, so pooled
patch features alone miss it; the histograms count its pixels.

Examples::

    stats = FilmRegionStats()
    f = stats(torch.rand(2, 1, 64, 64), torch.ones(2, 1, 64, 64))
    f.shape  # torch.Size([2, stats.num_features])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

VALUE_EDGES = tuple(round(0.05 * k, 2) for k in range(1, 20))
"""Interior bin edges of the displayed value (0..1) and of its local minimum."""

CONTRAST_EDGES = (-0.2, -0.1, -0.05, -0.03, -0.015, 0.015, 0.03, 0.05, 0.1, 0.2)
"""Interior bin edges of the value minus its local mean."""

FILTERS = ("value", "contrast5", "contrast15", "min3")
"""The filtered images whose histograms are taken, in feature order."""

GEOMETRY = ("left", "top", "right", "bottom", "centre_x", "centre_y", "width", "height", "area")
GEOMETRY += ("fill",)
"""Geometry features of a mask, fractions of the film (``fill``: of the bounding box)."""


def _box_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over a k x k window around each pixel (at the borders: over the pixels inside)."""
    return F.avg_pool2d(x, k, 1, k // 2, count_include_pad=False)


def _box_min(x: torch.Tensor, k: int) -> torch.Tensor:
    """Minimum over a k x k window around each pixel (a grey-scale erosion)."""
    return -F.max_pool2d(-x, k, 1, k // 2)


def mask_geometry(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) masks -> (B, len(GEOMETRY)) geometry features (module notes).

    Raises:
        ValueError: an empty mask.
    """
    inside = mask[:, 0] > 0.5  # (B, H, W)
    b, h, w = inside.shape
    rows, cols = inside.any(2), inside.any(1)  # (B, H), (B, W)
    if not bool(rows.any(1).all()):
        raise ValueError("a region mask is empty: it covers no pixel of the film")
    r = torch.arange(h, device=mask.device, dtype=torch.float32)
    c = torch.arange(w, device=mask.device, dtype=torch.float32)
    top = torch.where(rows, r, float(h)).amin(1) / h
    bottom = (torch.where(rows, r, -1.0).amax(1) + 1) / h
    left = torch.where(cols, c, float(w)).amin(1) / w
    right = (torch.where(cols, c, -1.0).amax(1) + 1) / w
    width, height = right - left, bottom - top
    area = inside.flatten(1).float().mean(1)
    fill = area / (width * height).clamp(min=1e-9)
    centre_x, centre_y = (left + right) / 2, (top + bottom) / 2
    return torch.stack(
        [left, top, right, bottom, centre_x, centre_y, width, height, area, fill], dim=1
    )


class FilmRegionStats(nn.Module):
    """Histograms of filtered display values under a box mask, and its geometry (no
    parameters); see the module notes."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("value_edges", torch.tensor(VALUE_EDGES), False)
        self.register_buffer("contrast_edges", torch.tensor(CONTRAST_EDGES), False)
        self.bins = {
            name: len(CONTRAST_EDGES if name.startswith("contrast") else VALUE_EDGES) + 1
            for name in FILTERS
        }

    @property
    def num_features(self) -> int:
        return 2 * sum(self.bins.values()) + 1 + len(GEOMETRY)

    def filtered(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """(U, C, H, W) films in [0, 1] -> {filter: (U, H*W)} of their first channel."""
        x = image[:, :1].float()
        out = {
            "value": x,
            "contrast5": x - _box_mean(x, 5),
            "contrast15": x - _box_mean(x, 15),
            "min3": _box_min(x, 3),
        }
        return {k: out[k].flatten(1) for k in FILTERS}

    def edges(self, name: str) -> torch.Tensor:
        """The interior bin edges of filter ``name``."""
        return self.contrast_edges if name.startswith("contrast") else self.value_edges

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Features (B, num_features) of each mask's region of ``image``.

        Args:
            image: (B, C, H, W) films, or (1, C, H, W) shared by all B masks.
            mask: (B, 1, H, W) in {0, 1}, the image's size.
        """
        from rgct.model.region_classifier import masked_histograms

        if image.ndim != 4 or mask.ndim != 4 or image.shape[2:] != mask.shape[2:]:
            raise ValueError(
                f"film stats need a (B,C,H,W) film and a (B,1,H,W) mask of the same size, got "
                f"{tuple(image.shape)} and {tuple(mask.shape)}"
            )
        return torch.cat([masked_histograms(self, image, mask), mask_geometry(mask)], dim=1)
