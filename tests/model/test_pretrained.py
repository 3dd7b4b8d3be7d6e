"""The field's pretrained encoders: SwinUNETR self-supervised and M3D-CLIP ViT key layouts.

Random weights are written in exactly the published layouts (key names, shapes, wrappers,
dtype) from hand-written specs, not from rgct's own modules, then loaded strictly.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from rgct.config import EncoderConfig, load_config
from rgct.model.encoder import build_encoder
from rgct.model.pretrained import (
    PretrainedWeightsError,
    detect_format,
    load_pretrained_encoder,
    read_state_dict,
)

REPO = Path(__file__).resolve().parents[2]
SWIN_PRESET = REPO / "configs/model/smollm2_swin_ssl.yaml"
M3D_PRESET = REPO / "configs/model/smollm2_m3d_vit.yaml"


def swin_ssl_layout(
    embed: int = 48, depths=(2, 2, 2, 2), heads=(3, 6, 12, 24), window: int = 7
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of MONAI's SwinUNETR self-supervised ``model_swinvit.pt`` state dict."""
    shapes: dict[str, tuple[int, ...]] = {
        "module.patch_embed.proj.weight": (embed, 1, 2, 2, 2),
        "module.patch_embed.proj.bias": (embed,),
    }
    table = ((2 * window - 1) ** 3, 0)
    for stage in range(4):
        dim = embed * 2**stage
        for n in range(depths[stage]):
            root = f"module.layers{stage + 1}.0.blocks.{n}."
            shapes |= {
                root + "norm1.weight": (dim,),
                root + "norm1.bias": (dim,),
                root + "attn.relative_position_bias_table": (table[0], heads[stage]),
                root + "attn.relative_position_index": (window**3, window**3),
                root + "attn.qkv.weight": (3 * dim, dim),
                root + "attn.qkv.bias": (3 * dim,),
                root + "attn.proj.weight": (dim, dim),
                root + "attn.proj.bias": (dim,),
                root + "norm2.weight": (dim,),
                root + "norm2.bias": (dim,),
                root + "mlp.fc1.weight": (4 * dim, dim),
                root + "mlp.fc1.bias": (4 * dim,),
                root + "mlp.fc2.weight": (dim, 4 * dim),
                root + "mlp.fc2.bias": (dim,),
            }
        down = f"module.layers{stage + 1}.0.downsample."
        shapes |= {
            down + "reduction.weight": (2 * dim, 8 * dim),
            down + "norm.weight": (8 * dim,),
            down + "norm.bias": (8 * dim,),
        }
    return shapes


def m3d_vit_layout(
    hidden: int = 768, layers: int = 12, mlp: int = 3072, patch_voxels: int = 1024, patches=2048
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of M3D-CLIP's ``pretrained_ViT.bin`` (a MONAI ViT, perceptron embedding)."""
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, hidden),
        "patch_embedding.position_embeddings": (1, patches, hidden),
        "patch_embedding.patch_embeddings.1.weight": (hidden, patch_voxels),
        "patch_embedding.patch_embeddings.1.bias": (hidden,),
        "norm.weight": (hidden,),
        "norm.bias": (hidden,),
    }
    for i in range(layers):
        b = f"blocks.{i}."
        shapes |= {
            b + "mlp.linear1.weight": (mlp, hidden),
            b + "mlp.linear1.bias": (mlp,),
            b + "mlp.linear2.weight": (hidden, mlp),
            b + "mlp.linear2.bias": (hidden,),
            b + "norm1.weight": (hidden,),
            b + "norm1.bias": (hidden,),
            b + "attn.out_proj.weight": (hidden, hidden),
            b + "attn.out_proj.bias": (hidden,),
            b + "attn.qkv.weight": (3 * hidden, hidden),  # no qkv bias
            b + "norm2.weight": (hidden,),
            b + "norm2.bias": (hidden,),
        }
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], dtype=torch.float32, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g).to(dtype) for k, s in shapes.items()}


def _swin_encoder(input_shape=(32, 32, 32), **kw) -> torch.nn.Module:
    cfg = load_config([SWIN_PRESET]).model.encoder
    for k, v in kw.items():
        setattr(cfg, k, v)
    return build_encoder(cfg, input_shape)


def _ssl_file(tmp_path: Path, encoder: torch.nn.Module, **extra) -> tuple[Path, dict]:
    state = random_state(swin_ssl_layout())
    index = encoder.swin.state_dict()["layers1.0.blocks.0.attn.relative_position_index"]
    for k in state:
        if k.endswith("relative_position_index"):
            state[k] = index.clone()  # a buffer of indices, the same in every Swin of window 7
    state |= extra
    path = tmp_path / "model_swinvit.pt"
    torch.save({"state_dict": state, "epoch": 100}, path)
    return path, state


def test_swin_ssl_layout_loads_strictly_into_the_preset_encoder(tmp_path) -> None:
    encoder = _swin_encoder()
    heads = {"module.rotation_head.weight": torch.randn(4, 768)}
    path, state = _ssl_file(tmp_path, encoder, **heads)
    assert detect_format(read_state_dict(path)) == "swinunetr_ssl"
    report = load_pretrained_encoder(encoder, path, "auto")
    assert report.format == "swinunetr_ssl" and report.ignored == ["rotation_head.weight"]
    own = encoder.swin.state_dict()
    assert report.loaded == len(own) == len(state) - 1
    for key, value in state.items():
        if "rotation_head" in key:
            continue
        name = key.removeprefix("module.").replace("mlp.fc1.", "mlp.linear1.")
        torch.testing.assert_close(own[name.replace("mlp.fc2.", "mlp.linear2.")], value)
    assert encoder(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 768, 1, 1, 1)


def test_swin_weights_into_another_size_or_architecture_name_the_file(tmp_path) -> None:
    path, _ = _ssl_file(tmp_path, _swin_encoder())
    with pytest.raises(PretrainedWeightsError) as e:
        load_pretrained_encoder(_swin_encoder(feature_size=24), path, "auto")
    assert str(path) in str(e.value) and "mis-shaped" in str(e.value)
    assert "patch_embed.proj.weight: file (48, 1, 2, 2, 2) vs encoder (24, 1, 2, 2, 2)" in str(
        e.value
    )
    vit = build_encoder(EncoderConfig(name="vit", feature_size=48, num_heads=4), (16, 32, 32))
    with pytest.raises(PretrainedWeightsError, match="are for the 'swin' encoder") as e:
        load_pretrained_encoder(vit, path, "auto")
    assert str(path) in str(e.value)
    state = torch.load(path, weights_only=True)["state_dict"]
    del state["module.layers2.0.blocks.1.mlp.fc1.weight"]
    state["module.layers5.0.extra.weight"] = torch.zeros(3)
    torch.save({"state_dict": state}, path)
    with pytest.raises(PretrainedWeightsError) as e:
        load_pretrained_encoder(_swin_encoder(), path, "swinunetr_ssl")
    msg = str(e.value)
    assert "1 missing ['layers2.0.blocks.1.mlp.linear1.weight']" in msg
    assert "1 unexpected ['layers5.0.extra.weight']" in msg and str(path) in msg


def test_a_pickle_with_objects_is_refused_naming_the_file(tmp_path) -> None:
    path = tmp_path / "model_swinvit.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(PretrainedWeightsError, match="refused") as e:
        load_pretrained_encoder(_swin_encoder(), path)
    assert str(path) in str(e.value)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00 not torch")
    with pytest.raises(PretrainedWeightsError, match="garbage.bin"):
        read_state_dict(garbage)
    with pytest.raises(PretrainedWeightsError, match="not found"):
        read_state_dict(tmp_path / "absent.pt")
    with pytest.raises(PretrainedWeightsError, match="unrecognised key layout"):
        torch.save({"a.weight": torch.zeros(1)}, tmp_path / "other.pt")
        load_pretrained_encoder(_swin_encoder(), tmp_path / "other.pt")
    with pytest.raises(PretrainedWeightsError, match="encoder_weights_format='ctclip'"):
        load_pretrained_encoder(_swin_encoder(), tmp_path / "other.pt", "ctclip")


def _vit(hidden: int, layers: int, input_shape, cls_token: bool = True) -> torch.nn.Module:
    cfg = EncoderConfig(
        name="vit",
        feature_size=hidden,
        patch_size=(4, 16, 16),
        depth=layers,
        num_heads=12,
        proj_type="perceptron",
        cls_token=cls_token,
    )
    return build_encoder(cfg, input_shape)


def test_m3d_vit_layout_loads_in_bf16_and_drops_the_class_token(tmp_path) -> None:
    shape = (32, 64, 64)  # 8 x 4 x 4 patches of 4x16x16: M3D's naming, reduced size
    state = random_state(m3d_vit_layout(96, 2, 384, 1024, 128), dtype=torch.bfloat16)
    path = tmp_path / "pretrained_ViT.bin"
    torch.save(state, path)
    encoder = _vit(96, 2, shape)
    report = load_pretrained_encoder(encoder, path, "auto")
    assert report.format == "m3d_vit" and report.loaded == len(state)
    assert report.kept_initial == [
        f"blocks.{i}.norm_cross_attn.{p}" for i in (0, 1) for p in ("weight", "bias")
    ]
    own = encoder.vit.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(own[key], value.float())
    x = torch.rand(1, 1, *shape)
    grid = encoder(x)
    tokens, _ = encoder.vit(x)  # (1, 1 + 128, 96): the class token first
    assert grid.shape == (1, 96, 8, 4, 4)
    torch.testing.assert_close(grid, tokens[:, 1:].transpose(1, 2).reshape(1, 96, 8, 4, 4))
    with pytest.raises(PretrainedWeightsError, match="cls_token=true"):
        load_pretrained_encoder(_vit(96, 2, shape, cls_token=False), path, "m3d_vit")
    wrapped = {f"vision_tower.vision_tower.{k}": v for k, v in state.items()}
    torch.save(wrapped, path)
    assert load_pretrained_encoder(_vit(96, 2, shape), path).loaded == len(state)


def test_m3d_full_size_key_set_fits_the_preset(tmp_path) -> None:
    cfg = load_config([M3D_PRESET])
    encoder = build_encoder(cfg.model.encoder, cfg.data.input_shape)  # 768 x 12, 87M parameters
    layout = m3d_vit_layout()
    own = encoder.vit.state_dict()
    used = {k: tuple(v.shape) for k, v in own.items() if "norm_cross_attn" not in k}
    assert used == layout
    path = tmp_path / "pretrained_ViT.bin"
    torch.save(random_state(layout, dtype=torch.bfloat16), path)
    assert load_pretrained_encoder(encoder, path, cfg.model.encoder_weights_format).loaded == 138


def test_the_builder_loads_model_encoder_weights(tmp_path, rgct_cache) -> None:
    from rgct.model.builder import build_model

    tiny = REPO / "configs/model/tiny.yaml"
    path, state = _ssl_file(tmp_path, _swin_encoder())
    overrides = [
        "data.input_shape=[32, 32, 32]",
        "model.encoder.name=swin",
        "model.encoder.feature_size=48",
        "model.encoder.depth=4",
        "model.encoder.num_heads=3",
        f"model.encoder_weights={path}",
    ]
    model = build_model(load_config([tiny], overrides))
    weight = model.encoder.swin.state_dict()["layers3.0.blocks.1.mlp.linear2.weight"]
    torch.testing.assert_close(weight, state["module.layers3.0.blocks.1.mlp.fc2.weight"])
