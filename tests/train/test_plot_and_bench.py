"""`rgct plot` from hand-written metrics, and the benchmark scripts' --quick modes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rgct.train.plot import DEFAULT_PNG, configure, plot_metrics, read_metrics, run

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

ROWS = [
    {
        "step": 1,
        "loss": 7.2,
        "lm_loss": 6.5,
        "aux_loss": 0.7,
        "lr": 1e-3,
        "samples_per_s": 11.0,
        "step_time_s": 0.17,
    },
    {
        "step": 2,
        "loss": 6.9,
        "lm_loss": 6.3,
        "aux_loss": 0.6,
        "lr": 8e-4,
        "samples_per_s": 30.0,
        "step_time_s": 0.06,
    },
    {"step": 2, "val_loss/region_report": 6.4, "val_loss/presence": 6.2, "val_aux_f1": 0.1},
    {
        "step": 3,
        "loss": 6.1,
        "lm_loss": 5.6,
        "aux_loss": 0.5,
        "lr": 5e-4,
        "samples_per_s": 31.0,
        "step_time_s": 0.06,
    },
    {"step": 4, "val_loss/region_report": 6.0, "val_loss/presence": 5.9, "val_aux_f1": 0.3},
]


def write_metrics(run_dir: Path, rows: list[dict], extra: str = "") -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + extra)
    return path


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(list(argv))


def test_plot_writes_png_to_default_path(tmp_path):
    write_metrics(tmp_path / "run", ROWS, extra="\n")  # a trailing blank line is fine
    out = plot_metrics(tmp_path / "run")
    assert out == tmp_path / "run" / DEFAULT_PNG
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert not [p for p in out.parent.iterdir() if ".tmp" in p.name]  # no temp file left


def test_plot_cli_out_option(tmp_path, capsys):
    write_metrics(tmp_path / "run", ROWS)
    target = tmp_path / "figs" / "curves.png"
    assert run(parse(str(tmp_path / "run"), "--out", str(target))) == 0
    assert target.read_bytes().startswith(PNG_MAGIC)
    assert not (tmp_path / "run" / DEFAULT_PNG).exists()
    assert str(target) in capsys.readouterr().out


def test_plot_only_training_rows(tmp_path):
    write_metrics(tmp_path / "run", [r for r in ROWS if "loss" in r])
    assert plot_metrics(tmp_path / "run").read_bytes().startswith(PNG_MAGIC)


def test_plot_missing_metrics(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        plot_metrics(tmp_path)
    assert run(parse(str(tmp_path))) == 1
    assert not (tmp_path / DEFAULT_PNG).exists()


def test_plot_empty_metrics(tmp_path):
    write_metrics(tmp_path, [], extra="\n\n")
    with pytest.raises(ValueError, match="no metric rows"):
        plot_metrics(tmp_path)
    assert run(parse(str(tmp_path))) == 1


def test_read_metrics_names_bad_line(tmp_path):
    path = write_metrics(tmp_path, ROWS[:2], extra="{not json\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:3"):
        read_metrics(path)
    write_metrics(tmp_path, [{"loss": 1.0}])
    with pytest.raises(ValueError, match="'step'"):
        read_metrics(path)


# --- benchmark scripts ------------------------------------------------------------------------


def run_quick(script: str, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / script), "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sum(line.startswith("|---") for line in proc.stdout.splitlines()) == 1  # one table
    return json.loads(out.read_text())


def test_bench_common_table_and_json(tmp_path, capsys):
    sys.path.insert(0, str(SCRIPTS))
    try:
        from bench_common import print_table, write_json
    finally:
        sys.path.remove(str(SCRIPTS))
    print_table([{"a": 1, "b": 0.5}, {"a": 2, "b": True}], ["a", "b"])
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["| a | b |", "|---|---|", "| 1 | 0.5 |", "| 2 | True |"]
    path = write_json(tmp_path / "sub" / "x.json", {"k": [1, 2]})
    assert json.loads(path.read_text()) == {"k": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_bench_model_quick(tmp_path):
    res = run_quick("bench_model.py", tmp_path / "model.json")
    assert res["quick"] and res["matmul_flop_s"] > 0
    kinds = {(r["kind"], r["batch"]) for r in res["rows"]}
    assert kinds == {("train", 2), ("generate", 1), ("generate", 8), ("region_stats", 10)}
    for r in res["rows"]:
        assert r["preset"] == "tiny"
        assert r["step_s"] > 0 and r["peak_rss_mb"] > 0 and r["llm_params"] > 0
        if r["kind"] != "region_stats":
            assert r["tokens_per_s"] > 0 and 0 < r["frac_matmul"]
    gen8 = next(r for r in res["rows"] if r["kind"] == "generate" and r["batch"] == 8)
    assert isinstance(gen8["pass"], bool) and gen8["speedup"] > 0


def test_bench_generate_quick(tmp_path):
    res = run_quick("bench_generate.py", tmp_path / "gen.json")
    rows = res["rows"]
    assert [r["batch"] for r in rows] == [1, 4, 16]
    for r in rows:
        assert r["regions_per_s"] > 0 and r["tokens_per_s"] > 0
        assert isinstance(r["match_batch1"], bool) and r["mismatched_regions"] >= 0
    assert rows[0]["sample_output"]  # the fitted tiny model says something
    assert isinstance(rows[-1]["pass"], bool)


def test_bench_train_quick(tmp_path):
    res = run_quick("bench_train.py", tmp_path / "train.json")
    rows = res["rows"]
    assert [(r["procs"], r["threads_per_proc"]) for r in rows] == [(1, 1), (2, 1)]
    for r in rows:
        assert r["step_time_s"] > 0 and r["samples_per_s"] > 0 and r["peak_rss_tree_mb"] > 0
    assert res["peak_rss_children_max_mb"] > 0


def test_bench_step_quick(tmp_path):
    res = run_quick("bench_step.py", tmp_path / "step.json")
    assert res["quick"] and res["device"] == "cpu" and res["steps_measured"] >= 1
    phases = res["phase_ms"]
    assert set(phases) == {"data", "inputs", "forward", "backward", "optimizer", "other"}
    assert phases["forward"] > 0 and phases["backward"] > 0 and res["step_ms"] > 0
    assert res["ops_per_step"] > 100 and res["flops_per_step"] > 0 and 0 < res["mfu"] < 1
    assert res["tokens_per_s"] > res["samples_per_s"] > 0
    # the loop keeps its losses on the device between metrics rows: no sync outside the phases
    assert res["host_syncs_by_phase"].get("other", 0) == 0
