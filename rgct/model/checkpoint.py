"""Model checkpoints: save, load, the parts they hold, initial weights, and the model card.

A checkpoint folder holds everything :func:`load_checkpoint` needs and nothing pickled:

    rgct_config.yaml            the fully resolved config
    vision.safetensors          encoder + pooler + projector + evidence (+ dense) weights
    adapter_config.json         the LoRA adapter, in peft's own format
    adapter_model.safetensors
    llm_base.safetensors        only for the random 'tiny' preset (its base weights)
    tokenizer files             tokenizer.json, tokenizer_config.json, ...
    README.md                   the model card

Folders are written whole and atomically (:func:`rgct.files.atomic_dir`); nothing edits a
finished checkpoint in place: fitting, calibration and conversion write a new folder.

Where a run's starting weights come from is one config key, ``train.init``: a list of
``{from: DIR, parts: [encoder, pooler, projector, evidence, dense, lora]}`` applied in order
(:func:`apply_init`), so a later entry overrides the parts it names.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from rgct.config import InitSource, RGCTConfig, load_saved_config, save_config
from rgct.constants import MODEL_PARTS
from rgct.files import atomic_dir
from rgct.model.drafting import PhraseBank
from rgct.model.encoder import inflate_input_channels
from rgct.model.llm import build_llm
from rgct.model.rgct_model import RGCTModel

logger = logging.getLogger(__name__)

CONFIG_FILE = "rgct_config.yaml"
VISION_FILE = "vision.safetensors"
ADAPTER_FILE = "adapter_model.safetensors"
TINY_BASE_FILE = "llm_base.safetensors"
CARD_FILE = "README.md"
REQUIRED_FILES = (CONFIG_FILE, VISION_FILE, "adapter_config.json", ADAPTER_FILE)
LORA_PART = "lora"
ALL_PARTS = (*MODEL_PARTS, LORA_PART)
"""Everything ``train.init`` can load: the vision parts and the LoRA adapter."""


def vision_state_dict(model: RGCTModel) -> dict[str, torch.Tensor]:
    return {
        f"{part}.{k}": v.detach().contiguous().cpu()
        for part in model.vision_parts
        for k, v in getattr(model, part).state_dict().items()
    }


def save_checkpoint(
    model: RGCTModel,
    cfg: RGCTConfig,
    directory: str | Path,
    card: str | None = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write the checkpoint folder atomically (temp folder, then rename over the target).

    ``extra(tmp_dir)`` may add files (training state) before the rename.
    """
    with atomic_dir(directory) as tmp:
        save_config(cfg, tmp / CONFIG_FILE)
        save_file(vision_state_dict(model), str(tmp / VISION_FILE))
        llm = model.llm
        llm.peft_config["default"].base_model_name_or_path = cfg.model.llm
        llm.save_pretrained(tmp, safe_serialization=True)
        if cfg.model.llm == "tiny":
            base = {
                k.replace(".base_layer", ""): v.contiguous()
                for k, v in llm.get_base_model().state_dict().items()
                if "lora_" not in k
            }
            base.pop("lm_head.weight", None)  # tied to the input embeddings
            save_file(base, str(tmp / TINY_BASE_FILE))
        model.tokenizer.save_pretrained(tmp)
        model.drafts.save(tmp)
        (tmp / CARD_FILE).write_text(card or default_card(cfg))
        if extra is not None:
            extra(tmp)
    return Path(directory)


def check_checkpoint(directory: str | Path) -> Path:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint folder {directory} does not exist")
    missing = [f for f in REQUIRED_FILES if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} is not an rgct checkpoint: missing {missing}")
    return directory


def load_vision_weights(
    model: RGCTModel,
    directory: str | Path,
    parts: tuple[str, ...] | None = None,
    hint: str = "",
) -> None:
    """Load ``parts`` (default: all of the model's) of a checkpoint's ``vision.safetensors``."""
    state = load_file(str(Path(directory) / VISION_FILE))
    for part in model.vision_parts if parts is None else parts:
        if getattr(model, part, None) is None:
            raise ValueError(f"{directory}: this model has no {part} part to load{hint}")
        sub = {k[len(part) + 1 :]: v for k, v in state.items() if k.startswith(part + ".")}
        if part == "encoder":
            sub, inflated = inflate_input_channels(sub, model.encoder)
            if inflated:
                logger.info(
                    "%s: encoder input widened to %d channels (new HU windows start at zero): %s",
                    directory,
                    model.in_channels,
                    ", ".join(inflated),
                )
        if part == "pooler":
            sub = _known_source_heads(sub, model, directory)
        if part == "pooler" and any(k.startswith("stats_head.") for k in sub) != (
            model.pooler.stats_head is not None
        ):
            has = any(k.startswith("stats_head.") for k in sub)
            raise ValueError(
                f"{directory}: its region classifier {'has' if has else 'lacks'} the intensity "
                f"statistics head; set model.region_stats={str(has).lower()} to load it{hint}"
            )
        try:
            getattr(model, part).load_state_dict(sub)
        except RuntimeError as e:
            raise ValueError(
                f"{directory}: the {part} weights do not fit this model ({e}){hint}"
            ) from e


def _known_source_heads(sub: dict, model: RGCTModel, directory: str | Path) -> dict:
    """A pooler state without the mask-source heads (``model.source_heads``) that ``model``
    does not hold: a stage that loads a pooler for another use starts from its main head."""
    have = set(model.pooler.source_heads)
    dropped = sorted({k.split(".")[1] for k in sub if k.startswith("source_heads.")} - have)
    if dropped:
        logger.info(
            "%s: classifier head(s) of mask source %s not loaded (this model's "
            "model.source_heads lacks them)",
            directory,
            ", ".join(dropped),
        )
    return {
        k: v for k, v in sub.items() if not k.startswith("source_heads.") or k.split(".")[1] in have
    }


def load_parts(
    model: RGCTModel, directory: str | Path, parts: list[str] | tuple[str, ...] | None = None
) -> None:
    """Load a checkpoint's vision weights and LoRA adapter (or only ``parts``) into a live model."""
    unknown = [p for p in parts or () if p not in ALL_PARTS]
    if unknown:
        raise ValueError(f"unknown checkpoint part(s) {unknown}; known: {list(ALL_PARTS)}")
    directory = Path(directory)
    parts = tuple(parts) if parts is not None else (*model.vision_parts, LORA_PART)
    load_vision_weights(
        model,
        directory,
        tuple(p for p in MODEL_PARTS if p in parts),
        hint="; choose the parts of that train.init entry accordingly",
    )
    if LORA_PART not in parts:
        return
    adapter = load_file(str(directory / ADAPTER_FILE))
    result = set_peft_model_state_dict(model.llm, adapter)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(
            f"{directory}: adapter keys do not match the model: {result.unexpected_keys[:5]}"
        )


def apply_init(model: RGCTModel, sources: list[InitSource]) -> None:
    """Load each ``train.init`` entry's parts into ``model``, in order (later entries win)."""
    for src in sources:
        check_checkpoint(src.from_)
        load_parts(model, src.from_, src.parts)
        logger.info("initialised %s from %s", ", ".join(src.parts), src.from_)


def inherit_thresholds(
    cfg: RGCTConfig, pooler_trains: bool, resumed: str | Path | None = None
) -> str | None:
    """Carry the calibrated ``model.evidence_thresholds`` of the checkpoint the region
    classifier comes from, when this stage sets none and leaves that classifier as it is.

    Thresholds are a calibration of one classifier: a stage that loads a calibrated pooler
    (the last ``train.init`` entry naming ``pooler``) and does not train it keeps that
    calibration; a stage that trains the pooler, or sets thresholds itself, keeps its own. A
    resumed stage (``resumed``: the step checkpoint it continues; its ``train.init`` is spent)
    keeps what that checkpoint carried. Updates ``cfg`` in place; returns the source folder,
    or None when nothing was carried.
    """
    if not cfg.model.evidence_prompt or cfg.model.evidence_thresholds is not None:
        return None
    src = _pooler_source(cfg, pooler_trains, resumed)
    if src is None:
        return None
    saved = load_saved_config(check_checkpoint(src) / CONFIG_FILE)
    if saved.model.evidence_thresholds is None:
        return None
    cfg.model.evidence_thresholds = list(saved.model.evidence_thresholds)
    logger.info("model.evidence_thresholds carried from %s (its classifier, not retrained)", src)
    return str(src)


def _pooler_source(cfg: RGCTConfig, pooler_trains: bool, resumed: str | Path | None) -> Path | None:
    """The checkpoint whose calibrated region classifier this stage keeps: the last
    ``train.init`` entry naming ``pooler``, else the step checkpoint a resumed stage continues;
    None when the stage trains the pooler (its calibration is then its own)."""
    if pooler_trains:
        return None
    sources = [s for s in cfg.train.init if "pooler" in s.parts]
    if sources:
        return Path(sources[-1].from_)
    return None if resumed is None else Path(resumed)


def inherit_source_heads(cfg: RGCTConfig, resumed: str | Path | None = None) -> str | None:
    """Carry the mask-source heads (``model.source_heads``: each head's calibrated thresholds,
    and ``model.source_erosion``) of the checkpoint the region classifier comes from, when this
    stage names none and leaves that classifier as it is (the rule of
    :func:`inherit_thresholds`). Without it a stage that fine-tunes the language model of a
    checkpoint with a head for the segmenter's masks would build a pooler without that head
    and drop its weights. Called before the model is built (the heads are modules); updates
    ``cfg`` in place; returns the source folder, or None when nothing was carried."""
    if cfg.model.source_heads:
        return None
    m = cfg.model
    src = _pooler_source(cfg, m.pooler_trains, resumed)
    if src is None:
        return None
    saved = load_saved_config(check_checkpoint(src) / CONFIG_FILE)
    if not saved.model.source_heads:
        return None
    m.source_heads = {
        k: (None if v is None else list(v)) for k, v in saved.model.source_heads.items()
    }
    m.source_erosion = saved.model.source_erosion
    logger.info(
        "model.source_heads %s (erosion %d) carried from %s (its classifier, not retrained)",
        sorted(m.source_heads),
        m.source_erosion,
        src,
    )
    return str(src)


def load_checkpoint(
    directory: str | Path,
    device: str | torch.device = "cpu",
    merge_lora: bool = False,
    overrides: list[str] | None = None,
) -> tuple[RGCTModel, RGCTConfig]:
    """Load a checkpoint folder (safetensors only, nothing unpickled) in eval mode.

    Args:
        directory: the checkpoint folder.
        device: where to put the model.
        merge_lora: merge the adapter into the base weights (export / faster inference).
        overrides: dotted config overrides applied to the saved config (e.g. model.llm_cache_dir=...).
    """
    directory = check_checkpoint(directory)
    cfg = load_saved_config(directory / CONFIG_FILE, overrides)
    llm, tokenizer = build_llm(
        cfg.model.llm, cfg.model.llm_cache_dir, tokenizer_dir=directory, seed=cfg.train.seed
    )
    if cfg.model.llm == "tiny":
        base = load_file(str(directory / TINY_BASE_FILE))
        missing, unexpected = llm.load_state_dict(base, strict=False)
        if unexpected or [m for m in missing if m != "lm_head.weight"]:
            raise ValueError(f"{directory / TINY_BASE_FILE} does not match the tiny LLM")
    llm = PeftModel.from_pretrained(llm, directory, is_trainable=False)
    if merge_lora:
        llm = llm.merge_and_unload()
    model = RGCTModel(
        cfg.model,
        cfg.data.input_shape,
        llm,
        tokenizer,
        in_channels=cfg.data.in_channels,
        hu_window=cfg.data.hu_window,
    )
    load_vision_weights(model, directory)
    model.drafts = PhraseBank.load(tokenizer, directory)
    model.requires_grad_(False)
    return model.to(device).eval(), cfg


def default_card(cfg: RGCTConfig, metrics: dict | None = None, command: str | None = None) -> str:
    """A Markdown model card: what it is, how it was made, what it scored."""
    what = (
        "Box-grounded chest-radiograph model (data.modality: cxr): a MONAI 2D encoder, region "
        "tokens pooled under box masks"
        if cfg.data.modality == "cxr"
        else "Region-grounded chest-CT report model: a MONAI 3D encoder, region tokens pooled "
        "under region masks"
    )
    inputs = (
        f"- Input: radiographs (as displayed) resized to {list(cfg.data.input_shape)} (H, W)"
        if cfg.data.modality == "cxr"
        else f"- Input: volumes resized to {list(cfg.data.input_shape)} (D, H, W), HU window(s) "
        f"{[list(w) for w in cfg.data.hu_windows]}"
    )
    lines = [
        "# rgct checkpoint",
        "",
        f"{what}, an MLP projector and a causal LLM with a LoRA adapter (peft).",
        "",
        f"- LLM: `{cfg.model.llm}`; encoder: `{cfg.model.encoder.name}` "
        f"(features {cfg.model.encoder.feature_size}, patch {list(cfg.model.encoder.patch_size)})",
        inputs,
        f"- Visual tokens per prompt: {cfg.model.num_global_tokens} global + {cfg.model.num_region_tokens} region",
        "",
        "Load with `rgct.inference.Predictor.from_checkpoint(path)`.",
    ]
    if command:
        lines += ["", "## How it was trained", "", "```", command, "```"]
    if metrics:
        lines += ["", "## Held-out results", "", "```json", json.dumps(metrics, indent=2), "```"]
    return "\n".join(lines) + "\n"
