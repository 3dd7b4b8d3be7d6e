"""Training checkpoints: the model folder plus optimizer, scheduler, RNG and data position.

Layout of ``<output_dir>/checkpoints/step_<N>/``: a full model checkpoint
(:func:`rgct.model.checkpoint.save_checkpoint`) and ``training_state/`` with
``optimizer.pt`` / ``scheduler.pt`` (tensors and numbers only, read back with
``weights_only=True``) and ``state.json`` (step, RNG states). Each folder is written under a
temporary name and renamed, so a run killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from rgct.config import RGCTConfig
from rgct.model.checkpoint import load_parts, save_checkpoint
from rgct.model.rgct_model import RGCTModel

logger = logging.getLogger(__name__)

STATE_DIR = "training_state"
CKPT_PREFIX = "step_"


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and p.name.startswith(CKPT_PREFIX)
        and (p / STATE_DIR / "state.json").is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[len(CKPT_PREFIX) :]))


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def set_rng_state(state: dict, torch_state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    torch.set_rng_state(torch_state["cpu"])
    if torch.cuda.is_available() and "cuda" in torch_state:
        torch.cuda.set_rng_state_all(torch_state["cuda"])


def save_training_checkpoint(
    model: RGCTModel,
    cfg: RGCTConfig,
    optimizer: torch.optim.Optimizer,
    scheduler,
    step: int,
    card: str | None = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``checkpoints/step_<step>`` atomically and delete all but the last ``keep_last``
    (``extra(folder)`` adds files to it, e.g. the inherited segmenter)."""
    target = checkpoint_dir(cfg.train.output_dir) / f"{CKPT_PREFIX}{step:07d}"

    def write_state(tmp: Path) -> None:
        sd = tmp / STATE_DIR
        sd.mkdir()
        torch.save(optimizer.state_dict(), sd / "optimizer.pt")
        torch.save(scheduler.state_dict(), sd / "scheduler.pt")
        torch_state = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            torch_state["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(torch_state, sd / "torch_rng.pt")
        (sd / "state.json").write_text(json.dumps({"step": step, "rng": rng_state()}))
        if extra is not None:
            extra(tmp)

    save_checkpoint(model, cfg, target, card=card, extra=write_state)
    for old in list_checkpoints(cfg.train.output_dir)[: -cfg.train.keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_training_checkpoint(model: RGCTModel, optimizer, scheduler, directory: str | Path) -> int:
    """Restore weights, optimizer and scheduler; return the step it was saved at (RNG: :func:`restore_rng`)."""
    directory = Path(directory)
    sd = directory / STATE_DIR
    if not (sd / "state.json").is_file():
        raise FileNotFoundError(
            f"{directory} has no {STATE_DIR}/state.json: not a training checkpoint"
        )
    load_parts(model, directory)
    optimizer.load_state_dict(
        torch.load(sd / "optimizer.pt", weights_only=True, map_location="cpu")
    )
    scheduler.load_state_dict(torch.load(sd / "scheduler.pt", weights_only=True))
    return int(json.loads((sd / "state.json").read_text())["step"])


def restore_rng(directory: str | Path) -> None:
    """Restore the RNG states saved with a training checkpoint.

    Call it after the data iterator is created (creating one draws from the global RNG).
    """
    sd = Path(directory) / STATE_DIR
    state = json.loads((sd / "state.json").read_text())
    set_rng_state(state["rng"], torch.load(sd / "torch_rng.pt", weights_only=True))


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """'auto' -> latest checkpoint of the run (or None for a fresh run); a path -> itself."""
    if resume is None:
        return None
    if resume == "auto":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_DIR / "state.json").is_file():
        raise FileNotFoundError(f"train.resume={resume}: not a training checkpoint folder")
    return path
