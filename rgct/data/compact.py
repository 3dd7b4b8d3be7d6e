"""The compact sample encoding, and the one function that expands it for the model.

Images travel as uint16 ``round(x * 65535)`` (2 bytes per voxel, x in [0, 1]) and masks as
uint8 {0, 1} (1 byte per voxel) from the disk cache, through DataLoader workers and the batch,
to the device; :func:`expand_batch` turns them into the float32 tensors the model reads there.
Moving a float32 sample (8 MB at 64x128x128: image and mask) through worker IPC cost more than
reading it from the cache; compact it moves 3 MB. On disk masks are packed further, 1 bit per
voxel (:func:`encode_mask`).

Expanded values equal the float32 pipeline output within :data:`IMAGE_CACHE_TOLERANCE`
(images) and exactly (masks), on any device: the division is float32 either way.

Example::

    batch = collate([ds[i] for i in range(8)])      # image (8, C, D, H, W) uint16
    inputs = expand_batch(batch, device)            # image float32 in [0, 1] on device
"""

from __future__ import annotations

import numpy as np
import torch

IMAGE_CACHE_SCALE = 65535
"""Compact images hold ``round(x * 65535)`` as uint16 for x in [0, 1]."""
IMAGE_CACHE_TOLERANCE = 0.5 / IMAGE_CACHE_SCALE + 1e-7
"""Largest difference between an expanded image value and the float32 pipeline output (7.7e-6
of the [0, 1] range: 0.009 HU in the default 1200-HU window), float32 rounding included."""


def encode_image(image: np.ndarray) -> np.ndarray:
    """(C, D, H, W) float in [0, 1] -> uint16 ``round(x * 65535)`` (values outside are clipped)."""
    scaled = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * IMAGE_CACHE_SCALE
    return np.rint(scaled).astype(np.uint16)


def compact_image(image: torch.Tensor) -> torch.Tensor:
    """Float image tensor in [0, 1] (any shape, on the CPU) -> uint16 tensor (:func:`encode_image`)."""
    return torch.from_numpy(encode_image(image.numpy()))


def compact_mask(mask: torch.Tensor) -> torch.Tensor:
    """{0, 1} mask tensor (any dtype) -> uint8 tensor of the same shape."""
    return (mask > 0.5).to(torch.uint8)


def expand_image(image: torch.Tensor) -> torch.Tensor:
    """uint16 image (any shape, any device) -> float32 in [0, 1] on the same device.

    A floating-point image (already expanded, e.g. from :func:`rgct.data.transforms.preprocess`)
    is returned as float32 unchanged in value.

    Raises:
        TypeError: any other dtype.
    """
    if image.dtype == torch.uint16:
        return image.to(torch.float32) / IMAGE_CACHE_SCALE
    if image.is_floating_point():
        return image.to(torch.float32)
    raise TypeError(f"image: expected uint16 (compact) or floating point, got {image.dtype}")


def expand_mask(mask: torch.Tensor) -> torch.Tensor:
    """uint8 / bool {0, 1} mask (any shape, any device) -> float32 on the same device; a
    floating-point mask is returned as float32.

    Raises:
        TypeError: any other dtype.
    """
    if mask.dtype in (torch.uint8, torch.bool) or mask.is_floating_point():
        return mask.to(torch.float32)
    raise TypeError(f"mask: expected uint8 / bool (compact) or floating point, got {mask.dtype}")


def expand_batch(
    batch: dict, device: torch.device | str | None = None, *, non_blocking: bool = False
) -> dict:
    """A collated batch with its ``image`` and ``mask`` moved to ``device`` compact and expanded
    there (float32 (B, C, D, H, W) in [0, 1] and (B, 1, D, H, W) in {0, 1}); other keys as they
    are. Every consumer of dataset batches (training step, validation, generation, classifier
    fitting) goes through this function.

    Args:
        batch: from :func:`rgct.data.dataset.collate` (or one item: shapes without B).
        device: target device; None keeps each tensor where it is.
        non_blocking: passed to ``Tensor.to`` (pinned host memory).
    """
    out = dict(batch)
    for key, expand in (("image", expand_image), ("mask", expand_mask)):
        if key in out:
            out[key] = expand(out[key].to(device, non_blocking=non_blocking))
    return out


def encode_mask(mask: np.ndarray) -> dict[str, np.ndarray]:
    """A {0, 1} mask of any shape -> its bits packed 8 per byte, and its shape (the disk form)."""
    bits = np.packbits(np.asarray(mask).reshape(-1) > 0.5)
    return {"bits": bits, "shape": np.asarray(np.shape(mask), dtype=np.int64)}


def unpack_mask(stored: dict[str, np.ndarray]) -> torch.Tensor:
    """:func:`encode_mask` output -> uint8 {0, 1} tensor of the original shape."""
    shape = tuple(int(s) for s in stored["shape"])
    flat = np.unpackbits(stored["bits"], count=int(np.prod(shape)))
    return torch.from_numpy(flat.reshape(shape))


def decode_image(stored: np.ndarray) -> torch.Tensor:
    """uint16 from :func:`encode_image` -> float32 tensor in [0, 1]."""
    return expand_image(torch.from_numpy(stored))


def decode_mask(stored: dict[str, np.ndarray]) -> torch.Tensor:
    """:func:`encode_mask` output -> float32 {0, 1} tensor of the original shape."""
    return expand_mask(unpack_mask(stored))
