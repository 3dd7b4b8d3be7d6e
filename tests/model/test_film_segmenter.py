"""The segmenter in 2D: a radiograph's finding boxes, one channel per boxable class."""

from __future__ import annotations

import json

import pytest
import torch

from rgct.model.segmenter import Segmenter, build_segmenter, load_segmenter, save_segmenter


def test_a_2d_segmenter_maps_a_film_to_one_channel_per_class(seed):
    net = Segmenter(classes=("a", "b", "c"), channels=(4, 8, 16), spatial_dims=2, refine_channels=4)
    out = net(torch.rand(2, 1, 40, 48))
    assert out.shape == (2, 3, 40, 48)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(torch.rand(1, 1, 8, 40, 48))


def test_spatial_dims_round_trips_and_old_configs_stay_3d(tmp_path, seed):
    net = Segmenter(classes=("a", "b"), channels=(4, 8), spatial_dims=2).eval()
    save_segmenter(tmp_path / "film", net, {"note": 1})
    back, meta = load_segmenter(tmp_path / "film")
    x = torch.rand(1, 1, 32, 32)
    assert back.spatial_dims == 2 and meta == {"note": 1}
    torch.testing.assert_close(back(x), net(x))
    # a checkpoint written before spatial_dims existed is a CT segmenter
    ct = Segmenter(classes=("a",), channels=(4, 8))
    save_segmenter(tmp_path / "ct", ct)
    cfg_file = tmp_path / "ct" / "segmenter.json"
    saved = json.loads(cfg_file.read_text())
    del saved["config"]["spatial_dims"]
    cfg_file.write_text(json.dumps(saved))
    assert load_segmenter(tmp_path / "ct")[0].spatial_dims == 3
    with pytest.raises(ValueError, match="spatial_dims"):
        build_segmenter({"classes": ["a"], "spatial_dims": 1})


def test_the_cnn_backbone_gives_one_logit_per_patch_upsampled_to_the_film(tmp_path, seed):
    net = Segmenter(
        classes=("a", "b"),
        channels=(4, 8, 16),
        spatial_dims=2,
        backbone="cnn",
        grid_stride=8,
        internal_scale=1.0,
    ).eval()
    assert net.unet is None and net.internal_size((40, 48)) == (40, 48)
    x = torch.rand(2, 1, 40, 48)
    with torch.no_grad():
        out = net(x)
        patches = net.cnn(x)
    assert out.shape == (2, 2, 40, 48) and patches.shape == (2, 2, 5, 6)
    up = torch.nn.functional.interpolate(patches, size=(40, 48), mode="bilinear")
    torch.testing.assert_close(out, up)
    save_segmenter(tmp_path, net)
    back, _ = load_segmenter(tmp_path)
    assert back.config()["backbone"] == "cnn" and back.config()["grid_stride"] == 8
    with torch.no_grad():
        torch.testing.assert_close(back(x), out)
    # a checkpoint written before backbones existed is a UNet
    saved = json.loads((tmp_path / "segmenter.json").read_text())
    saved["config"] = {
        k: v for k, v in saved["config"].items() if k not in ("backbone", "grid_stride")
    }
    assert build_segmenter(saved["config"]).backbone == "unet"


@pytest.mark.parametrize(
    "kwargs, match",
    [({"backbone": "vit"}, "backbone"), ({"backbone": "cnn", "grid_stride": 6}, "powers of two")],
)
def test_bad_backbones_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Segmenter(classes=("a",), channels=(4, 8, 16), spatial_dims=2, **kwargs)
