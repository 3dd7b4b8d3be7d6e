"""The training loop: plain accelerate (prepare, accumulate, backward, clip, step).

One function, :func:`train`, runs a whole stage from a resolved config. It works the same as
one CPU process, under ``accelerate launch --num_processes N --cpu`` (gloo), and on GPUs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from torch.profiler import record_function
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from rgct.config import RGCTConfig, load_saved_config, save_config
from rgct.constants import METRICS_FILE, WHOLE_SCAN
from rgct.data.compact import expand_batch
from rgct.data.layout import strip_suffix
from rgct.data.truth import finding_locations, load_ground_truth
from rgct.model.builder import build_model
from rgct.model.checkpoint import (
    apply_init,
    default_card,
    inherit_source_heads,
    inherit_thresholds,
    save_checkpoint,
)
from rgct.model.drafting import PhraseBank
from rgct.model.rgct_model import RGCTModel
from rgct.model.segmenter import WEIGHTS_FILE as SEGMENTER_WEIGHTS
from rgct.model.segmenter import copy_segmenter
from rgct.train.optim import build_optimizer, build_scheduler
from rgct.train.state import (
    load_training_checkpoint,
    resolve_resume,
    restore_rng,
    save_training_checkpoint,
)

logger = logging.getLogger(__name__)

FINAL_DIR = "model"
LOSS_KEYS = ("loss", "lm_loss", "aux_loss", "dense_loss")
PHASES = {
    name: f"rgct.step.{name}" for name in ("data", "inputs", "forward", "backward", "optimizer")
}
"""The profiler labels of one micro-step's phases (``scripts/bench_step.py`` reads them)."""


def check_before_work(cfg: RGCTConfig) -> None:
    """Fail fast, before any model is built, on settings that cannot work."""
    root = cfg.data.root
    if not root:
        raise ValueError("data.root is not set: pass data.root=DIR (a dataset from `rgct synth`)")
    if not Path(root).is_dir():
        raise FileNotFoundError(f"data.root={root} does not exist")
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is visible")
    if cfg.train.mixed_precision == "bf16" and not torch.cuda.is_available():
        raise ValueError("train.mixed_precision=bf16 needs CUDA (bf16 matmul crashes these CPUs)")
    for src in cfg.train.init:
        if not Path(src.from_).is_dir():
            raise FileNotFoundError(f"train.init: checkpoint folder {src.from_} does not exist")
    if not cfg.data.sources:
        from rgct.data.sources import check_root_modality

        check_root_modality(cfg.data)


def make_accelerator(cfg: RGCTConfig) -> Accelerator:
    cpu = cfg.train.device == "cpu" or not torch.cuda.is_available()
    mp = cfg.train.mixed_precision
    if mp == "auto":
        mp = "no" if cpu else "bf16"
    return Accelerator(
        gradient_accumulation_steps=cfg.train.grad_accum,
        mixed_precision=mp,
        cpu=cpu,
        log_with="tensorboard",
        project_dir=cfg.train.output_dir,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def to_model_inputs(
    model: RGCTModel,
    batch: dict,
    device: torch.device,
    objective: str,
    truth: dict[str, dict] | None = None,
) -> dict:
    """Collated batch -> keyword arguments of RGCTModel.forward (tokenised unless 'aux').

    ``truth`` (volume -> ground-truth record; a radiograph's: film -> {class: places}) gives
    each row's finding locations for ``model.evidence_locations`` (a radiograph's whole-film
    rows only: a box row is asked what the box holds)."""
    expanded = expand_batch({"image": batch["image"], "mask": batch["mask"]}, device)
    inputs = {
        **expanded,
        "aux_labels": batch["labels"].to(device),
        "has_labels": torch.as_tensor(batch["has_labels"], device=device),
    }
    if "findings" in batch:
        inputs["findings"] = batch["findings"].to(device)
    inputs["objective"] = objective
    if objective == "lm":
        locations = None
        if truth is not None and model.modality == "cxr":  # truth: film -> {class: places}
            locations = [
                truth.get(v) if r == WHOLE_SCAN else None
                for v, r in zip(batch["volume"], batch["region"])
            ]
        elif truth is not None:
            locations = [
                finding_locations(
                    truth.get(strip_suffix(v)), r, whole_scan=model.cfg.scan_locations
                )
                for v, r in zip(batch["volume"], batch["region"])
            ]
        enc = model.tokenize(
            batch["prompt"], batch["answer"], batch["labels"], batch["has_labels"], locations
        )
        inputs.update({k: v.to(device) for k, v in enc.items()})
    return inputs


def aux_f1(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of the auxiliary classifier at 0.5."""
    pred = logits > 0
    gold = labels > 0.5
    return int((pred & gold).sum()), int((pred & ~gold).sum()), int((~pred & gold).sum())


@torch.no_grad()
def evaluate(
    model: RGCTModel,
    accelerator: Accelerator,
    cfg: RGCTConfig,
    loaders: dict,
    truth: dict[str, dict] | None = None,
) -> dict:
    """Validation loss per task and the auxiliary classifier's micro-F1."""
    raw = accelerator.unwrap_model(model)
    raw.eval()
    out: dict[str, float] = {}
    tp = fp = fn = 0
    # validation samples are whole volumes without finding maps: a dense run reports how
    # its encoder serves the region classifier
    objective = "aux" if cfg.train.objective == "dense" else cfg.train.objective
    for task, loader in loaders.items():
        losses = []
        for i, batch in enumerate(loader):
            if i >= cfg.train.eval_batches:
                break
            if not batch:
                continue
            res = raw(**to_model_inputs(raw, batch, accelerator.device, objective, truth))
            losses.append(res["lm_loss" if objective == "lm" else "aux_loss"].float())
            keep = torch.as_tensor(batch["has_labels"], device=accelerator.device).bool()
            t = aux_f1(res["aux_logits"][keep], batch["labels"].to(accelerator.device)[keep])
            tp, fp, fn = tp + t[0], fp + t[1], fn + t[2]
        if losses:
            mean = accelerator.gather_for_metrics(torch.stack(losses).mean().reshape(1)).mean()
            out[f"val_loss/{task}"] = float(mean)
    counts = accelerator.gather_for_metrics(
        torch.tensor([tp, fp, fn], device=accelerator.device).reshape(1, 3)
    ).sum(0)
    tp, fp, fn = (int(x) for x in counts)
    out["val_aux_f1"] = 2 * tp / max(2 * tp + fp + fn, 1)
    raw.train()
    return out


@torch.no_grad()
def log_samples(
    model: RGCTModel, cfg: RGCTConfig, dataset, device: torch.device, n: int = 4
) -> list[dict]:
    """Generate for a few validation samples and log them beside the reference."""
    from rgct.data.dataset import collate

    model.eval()
    items = [x for x in (dataset[i] for i in range(min(n, len(dataset)))) if x is not None]
    if not items:
        return []
    batch = expand_batch(collate(items), device)
    preds = model.generate(batch["image"], batch["mask"], batch["prompt"], cfg.generation)
    model.train()
    rows = []
    for p, item in zip(preds, items):
        rows.append(
            {
                "task": item["task"],
                "region": item["region"],
                "prompt": item["prompt"],
                "prediction": p,
                "reference": item["answer"],
            }
        )
        logger.info(
            "[%s | %s] %s\n  pred: %s\n  ref:  %s",
            item["task"],
            item["region"],
            item["prompt"],
            p,
            item["answer"],
        )
    return rows


def _append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


@dataclass
class TrainData:
    """The datasets and loaders of one stage."""

    train_ds: Any
    loader: DataLoader
    eval_loaders: dict[str, DataLoader]
    sample_ds: Any | None


def log_window(step: int, window: list, seen: int, elapsed: float, tc, scheduler, train_ds) -> dict:
    """One metrics row: the mean losses of the micro-batches since the last row (``window``:
    one (4,) tensor of :data:`LOSS_KEYS` per micro-batch, read to the host here, once per row),
    learning rate, throughput and the number of bad samples skipped so far."""
    loss, lm, aux, dense = torch.stack(window).mean(0).tolist()
    if not all(math.isfinite(v) for v in (loss, lm, aux, dense)):
        raise FloatingPointError(f"loss became {loss} at step {step}")
    return {
        "step": step,
        "loss": loss,
        "lm_loss": lm,
        "aux_loss": aux,
        "dense_loss": dense,
        "lr": scheduler.get_last_lr()[0],
        "samples_per_s": seen / max(elapsed, 1e-9),
        "step_time_s": elapsed / max(len(window) / tc.grad_accum, 1),
        "skipped_samples": train_ds.num_skipped,  # bad samples so far (data.skip_bad_samples)
    }


def resolve_radiograph_labels(cfg: RGCTConfig) -> None:
    """A radiograph model's classifier reads its folder's classes: ``model.labels`` is set
    from the folder when null (recorded in the config and checkpoint), and must equal them
    when given."""
    from rgct.data.sources import radiograph_labels

    classes = list(radiograph_labels(cfg.data))
    if cfg.model.labels is None:
        cfg.model.labels = classes
        logger.info("model.labels: the %d classes of %s", len(classes), cfg.data.root)
    elif list(cfg.model.labels) != classes:
        raise ValueError(
            f"model.labels {cfg.model.labels} are not the classes of {cfg.data.root} "
            f"({classes}): leave model.labels null to take the folder's"
        )


def build_start_model(cfg: RGCTConfig) -> RGCTModel:
    """A fresh model with its ``train.init`` weights loaded (warns on a risky combination)."""
    model = build_model(cfg)
    if cfg.model.region_stats and cfg.data.augment and not model.trainable_groups()["pooler"]:
        logger.warning(
            "model.region_stats with a frozen classifier and data.augment=true: the intensity "
            "jitter moves the histograms the fitted head reads, so the evidence token it feeds "
            "the LLM is off during training (consider data.augment=false)"
        )
    apply_init(model, cfg.train.init)
    return model


def _train_loader(cfg: RGCTConfig, train_ds) -> DataLoader:
    """The training loader: the mix in order (it is already drawn), whole batches only."""
    from rgct.data.dataset import collate

    return DataLoader(
        train_ds,
        batch_size=cfg.train.batch_size,
        shuffle=False,
        collate_fn=collate,
        num_workers=cfg.data.num_workers,
        drop_last=True,
    )


def build_data(cfg: RGCTConfig, world: int) -> TrainData:
    """Training loader (exactly the samples of ``max_steps`` steps), per-task validation
    loaders and the samples whose generations are logged."""
    from rgct.data.dataset import RGCTDataset, collate

    tc = cfg.train
    total_samples = tc.max_steps * tc.batch_size * tc.grad_accum * world
    if cfg.data.modality == "cxr":  # a radiograph folder trains as its one source
        from rgct.data.sources import radiograph_sources

        cfg = dataclasses.replace(cfg, data=radiograph_sources(cfg.data))
    if cfg.data.sources:
        return _build_source_data(cfg, world, total_samples)
    train_ds = RGCTDataset(
        cfg.data, cfg.data.train_split, train=True, num_samples=total_samples, seed=tc.seed
    )
    loader = _train_loader(cfg, train_ds)
    eval_loaders = {}
    sample_ds = None
    if tc.eval_every > 0:
        tasks = [t for t, w in cfg.data.tasks.items() if w > 0]
        for task in tasks:
            ds = RGCTDataset(
                cfg.data,
                cfg.data.eval_split,
                train=False,
                tasks=[task],
                seed=tc.seed,
                num_samples=tc.eval_batches * tc.batch_size * world,
            )
            if len(ds):
                eval_loaders[task] = DataLoader(ds, batch_size=tc.batch_size, collate_fn=collate)
        if tc.sample_every > 0:
            sample_ds = RGCTDataset(
                cfg.data, cfg.data.eval_split, train=False, seed=tc.seed + 1, num_samples=4
            )
    return TrainData(train_ds, loader, eval_loaders, sample_ds)


def _build_source_data(cfg: RGCTConfig, world: int, total_samples: int) -> TrainData:
    """:func:`build_data` for ``data.sources``: the weighted mix, and one validation loader per
    (source, task) named ``<source>/<task>`` (validation loss reported per source)."""
    from rgct.data.dataset import collate
    from rgct.data.sources import SourceDataset, build_mixed_sources

    tc = cfg.train
    train_ds = build_mixed_sources(
        cfg.data, cfg.data.train_split, train=True, num_samples=total_samples, seed=tc.seed
    )
    loader = _train_loader(cfg, train_ds)
    eval_loaders = {}
    if tc.eval_every > 0:
        n = tc.eval_batches * tc.batch_size * world
        for source in cfg.data.sources:
            ds = SourceDataset(cfg.data, source, cfg.data.eval_split, train=False, seed=tc.seed)
            for task in sorted({ds.samples.text("task", i) for i in range(len(ds))}):
                one = SourceDataset(
                    cfg.data,
                    dataclasses.replace(source, tasks={task: 1.0}),
                    cfg.data.eval_split,
                    train=False,
                    seed=tc.seed,
                    num_samples=n,
                )
                eval_loaders[f"{source.name}/{task}"] = DataLoader(
                    one, batch_size=tc.batch_size, collate_fn=collate
                )
    return TrainData(train_ds, loader, eval_loaders, None)


def inherit_segmenter(cfg: RGCTConfig, folder: Path, resumed: Path | None = None) -> None:
    """The model keeps the segmenter of the first ``train.init`` checkpoint that has one (a
    separate network: a model fine-tuned from one that finds its own regions still does); a
    resumed run (whose ``train.init`` is spent) keeps the one its checkpoint carries. Only a
    checkpoint of the model's own modality passes it on (a radiograph model that starts its
    LoRA from a CT checkpoint gets no CT segmenter)."""
    from rgct.model.checkpoint import CONFIG_FILE

    sources = [Path(s.from_) for s in cfg.train.init] + ([Path(resumed)] if resumed else [])
    for source in sources:
        if not (source / CONFIG_FILE).is_file():
            continue
        if load_saved_config(source / CONFIG_FILE).data.modality != cfg.data.modality:
            continue
        if (source / SEGMENTER_WEIGHTS).is_file():
            copy_segmenter(source, folder)
            return


def training_targets(train_ds) -> Iterator[str]:
    """The target texts of a training set (one dataset or a mix of sources): the checkpoint's
    phrase bank for drafted decoding (:mod:`rgct.model.drafting`)."""
    mixed = getattr(train_ds, "datasets", None)  # data.sources: name -> dataset
    for ds in mixed.values() if mixed else [train_ds]:
        for i in range(len(ds.samples)):
            yield ds.samples.text("answer", i) or ""


def train(cfg: RGCTConfig, command: str | None = None) -> Path:
    """Run one training stage; return the final model folder (``<output_dir>/model``).

    Args:
        cfg: the resolved config.
        command: the command line, recorded in the model card.
    """
    check_before_work(cfg)
    if cfg.data.modality == "cxr":
        resolve_radiograph_labels(cfg)
    tc = cfg.train
    accelerator = make_accelerator(cfg)
    out_dir = Path(tc.output_dir)
    set_seed(tc.seed)
    resume_from = resolve_resume(tc.resume, out_dir)
    inherit_source_heads(cfg, resumed=resume_from)
    model = build_start_model(cfg)
    inherit_thresholds(cfg, model.trainable_groups()["pooler"], resumed=resume_from)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "rgct_config.yaml")
    truth = None
    if cfg.model.evidence_locations and cfg.data.modality == "cxr":
        from rgct.data.cxr_samples import places_by_film
        from rgct.data.sources import radiograph_layout

        splits = (cfg.data.train_split, cfg.data.eval_split)
        truth = places_by_film(cfg.data.root, radiograph_layout(cfg.data), splits)
    elif cfg.model.evidence_locations:
        truth = load_ground_truth(cfg.data.root)
        if truth is None:
            raise ValueError(
                f"model.evidence_locations trains on finding places from ground truth: "
                f"{cfg.data.root} has no ground_truth.jsonl"
            )
    world = accelerator.num_processes
    data = build_data(cfg, world)
    train_ds, loader, eval_loaders, sample_ds = (
        data.train_ds,
        data.loader,
        data.eval_loaders,
        data.sample_ds,
    )
    optimizer = build_optimizer(model, tc)
    scheduler = build_scheduler(optimizer, tc)
    # The scheduler stays unprepared and steps once per optimizer step, so the schedule is the
    # same for any number of processes.
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    eval_loaders = {k: accelerator.prepare(v) for k, v in eval_loaders.items()}
    raw: RGCTModel = accelerator.unwrap_model(model)
    raw.drafts = PhraseBank.from_targets(raw.tokenizer, training_targets(train_ds))

    step = 0

    def keep_segmenter(folder: Path) -> None:
        inherit_segmenter(cfg, folder, resume_from)

    if resume_from is not None:
        step = load_training_checkpoint(raw, optimizer, scheduler, resume_from)
        logger.info("resumed from %s at step %d", resume_from, step)
    accelerator.init_trackers("tensorboard")
    metrics_path = out_dir / METRICS_FILE
    card = default_card(cfg, command=command)

    # Which samples each process consumed, one line per micro-batch (debugging, data-order tests).
    trace_dir = out_dir / "data_order"
    trace_dir.mkdir(parents=True, exist_ok=True)
    trace = open(trace_dir / f"rank{accelerator.process_index}.txt", "a")
    skip = step * tc.grad_accum
    active = accelerator.skip_first_batches(loader, skip) if skip else loader
    pending_rng = resume_from  # restored once the first batch is fetched (starting the
    # DataLoader iterator draws from the global RNG, which the uninterrupted run did at step 0)
    pbar = tqdm(
        total=tc.max_steps, initial=step, disable=not accelerator.is_main_process, desc="train"
    )
    model.train()
    t0, seen, window = time.time(), 0, []
    batches = iter(active)
    while step < tc.max_steps:
        with record_function(PHASES["data"]):
            batch = next(batches, None)
        if batch is None:
            break
        if pending_rng is not None:
            restore_rng(pending_rng)
            pending_rng = None
        if not batch:  # every item of this batch was a skipped bad sample
            continue
        with accelerator.accumulate(model):
            with record_function(PHASES["inputs"]):
                inputs = to_model_inputs(raw, batch, accelerator.device, tc.objective, truth)
            with record_function(PHASES["forward"]):
                out = model(**inputs)
            with record_function(PHASES["backward"]):
                accelerator.backward(out["loss"])
            with record_function(PHASES["optimizer"]):
                if accelerator.sync_gradients and tc.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        trace.write(
            " ".join(
                f"{v}:{t}:{r}" for v, t, r in zip(batch["volume"], batch["task"], batch["region"])
            ).replace("\n", " ")
            + "\n"
        )
        seen += len(batch["prompt"]) * world
        # the losses stay on the device until a metrics row is written: no host sync per step
        window.append(torch.stack([out[k].detach().float() for k in LOSS_KEYS]))
        if not accelerator.sync_gradients:
            continue
        step += 1
        pbar.update(1)
        if step % tc.log_every == 0 or step == tc.max_steps:
            row = log_window(step, window, seen, time.time() - t0, tc, scheduler, train_ds)
            pbar.set_postfix(
                loss=f"{row['loss']:.3f}",
                aux=f"{row['aux_loss']:.3f}",
                sps=f"{row['samples_per_s']:.1f}",
            )
            accelerator.log({k: v for k, v in row.items() if k != "step"}, step=step)
            if accelerator.is_main_process:
                _append_jsonl(metrics_path, row)
            t0, seen, window = time.time(), 0, []
        if eval_loaders and (step % tc.eval_every == 0 or step == tc.max_steps):
            ev = evaluate(model, accelerator, cfg, eval_loaders, truth)
            accelerator.log(ev, step=step)
            if accelerator.is_main_process:
                _append_jsonl(metrics_path, {"step": step, **ev})
                logger.info("step %d eval %s", step, {k: round(v, 4) for k, v in ev.items()})
        if (
            sample_ds is not None
            and tc.objective == "lm"
            and accelerator.is_main_process
            and (step % tc.sample_every == 0 or step == tc.max_steps)
        ):
            rows = log_samples(raw, cfg, sample_ds, accelerator.device)
            _append_jsonl(out_dir / "samples.jsonl", {"step": step, "samples": rows})
        stopping = tc.stop_after is not None and step >= tc.stop_after
        if step % tc.save_every == 0 or step == tc.max_steps or stopping:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                save_training_checkpoint(
                    raw, cfg, optimizer, scheduler, step, card=card, extra=keep_segmenter
                )
            accelerator.wait_for_everyone()
        if stopping:
            break
    pbar.close()
    trace.close()
    if train_ds.num_skipped:
        logger.warning(
            "%d bad training samples were skipped (see the warnings above)", train_ds.num_skipped
        )
    final = out_dir / FINAL_DIR
    if step >= tc.max_steps:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            save_checkpoint(raw, cfg, final, card=card, extra=keep_segmenter)
        accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def resolve_threads() -> None:
    """Respect OMP_NUM_THREADS if set; otherwise let torch use its default."""
    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit():
        torch.set_num_threads(int(n))
