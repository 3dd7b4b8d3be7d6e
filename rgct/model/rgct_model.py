"""RGCTModel: 3D encoder -> region pooling -> projector -> causal LM with LoRA, in one module.

Data flow for a batch of B samples (one region mask each)::

    image (B,1,D,H,W) --encoder--> grid (B,C,d,h,w)
    grid + mask --pooler--> global (B,G,C), region (B,2,C), aux logits (B,L)
    [global | region] --projector--> (B,G+2,Hd);  sigmoid(logits) --evidence--> (B,1,Hd)
    visual (B,V,Hd) written at the placeholder tokens of the prompt -> LLM -> loss / text

Optional: ``grid --dense-->`` per-patch label logits (B,L,d,h,w), trained on phantom finding
maps (``model.dense_loss_weight``); with ``model.evidence_prompt`` the aux logits, thresholded,
are also written into the prompt as text ("Image findings in this region: ...").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rgct.config import GenerationConfig, ModelConfig
from rgct.constants import (
    HU_WINDOW,
    IGNORE_INDEX,
    MODEL_PARTS,
    SPECIAL_TOKENS,
)
from rgct.data.finding_maps import finding_targets
from rgct.model import region_classifier as rc
from rgct.model.drafting import PhraseBank, drafted_greedy
from rgct.model.encoder import build_encoder
from rgct.model.fusion import fuse_embeddings
from rgct.model.losses import balanced_bce
from rgct.model.pooling import RegionPooler
from rgct.model.projector import build_projector
from rgct.model.prompt import encode_for_generation, encode_for_training

VISION_PARTS = MODEL_PARTS[:4]
"""Sub-modules saved in a checkpoint's vision.safetensors (plus ``dense`` when the model has it)."""
DENSE_PART = MODEL_PARTS[4]


def attach_lora(llm: PreTrainedModel, cfg: ModelConfig) -> PeftModel:
    """Wrap the LLM with peft LoRA adapters on ``cfg.lora_targets``."""
    present = {name.rsplit(".", 1)[-1] for name, _ in llm.named_modules()}
    missing = [t for t in cfg.lora_targets if t not in present]
    if missing:
        raise ValueError(f"model.lora_targets {missing} are not modules of this LLM")
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_targets),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(llm, lora)


def language_loss(
    logits: torch.Tensor, labels: torch.Tensor, focal_gamma: float = 0.0
) -> torch.Tensor:
    """Next-token cross-entropy over labelled positions, optionally focal-weighted.

    Args:
        logits: (B, T, V) LLM outputs.
        labels: (B, T) target ids, IGNORE_INDEX where not supervised.
        focal_gamma: weight each token by (1 - p_target)^gamma (p detached); 0 = plain mean CE.
    """
    shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    shift_labels = labels[:, 1:].reshape(-1)
    ce = F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX, reduction="none")
    keep = shift_labels != IGNORE_INDEX
    if not keep.any():
        return ce.sum() * 0.0
    if focal_gamma > 0:
        ce = ce * (1 - torch.exp(-ce.detach())).pow(focal_gamma)
    return ce[keep].mean()


def override_detections(
    evidence: torch.Tensor, detected: list[dict[str, bool] | None], labels: tuple[str, ...]
) -> torch.Tensor:
    """(B, L) bool detections with each row's ``detected`` labels set as given (None: kept)."""
    if len(detected) != evidence.shape[0]:
        raise ValueError(f"{len(detected)} detection overrides for {evidence.shape[0]} rows")
    out = evidence.clone()
    for row, found in enumerate(detected):
        for label, on in (found or {}).items():
            if label not in labels:
                raise ValueError(f"detection override of {label!r}: not one of the model's labels")
            out[row, labels.index(label)] = bool(on)
    return out


class RGCTModel(nn.Module):
    """The composed region-grounded report model.

    Args:
        cfg: model section of the config.
        input_shape: (D, H, W) of the volumes it takes; (H, W) of radiographs (2D model).
        in_channels: image channels (one per HU window, ``cfg.data.in_channels``).
        llm: the causal LM, already wrapped with LoRA (:func:`attach_lora`) or plain.
        tokenizer: the LLM's tokenizer with the placeholder tokens added.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        input_shape: tuple[int, ...],
        llm: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        in_channels: int = 1,
        hu_window: tuple[float, float] = HU_WINDOW,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.hu_window = tuple(float(v) for v in hu_window)
        self.input_shape = tuple(input_shape)
        self.in_channels = int(in_channels)
        self.tokenizer = tokenizer
        self.encoder = build_encoder(cfg.encoder, self.input_shape, self.in_channels)
        channels = self.encoder.out_channels
        hidden = llm.get_input_embeddings().embedding_dim
        self.label_names = cfg.label_names
        """The region classifier's labels, in logit order (``model.labels``)."""
        self.label_words = rc.label_words(self.label_names, self.modality)
        """How the detections line writes each label."""
        self.pooler = RegionPooler(
            channels,
            cfg.num_global_tokens,
            num_labels=self.num_labels,
            region_stats=self.hu_window if cfg.region_stats else None,
            spatial_dims=len(self.input_shape),
            source_erosion=cfg.source_erosion,
        )
        for source in cfg.source_heads:  # e.g. the segmenter's masks: rc.fit --head predicted
            self.pooler.add_source_head(source)
        self.projector = build_projector(cfg.projector, channels, hidden)
        self.evidence = nn.Linear(self.num_labels, hidden)
        # Dense per-patch finding head: only with a dense loss (phantom positions).
        self.dense = (
            nn.Conv3d(channels, self.num_labels, kernel_size=1)
            if cfg.dense_loss_weight > 0
            else None
        )
        self.llm = llm
        self.drafts = PhraseBank(tokenizer)
        """Texts it was taught to write: drafts for greedy decoding (``phrases.txt``)."""
        ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
        if any(i is None or i == tokenizer.unk_token_id for i in ids):
            raise ValueError(f"tokenizer lacks the placeholder tokens {SPECIAL_TOKENS}")
        self.register_buffer("placeholder_ids", torch.tensor(ids), persistent=False)
        self.configure_trainable()

    # -- what trains, declared once -------------------------------------------------------------
    def trainable_groups(self) -> dict[str, bool]:
        """Which parts train, from the config: the single place this is decided."""
        return {
            "encoder": not self.cfg.encoder.freeze,
            "pooler": self.cfg.pooler_trains,
            "projector": self.cfg.train_projector,
            "evidence": self.cfg.train_projector,
            "lora": self.cfg.train_llm_lora,
        }

    @property
    def vision_parts(self) -> tuple[str, ...]:
        """Names of the vision sub-modules this model has (what vision.safetensors holds)."""
        return VISION_PARTS + ((DENSE_PART,) if self.dense is not None else ())

    def configure_trainable(self) -> None:
        groups = self.trainable_groups()
        for name in VISION_PARTS:
            getattr(self, name).requires_grad_(groups[name])
        if self.dense is not None:
            self.dense.requires_grad_(groups["pooler"])
        for pname, p in self.llm.named_parameters():
            p.requires_grad_(groups["lora"] and "lora_" in pname)

    @property
    def num_labels(self) -> int:
        """Labels of the region classifier (18 CT-RATE labels; a radiograph dataset's classes)."""
        return len(self.cfg.label_names)

    @property
    def num_visual_tokens(self) -> tuple[int, int]:
        """(global tokens, region tokens) per sample."""
        return self.cfg.num_global_tokens, self.cfg.num_region_tokens

    # -- vision side -----------------------------------------------------------------------------
    @property
    def modality(self) -> str:
        """'ct' (3D volumes) or 'cxr' (2D radiographs), from the input shape it was built for."""
        return "cxr" if len(self.input_shape) == 2 else "ct"

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C_in, D, H, W) -> patch grid (B, C, d, h, w); 2D: (B, C_in, H, W) -> (B, C, h, w)."""
        if image.ndim != 2 + len(self.input_shape):
            kinds = {"ct": "CT volumes (B, C, D, H, W)", "cxr": "radiographs (B, C, H, W)"}
            raise ValueError(
                f"this {self.modality} model reads {kinds[self.modality]}; got a "
                f"{image.ndim}-D tensor {tuple(image.shape)}"
            )
        if (
            image.ndim != 2 + len(self.input_shape)
            or image.shape[1] != self.in_channels
            or tuple(image.shape[2:]) != self.input_shape
        ):
            raise ValueError(
                f"image must be (B, {self.in_channels}, {', '.join(map(str, self.input_shape))}) "
                f"(channels = HU windows in data.hu_window + data.extra_hu_windows), "
                f"got {tuple(image.shape)}"
            )
        return self.encoder(image)

    def encode_rows(self, image: torch.Tensor) -> torch.Tensor:
        """Patch grids (B, C, d, h, w) for rows (B, C_in, D, H, W) that may repeat a volume:
        the encoder runs once per distinct volume (every region of a scan shares one pass)."""
        uniq, inverse = rc.unique_images(image)
        return self.encode_image(uniq)[inverse]

    def visual_tokens(
        self,
        grid: torch.Tensor,
        mask: torch.Tensor,
        image: torch.Tensor | None = None,
        mask_source: str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid (B,C,d,h,w) + mask (B,1,D,H,W) -> visual embeddings (B,V,Hd), aux logits (B,L).

        ``image`` (B or 1, C_in, D, H, W): the model input, for ``model.region_stats``.
        ``mask_source``: where the masks came from (``model.source_heads``: a source with a
        classifier head of its own is classified by it)."""
        # logits: the region classifier's
        glob, region, logits = self.pooler(grid, mask, image, mask_source)
        n_region = self.cfg.num_region_tokens
        tokens = [self.projector(glob), self.projector(region[:, : min(n_region, 2)])]
        if n_region == 3:
            tokens.append(self.evidence(torch.sigmoid(logits)).unsqueeze(1))
        return torch.cat(tokens, dim=1), logits

    def fused_embeddings(
        self, input_ids: torch.Tensor, visual: torch.Tensor, blind: bool = False
    ) -> torch.Tensor:
        """Token embeddings (B,T,Hd) with visual (B,V,Hd) written at the placeholders.

        ``blind`` writes zeros instead: the blind baseline, same weights and prompts.
        """
        if blind:
            visual = torch.zeros_like(visual)
        embeds = self.llm.get_input_embeddings()(input_ids)
        return fuse_embeddings(embeds, input_ids, visual, self.placeholder_ids)

    def aux_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, has_labels: torch.Tensor
    ) -> torch.Tensor:
        """Per-region abnormality BCE over samples whose labels are known (0 if none)."""
        keep = has_labels.bool()
        if not keep.any():
            return logits.sum() * 0.0
        return F.binary_cross_entropy_with_logits(logits[keep].float(), labels[keep].float())

    def dense_loss(self, grid: torch.Tensor, findings: torch.Tensor) -> torch.Tensor:
        """Class-balanced per-patch BCE (:func:`rgct.model.losses.balanced_bce`) of the dense
        head against (B,1,D,H,W) finding maps: a 10 mm nodule covers one or two of ~2000
        patches, and the hard negatives keep the strongest patch of a normal region low."""
        if self.dense is None:
            raise ValueError("dense finding maps given but model.dense_loss_weight is 0")
        logits = self.dense(grid).float()  # (B, L, d, h, w)
        target = finding_targets(findings, tuple(grid.shape[2:]), logits.shape[1])
        return balanced_bce(logits, target.to(logits.device))

    # -- training --------------------------------------------------------------------------------
    def tokenize(
        self,
        prompts: list[str],
        answers: list[str],
        labels: torch.Tensor | None = None,
        has_labels: torch.Tensor | list[bool] | None = None,
        locations: list[dict[str, str] | None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training tokens. With ``model.evidence_prompt`` the prompts carry the region's
        true labels (B, L) as the detections line (the classifier's at generation time); with
        ``model.evidence_locations`` also where each is (``locations``: label -> place, one
        dict per row, from the ground truth; the localiser's at generation time)."""
        if self.cfg.evidence_prompt:
            known = torch.ones(len(prompts), dtype=torch.bool) if has_labels is None else has_labels
            if labels is None or not bool(torch.as_tensor(known).all()):
                raise ValueError(
                    "model.evidence_prompt needs per-region labels for every training sample "
                    "(ground_truth.jsonl); some samples have none"
                )
            where = locations if self.cfg.evidence_locations else None
            prompts = rc.evidence_prompts(
                prompts, labels > 0.5, where, self.label_names, self.label_words
            )
        g, r = self.num_visual_tokens
        return encode_for_training(
            self.tokenizer, prompts, answers, g, r, self.cfg.max_answer_tokens
        )

    def forward(
        self,
        image: torch.Tensor,
        mask: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        aux_labels: torch.Tensor | None = None,
        has_labels: torch.Tensor | None = None,
        findings: torch.Tensor | None = None,
        objective: str = "lm",
        blind: bool = False,
    ) -> dict[str, torch.Tensor]:
        """The training losses of a batch for one ``train.objective``.

        One return shape for every objective: ``loss`` (what is backpropagated), ``lm_loss``,
        ``aux_loss``, ``dense_loss`` (detached, 0 where the objective has none) and
        ``aux_logits`` (B, L). The objectives (each its own method):

        - ``lm``: :meth:`language_losses`, the language loss plus the weighted vision losses;
        - ``aux``: :meth:`vision_losses`, the region classifier's (and dense) loss, no LLM;
        - ``dense``: :meth:`dense_losses`, the encoder and dense head alone (crops allowed).

        Args:
            image: (B, C_in, D, H, W) model input.
            mask: (B, 1, D, H, W) region masks (not used by ``dense``).
            input_ids, attention_mask, labels: (B, T) training tokens (``lm`` only).
            aux_labels: (B, L) region labels; has_labels: (B,) which rows have them.
            findings: (B, 1, D, H, W) dense finding maps (:mod:`rgct.data.finding_maps`).
            blind: zero the visual tokens (the blind baseline's loss).
        """
        if objective == "dense":
            return self.dense_losses(image, findings)
        if mask is None:
            raise ValueError(f"objective {objective!r} needs the region masks")
        if objective == "aux":
            return self.vision_losses(image, mask, aux_labels, has_labels, findings)[0]
        if objective == "lm":
            return self.language_losses(
                image,
                mask,
                input_ids,
                attention_mask,
                labels,
                aux_labels,
                has_labels,
                findings,
                blind,
            )
        raise ValueError(f"unknown objective {objective!r}: 'lm', 'aux' or 'dense'")

    @staticmethod
    def _losses(
        loss: torch.Tensor,
        lm: torch.Tensor | None,
        aux: torch.Tensor | None,
        dense: torch.Tensor | None,
        logits: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        zero = loss.detach() * 0.0
        return {
            "loss": loss,
            "lm_loss": zero if lm is None else lm.detach(),
            "aux_loss": zero if aux is None else aux.detach(),
            "dense_loss": zero if dense is None else dense.detach(),
            "aux_logits": logits.detach(),
        }

    def dense_losses(
        self, image: torch.Tensor, findings: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """``dense``: the encoder and dense head on the dense finding loss alone, on whole
        volumes or on crops of any size the encoder's stride divides."""
        if findings is None:
            raise ValueError("the dense objective needs the finding maps (data.finding_maps)")
        dense = self.dense_loss(self.encoder(image), findings)
        logits = torch.zeros(len(image), self.num_labels, device=image.device)
        return self._losses(dense, None, None, dense, logits)

    def vision_losses(
        self,
        image: torch.Tensor,
        mask: torch.Tensor,
        aux_labels: torch.Tensor | None = None,
        has_labels: torch.Tensor | None = None,
        findings: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``aux``: the region classifier's BCE (weighted) plus the weighted dense loss.

        Returns the losses and the visual embeddings (B, V, Hd), which :meth:`language_losses`
        writes into the prompt."""
        grid = self.encode_image(image)
        visual, logits = self.visual_tokens(grid, mask, image)
        if aux_labels is None:
            aux = logits.sum() * 0.0
        else:
            known = has_labels if has_labels is not None else torch.ones(len(aux_labels))
            aux = self.aux_loss(logits, aux_labels, known.to(logits.device))
        loss = self.cfg.aux_loss_weight * aux
        dense = None
        if findings is not None and self.dense is not None:
            dense = self.dense_loss(grid, findings)
            loss = loss + self.cfg.dense_loss_weight * dense
        return self._losses(loss, None, aux, dense, logits), visual

    def language_losses(
        self,
        image: torch.Tensor,
        mask: torch.Tensor,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
        aux_labels: torch.Tensor | None = None,
        has_labels: torch.Tensor | None = None,
        findings: torch.Tensor | None = None,
        blind: bool = False,
    ) -> dict[str, torch.Tensor]:
        """``lm``: the language loss of the answers plus the weighted vision losses."""
        if input_ids is None or labels is None or attention_mask is None:
            raise ValueError("the lm objective needs input_ids, attention_mask and labels")
        vision, visual = self.vision_losses(image, mask, aux_labels, has_labels, findings)
        embeds = self.fused_embeddings(input_ids, visual, blind)
        out = self.llm(inputs_embeds=embeds, attention_mask=attention_mask)
        lm_loss = language_loss(out.logits, labels, self.cfg.lm_focal_gamma)
        losses = self._losses(
            lm_loss + vision["loss"], lm_loss, vision["aux_loss"], None, vision["aux_logits"]
        )
        losses["dense_loss"] = vision["dense_loss"]
        return losses

    def evidence_thresholds(self, mask_source: str | None = None) -> list[float] | None:
        """The detection thresholds of the head that classifies ``mask_source``'s regions
        (``model.source_heads``, else ``model.evidence_thresholds``; None: 0.5 each)."""
        if mask_source is not None and mask_source in self.cfg.source_heads:
            return self.cfg.source_heads[mask_source]
        return self.cfg.evidence_thresholds

    # -- generation ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_from_grid(
        self,
        grid: torch.Tensor,
        mask: torch.Tensor,
        prompts: list[str],
        gen: GenerationConfig | None = None,
        blind: bool = False,
        evidence: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
        locations: list[dict[str, str] | None] | None = None,
        detected: list[dict[str, bool] | None] | None = None,
        presupposed: list[bool] | None = None,
        mask_source: str | None = None,
    ) -> list[str]:
        """Batched generation (left padding, KV cache) for precomputed grids (B,C,d,h,w).

        ``mask_source``: where ``mask`` came from; a source with its own classifier head
        (``model.source_heads``, e.g. ``predicted``) detects with that head and its thresholds.

        ``presupposed``: per row, whether its question presupposes one finding (a radiograph's
        "What is in the given box?"): such a row's line names exactly one label, its detection
        furthest above threshold or, detecting nothing, its most probable label
        (:func:`rgct.model.region_classifier.exactly_one`; the blind baseline too, from its own
        zeroed input).

        ``detected``: per row, label -> found, replacing the classifier's detection of those
        labels (a radiograph's zone localiser, :mod:`rgct.generate.localize_cxr`: its film
        segmenter's detections, a "where is X?" row's X); never used for the blind baseline or
        with ``evidence`` given.

        ``locations`` (``model.evidence_locations``): label -> place per row, from a localiser
        (:mod:`rgct.generate.localize`) or the truth; never used for the blind baseline.

        ``evidence`` (B, L) bool replaces the classifier's detections in the prompts (with
        ``model.evidence_prompt``): true labels there measure the language model alone.
        ``image`` (B or 1, C_in, D, H, W): the input the grids came from (``model.region_stats``)."""
        gen = gen or GenerationConfig()
        if len(prompts) != grid.shape[0] or mask.shape[0] != grid.shape[0]:
            raise ValueError(
                f"{len(prompts)} prompts for {grid.shape[0]} grids and {mask.shape[0]} masks"
            )
        visual, logits = self.visual_tokens(grid, mask, image, mask_source)
        thresholds = self.evidence_thresholds(mask_source)
        if evidence is not None and (
            not self.cfg.evidence_prompt or tuple(evidence.shape) != tuple(logits.shape)
        ):
            raise ValueError(
                f"evidence {tuple(evidence.shape)} needs model.evidence_prompt and one row of "
                f"{logits.shape[1]} labels per prompt"
            )
        if self.cfg.evidence_prompt:
            if evidence is None:
                if blind:  # the blind baseline's classifier sees no image either
                    zero_image = None if image is None else torch.zeros_like(image)
                    _, logits = self.visual_tokens(
                        torch.zeros_like(grid), mask, zero_image, mask_source
                    )
                evidence = rc.detections(logits, thresholds)
                if presupposed is not None:
                    evidence = rc.exactly_one(evidence, logits, presupposed, thresholds)
                if detected is not None and not blind:
                    evidence = override_detections(evidence, detected, self.label_names)
            where = None if blind or not self.cfg.evidence_locations else locations
            prompts = rc.evidence_prompts(
                prompts, evidence.bool(), where, self.label_names, self.label_words
            )
        g, r = self.num_visual_tokens
        enc = encode_for_generation(self.tokenizer, prompts, g, r)
        device = grid.device
        input_ids, attn = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        embeds = self.fused_embeddings(input_ids, visual, blind)
        if gen.drafted:
            return self._drafted(embeds, attn, gen)
        kwargs = dict(
            inputs_embeds=embeds,
            attention_mask=attn,
            max_new_tokens=gen.max_new_tokens,
            num_beams=gen.num_beams,
            do_sample=gen.do_sample,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            suppress_tokens=self.placeholder_ids.tolist(),
            use_cache=True,
        )
        if gen.do_sample:
            kwargs.update(temperature=gen.temperature, top_p=gen.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        out = self.llm.generate(**kwargs)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    def _drafted(
        self, embeds: torch.Tensor, attn: torch.Tensor, gen: GenerationConfig
    ) -> list[str]:
        """Greedy text of each row by :func:`rgct.model.drafting.drafted_greedy`; each text is
        then learned by the phrase bank."""
        eos = self.tokenizer.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        rows = drafted_greedy(
            self.llm,
            embeds,
            attn,
            max_new_tokens=gen.max_new_tokens,
            eos_ids=eos_ids,
            suppress_ids=self.placeholder_ids.tolist(),
            bank=self.drafts,
            draft_tokens=gen.draft_tokens,
            pad_id=self.tokenizer.pad_token_id,
        )
        for ids in rows:
            self.drafts.learn([i for i in ids if i not in eos_ids])
        return [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in rows]

    @torch.no_grad()
    def generate(
        self,
        image: torch.Tensor,
        mask: torch.Tensor,
        prompts: list[str],
        gen: GenerationConfig | None = None,
        blind: bool = False,
        evidence: torch.Tensor | None = None,
        locations: list[dict[str, str] | None] | None = None,
        detected: list[dict[str, bool] | None] | None = None,
        presupposed: list[bool] | None = None,
        mask_source: str | None = None,
    ) -> list[str]:
        """Text for each (image, mask, prompt) row. image (B,C,D,H,W), mask (B,1,D,H,W).

        Rows that repeat a volume share one encoder pass; the other arguments are
        :meth:`generate_from_grid`'s."""
        grid = self.encode_rows(image)
        return self.generate_from_grid(
            grid,
            mask,
            prompts,
            gen,
            blind,
            evidence,
            image,
            locations=locations,
            detected=detected,
            presupposed=presupposed,
            mask_source=mask_source,
        )
