"""The rgct entry point: every subcommand is listed and parses its --help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rgct.cli import COMMANDS, main


def test_help_lists_every_command():
    out = subprocess.run(
        [sys.executable, "-m", "rgct.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    for name in ("synth", "data", "train", "generate", "evaluate", "label", "plot", "demo"):
        assert name in COMMANDS and name in out.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert "usage: rgct" in capsys.readouterr().out


def test_unknown_command_fails(capsys):
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_heldout_check_script_is_the_heldout_command():
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "heldout_check.py"
    out = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--no-blind" in out and "--masks" in out and "--oracle" in out
