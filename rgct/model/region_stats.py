"""First-order intensity statistics of the voxels under a region mask (``model.region_stats``).

What the region classifier is given beside the encoder's pooled patch features: for the
image's first channel (the ``data.hu_window`` channel, mapped back to Hounsfield units), the
histogram of the voxels inside the region mask, at full input resolution, of:

- the HU value itself (low-attenuation areas: emphysema, LAA-950; ground glass -700..-400;
  fluid and soft tissue 0..60; calcium above 130 HU: the quantities radiologists measure),
- the value minus its local 3x3x3 and 7x7x7 mean (small bright or dark spots against their
  surroundings: calcifications, nodules, airway walls),
- the local 3x3x3 and 3x5x5 minimum (a grey-scale erosion: thin vessels vanish, a solid
  nodule or a thickened wall survives).

Each histogram is returned as sqrt(fraction of the region) and log1p(voxel count) / 5, plus
log(region voxels) / 10: bounded features an MLP takes as they are. Nothing here is learned;
the mask is used exactly, so a finding just outside the region never counts inside it (the
encoder's patch grid is 8 voxels coarse).

Examples::

    stats = RegionIntensityStats(hu_window=(-1000.0, 200.0))
    f = stats(torch.rand(2, 1, 32, 64, 64), torch.ones(2, 1, 32, 64, 64))
    f.shape  # torch.Size([2, stats.num_features])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

VALUE_EDGES_HU = (
    -990, -970, -950, -930, -910, -890, -870, -850, -830, -800, -750, -700, -650, -600,
    -550, -500, -400, -300, -200, -100, -50, -20, 0, 10, 20, 30, 40, 50, 60, 80, 100, 130,
    200, 300, 500, 800,
)  # fmt: skip
"""Interior bin edges (HU) for the value and local-minimum histograms; edges outside the
window are dropped (the window clips those values)."""

CONTRAST_EDGES_HU = (-300, -150, -80, -50, -30, -15, 15, 30, 50, 80, 150, 300)
"""Interior bin edges (HU) for value minus local mean."""

FILTERS = ("value", "contrast3", "contrast7", "min3", "min355")
"""The filtered images whose histograms are taken, in feature order."""


def _separable(pool, x: torch.Tensor, k: tuple[int, int, int], **kw) -> torch.Tensor:
    """Apply a box ``pool`` (stride 1, same size) one axis at a time: exact for mean and max."""
    for axis, size in enumerate(k):
        if size > 1:
            kernel, pad = [1, 1, 1], [0, 0, 0]
            kernel[axis], pad[axis] = size, size // 2
            x = pool(x, tuple(kernel), 1, tuple(pad), **kw)
    return x


def _box_mean(x: torch.Tensor, k: tuple[int, int, int]) -> torch.Tensor:
    """Mean over a k-box around each voxel (at the borders: over the voxels inside)."""
    return _separable(F.avg_pool3d, x, k, count_include_pad=False)


def _box_min(x: torch.Tensor, k: tuple[int, int, int]) -> torch.Tensor:
    """Minimum over a k-box around each voxel (a grey-scale erosion)."""
    return -_separable(F.max_pool3d, -x, k)


def unique_images(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``image`` (B, ...) without repeats: ``(unique (U, ...), inverse (B,))`` with
    ``unique[inverse] == image``. Batches that ask several questions of one volume repeat it;
    the encoder and the filters then run once per volume."""
    keep: list[int] = []
    inverse = []
    for i in range(image.shape[0]):
        same = next((k for k, j in enumerate(keep) if torch.equal(image[i], image[j])), None)
        if same is None:
            keep.append(i)
            same = len(keep) - 1
        inverse.append(same)
    return image[keep], torch.tensor(inverse, device=image.device)


class RegionIntensityStats(nn.Module):
    """Histograms of filtered HU values under a region mask (no parameters).

    Args:
        hu_window: (low, high) of the image's first channel, which holds
            ``(clip(HU, low, high) - low) / (high - low)``.
    """

    def __init__(self, hu_window: tuple[float, float]) -> None:
        super().__init__()
        lo, hi = (float(v) for v in hu_window)
        if not hi > lo:
            raise ValueError(f"region stats: hu_window must be (low, high), got {hu_window}")
        self.hu_window = (lo, hi)
        value = [e for e in VALUE_EDGES_HU if lo < e < hi]
        self.register_buffer("value_edges", torch.tensor(value, dtype=torch.float32), False)
        self.register_buffer(
            "contrast_edges", torch.tensor(CONTRAST_EDGES_HU, dtype=torch.float32), False
        )
        self.bins = {
            name: (len(value) if name in ("value", "min3", "min355") else len(CONTRAST_EDGES_HU))
            + 1
            for name in FILTERS
        }

    @property
    def num_features(self) -> int:
        return 2 * sum(self.bins.values()) + 1

    def filtered(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, C, D, H, W) image in window units -> {filter: (B, D*H*W) HU}."""
        lo, hi = self.hu_window
        hu = lo + image[:, :1].float() * (hi - lo)
        out = {
            "value": hu,
            "contrast3": hu - _box_mean(hu, (3, 3, 3)),
            "contrast7": hu - _box_mean(hu, (7, 7, 7)),
            "min3": _box_min(hu, (3, 3, 3)),
            "min355": _box_min(hu, (3, 5, 5)),
        }
        return {k: out[k].flatten(1) for k in FILTERS}

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Features (B, num_features) of each mask's region in ``image``.

        Args:
            image: (B, C, D, H, W) or (1, C, D, H, W) shared by all B masks.
            mask: (B, 1, D, H, W) in {0, 1}, same spatial size as the image.
        """
        if image.ndim != 5 or mask.ndim != 5 or image.shape[2:] != mask.shape[2:]:
            raise ValueError(
                f"region stats need a (B,C,D,H,W) image and a (B,1,D,H,W) mask of the same "
                f"size, got {tuple(image.shape)} and {tuple(mask.shape)}"
            )
        b = mask.shape[0]
        if image.shape[0] not in (1, b):
            raise ValueError(f"{image.shape[0]} images for {b} masks")
        weight = (mask[:, 0] > 0.5).flatten(1).float()  # (B, N)
        n = weight.sum(1, keepdim=True)
        if (n <= 0).any():
            raise ValueError("a region mask is empty: it covers no voxel of the volume")
        if image.shape[0] == 1:
            counts = self._counts(image, weight)
        else:  # the filters once per distinct volume
            uniq, inverse = unique_images(image)
            counts = torch.zeros(b, sum(self.bins.values()), device=weight.device)
            for u in range(uniq.shape[0]):
                rows = (inverse == u).nonzero().flatten()
                counts[rows] = self._counts(uniq[u : u + 1], weight[rows])
        feats, start = [], 0
        for name in FILTERS:
            c = counts[:, start : start + self.bins[name]]
            feats += [torch.sqrt(c / n), torch.log1p(c) / 5.0]
            start += self.bins[name]
        feats.append(torch.log(n) / 10.0)
        return torch.cat(feats, dim=1)

    def _counts(self, image: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Histogram counts (B, sum of bins) of one image (1, C, D, H, W) under B masks."""
        out = []
        for name, values in self.filtered(image).items():
            edges = self.contrast_edges if name.startswith("contrast") else self.value_edges
            idx = torch.bucketize(values, edges).expand(weight.shape[0], -1)
            counts = torch.zeros(weight.shape[0], self.bins[name], device=weight.device)
            out.append(counts.scatter_add_(1, idx, weight))
        return torch.cat(out, dim=1)
