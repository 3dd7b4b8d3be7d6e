"""Training: checkpoint files, resume equivalence, two processes, shipped configs, bad configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from segmenter_double import save_constant_segmenter

from rgct.config import ConfigError, load_config
from rgct.data.dataset import RGCTDataset
from rgct.model.checkpoint import REQUIRED_FILES
from rgct.model.drafting import PHRASES_FILE
from rgct.model.segmenter import WEIGHTS_FILE as SEGMENTER_WEIGHTS
from rgct.train.loop import train, training_targets
from rgct.train.state import STATE_DIR, list_checkpoints

REPO = Path(__file__).resolve().parents[2]
MINI = REPO / "tests" / "fixtures" / "mini_radgenome"
TINY = [REPO / "configs" / "model" / "tiny.yaml", REPO / "configs" / "train" / "tiny.yaml"]


def cfg_for(out: Path, *extra: str):
    return load_config(
        TINY,
        [
            f"data.root={MINI}",
            f"train.output_dir={out}",
            f"data.cache_dir={out.parent / 'cache'}",
            "data.eval_split=train",
            *extra,
        ],
    )


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return {
        **load_file(str(folder / "vision.safetensors")),
        **load_file(str(folder / "adapter_model.safetensors")),
    }


def test_tiny_run_writes_checkpoints(tmp_path):
    cfg = cfg_for(tmp_path / "run")
    final = train(cfg)
    ckpts = list_checkpoints(tmp_path / "run")
    assert [c.name for c in ckpts] == ["step_0000003", "step_0000006"]  # keep_last=2, save_every=3
    for c in ckpts:
        assert all((c / f).is_file() for f in REQUIRED_FILES)
        assert {p.name for p in (c / STATE_DIR).iterdir()} == {
            "optimizer.pt",
            "scheduler.pt",
            "torch_rng.pt",
            "state.json",
        }
    assert all((final / f).is_file() for f in REQUIRED_FILES)
    # the phrase bank for drafted decoding: the training answers, most frequent first
    phrases = (final / PHRASES_FILE).read_text().splitlines()
    answers = set(training_targets(RGCTDataset(cfg.data, "train", train=False)))
    assert phrases and set(phrases) <= answers
    assert not list((tmp_path / "run" / "checkpoints").glob(".*tmp*"))
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert any('"val_loss/region_report"' in line for line in lines)
    assert any('"lm_loss"' in line for line in lines)
    before = weights(ckpts[0])
    after = weights(ckpts[1])
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained


def test_resume_matches_uninterrupted_run(tmp_path):
    full = train(cfg_for(tmp_path / "a", "train.eval_every=0"))
    train(cfg_for(tmp_path / "b", "train.eval_every=0", "train.stop_after=3"))  # "killed" at 3
    assert [c.name for c in list_checkpoints(tmp_path / "b")] == ["step_0000003"]
    resumed = train(cfg_for(tmp_path / "b", "train.eval_every=0", "train.resume=auto"))
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    order_a = (tmp_path / "a" / "data_order" / "rank0.txt").read_text()
    order_b = (tmp_path / "b" / "data_order" / "rank0.txt").read_text()
    assert order_a == order_b


def test_train_init_loads_the_named_parts(tmp_path):
    first = train(
        cfg_for(
            tmp_path / "s0",
            "train.eval_every=0",
            "train.objective=aux",
            "model.train_llm_lora=false",
        )
    )
    assert not (first / SEGMENTER_WEIGHTS).exists()  # nothing to inherit from scratch
    save_constant_segmenter(first, empty=())  # the init model finds its own regions
    cfg = cfg_for(
        tmp_path / "s1",
        "train.eval_every=0",
        "train.max_steps=1",
        f"train.init=[{{from: {first}, parts: [encoder, pooler]}}]",
        "model.encoder.freeze=true",
    )
    second = train(cfg)
    # ... and so does the model trained from it: the segmenter is carried over unchanged
    assert (second / SEGMENTER_WEIGHTS).read_bytes() == (first / SEGMENTER_WEIGHTS).read_bytes()
    # a stage stopped and resumed (its train.init spent) still ends with that segmenter
    stopped = cfg_for(
        tmp_path / "s2",
        "train.eval_every=0",
        "train.max_steps=1",
        "train.save_every=1",
        f"train.init=[{{from: {first}, parts: [encoder, pooler]}}]",
    )
    train(stopped)
    resumed = cfg_for(
        tmp_path / "s2", "train.eval_every=0", "train.max_steps=2", "train.resume=auto"
    )
    third = train(resumed)
    assert (third / SEGMENTER_WEIGHTS).read_bytes() == (first / SEGMENTER_WEIGHTS).read_bytes()
    enc_a = {
        k: v
        for k, v in load_file(str(first / "vision.safetensors")).items()
        if k.startswith("encoder.")
    }
    enc_b = {
        k: v
        for k, v in load_file(str(second / "vision.safetensors")).items()
        if k.startswith("encoder.")
    }
    assert all(
        torch.equal(enc_a[k], enc_b[k]) for k in enc_a
    )  # frozen encoder kept stage-0 weights


def test_two_processes(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "configs" / "accelerate" / "cpu_2proc.yaml"),
        str(REPO / "scripts" / "train.py"),
        "--config",
        str(TINY[0]),
        "--config",
        str(TINY[1]),
        f"data.root={MINI}",
        f"train.output_dir={out}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.eval_split=train",
        "train.max_steps=4",
        "train.save_every=2",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = (out / "data_order" / "rank0.txt").read_text().splitlines()
    r1 = (out / "data_order" / "rank1.txt").read_text().splitlines()
    assert len(r0) == len(r1) == 4
    assert r0 != r1  # the two processes saw different batches
    assert [c.name for c in list_checkpoints(out)] == ["step_0000002", "step_0000004"]
    assert len(list((out / "checkpoints").iterdir())) == 2  # written once, no leftovers
    assert all((out / "model" / f).is_file() for f in REQUIRED_FILES)


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (REPO / "configs" / "train").glob("*.yaml"))
)
def test_every_train_config_loads(name):
    path = REPO / "configs" / "train" / name
    modality = ((yaml.safe_load(path.read_text()) or {}).get("data") or {}).get("modality", "ct")
    model = {"ct": "smollm2.yaml", "cxr": "cxr_smollm2.yaml"}[modality]
    cfg = load_config([REPO / "configs" / "model" / model, path])
    assert cfg.train.max_steps > 0
    assert cfg.data.modality == modality


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["train.lrr=1e-3"], "did you mean 'train.lr'"),
        (["train.lr=fast"], "expected a number"),
        (["train.mixed_precision=fp8"], "mixed_precision"),
        (
            ["train.objective=aux", "model.encoder.freeze=true", "model.train_projector=false"],
            "objective=aux",
        ),
        (["train.objective=dense"], "dense_loss_weight > 0"),
        (["train.resume=auto", "train.init=[{from: somewhere}]"], "exclude each other"),
        (["train.init_from=somewhere"], "replaced: use train.init"),
        (["train.init_vision_from=somewhere"], "replaced: use a second train.init entry"),
        (["model.encoder.weights=enc.safetensors"], "replaced: use train.init"),
        (["train.init=[{from: x, parts: [wings]}]"], "unknown or no part"),
        (["data.tasks={captioning: 1.0}"], "unknown task"),
        (["model.num_global_tokens=10"], "cube"),
    ],
)
def test_bad_config_values_fail_before_work(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        cfg_for(tmp_path / "x", *overrides)


def test_missing_data_path_fails_before_model_is_built(tmp_path):
    cfg = load_config(
        TINY, [f"data.root={tmp_path / 'missing'}", f"train.output_dir={tmp_path / 'run'}"]
    )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(cfg)
    assert not (tmp_path / "run").exists()
    (tmp_path / "data").mkdir()
    cfg = load_config(
        TINY,
        [
            f"data.root={tmp_path / 'data'}",
            f"train.output_dir={tmp_path / 'run'}",
            f"train.init=[{{from: {tmp_path / 'no_checkpoint'}}}]",
        ],
    )
    with pytest.raises(FileNotFoundError, match="train.init: checkpoint folder .* does not exist"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_cli_reports_bad_config(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rgct.cli", "train", "--config", str(TINY[0]), "train.bogus=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "unknown config key 'train.bogus'" in proc.stderr


def test_resumed_stage_keeps_the_carried_thresholds(tmp_path):
    from rgct.constants import CT_RATE_LABELS
    from rgct.model.checkpoint import load_checkpoint

    thresholds = [0.3] * len(CT_RATE_LABELS)
    base = ("train.eval_every=0", "model.evidence_prompt=true")
    first = train(cfg_for(tmp_path / "s0", *base, f"model.evidence_thresholds={thresholds}"))
    frozen = (*base, "model.train_pooler=false", "train.save_every=1")
    stopped = train(
        cfg_for(tmp_path / "s1", *frozen, "train.max_steps=1", f"train.init=[{{from: {first}}}]")
    )
    assert load_checkpoint(stopped)[1].model.evidence_thresholds == thresholds
    # resumed (its train.init spent): the thresholds come from the step checkpoint
    resumed = train(cfg_for(tmp_path / "s1", *frozen, "train.max_steps=2", "train.resume=auto"))
    assert load_checkpoint(resumed)[1].model.evidence_thresholds == thresholds
