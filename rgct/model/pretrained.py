"""The field's published 3D CT encoder weights, loaded into rgct's ``swin`` and ``vit`` encoders.

Two layouts are read (``model.encoder_weights`` + ``model.encoder_weights_format``):

- ``swinunetr_ssl``: MONAI SwinUNETR self-supervised pre-training, ``model_swinvit.pt``, a
  pickled ``{"state_dict": {...}}`` whose keys carry a ``module.`` prefix
  (``module.patch_embed.proj.weight``, ``module.layers1.0.blocks.N.mlp.fc1.weight``,
  ``module.layers1.0.downsample.reduction.weight`` ...). The MLP is named ``fc1``/``fc2``
  there and ``linear1``/``linear2`` in MONAI's ``SwinTransformer``. Architecture: feature
  size 48, depths 2,2,2,2, heads 3,6,12,24, window 7, patch 2 (rgct ``swin`` encoder with
  ``feature_size: 48, depth: 4, num_heads: 3``).
- ``m3d_vit``: M3D-CLIP's vision tower, ``pretrained_ViT.bin``, a bf16 state dict of a MONAI
  ``ViT`` (perceptron patch embedding, class token, 12 blocks of hidden 768, 12 heads, MLP
  3072, no qkv bias, input 1x32x256x256, patch 4x16x16): ``cls_token``,
  ``patch_embedding.position_embeddings``, ``patch_embedding.patch_embeddings.1.weight``,
  ``blocks.N.attn.qkv.weight`` ... (rgct ``vit`` encoder with ``proj_type: perceptron``,
  ``cls_token: true``).

Loading is strict: every tensor of the encoder must come from the file (apart from the
parameters MONAI creates but never uses, listed in :data:`UNUSED_PARAMETERS`), every tensor of
the file must land in the encoder (apart from the pre-training heads listed in
:data:`IGNORED_PREFIXES`), and shapes must agree; otherwise a :class:`PretrainedWeightsError`
names the file and lists the missing, unexpected and mis-shaped keys. Files are read with
``torch.load(weights_only=True)`` (or safetensors): a pickle that holds anything but tensors
and plain containers is refused.

Example::

    report = load_pretrained_encoder(model.encoder, "model_swinvit.pt", "auto")
    report.format, report.loaded  # ('swinunetr_ssl', 126)
"""

from __future__ import annotations

import logging
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from rgct.model.encoder import inflate_input_channels

logger = logging.getLogger(__name__)

FORMATS = ("swinunetr_ssl", "m3d_vit")
"""Key layouts :func:`load_pretrained_encoder` reads (plus 'auto': detected from the keys)."""

IGNORED_PREFIXES = {
    "swinunetr_ssl": (
        "rotation_pre.",
        "rotation_head.",
        "contrastive_pre.",
        "contrastive_head.",
        "conv.",
    ),
    "m3d_vit": ("classification_head.",),
}
"""Pre-training heads a file may carry that the encoder has no use for (dropped, logged)."""

UNUSED_PARAMETERS = re.compile(r"(^|\.)blocks\.\d+\.(norm_cross_attn|cross_attn)\.")
"""MONAI's ``TransformerBlock`` holds a cross-attention norm even without cross-attention (and
older releases saved a cross-attention block): never used in the forward pass, so a file
without them loads, and a file with them has them dropped."""

_TARGET = {"swinunetr_ssl": "swin", "m3d_vit": "vit"}
"""Format -> the attribute of rgct's encoder wrapper that holds the MONAI network."""


class PretrainedWeightsError(ValueError):
    """A pretrained weights file that cannot be loaded into the encoder (names the file)."""


@dataclass
class PretrainedReport:
    """What :func:`load_pretrained_encoder` did.

    Attributes:
        path: the weights file.
        format: the layout read.
        loaded: number of tensors copied into the encoder.
        ignored: file keys dropped (pre-training heads, unused MONAI parameters).
        kept_initial: encoder keys left as initialised (parameters MONAI never uses).
        inflated: input convolutions widened to more HU-window channels (new ones at zero).
    """

    path: str
    format: str
    loaded: int
    ignored: list[str] = field(default_factory=list)
    kept_initial: list[str] = field(default_factory=list)
    inflated: list[str] = field(default_factory=list)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file, without unpickling arbitrary objects.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``. A top-level ``state_dict`` (or ``model``) entry is
    unwrapped.

    Raises:
        PretrainedWeightsError: missing file, a pickle with non-tensor objects, no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"{path}: pretrained weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            payload: object = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise PretrainedWeightsError(f"{path}: not a readable safetensors file ({e})") from e
    else:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise PretrainedWeightsError(
                f"{path}: refused: the pickle holds objects other than tensors and plain "
                f"containers, and rgct never unpickles arbitrary objects ({e})"
            ) from e
        except (RuntimeError, EOFError, OSError) as e:
            raise PretrainedWeightsError(f"{path}: not a readable torch weights file ({e})") from e
    if isinstance(payload, dict):
        for key in ("state_dict", "model"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not payload:
        raise PretrainedWeightsError(f"{path}: holds no state dict (got {type(payload).__name__})")
    bad = [str(k) for k, v in payload.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise PretrainedWeightsError(f"{path}: entries that are not tensors: {bad[:5]}")
    return dict(payload)


def _strip_prefix(state: dict[str, torch.Tensor], marker: str) -> dict[str, torch.Tensor]:
    """Drop whatever wrapper prefix (``module.``, ``vision_tower.vision_tower.`` ...) stands in
    front of the first key that holds ``marker``, from every key that has it."""
    first = next((k for k in state if marker in k), None)
    if first is None:
        return state
    prefix = first[: first.index(marker)]
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}


def detect_format(state: dict[str, torch.Tensor]) -> str | None:
    """'swinunetr_ssl', 'm3d_vit', or None, from the keys of a state dict."""
    keys = list(state)
    if any(re.search(r"(^|\.)patch_embed\.proj\.weight$", k) for k in keys) and any(
        re.search(r"(^|\.)layers1\.0\.blocks\.", k) for k in keys
    ):
        return "swinunetr_ssl"
    if any(k.endswith("patch_embedding.position_embeddings") for k in keys) and any(
        re.search(r"(^|\.)blocks\.\d+\.attn\.qkv\.weight$", k) for k in keys
    ):
        return "m3d_vit"
    return None


def to_monai_keys(state: dict[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    """A file's keys renamed to those of the MONAI network inside rgct's encoder."""
    if fmt == "swinunetr_ssl":
        state = _strip_prefix(state, "patch_embed.proj.weight")
        return {re.sub(r"\.mlp\.fc([12])\.", r".mlp.linear\1.", k): v for k, v in state.items()}
    if fmt == "m3d_vit":
        return _strip_prefix(state, "patch_embedding.position_embeddings")
    raise PretrainedWeightsError(f"unknown pretrained format {fmt!r}; known: {FORMATS}")


def load_pretrained_encoder(
    encoder: nn.Module, path: str | Path, fmt: str = "auto"
) -> PretrainedReport:
    """Load a published pretrained encoder file into ``encoder``, strictly.

    Args:
        encoder: rgct's ``SwinEncoder`` (for 'swinunetr_ssl') or ``ViTEncoder`` ('m3d_vit').
        path: ``model_swinvit.pt``, ``pretrained_ViT.bin``, or a safetensors file with the same
            keys.
        fmt: 'swinunetr_ssl', 'm3d_vit', or 'auto' (detected from the keys).

    Returns:
        a :class:`PretrainedReport` (also logged).

    Raises:
        PretrainedWeightsError: unreadable or refused file, an unknown layout, or an encoder of
            another architecture or size (missing / unexpected / mis-shaped keys listed).
    """
    path = Path(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise PretrainedWeightsError(
            f"model.encoder_weights_format={fmt!r} is unknown; choose 'auto' or one of {FORMATS}"
        )
    state = read_state_dict(path)
    if fmt == "auto":
        fmt = detect_format(state) or ""
        if not fmt:
            raise PretrainedWeightsError(
                f"{path}: unrecognised key layout (first keys {list(state)[:5]}); expected "
                f"{FORMATS[0]} (module.patch_embed.proj.weight, module.layers1.0.blocks...) or "
                f"{FORMATS[1]} (patch_embedding.position_embeddings, blocks.N.attn.qkv.weight)"
            )
    target = getattr(encoder, _TARGET[fmt], None)
    if target is None:
        raise PretrainedWeightsError(
            f"{path}: {fmt} weights are for the {_TARGET[fmt]!r} encoder, but model.encoder.name "
            f"builds {type(encoder).__name__}"
        )
    state = to_monai_keys(state, fmt)
    ignored = sorted(
        k for k in state if k.startswith(IGNORED_PREFIXES[fmt]) or UNUSED_PARAMETERS.search(k)
    )
    state = {k: v for k, v in state.items() if k not in set(ignored)}
    own = target.state_dict()
    if fmt == "m3d_vit" and "cls_token" in state and "cls_token" not in own:
        raise PretrainedWeightsError(
            f"{path}: M3D-CLIP's vision tower has a class token; set model.encoder.cls_token=true "
            "and model.encoder.proj_type=perceptron (configs/model/smollm2_m3d_vit.yaml)"
        )
    inflated: list[str] = []
    if fmt == "swinunetr_ssl":
        state, inflated = inflate_input_channels(state, target)
    missing = [k for k in own if k not in state]
    kept = [k for k in missing if UNUSED_PARAMETERS.search(k)]
    missing = [k for k in missing if k not in set(kept)]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs encoder {tuple(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        raise PretrainedWeightsError(
            f"{path}: the {fmt} weights do not fit this {type(encoder).__name__} "
            f"(wrong architecture or size; the preset in configs/model/ sets the published one): "
            f"{len(missing)} missing {missing[:8]}, {len(unexpected)} unexpected "
            f"{unexpected[:8]}, {len(shapes)} mis-shaped {shapes[:4]}"
        )
    with torch.no_grad():
        target.load_state_dict({**{k: own[k] for k in kept}, **state}, strict=True)
    report = PretrainedReport(str(path), fmt, len(state), ignored, kept, inflated)
    logger.info(
        "%s: loaded %d %s tensors into the %s encoder%s%s",
        path,
        report.loaded,
        fmt,
        _TARGET[fmt],
        f"; dropped {len(ignored)} unused ({', '.join(ignored[:3])}...)" if ignored else "",
        f"; widened input channels of {', '.join(inflated)}" if inflated else "",
    )
    return report
