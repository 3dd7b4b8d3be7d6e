"""Model: shapes and bad arguments per module, fusion, trainability, save/load, presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rgct.config import ConfigError, EncoderConfig, load_config
from rgct.model.builder import build_model
from rgct.model.checkpoint import REQUIRED_FILES, load_checkpoint, save_checkpoint
from rgct.model.encoder import build_encoder
from rgct.model.fusion import fuse_embeddings
from rgct.model.pooling import RegionPooler
from rgct.model.projector import build_projector

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "model" / "tiny.yaml"


def tiny_cfg(*overrides: str):
    return load_config([TINY], list(overrides))


def tiny_batch(model, b: int = 3):
    d, h, w = model.input_shape
    g = torch.Generator().manual_seed(0)
    image = torch.rand(b, 1, d, h, w, generator=g)
    mask = torch.zeros(b, 1, d, h, w)
    mask[:, :, 2:10, 4:20, 4:20] = 1
    prompts = [
        "Describe the findings in the lung.",
        "Can nodule be identified in the lung?",
        "What are the abnormalities in the scan?",
    ][:b]
    answers = ["A 12 mm nodule is seen in the right lung upper lobe.", "Yes.", "no findings"][:b]
    return image, mask, model.tokenize(prompts, answers)


@pytest.mark.parametrize(
    ("name", "feature", "patch", "grid"),
    [("cnn", 32, (4, 8, 8), (4, 4, 4)), ("vit", 48, (8, 8, 8), (2, 4, 4))],
)
def test_encoder_shapes(name, feature, patch, grid):
    enc = build_encoder(
        EncoderConfig(name=name, feature_size=feature, patch_size=patch, depth=3), (16, 32, 32)
    )
    out = enc(torch.zeros(2, 1, 16, 32, 32))
    assert out.shape == (2, feature, *grid)


def test_swin_encoder_shape():
    enc = build_encoder(
        EncoderConfig(name="swin", feature_size=12, depth=2, num_heads=3), (32, 64, 64)
    )
    assert enc(torch.zeros(1, 1, 32, 64, 64)).shape == (1, 192, 1, 2, 2)


@pytest.mark.parametrize(
    ("cfg", "shape", "match"),
    [
        (EncoderConfig(name="resnet"), (16, 32, 32), "unknown"),
        (EncoderConfig(name="cnn", patch_size=(3, 8, 8)), (15, 32, 32), "powers of two"),
        (EncoderConfig(name="cnn", patch_size=(8, 8, 8)), (20, 32, 32), "not divisible"),
        (EncoderConfig(name="vit", feature_size=50, num_heads=4), (16, 32, 32), "num_heads"),
    ],
)
def test_encoder_bad_arguments(cfg, shape, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        build_encoder(cfg, shape)


def test_pooler_shapes_and_empty_mask():
    pool = RegionPooler(16, num_global_tokens=8, num_labels=18)
    feats = torch.randn(2, 16, 4, 4, 4)
    mask = torch.zeros(2, 1, 16, 32, 32)
    mask[:, :, :4, :8, :8] = 1
    g, r, logits = pool(feats, mask)
    assert g.shape == (2, 8, 16) and r.shape == (2, 2, 16) and logits.shape == (2, 18)
    mask[1] = 0
    with pytest.raises(ValueError, match="empty"):
        pool(feats, mask)
    with pytest.raises(ValueError, match="cube"):
        RegionPooler(16, num_global_tokens=6)


def test_region_max_token_sees_a_local_blob():
    """The masked max responds to a feature inside the mask and ignores one outside it."""
    pool = RegionPooler(4, num_global_tokens=1, num_labels=2)
    feats = torch.zeros(1, 4, 4, 4, 4)
    mask = torch.zeros(1, 1, 4, 4, 4)
    mask[..., :2, :, :] = 1
    feats[0, 0, 3, 0, 0] = 5.0  # outside the mask
    _, r_out, _ = pool(feats, mask)
    feats[0, 0, 0, 0, 0] = 5.0  # inside
    _, r_in, _ = pool(feats, mask)
    assert not torch.allclose(r_in[:, 1], r_out[:, 1])


def test_projector_names():
    assert build_projector("mlp", 8, 16)(torch.zeros(2, 3, 8)).shape == (2, 3, 16)
    assert build_projector("linear", 8, 16)(torch.zeros(2, 8)).shape == (2, 16)
    with pytest.raises(ValueError, match="unknown"):
        build_projector("qformer", 8, 16)


def test_fusion_places_each_embedding_at_its_token():
    ids = torch.tensor([[5, 1, 7, 2, 9], [1, 2, 5, 5, 6]])
    text = torch.zeros(2, 5, 3)
    visual = torch.tensor([[[1.0] * 3, [2.0] * 3], [[3.0] * 3, [4.0] * 3]])
    out = fuse_embeddings(text, ids, visual, torch.tensor([1, 2]))
    assert out[0, 1].tolist() == [1.0] * 3 and out[0, 3].tolist() == [2.0] * 3
    assert out[1, 0].tolist() == [3.0] * 3 and out[1, 1].tolist() == [4.0] * 3
    assert out[0, [0, 2, 4]].abs().sum() == 0 and out[1, 2:].abs().sum() == 0
    with pytest.raises(ValueError, match="placeholder count mismatch"):
        fuse_embeddings(
            text, torch.tensor([[1, 0, 0, 0, 0], [1, 2, 0, 0, 0]]), visual, torch.tensor([1, 2])
        )


def test_prompt_holds_placeholders_and_labels_cover_only_the_answer(seed):
    model = build_model(tiny_cfg())
    _, _, enc = tiny_batch(model)
    ids, labels = enc["input_ids"], enc["labels"]
    n_visual = sum(model.num_visual_tokens)
    assert (torch.isin(ids, model.placeholder_ids).sum(1) == n_visual).all()
    supervised = labels != -100
    assert not torch.isin(ids[supervised], model.placeholder_ids).any()
    answer_ids = model.tokenizer("Yes.", add_special_tokens=False)["input_ids"] + [
        model.tokenizer.eos_token_id
    ]
    assert ids[1][supervised[1]].tolist() == answer_ids


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], {"encoder", "pooler", "projector", "evidence", "llm"}),
        (["model.train_llm_lora=false"], {"encoder", "pooler", "projector", "evidence"}),
        (
            ["model.train_llm_lora=false", "model.encoder.freeze=true"],
            {"pooler", "projector", "evidence"},
        ),
        (["model.train_projector=false", "model.encoder.freeze=true"], {"llm"}),
        (
            ["model.train_pooler=false", "model.encoder.freeze=true"],
            {"projector", "evidence", "llm"},
        ),
    ],
)
def test_only_declared_parts_get_gradients(seed, overrides, expected):
    model = build_model(tiny_cfg(*overrides))
    image, mask, enc = tiny_batch(model)
    out = model(image, mask, **enc, aux_labels=torch.ones(3, 18), has_labels=torch.ones(3))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    with_grad = {
        n.split(".", 1)[0]
        for n, p in model.named_parameters()
        if p.grad is not None and p.grad.abs().sum() > 0
    }
    assert with_grad == expected
    llm_grads = [n for n, p in model.llm.named_parameters() if p.grad is not None]
    assert all("lora_" in n for n in llm_grads)


def test_nothing_trainable_is_a_config_error():
    with pytest.raises(ConfigError, match="nothing would train"):
        tiny_cfg(
            "model.train_llm_lora=false", "model.train_projector=false", "model.encoder.freeze=true"
        )


def test_bad_image_shape_and_mismatched_batch(seed):
    model = build_model(tiny_cfg())
    image, mask, enc = tiny_batch(model)
    with pytest.raises(ValueError, match="image must be"):
        model(image[:, :, :8], mask, **enc)
    with pytest.raises(ValueError, match="prompts"):
        model.generate(image, mask, ["only one prompt"])


def test_save_load_same_logits_and_text(seed, tmp_path):
    cfg = tiny_cfg()
    model = build_model(cfg)
    image, mask, enc = tiny_batch(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    for _ in range(5):  # move LoRA away from its zero init so the adapter matters
        model(image, mask, **enc)["loss"].backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    ckpt = save_checkpoint(model, cfg, tmp_path / "ckpt")
    assert all((ckpt / f).is_file() for f in REQUIRED_FILES)
    assert not list(ckpt.glob("*.bin")) and not list(ckpt.glob("*.pt"))
    loaded, loaded_cfg = load_checkpoint(ckpt)
    assert loaded_cfg == cfg
    with torch.no_grad():
        a = model(image, mask, **enc)["loss"]
        b = loaded(image, mask, **enc)["loss"]
    assert torch.equal(a, b)
    prompts = ["Describe the findings in the lung."] * 3
    assert model.generate(image, mask, prompts) == loaded.generate(image, mask, prompts)
    merged, _ = load_checkpoint(ckpt, merge_lora=True)
    with torch.no_grad():
        assert torch.allclose(merged(image, mask, **enc)["loss"], a, atol=1e-5)


def test_load_checkpoint_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "partial").mkdir()
    with pytest.raises(FileNotFoundError, match="missing"):
        load_checkpoint(tmp_path / "partial")


def test_batched_generation_equals_one_by_one(seed, tmp_path):
    model = build_model(tiny_cfg()).eval()
    image, mask, _ = tiny_batch(model)
    prompts = [
        "Describe the findings in the lung.",
        "Can nodule be identified in the lung?",
        "Where?",
    ]
    batched = model.generate(image, mask, prompts)
    single = [
        model.generate(image[i : i + 1], mask[i : i + 1], [p])[0] for i, p in enumerate(prompts)
    ]
    assert batched == single


# Full-size pretrained encoders (rgct.model.pretrained): minutes and GBs on a CPU, so slow;
# tests/model/test_pretrained.py loads their weight layouts into the same encoders fast.
HEAVY_PRESETS = {"smollm2_swin_ssl.yaml", "smollm2_m3d_vit.yaml"}


@pytest.mark.parametrize(
    "preset",
    [
        pytest.param(p.name, marks=pytest.mark.slow) if p.name in HEAVY_PRESETS else p.name
        for p in sorted((REPO / "configs" / "model").glob("*.yaml"))
    ],
)
def test_every_model_preset_builds(preset, rgct_cache):
    cfg = load_config([REPO / "configs" / "model" / preset])
    model = build_model(cfg)
    shape = tuple(cfg.data.input_shape)  # (D, H, W); (H, W) for radiograph presets
    image = torch.zeros(1, 1, *shape)
    grid = model.encode_image(image)
    assert grid.shape[1] == model.encoder.out_channels
    mask = torch.ones(1, 1, *shape)
    visual, logits = model.visual_tokens(grid, mask, image)  # the image: model.region_stats
    assert visual.shape == (
        1,
        sum(model.num_visual_tokens),
        model.llm.get_input_embeddings().embedding_dim,
    )


def test_focal_language_loss_downweights_easy_tokens():
    from rgct.model.rgct_model import language_loss

    logits = torch.zeros(1, 4, 5)
    logits[0, 0, 1] = 8.0  # position 0 predicts token 1 confidently (easy)
    labels = torch.tensor([[-100, 1, 3, -100]])  # supervised: pos0 -> 1 (easy), pos1 -> 3 (hard)
    plain = language_loss(logits, labels, 0.0)
    focal = language_loss(logits, labels, 2.0)
    assert focal < plain
    # The easy token's share of the loss shrinks far more than the hard one's.
    easy = language_loss(logits[:, :2], labels[:, :2], 2.0) / language_loss(
        logits[:, :2], labels[:, :2], 0.0
    )
    hard = language_loss(logits[:, 1:3], labels[:, 1:3], 2.0) / language_loss(
        logits[:, 1:3], labels[:, 1:3], 0.0
    )
    assert easy < 0.01 < 0.5 < hard
    assert language_loss(logits, torch.full((1, 4), -100), 2.0) == 0


def test_local_hf_folder_preset(tmp_path, seed):
    """model.llm may name any local Hugging Face causal-LM folder (here: a saved tiny Llama)."""
    from rgct.model.llm import build_tiny_llm, build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    build_tiny_llm(len(tok)).save_pretrained(tmp_path / "my-llama")
    tok.save_pretrained(tmp_path / "my-llama")
    model = build_model(tiny_cfg(f"model.llm={tmp_path / 'my-llama'}"))
    image, mask, enc = tiny_batch(model)
    assert torch.isfinite(model(image, mask, **enc)["loss"])
    with pytest.raises(FileNotFoundError, match="local Hugging Face folder"):
        build_model(tiny_cfg(f"model.llm={tmp_path / 'nothing-here'}"))


def test_beam_search_and_sampling_run(seed):
    from rgct.config import GenerationConfig

    model = build_model(tiny_cfg()).eval()
    image, mask, _ = tiny_batch(model, b=2)
    prompts = ["Describe the findings in the lung.", "Where?"]
    beams = model.generate(image, mask, prompts, GenerationConfig(max_new_tokens=5, num_beams=3))
    sampled = model.generate(
        image, mask, prompts, GenerationConfig(max_new_tokens=5, do_sample=True, top_p=0.9)
    )
    assert len(beams) == len(sampled) == 2


def test_gradient_checkpointing_gives_same_loss(seed):
    plain = build_model(tiny_cfg("model.lora_dropout=0.0"))
    ckpt = build_model(tiny_cfg("model.lora_dropout=0.0", "model.gradient_checkpointing=true"))
    ckpt.load_state_dict(plain.state_dict())
    image, mask, enc = tiny_batch(plain)
    a, b = plain(image, mask, **enc)["loss"], ckpt(image, mask, **enc)["loss"]
    assert torch.allclose(a, b, atol=1e-6)
    b.backward()
    assert any(p.grad is not None for n, p in ckpt.llm.named_parameters() if "lora_" in n)
