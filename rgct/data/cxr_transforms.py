"""The deterministic MONAI pipeline of chest radiographs (``data.modality: cxr``).

The radiograph counterpart of :func:`rgct.data.transforms.build_deterministic_transforms`, and
the same dictionary keys: ``"image"`` (a ``.dicom``/``.dcm``/``.png`` path or a
:class:`~rgct.data.cxr.Radiograph`) and ``"mask"`` (a box mask: a 0/255 PNG path of the image's
size, checked against the image at ``"ref"``, or a bool array (H, W)). A radiograph is read as
displayed (:func:`rgct.data.cxr.load_radiograph`: VOI LUT / window applied, MONOCHROME1
inverted, float32 in [0, 1], bright = attenuating), so it needs no HU window; it is resized to
``data.input_shape`` (H, W) by area averaging, the mask by nearest neighbour, so a box keeps its
place on the film. Everything leaves as float32 tensors (1, H, W). :class:`TransformCache`
caches this part exactly as it caches CT volumes.

Example::

    det = build_radiograph_transforms(cfg.data)        # cfg.data.modality == "cxr"
    out = det({"image": "train/0a1b.dicom", "mask": "box_masks/0a1b_0.png", "ref": ...})
    out["image"].shape                                 # (1, 256, 256)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, MapTransform, Resized
from PIL import Image

from rgct.config import DataConfig
from rgct.data.cxr import DICOM_SUFFIXES, Radiograph, dicom_header, load_radiograph, png_size
from rgct.data.io import DataError, VolumeReadError
from rgct.data.transforms import IMAGE_RESIZE_MODE, KEYS


def radiograph_shape(image: str | Path | Radiograph) -> tuple[int, int]:
    """(H, W) of a radiograph, from its header when it is a file (pixels not read)."""
    if isinstance(image, Radiograph):
        return image.shape
    path = Path(image)
    if path.suffix.lower() in DICOM_SUFFIXES:
        header = dicom_header(path)
        return header["rows"], header["columns"]
    width, height = png_size(path)
    return height, width


def read_box_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """bool (H, W) of a mask PNG (non-zero = inside), checked to be the image's size.

    Raises:
        DataError: unreadable, or not ``shape``.
    """
    try:
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("L"))
    except (OSError, ValueError) as e:
        raise VolumeReadError(f"{path}: cannot read mask PNG ({e})") from e
    if pixels.shape != tuple(shape):
        raise DataError(
            f"mask {path} is {pixels.shape[1]}x{pixels.shape[0]} but its radiograph is "
            f"{shape[1]}x{shape[0]} (W x H)"
        )
    return pixels > 0


class LoadRadiographd(MapTransform):
    """Load ``image`` (path or Radiograph -> float32 (H, W)) and ``mask`` (PNG path or array
    -> float32 (H, W) in {0, 1}), the mask checked against the image (or ``d["ref"]``)."""

    def __init__(self, keys: tuple[str, ...] = KEYS) -> None:
        super().__init__(keys, allow_missing_keys=True)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        shape = None
        if "image" in d:
            image = d["image"]
            film = image if isinstance(image, Radiograph) else load_radiograph(image)
            d["image"] = np.asarray(film.array, dtype=np.float32)
            shape = film.shape
        if "mask" in d:
            mask = d["mask"]
            if isinstance(mask, np.ndarray):
                if mask.ndim != 2:
                    raise DataError(f"a radiograph mask must be (H, W), got shape {mask.shape}")
                arr = mask
            else:
                if shape is None:
                    if d.get("ref") is None:
                        raise DataError(f"mask {mask}: needs 'image' or 'ref' to check it against")
                    shape = radiograph_shape(d["ref"])
                arr = read_box_mask(mask, shape)
            if shape is not None and tuple(arr.shape) != tuple(shape):
                raise DataError(
                    f"mask of shape {tuple(arr.shape)} does not fit the radiograph {tuple(shape)}"
                )
            d["mask"] = np.asarray(arr, dtype=np.float32)
        d.pop("ref", None)
        return d


def build_radiograph_transforms(cfg: DataConfig) -> Compose:
    """Load as displayed, channel first, resize to ``cfg.input_shape`` (H, W): image by area
    averaging, mask nearest; float32 tensors out."""
    if cfg.modality != "cxr":
        raise DataError(f"radiograph transforms need data.modality=cxr, got {cfg.modality!r}")
    size = tuple(int(s) for s in cfg.input_shape)
    return Compose(
        [
            LoadRadiographd(KEYS),
            EnsureChannelFirstd(KEYS, channel_dim="no_channel", allow_missing_keys=True),
            Resized(
                KEYS,
                spatial_size=size,
                mode=(IMAGE_RESIZE_MODE, "nearest"),
                allow_missing_keys=True,
            ),
            EnsureTyped(
                KEYS,
                data_type="tensor",
                dtype=torch.float32,
                track_meta=False,
                allow_missing_keys=True,
            ),
        ]
    )


def preprocess_radiograph(
    film: Radiograph, masks: dict[str, np.ndarray] | None, cfg: DataConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The deterministic transforms on an in-memory radiograph (inference), as in training.

    Args:
        film: the radiograph.
        masks: name -> bool (H, W) of the film's size, or None.

    Returns:
        ``(image (1, H, W) float32 in [0, 1], {name: mask (1, H, W) float32 {0, 1}})`` at
        ``cfg.input_shape``.
    """
    det = build_radiograph_transforms(cfg)
    image = det({"image": film})["image"]
    out = {}
    for name, arr in (masks or {}).items():
        arr = np.asarray(arr)
        if arr.shape != film.shape:
            raise DataError(f"mask {name!r} of shape {arr.shape} does not fit {film.shape}")
        out[name] = det({"mask": arr})["mask"]
    return image, out
