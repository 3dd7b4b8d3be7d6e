"""Batch generation: JSONL fields, resume without duplicates or losses, shards merged in order."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rgct.config import load_config
from rgct.generate.runner import expand_tasks, merge_parts, run_generation
from rgct.model.checkpoint import load_checkpoint
from rgct.train.loop import train

REPO = Path(__file__).resolve().parents[2]
MINI = REPO / "tests" / "fixtures" / "mini_radgenome"
TINY = [REPO / "configs" / "model" / "tiny.yaml", REPO / "configs" / "train" / "tiny.yaml"]
FIELDS = {"volume", "task", "region", "question", "prediction", "reference"}


@pytest.fixture(scope="module")
def mini_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "run"
    cfg = load_config(
        TINY,
        [
            f"data.root={MINI}",
            f"train.output_dir={out}",
            "data.eval_split=train",
            f"data.cache_dir={out.parent / 'cache'}",
            "train.eval_every=0",
            "train.max_steps=8",
            "generation.max_new_tokens=8",
        ],
    )
    return train(cfg)


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_expand_tasks():
    assert expand_tasks("report,region") == ["report", "region_report"]
    assert expand_tasks("vqa") == ["abnormality", "presence", "location", "size", "disorders"]
    with pytest.raises(ValueError, match="unknown task 'captions'"):
        expand_tasks("captions")


def test_generate_fields_resume_and_shards(mini_checkpoint, tmp_path):
    model, cfg = load_checkpoint(mini_checkpoint)
    tasks = expand_tasks("report,region,vqa")
    out = tmp_path / "preds.jsonl"
    run_generation(model, cfg, MINI, "train", tasks, out)
    merge_parts(out)
    rows = read(out)
    assert rows and all(FIELDS <= set(r) for r in rows)
    assert {r["task"] for r in rows} == {
        "report",
        "region_report",
        "abnormality",
        "presence",
        "location",
        "size",
        "disorders",
    }
    report = next(r for r in rows if r["task"] == "report")
    assert all(set(s) == {"region", "text"} for s in report["sentences"])
    keys = [(r["volume"], r["task"], r["region"], r["question"]) for r in rows]
    assert len(keys) == len(set(keys))

    # Interrupted run: a part file holding the first 3 lines and half of the 4th.
    out2 = tmp_path / "again.jsonl"
    part = tmp_path / "again.jsonl.part-0"
    lines = out.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])
    run_generation(model, cfg, MINI, "train", tasks, out2)
    merge_parts(out2)
    assert read(out2) == rows  # nothing duplicated, nothing lost, same order

    # Two shards (as two processes would write them) merge to the same file.
    out3 = tmp_path / "sharded.jsonl"
    for rank in (1, 0):
        run_generation(model, cfg, MINI, "train", tasks, out3, rank=rank, world=2)
    merge_parts(out3)
    assert read(out3) == rows
    assert not list(tmp_path.glob("sharded.jsonl.part-*"))


def test_blind_generation_runs(mini_checkpoint, tmp_path):
    model, cfg = load_checkpoint(mini_checkpoint)
    out = tmp_path / "blind.jsonl"
    run_generation(model, cfg, MINI, "train", ["presence"], out, blind=True)
    assert read(merge_parts(out))


def test_cli_generate(mini_checkpoint, tmp_path):
    out = tmp_path / "cli.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rgct.cli",
            "generate",
            "--checkpoint",
            str(mini_checkpoint),
            "--data",
            str(MINI),
            "--split",
            "train",
            "--tasks",
            "region",
            "--out",
            str(out),
            "--batch-size",
            "4",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all(r["task"] == "region_report" for r in read(out))


def test_a_question_repeated_for_one_volume_is_one_output_line(caplog):
    """Two nodules in one lobe give the same location question twice: one unit answers it
    (the predictions file keys lines by volume, task, region and question)."""
    from types import SimpleNamespace

    from rgct.generate.runner import plan_units

    def sample(volume, task, prompt, answer):
        return SimpleNamespace(
            volume=volume, task=task, region="whole scan", prompt=prompt, answer=answer
        )

    q = "Where is the nodule located in the image?"
    ds = SimpleNamespace(
        samples=[
            sample("v1", "location", q, "lung/lung/left lung/left lung upper lobe"),
            sample("v1", "location", q, "lung/lung/left lung/left lung upper lobe"),
            sample("v2", "location", q, "lung/lung/right lung/right lung lower lobe"),
        ]
    )
    with caplog.at_level("INFO", logger="rgct.generate.runner"):
        units = plan_units(ds, ["location"])
    assert [(u.volume, u.rows) for u in units] == [("v1", [0]), ("v2", [2])]
    assert len({u.key for u in units}) == len(units)
    assert "1 repeated questions" in caplog.text
