"""The focal detector: a small full-resolution 3D CNN for findings too small for the segmenter.

The segmenter's UNet runs at half the model grid, where a lung nodule of 5-10 mm is one or two
voxels next to vessels of the same density; its nodule channel never localised one. This
network sees the image at the model grid's own resolution through six 3 x 3 x 3 convolutions
(batch norm + ReLU; the second one strides 2 in-plane, so the receptive field spans about 13
voxels in-plane and 13 slices) and gives one logit per detector class on a grid of
``(D, ceil(H / 2), ceil(W / 2))`` cells: "this cell holds a voxel of the finding". It is
trained on crops (:mod:`rgct.train.detector`) and lives inside the segmenter
(``Segmenter(focal_classes=...)``), whose channels of those classes it replaces, so every
consumer of the segmenter's finding maps (localisation, report grounding, the app's overlay)
gets its findings without knowing it exists.

Example::

    det = FocalDetector(in_channels=1, out_channels=1, width=16)
    det(torch.rand(2, 1, 32, 64, 64)).shape        # (2, 1, 32, 32, 32)
"""

from __future__ import annotations

from torch import nn

STRIDE = (1, 2, 2)
"""The detector's output cell in model-grid voxels (d, h, w)."""


def _block(cin: int, cout: int, stride: tuple[int, int, int] = (1, 1, 1)) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, stride, 1, bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
    )


class FocalDetector(nn.Module):
    """Full-resolution 3D CNN: image -> one logit per class on cells of :data:`STRIDE` voxels.

    Args:
        in_channels: image channels (the segmenter's).
        out_channels: detector classes.
        width: feature width of the middle layers (the first has half, the last three twice).

    Shapes:
        input (B, in_channels, D, H, W) preprocessed image in [0, 1];
        output (B, out_channels, D, ceil(H / 2), ceil(W / 2)) logits.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"FocalDetector needs >= 1 input and output channel, got {in_channels}, "
                f"{out_channels}"
            )
        if width < 2:
            raise ValueError(f"detector width must be >= 2, got {width}")
        half, double = max(width // 2, 1), 2 * width
        self.net = nn.Sequential(
            _block(in_channels, half),
            _block(half, width, STRIDE),
            _block(width, width),
            _block(width, double),
            _block(double, double),
            _block(double, double),
            nn.Conv3d(double, out_channels, 1),
        )

    def forward(self, x):
        return self.net(x)
