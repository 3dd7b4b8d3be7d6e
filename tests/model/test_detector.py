"""The focal detector and the segmenter that carries it: shapes, the channels it replaces,
checkpoints with and without it, bad settings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rgct.model.detector import STRIDE, FocalDetector
from rgct.model.segmenter import Segmenter, build_segmenter, load_segmenter, save_segmenter

SMALL = {"channels": (4, 8), "internal_scale": 0.5}


def test_detector_cells_are_one_slice_by_two_by_two_voxels(seed):
    det = FocalDetector(in_channels=2, out_channels=3, width=4)
    out = det(torch.rand(2, 2, 8, 18, 22))
    assert out.shape == (2, 3, 8, 9, 11)
    assert STRIDE == (1, 2, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"in_channels": 0}, "input and output"),
        ({"out_channels": 0}, "input and output"),
        ({"width": 1}, "width"),
    ],
)
def test_detector_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FocalDetector(**kwargs)


def test_the_detector_replaces_only_its_classes_channels(seed):
    plain = Segmenter(in_channels=1, **SMALL).eval()
    focal = Segmenter(
        in_channels=1, focal_classes=["Lung nodule", "Emphysema"], focal_width=4, **SMALL
    )
    missing, unexpected = focal.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("focal.") for k in missing)
    focal.eval()
    x = torch.rand(1, 1, 8, 16, 16)
    with torch.no_grad():
        a, b = plain(x), focal(x)
        cells = focal.focal(x)
    idx = focal.focal_index
    assert idx == [plain.classes.index("Lung nodule"), plain.classes.index("Emphysema")]
    others = [k for k in range(len(plain.classes)) if k not in idx]
    torch.testing.assert_close(a[:, others], b[:, others])
    up = F.interpolate(cells, size=(8, 16, 16), mode="trilinear", align_corners=False)
    torch.testing.assert_close(b[:, idx], up)
    assert not torch.allclose(a[:, idx], b[:, idx])


def test_a_segmenter_with_a_detector_saves_and_loads(tmp_path, seed):
    net = Segmenter(in_channels=1, focal_classes=["Lung nodule"], focal_width=4, **SMALL).eval()
    save_segmenter(tmp_path, net, {"x": 1})
    back, meta = load_segmenter(tmp_path)
    assert back.focal_classes == ("Lung nodule",) and back.config() == net.config()
    x = torch.rand(1, 1, 8, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(back(x), net(x))


def test_a_checkpoint_written_before_the_detector_existed_still_builds():
    config = Segmenter(in_channels=1, **SMALL).config()
    for key in ("focal_classes", "focal_width"):
        config.pop(key)
    assert build_segmenter(config).focal is None


def test_bad_detector_settings_are_refused():
    with pytest.raises(ValueError, match="not among its classes"):
        Segmenter(in_channels=1, focal_classes=["Lung pebble"], **SMALL)
    with pytest.raises(ValueError, match="distinct"):
        Segmenter(in_channels=1, focal_classes=["Lung nodule", "Lung nodule"], **SMALL)
    with pytest.raises(ValueError, match="spatial_dims=3"):
        Segmenter(
            in_channels=1, classes=["Nodule"], spatial_dims=2, focal_classes=["Nodule"], **SMALL
        )
