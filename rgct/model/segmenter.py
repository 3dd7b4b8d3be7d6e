"""The learned segmenter: regions, lobes, prompt anatomy and finding voxel maps from the image.

A MONAI :class:`~monai.networks.nets.UNet` runs at a reduced internal resolution (half the
model grid by default: 2 s budget per volume on two CPU cores), its logits are upsampled back
to the input grid (or, ``backbone="cnn"``, the strided residual CNN of
:class:`rgct.model.encoder.CNNEncoder` with a 1x1 class head gives logits per patch of
``grid_stride`` pixels, upsampled the same way: the radiograph finding detector, which must
say *whether* a film holds a finding before *where*, and learns that from the boxes far faster
than a UNet does), and an optional light refinement convolution sees the full-resolution image
next to the upsampled logits (thin structures such as the pleura are one voxel thick at full
resolution). Output channels follow :data:`rgct.constants.SEGMENT_CLASSES`: one independent
sigmoid per class (multi-label: a lobe lies inside the lung region, a nodule inside its lobe).

Checkpoints are a folder with ``segmenter.safetensors`` (weights only) and ``segmenter.json``
(the network's keyword arguments, its class list and free-form metadata); loading never
unpickles.

Example::

    net = Segmenter(in_channels=1)
    logits = net(torch.rand(1, 1, 64, 128, 128))     # (1, 30, 64, 128, 128)
    save_segmenter("runs/seg", net, {"steps": 100})
    Segmenter(focal_classes=["Lung nodule"])         # + the full-resolution nodule detector
    Segmenter(classes=["Nodule/Mass"], spatial_dims=2, backbone="cnn", channels=(24, 48, 96))
    net2, meta = load_segmenter("runs/seg")
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.nets import UNet
from safetensors.torch import load_file, save_file
from torch import nn

from rgct.config import DataConfig
from rgct.constants import HU_WINDOW, SEGMENT_CLASSES
from rgct.files import atomic_path, write_json
from rgct.model.detector import FocalDetector

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "segmenter.safetensors"
CONFIG_FILE = "segmenter.json"
FORMAT_VERSION = 1
BACKBONES = ("unet", "cnn")
"""What computes a segmenter's logits (:class:`Segmenter`'s ``backbone``)."""


class Segmenter(nn.Module):
    """Multi-label segmenter: the regions, lobes, anatomy and findings of a chest CT (3D), or
    the finding boxes of a chest radiograph (``spatial_dims=2``: one channel per boxable class,
    the film's own localiser, :mod:`rgct.generate.localize_cxr`).

    Args:
        in_channels: image channels (one per HU window of the preprocessing).
        classes: output channel names, in order (default :data:`SEGMENT_CLASSES`).
        channels: UNet feature widths per level (at least two levels).
        num_res_units: residual units per UNet block.
        internal_scale: factor in (0, 1] applied to the input size before the UNet; each
            internal size is rounded up to a multiple of the network's total stride
            (``2 ** (len(channels) - 1)``; the cnn backbone: ``grid_stride``).
        refine_channels: width of the full-resolution refinement convolution (0 = none).
        dropout: dropout inside the UNet blocks.
        spatial_dims: 3 (CT volumes) or 2 (radiographs).
        focal_classes: classes whose channel comes from a full-resolution
            :class:`rgct.model.detector.FocalDetector` (its logits, upsampled to the input
            grid, replace the UNet's for those classes; 3D only). Empty: no detector.
        focal_width: the detector's feature width.
        backbone: ``"unet"`` (default) or ``"cnn"``: the strided residual CNN of
            :class:`rgct.model.encoder.CNNEncoder` (``channels[-1]`` output features over
            ``len(channels)`` stages) and a 1x1 class head, one logit per patch of
            ``grid_stride`` pixels (or voxels) per axis, upsampled to the input grid.
        grid_stride: the cnn backbone's total stride per axis (a power of two).

    Shapes:
        input (B, in_channels, D, H, W) preprocessed image in [0, 1] ((B, in_channels, H, W)
        with ``spatial_dims=2``);
        output (B, K, D, H, W) logits, K = ``len(classes)``.

    Examples::

        >>> net = Segmenter(in_channels=1, channels=(8, 16, 32), internal_scale=0.5)
        >>> net(torch.rand(2, 1, 16, 32, 32)).shape
        torch.Size([2, 30, 16, 32, 32])
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        classes: Sequence[str] = SEGMENT_CLASSES,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        num_res_units: int = 1,
        internal_scale: float = 0.5,
        refine_channels: int = 0,
        dropout: float = 0.0,
        spatial_dims: int = 3,
        focal_classes: Sequence[str] = (),
        focal_width: int = 16,
        backbone: str = "unet",
        grid_stride: int = 8,
    ) -> None:
        super().__init__()
        classes = tuple(str(c) for c in classes)
        channels = tuple(int(c) for c in channels)
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if not classes or len(set(classes)) != len(classes):
            raise ValueError(f"classes must be non-empty and unique, got {list(classes)}")
        if len(channels) < 2 or min(channels) < 1:
            raise ValueError(f"channels needs >= 2 positive widths, got {list(channels)}")
        if num_res_units < 0:
            raise ValueError(f"num_res_units must be >= 0, got {num_res_units}")
        if not 0.0 < internal_scale <= 1.0:
            raise ValueError(f"internal_scale must lie in (0, 1], got {internal_scale}")
        if refine_channels < 0:
            raise ValueError(f"refine_channels must be >= 0, got {refine_channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        focal_classes = tuple(str(c) for c in focal_classes)
        missing = [c for c in focal_classes if c not in classes]
        if missing or len(set(focal_classes)) != len(focal_classes):
            raise ValueError(
                f"focal_classes {list(focal_classes)} must be distinct classes of the segmenter"
                + (f"; not among its classes: {missing}" if missing else "")
            )
        if focal_classes and spatial_dims != 3:
            raise ValueError("focal_classes (the full-resolution detector) need spatial_dims=3")
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {list(BACKBONES)}, got {backbone!r}")
        self.backbone = backbone
        self.grid_stride = int(grid_stride)
        self.spatial_dims = int(spatial_dims)
        self.focal_classes = focal_classes
        self.focal_width = int(focal_width)
        self.in_channels = int(in_channels)
        self.classes = classes
        self.channels = channels
        self.num_res_units = int(num_res_units)
        self.internal_scale = float(internal_scale)
        self.refine_channels = int(refine_channels)
        self.dropout = float(dropout)
        k = len(classes)
        self.unet: UNet | None = None
        self.cnn: nn.Module | None = None
        if backbone == "unet":
            self.multiple = 2 ** (len(channels) - 1)
            self.unet = UNet(
                spatial_dims=self.spatial_dims,
                in_channels=self.in_channels,
                out_channels=k,
                channels=channels,
                strides=(2,) * (len(channels) - 1),
                num_res_units=self.num_res_units,
                dropout=self.dropout,
            )
        else:
            from rgct.model.encoder import CNNEncoder

            self.multiple = self.grid_stride
            conv = nn.Conv3d if self.spatial_dims == 3 else nn.Conv2d
            self.cnn = nn.Sequential(
                CNNEncoder(
                    feature_size=channels[-1],
                    patch_size=(self.grid_stride,) * self.spatial_dims,
                    depth=len(channels),
                    in_channels=self.in_channels,
                ),
                conv(channels[-1], k, kernel_size=1),
            )
        self.refine: nn.Module | None = None
        if self.refine_channels:
            self.refine = nn.Sequential(
                Convolution(
                    self.spatial_dims,
                    k + self.in_channels,
                    self.refine_channels,
                    kernel_size=3,
                    norm="instance",
                ),
                (nn.Conv3d if self.spatial_dims == 3 else nn.Conv2d)(
                    self.refine_channels, k, kernel_size=1
                ),
            )
        self.focal: FocalDetector | None = None
        if focal_classes:
            self.focal = FocalDetector(self.in_channels, len(focal_classes), self.focal_width)

    @property
    def num_classes(self) -> int:
        """K, the number of output channels."""
        return len(self.classes)

    def config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this network (JSON-ready)."""
        return {
            "in_channels": self.in_channels,
            "classes": list(self.classes),
            "channels": list(self.channels),
            "num_res_units": self.num_res_units,
            "internal_scale": self.internal_scale,
            "refine_channels": self.refine_channels,
            "dropout": self.dropout,
            "spatial_dims": self.spatial_dims,
            "focal_classes": list(self.focal_classes),
            "focal_width": self.focal_width,
            "backbone": self.backbone,
            "grid_stride": self.grid_stride,
        }

    @property
    def focal_index(self) -> list[int]:
        """Channel index of each of :attr:`focal_classes`."""
        return [self.classes.index(c) for c in self.focal_classes]

    def internal_size(self, size: Sequence[int]) -> tuple[int, ...]:
        """(D, H, W) (or (H, W)) the UNet runs at for an input of spatial ``size``."""
        m = self.multiple
        return tuple(max(m, math.ceil(int(s) * self.internal_scale / m) * m) for s in size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) image -> (B, K, D, H, W) logits ((B, C, H, W) in 2D)."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            dims = "D, H, W" if self.spatial_dims == 3 else "H, W"
            raise ValueError(
                f"Segmenter expects (B, {self.in_channels}, {dims}), got {tuple(x.shape)}"
            )
        size = tuple(int(s) for s in x.shape[2:])
        inner = self.internal_size(size)
        mode = "trilinear" if self.spatial_dims == 3 else "bilinear"
        low = x if inner == size else F.interpolate(x, size=inner, mode=mode)
        net = self.unet if self.unet is not None else self.cnn
        logits = net(low)  # (B, K, d, h, w): the cnn's per patch
        if tuple(logits.shape[2:]) != size:
            logits = F.interpolate(logits, size=size, mode=mode, align_corners=False)
        if self.refine is not None:
            logits = logits + self.refine(torch.cat([logits, x], dim=1))
        if self.focal is not None:
            focal = F.interpolate(self.focal(x), size=size, mode=mode, align_corners=False)
            index = torch.tensor(self.focal_index, device=logits.device)
            logits = logits.index_copy(1, index, focal.to(logits.dtype))
        return logits


_SEGMENTER_KEYS = (
    "in_channels",
    "classes",
    "channels",
    "num_res_units",
    "internal_scale",
    "refine_channels",
    "dropout",
    "spatial_dims",
    "focal_classes",
    "focal_width",
    "backbone",
    "grid_stride",
)


def build_segmenter(config: dict[str, Any]) -> Segmenter:
    """A :class:`Segmenter` from :meth:`Segmenter.config` output; unknown keys raise."""
    known = set(_SEGMENTER_KEYS)
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown segmenter settings {unknown}; known: {sorted(known)}")
    return Segmenter(**config)


def copy_segmenter(src: str | Path, dst: str | Path, *, required: bool = True) -> None:
    """Copy a folder's segmenter (weights and config) into another model folder, with the lobe
    head that places findings on its lobes when the folder has one
    (:mod:`rgct.model.lobe_head`: it reads the volume's intensities under the lobes, not the
    encoder, so a stage that retrains the rest keeps it valid); with ``required=False`` a
    folder without a segmenter copies nothing."""
    from rgct.model import lobe_head

    for name in (WEIGHTS_FILE, CONFIG_FILE):
        path = Path(src) / name
        if required or path.is_file():
            shutil.copy2(path, Path(dst) / name)
    if (Path(src) / WEIGHTS_FILE).is_file() and lobe_head.has_lobe_head(src):
        for name in (lobe_head.WEIGHTS_FILE, lobe_head.CONFIG_FILE):
            shutil.copy2(Path(src) / name, Path(dst) / name)


def save_segmenter(
    out_dir: str | Path, model: Segmenter, meta: dict[str, Any] | None = None
) -> Path:
    """Write ``segmenter.safetensors`` and ``segmenter.json`` into ``out_dir`` (atomically).

    Args:
        out_dir: folder (created if needed).
        model: the network (its weights are saved in float32 on CPU).
        meta: JSON-ready extras (data settings, steps, measured Dice ...).

    Returns:
        ``out_dir`` as a Path.
    """
    out = Path(out_dir)
    state = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()
    }
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    write_json(
        out / CONFIG_FILE,
        {"format": FORMAT_VERSION, "config": model.config(), "meta": dict(meta or {})},
    )
    return out


def load_segmenter(path: str | Path, device: str | torch.device = "cpu") -> tuple[Segmenter, dict]:
    """Read a segmenter folder written by :func:`save_segmenter` (safetensors, no pickle).

    Args:
        path: the folder, or its ``segmenter.safetensors`` file.
        device: where to put the weights.

    Returns:
        ``(model in eval mode, meta dict)``.

    Raises:
        FileNotFoundError: no ``segmenter.safetensors`` / ``segmenter.json`` there.
        ValueError: an unreadable config, or weights that do not fit it.
    """
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    weights, cfg_file = folder / WEIGHTS_FILE, folder / CONFIG_FILE
    for f in (weights, cfg_file):
        if not f.is_file():
            raise FileNotFoundError(
                f"{f}: not found (a segmenter checkpoint folder holds "
                f"{WEIGHTS_FILE} and {CONFIG_FILE})"
            )
    try:
        saved = json.loads(cfg_file.read_text(encoding="utf-8"))
        config = saved["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{cfg_file}: not a segmenter config ({e})") from e
    if saved.get("format") != FORMAT_VERSION:
        raise ValueError(f"{cfg_file}: format {saved.get('format')!r}, expected {FORMAT_VERSION}")
    model = build_segmenter(config)
    state = load_file(str(weights))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{weights}: weights do not fit {cfg_file} ({e})") from e
    model.to(device).eval()
    return model, dict(saved.get("meta") or {})


def data_meta(cfg: DataConfig) -> dict:
    """The preprocessing a segmenter checkpoint needs at inference (JSON-ready)."""
    return {
        "modality": cfg.modality,
        "input_shape": [int(s) for s in cfg.input_shape],
        "hu_window": [float(v) for v in cfg.hu_window],
        "extra_hu_windows": [[float(a), float(b)] for a, b in cfg.extra_hu_windows],
    }


def data_config_from_meta(meta: dict) -> DataConfig:
    """Inverse of :func:`data_meta` (a checkpoint without it gets the defaults)."""
    d = meta.get("data") or {}
    return DataConfig(
        modality=d.get("modality", "ct"),
        input_shape=tuple(d.get("input_shape", (64, 128, 128))),
        hu_window=tuple(d.get("hu_window", HU_WINDOW)),
        extra_hu_windows=tuple(tuple(w) for w in d.get("extra_hu_windows", ())),
    )
