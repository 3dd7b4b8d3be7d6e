"""The 2D path through the same architecture: 2D encoders, region pooling under box masks, the
composed model on radiographs, and the modality checks of the config and of the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rgct.config import ConfigError, EncoderConfig, load_config
from rgct.model.builder import build_model
from rgct.model.encoder import build_encoder, inflate_input_channels
from rgct.model.pooling import RegionPooler

REPO = Path(__file__).resolve().parents[2]
CXR_TINY = REPO / "configs" / "model" / "cxr_tiny.yaml"


@pytest.mark.parametrize(
    ("name", "extra", "grid"),
    [
        ("cnn", {"patch_size": (16, 16), "depth": 4}, (16, 16)),
        ("vit", {"patch_size": (32, 32), "depth": 1, "num_heads": 2}, (8, 8)),
    ],
)
def test_2d_encoders_return_a_2d_patch_grid(name, extra, grid):
    enc = build_encoder(EncoderConfig(name=name, feature_size=32, **extra), (256, 256))
    out = enc(torch.zeros(2, 1, 256, 256))
    assert out.shape == (2, 32, *grid)


def test_2d_encoder_arguments_are_checked():
    with pytest.raises(ValueError, match="one per spatial axis"):
        build_encoder(EncoderConfig(name="cnn", patch_size=(8, 8, 8)), (256, 256))
    with pytest.raises(ValueError, match="not divisible"):
        build_encoder(EncoderConfig(name="cnn", patch_size=(16, 16)), (250, 256))
    with pytest.raises(ValueError, match="need 3 sizes"):
        build_encoder(EncoderConfig(name="swin", feature_size=24), (256, 256))


def test_cnn_3d_weights_keep_their_names_and_shapes():
    """Making the CNN dimension-generic left the 3D encoder's checkpoint keys unchanged."""
    enc = build_encoder(
        EncoderConfig(name="cnn", feature_size=32, patch_size=(4, 8, 8), depth=3), (16, 32, 32)
    )
    state = enc.state_dict()
    assert state["out.weight"].ndim == 5 and "body.0.conv.weight" in state
    enc2d = build_encoder(
        EncoderConfig(name="cnn", feature_size=32, patch_size=(8, 8), depth=3), (64, 64)
    )
    assert set(enc2d.state_dict()) == set(state)  # same layout, 2D kernels
    assert enc2d.state_dict()["out.weight"].ndim == 4


def test_2d_input_channels_inflate_like_3d():
    wide = build_encoder(
        EncoderConfig(name="cnn", feature_size=32, patch_size=(8, 8), depth=3), (64, 64), 2
    )
    narrow = build_encoder(
        EncoderConfig(name="cnn", feature_size=32, patch_size=(8, 8), depth=3), (64, 64), 1
    )
    grown, names = inflate_input_channels(narrow.state_dict(), wide)
    assert names == ["body.0.conv.weight"]
    assert torch.equal(grown[names[0]][:, :1], narrow.state_dict()[names[0]])
    assert not grown[names[0]][:, 1:].any()


def test_region_pooling_under_a_box_mask_in_2d(seed):
    pool = RegionPooler(8, num_global_tokens=4, num_labels=3, spatial_dims=2)
    pool.norm = torch.nn.Identity()  # compare raw pooled values
    features = torch.randn(1, 8, 4, 4)
    mask = torch.zeros(1, 1, 32, 32)
    mask[0, 0, 8:16, 16:24] = 1  # exactly patch (row 1, column 2) of the 4 x 4 grid
    glob, region, logits = pool(features, mask)
    assert glob.shape == (1, 4, 8) and region.shape == (1, 2, 8) and logits.shape == (1, 3)
    assert torch.allclose(region[0, 0], features[0, :, 1, 2])  # masked mean: that one patch
    assert torch.allclose(region[0, 1], features[0, :, 1, 2])  # masked max: the same patch
    assert torch.allclose(glob[0, 0], features[0, :, :2, :2].mean(dim=(1, 2)))
    with pytest.raises(ValueError, match="mask is empty"):
        pool(features, torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B,C,h,w\) features"):
        pool(torch.randn(1, 8, 2, 4, 4), torch.ones(1, 1, 8, 32, 32))
    with pytest.raises(ValueError, match="a square"):
        RegionPooler(8, num_global_tokens=8, spatial_dims=2)


def test_cxr_model_trains_generates_and_refuses_volumes(rgct_cache, seed):
    cfg = load_config([CXR_TINY])
    assert cfg.data.modality == "cxr" and cfg.data.spatial_dims == 2
    model = build_model(cfg)
    assert model.modality == "cxr"
    image = torch.rand(2, 1, 64, 64)
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, 10:30, 5:20] = 1
    enc = model.tokenize(["What is in the given box?"] * 2, ["Nodule or mass.", "Atelectasis."])
    out = model(image, mask, **enc)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.encoder.out.weight.grad is not None
    texts = model.generate(image, mask, ["What is in the given box?"] * 2, cfg.generation)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    with pytest.raises(ValueError, match=r"cxr model reads radiographs.*got a 5-D tensor"):
        model.encode_image(torch.zeros(1, 1, 16, 64, 64))


def test_ct_model_refuses_a_radiograph_tensor(rgct_cache):
    model = build_model(load_config([REPO / "configs" / "model" / "tiny.yaml"]))
    assert model.modality == "ct"
    with pytest.raises(ValueError, match=r"ct model reads CT volumes.*got a 4-D tensor"):
        model.encode_image(torch.zeros(1, 1, 32, 32))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["data.input_shape=[16,64,64]"], "must be 2 sizes"),
        (["model.encoder.patch_size=[8,8,8]"], "patch_size needs 2 sizes"),
        (["model.num_global_tokens=8"], "a square"),
        (["data.tasks={presence: 1.0}"], "are CT tasks"),
        (["data.extra_hu_windows=[[-1000,-500]]"], "CT volume options"),
        (["model.dense_loss_weight=1.0"], "3D CT volumes only"),
        (["model.encoder.name=swin"], "3D CT volumes only"),
        (["data.modality=mri"], "data.modality must be one of"),
    ],
)
def test_cxr_config_refuses_ct_only_settings(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config([CXR_TINY], overrides)


def test_ct_config_refuses_2d_shapes_and_tokens():
    tiny = REPO / "configs" / "model" / "tiny.yaml"
    with pytest.raises(ConfigError, match="must be 3 sizes"):
        load_config([tiny], ["data.input_shape=[64,64]"])
    with pytest.raises(ConfigError, match="cube"):
        load_config([tiny], ["model.num_global_tokens=4"])


def test_cxr_model_leaves_the_ct_defaults_alone():
    """A radiograph preset left at the CT task default reads the radiograph tasks."""
    cfg = load_config([CXR_TINY])
    assert set(cfg.data.tasks) == {
        "cxr_box",
        "cxr_presence",
        "cxr_location",
        "cxr_labels",
        "cxr_report",
    }
    assert load_config([REPO / "configs" / "model" / "tiny.yaml"]).data.modality == "ct"
