"""Global and region tokens from a patch-feature grid.

Global tokens: the grid average-pooled to ``g x g x g`` cells (``num_global_tokens = g**3``;
a 2D radiograph grid to ``g x g`` cells, ``g**2``).
Region tokens, for one binary mask per sample (a radiograph's box is a mask), pooled under the
mask downsampled to the grid:
  1. the mask-weighted mean of the patch features,
  2. the masked max (a small bright finding survives it),
  3. a region-evidence token: the auxiliary per-region abnormality classifier's probabilities
     (one per CT-RATE label), fed back as a token, so what the classifier learned from direct
     supervision reaches the language model in a form it can read.

The classifier's heads are built, fitted, thresholded and read through
:mod:`rgct.model.region_classifier` (its one home); the pooler only holds them, so a checkpoint's
``pooler.*`` weights keep their names.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from rgct.model.film_stats import FilmRegionStats
from rgct.model.region_classifier import (
    RegionIntensityStats,
    build_classifier_head,
    build_stats_head,
)


def _adaptive_avg_pool(x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """Average-pool (B, C, *spatial) to ``grid`` (2 or 3 spatial axes)."""
    pool = F.adaptive_avg_pool3d if len(grid) == 3 else F.adaptive_avg_pool2d
    return pool(x, grid)


def erode_mask(mask: torch.Tensor, voxels: int) -> torch.Tensor:
    """(B, 1, *spatial) binary masks eroded by ``voxels`` (a (2v+1)-cube, or square in 2D,
    structuring element; the image border does not erode). A row that erosion would empty
    keeps its mask: a region too thin to erode is still a region."""
    if voxels < 0:
        raise ValueError(f"erosion must be >= 0 voxels, got {voxels}")
    if voxels == 0:
        return mask
    pool = F.max_pool3d if mask.ndim == 5 else F.max_pool2d
    inside = mask.float() > 0.5
    eroded = 1.0 - pool((~inside).float(), 2 * voxels + 1, stride=1, padding=voxels)
    empty = eroded.flatten(1).sum(1) <= 0
    if empty.any():
        eroded[empty] = inside[empty].float()
    return eroded.to(mask.dtype)


def downsample_mask(mask: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """(B, 1, D, H, W) binary mask -> (B, d*h*w) fraction of each patch covered by the mask
    (2D: (B, 1, H, W) -> (B, h*w))."""
    return _adaptive_avg_pool(mask.float(), grid).flatten(1)


class RegionPooler(nn.Module):
    """Pools a (B, C, d, h, w) grid into global tokens and per-region tokens.

    Args:
        channels: C of the feature grid.
        num_global_tokens: a cube number (1, 8, 27, ...); a square (1, 4, 9, ...) in 2D.
        num_labels: classes of the auxiliary region classifier.
        region_stats: the HU window of the image's first channel, to add the intensity
            histogram head (None: patch features only); in 2D any window adds the film
            statistics head (:class:`rgct.model.film_stats.FilmRegionStats`).
        source_erosion: voxels by which a mask-source head (:meth:`add_source_head`) reads
            its region masks eroded (``model.source_erosion``); the main head and the
            language model's region tokens read them as given.

    Examples::

        pool = RegionPooler(64, num_global_tokens=8, num_labels=18)
        g, r, logits = pool(torch.randn(2, 64, 4, 8, 8), torch.ones(2, 1, 32, 64, 64))
        # g: (2, 8, 64), r: (2, 2, 64), logits: (2, 18)
        pool2d = RegionPooler(64, num_global_tokens=16, spatial_dims=2)
        g, r, logits = pool2d(torch.randn(2, 64, 16, 16), torch.ones(2, 1, 256, 256))
        # g: (2, 16, 64), r: (2, 2, 64)
    """

    def __init__(
        self,
        channels: int,
        num_global_tokens: int = 8,
        num_labels: int = 18,
        region_stats: tuple[float, float] | None = None,
        spatial_dims: int = 3,
        source_erosion: int = 0,
    ) -> None:
        super().__init__()
        if source_erosion < 0:
            raise ValueError(f"source_erosion must be >= 0 voxels, got {source_erosion}")
        self.source_erosion = source_erosion
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        g = round(num_global_tokens ** (1 / spatial_dims))
        if g**spatial_dims != num_global_tokens or num_global_tokens < 1:
            kind = "a cube" if spatial_dims == 3 else "a square"
            raise ValueError(f"num_global_tokens must be {kind} number, got {num_global_tokens}")
        if channels < 1 or num_labels < 1:
            raise ValueError(f"channels and num_labels must be >= 1, got {channels}, {num_labels}")
        self.spatial_dims = spatial_dims
        self.global_grid = (g,) * spatial_dims
        self.norm = nn.LayerNorm(channels)
        self.classifier = build_classifier_head(channels, num_labels)
        self.stats: RegionIntensityStats | None = None
        self.stats_head: nn.Module | None = None
        if region_stats is not None:
            self.add_region_stats(region_stats, num_labels)
        self.source_heads = nn.ModuleDict()

    def add_source_head(self, name: str) -> None:
        """A classifier head of mask source ``name`` (``model.source_heads``): a copy of the
        main head (and its statistics head), so that it classifies as the main one until
        fitted on that source's regions. Replaces one of that name."""
        head = nn.ModuleDict({"classifier": copy.deepcopy(self.classifier)})
        if self.stats_head is not None:
            head["stats_head"] = copy.deepcopy(self.stats_head)
        self.source_heads[name] = head

    def add_region_stats(self, hu_window: tuple[float, float], num_labels: int = 18) -> None:
        """Add the intensity-histogram head (output layer at zero: logits unchanged): HU
        histograms of a CT region (``hu_window``: the first channel's window), or a
        radiograph box's value histograms and geometry (2D: the window is not used)."""
        self.stats = (
            RegionIntensityStats(hu_window) if self.spatial_dims == 3 else FilmRegionStats()
        )
        self.stats_head = build_stats_head(self.stats.num_features, num_labels)
        self.stats_head.train(self.training)

    def heads(self, source: str | None = None) -> tuple[nn.Module, nn.Module | None]:
        """(classifier, statistics head) that classify regions of mask source ``source``: its
        own head where the pooler holds one, else the main head."""
        if source is not None and source in self.source_heads:
            head = self.source_heads[source]
            return head["classifier"], head["stats_head"] if "stats_head" in head else None
        return self.classifier, self.stats_head

    def source_mask(self, mask: torch.Tensor, source: str | None = None) -> torch.Tensor:
        """The masks that the head of mask source ``source`` reads (:meth:`heads`): eroded by
        ``source_erosion`` voxels where that source has a head of its own, else ``mask``."""
        if source is not None and source in self.source_heads and self.source_erosion:
            return erode_mask(mask, self.source_erosion)
        return mask

    def classify(
        self, region: torch.Tensor, stats: torch.Tensor | None = None, source: str | None = None
    ) -> torch.Tensor:
        """Region tokens (B, 2, C) [+ intensity features (B, F)] -> logits (B, L), by the head
        of mask source ``source`` (:meth:`heads`)."""
        classifier, stats_head = self.heads(source)
        logits = classifier(region.flatten(1))
        if stats_head is not None:
            if stats is None:
                raise ValueError("this region classifier reads intensity statistics: pass them")
            logits = logits + stats_head(stats)
        return logits

    def forward(
        self,
        features: torch.Tensor,
        mask: torch.Tensor,
        image: torch.Tensor | None = None,
        source: str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pool features under the mask.

        Args:
            features: (B, C, d, h, w) patch features (2D: (B, C, h, w)).
            mask: (B, 1, D, H, W) region mask in {0, 1} at input resolution (2D: (B, 1, H, W)).
            image: (B or 1, C_in, D, H, W) model input; needed with ``region_stats``.
            source: where the mask came from; a source with a head of its own
                (:meth:`add_source_head`) is classified by it, under the mask eroded by
                ``source_erosion`` (:meth:`source_mask`).

        Returns:
            global_tokens (B, G, C), region_tokens (B, 2, C) [mean, max], logits (B, L).
        """
        glob, region = self.pool(features, mask)
        read = self.source_mask(mask, source)  # what the classifying head reads
        seen = region if read is mask else self.region_tokens(features, read)
        stats = None
        if self.stats is not None:
            if image is None:
                raise ValueError(
                    "model.region_stats: the region classifier needs the image as well"
                )
            stats = self.stats(image, read)
        return glob, region, self.classify(seen, stats, source)

    def pool(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global tokens (B, G, C) and region tokens (B, 2, C), both normalised."""
        region = self.region_tokens(features, mask)
        glob = _adaptive_avg_pool(features, self.global_grid).flatten(2).transpose(1, 2)  # (B,G,C)
        return self.norm(glob), region

    def region_tokens(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Region tokens (B, 2, C) [masked mean, masked max], normalised (:meth:`pool`
        without the global tokens: what the region classifier reads)."""
        rank = 2 + self.spatial_dims
        if features.ndim != rank or mask.ndim != rank or features.shape[0] != mask.shape[0]:
            axes = "d,h,w" if self.spatial_dims == 3 else "h,w"
            big = "D,H,W" if self.spatial_dims == 3 else "H,W"
            raise ValueError(
                f"expected (B,C,{axes}) features and (B,1,{big}) mask, got "
                f"{tuple(features.shape)} and {tuple(mask.shape)}"
            )
        grid = tuple(features.shape[2:])
        flat = features.flatten(2)  # (B, C, N)
        weight = downsample_mask(mask, grid)  # (B, N)
        if (weight.sum(dim=1) <= 0).any():
            raise ValueError("a region mask is empty: it covers no voxel (pixel) of the image")
        mean = (flat * weight[:, None]).sum(-1) / weight.sum(-1, keepdim=True)  # (B, C)
        neg = torch.finfo(flat.dtype).min
        maxed = flat.masked_fill(weight[:, None] <= 0, neg).amax(-1)  # (B, C)
        return self.norm(torch.stack([mean, maxed], dim=1))  # (B, 2, C)
