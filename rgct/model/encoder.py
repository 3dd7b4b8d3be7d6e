"""Encoders: a volume (B, C_in, D, H, W) -> a grid of patch features (B, C, d, h, w).

``C_in`` is one channel per HU window (``data.hu_window`` + ``data.extra_hu_windows``). The
``cnn`` and ``vit`` encoders are dimension-generic: given a 2-size ``input_shape`` and
``patch_size`` they read radiographs (B, 1, H, W) -> (B, C, h, w) with the same MONAI blocks
(``spatial_dims`` 2; ``data.modality: cxr``).

Chosen by name from :data:`ENCODERS`:

- ``cnn``: MONAI residual units with strided convolutions (default for CPU: learns local
  blobs such as nodules far sooner than a ViT trained from scratch).
- ``vit``: MONAI ``ViT`` (patch embedding + transformer), reshaped back to its patch grid.
- ``swin``: MONAI's Swin transformer (the SwinUNETR encoder); last stage, total stride 32.

Examples::

    enc = build_encoder(EncoderConfig(name="cnn", feature_size=64), input_shape=(32, 64, 64))
    enc(torch.zeros(2, 1, 32, 64, 64)).shape  # torch.Size([2, 64, 4, 8, 8])
    enc2d = build_encoder(EncoderConfig(name="cnn", feature_size=64, patch_size=(16, 16)),
                          input_shape=(256, 256))
    enc2d(torch.zeros(2, 1, 256, 256)).shape  # torch.Size([2, 64, 16, 16])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from torch import nn

from rgct.config import EncoderConfig


def _check_divisible(
    input_shape: tuple[int, ...], patch: tuple[int, ...], name: str, dims: tuple[int, ...] = (2, 3)
) -> None:
    if len(input_shape) not in dims or len(patch) != len(input_shape):
        sizes = " or ".join(str(d) for d in dims)
        raise ValueError(
            f"{name}: input_shape and patch_size need {sizes} sizes each (one per spatial axis), "
            f"got {tuple(input_shape)}, {tuple(patch)}"
        )
    if any(s % p for s, p in zip(input_shape, patch)):
        raise ValueError(
            f"{name}: input_shape {tuple(input_shape)} is not divisible by patch {tuple(patch)}"
        )


class CNNEncoder(nn.Module):
    """Strided residual CNN built from MONAI blocks, 3D or 2D (one ``patch_size`` per axis).

    Args:
        feature_size: channels of the output grid.
        patch_size: total stride per axis (each a power of two); its length is the number of
            spatial dimensions (3: volumes, 2: radiographs).
        depth: number of residual stages (>= the largest log2 stride).
        in_channels: input channels (HU windows).
    """

    def __init__(
        self, feature_size: int = 128, patch_size=(8, 8, 8), depth: int = 4, in_channels: int = 1
    ) -> None:
        super().__init__()
        logs = [math.log2(p) for p in patch_size]
        if any(p < 1 or not float(lg).is_integer() for p, lg in zip(patch_size, logs)):
            raise ValueError(f"cnn: patch_size must be powers of two, got {tuple(patch_size)}")
        n_down = int(max(logs))
        if depth < max(n_down, 1):
            raise ValueError(f"cnn: depth {depth} < number of downsamplings {n_down}")
        if feature_size < 8:
            raise ValueError(f"cnn: feature_size must be >= 8, got {feature_size}")
        self.out_channels = feature_size
        self.patch_size = tuple(int(p) for p in patch_size)
        dims = len(self.patch_size)
        if dims not in (2, 3):
            raise ValueError(f"cnn: patch_size needs 2 or 3 sizes, got {self.patch_size}")
        widths = [max(8, feature_size // 2 ** (depth - 1 - i)) for i in range(depth)]
        remaining = list(self.patch_size)

        def next_stride() -> tuple[int, ...]:
            nonlocal remaining
            stride = tuple(2 if r > 1 else 1 for r in remaining)
            remaining = [r // s for r, s in zip(remaining, stride)]
            return stride

        # Strided stem: the full-resolution grid is touched by one cheap convolution only.
        layers: list[nn.Module] = [
            Convolution(
                dims,
                in_channels,
                widths[0],
                strides=next_stride(),
                kernel_size=3,
                norm=("group", {"num_groups": 4}),
                act="GELU",
            )
        ]
        in_ch = widths[0]
        for w in widths:
            stride = next_stride()
            layers.append(
                ResidualUnit(
                    dims,
                    in_ch,
                    w,
                    strides=stride,
                    subunits=2,
                    act="GELU",
                    norm=("group", {"num_groups": min(8, w // 4)}),
                )
            )
            in_ch = w
        self.body = nn.Sequential(*layers)
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.out = conv(in_ch, feature_size, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, D, H, W) -> (B, C, D/pd, H/ph, W/pw); 2D: (B, C_in, H, W) -> (B, C, h, w)."""
        return self.out(self.body(x))


class ViTEncoder(nn.Module):
    """MONAI ``ViT`` returning its patch tokens as a 3D grid.

    Args:
        proj_type: patch embedding, 'conv' or 'perceptron' (M3D-CLIP's vision tower).
        cls_token: prepend a learned class token (M3D-CLIP); it is dropped from the grid.

    Examples::

        enc = ViTEncoder((32, 64, 64), 96, (4, 16, 16), 2, 12, proj_type="perceptron", cls_token=True)
        enc(torch.zeros(1, 1, 32, 64, 64)).shape  # torch.Size([1, 96, 8, 4, 4])
    """

    def __init__(
        self,
        input_shape,
        feature_size: int = 192,
        patch_size=(8, 8, 8),
        depth: int = 4,
        num_heads: int = 4,
        in_channels: int = 1,
        proj_type: str = "conv",
        cls_token: bool = False,
    ) -> None:
        super().__init__()
        from monai.networks.nets import ViT

        _check_divisible(input_shape, patch_size, "vit")
        if feature_size % num_heads:
            raise ValueError(
                f"vit: feature_size {feature_size} not divisible by num_heads {num_heads}"
            )
        if proj_type not in ("conv", "perceptron"):
            raise ValueError(f"vit: proj_type must be 'conv' or 'perceptron', got {proj_type!r}")
        self.grid = tuple(s // p for s, p in zip(input_shape, patch_size))
        self.out_channels = feature_size
        self.patch_size = tuple(patch_size)
        self.vit = ViT(
            in_channels=in_channels,
            img_size=tuple(input_shape),
            patch_size=tuple(patch_size),
            hidden_size=feature_size,
            mlp_dim=feature_size * 4,
            num_layers=depth,
            num_heads=num_heads,
            proj_type=proj_type,
            classification=False,
            spatial_dims=len(self.grid),
        )
        self.has_cls_token = bool(cls_token)
        if cls_token:  # MONAI's ViT prepends it when present; no classification head
            self.vit.cls_token = nn.Parameter(torch.zeros(1, 1, feature_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.vit(x)  # (B, N, C), N = 1 + patches with a class token
        if self.has_cls_token:
            tokens = tokens[:, 1:]
        b, _, c = tokens.shape
        return tokens.transpose(1, 2).reshape(b, c, *self.grid)


class SwinEncoder(nn.Module):
    """MONAI Swin transformer (SwinUNETR's encoder); the last stage, stride 32."""

    def __init__(
        self,
        input_shape,
        feature_size: int = 24,
        depth: int = 2,
        num_heads: int = 3,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        from monai.networks.nets.swin_unetr import SwinTransformer

        _check_divisible(input_shape, (32, 32, 32), "swin", dims=(3,))
        self.swin = SwinTransformer(
            in_chans=in_channels,
            embed_dim=feature_size,
            window_size=(7, 7, 7),
            patch_size=(2, 2, 2),
            depths=(depth,) * 4,
            num_heads=(num_heads, num_heads * 2, num_heads * 4, num_heads * 8),
            spatial_dims=3,
        )
        self.out_channels = feature_size * 16
        self.patch_size = (32, 32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.swin(x, normalize=True)[-1]


ENCODERS: dict[str, Callable[[EncoderConfig, tuple[int, ...], int], nn.Module]] = {
    "cnn": lambda c, shape, ch: (
        _check_divisible(shape, c.patch_size, "cnn")
        or CNNEncoder(c.feature_size, c.patch_size, c.depth, ch)
    ),
    "vit": lambda c, shape, ch: ViTEncoder(
        shape, c.feature_size, c.patch_size, c.depth, c.num_heads, ch, c.proj_type, c.cls_token
    ),
    "swin": lambda c, shape, ch: SwinEncoder(
        shape, c.feature_size, max(1, c.depth // 2), c.num_heads, ch
    ),
}


def inflate_input_channels(
    state: dict[str, torch.Tensor], encoder: nn.Module
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Fit saved encoder weights taken with fewer input channels (HU windows) to ``encoder``.

    A convolution that reads the image has weight (out, C_in, k, k, k) (2D: (out, C_in, k, k));
    where the saved C_in
    is smaller than the encoder's, the saved channels are copied and the new ones start at
    zero, so the encoder computes exactly what it did before and learns to use the added
    windows from there. Every other mismatch is left for ``load_state_dict`` to report.

    Returns:
        ``(state with inflated tensors, names of the tensors inflated)``.
    """
    own = encoder.state_dict()
    out, inflated = dict(state), []
    for name, value in state.items():
        target = own.get(name)
        if (
            target is not None
            and value.ndim in (4, 5)
            and target.ndim == value.ndim
            and value.shape[1] < target.shape[1]
            and value.shape[:1] == target.shape[:1]
            and value.shape[2:] == target.shape[2:]
        ):
            grown = torch.zeros_like(target)
            grown[:, : value.shape[1]] = value
            out[name] = grown
            inflated.append(name)
    return out, inflated


def build_encoder(
    cfg: EncoderConfig, input_shape: tuple[int, ...], in_channels: int = 1
) -> nn.Module:
    """Build the encoder named by ``cfg.name`` for ``in_channels`` input channels (random
    weights: ``train.init`` and ``model.encoder_weights`` load trained ones)."""
    if cfg.name not in ENCODERS:
        raise ValueError(
            f"model.encoder.name={cfg.name!r} is unknown; choose from {sorted(ENCODERS)}"
        )
    if in_channels < 1:
        raise ValueError(f"encoder: in_channels must be >= 1, got {in_channels}")
    encoder = ENCODERS[cfg.name](cfg, tuple(int(s) for s in input_shape), int(in_channels))
    return encoder
