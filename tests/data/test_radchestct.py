"""RAD-ChestCT reader and ``rgct data check`` on phantoms in its layout, clean and broken."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rgct.cli import main
from rgct.data.io import load_npz
from rgct.data.radchestct import METADATA_FILE, check_radchest, label_path, load_radchest
from rgct.data.source_maps import map_radchest_pair
from rgct.data.synth_layouts import sarle_pairs, write_layout_dataset
from rgct.data.truth import load_ground_truth

SHAPE = (24, 48, 48)


@pytest.fixture(scope="module")
def rad_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rad") / "rad"
    write_layout_dataset(root, "rad-chestct", 5, seed=3, shape=SHAPE, progress=False)
    return root


@pytest.fixture
def rad(rad_root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "rad"
    shutil.copytree(rad_root, copy)
    return copy


def test_reader_gives_the_truth(rad_root: Path) -> None:
    truth = load_ground_truth(rad_root)
    for split in ("train", "valid"):
        index = load_radchest(rad_root, split)
        assert not [p for p in index.problems if p.severity == "error"]
        assert index.volumes
        for name, pairs in index.positives.items():
            record = truth[name]
            want = {p for f in record["findings"] for p in sarle_pairs(f)}
            assert set(pairs) == want
            assert index.spacing[name] == pytest.approx(tuple(record["spacing_mm"]), abs=1e-3)
            volume = load_npz(index.volumes[name], spacing=index.spacing[name])
            assert volume.shape == tuple(record["shape"])
            mapped = {map_radchest_pair(a, loc) for a, loc in pairs}
            assert {(m.region, m.label) for m in mapped} == {
                (f["region"], f["label"]) for f in record["findings"]
            }


def test_clean_copy_passes_data_check(rad_root: Path, capsys) -> None:
    assert main(["data", "check", str(rad_root)]) == 0
    out = capsys.readouterr().out
    assert "rad-chestct layout" in out and "0 error(s)" in out


def test_every_planted_fault_is_named(rad: Path, capsys) -> None:
    labels = label_path(rad, "train")
    df = pd.read_csv(labels, dtype=object)
    names = df.iloc[:, 0].tolist()
    df = df.rename(
        columns={
            df.columns[1]: "bandlike_or_linear_left_upper",
            df.columns[2]: "bandlike_or_linear*moon",
        }
    )
    df.iloc[0, 5] = "2"  # not 0/1
    df.to_csv(labels, index=False)
    (next(rad.rglob(f"{names[1]}.npz"))).unlink()  # row whose volume is missing
    meta = pd.read_csv(rad / METADATA_FILE, dtype=object)
    meta.loc[meta.iloc[:, 0] == names[2], "z_spacing"] = "0"
    valid = load_radchest(rad, "valid")
    meta.loc[meta.iloc[:, 0] == next(iter(valid.volumes)), "x_spacing"] = "-0.7"
    meta.to_csv(rad / METADATA_FILE, index=False)

    report = check_radchest(rad)
    kinds = [p.kind for p in report.errors]
    assert kinds.count("bad_header") == 1 and kinds.count("unknown_location") == 1
    assert kinds.count("bad_value") == 1 and kinds.count("missing_volume") == 1
    assert kinds.count("bad_spacing") == 2
    messages = " ".join(p.message for p in report.errors)
    assert "bandlike_or_linear_left_upper" in messages and "'moon'" in messages
    assert f"{labels}:2" in messages  # the bad value's row
    assert main(["data", "check", str(rad)]) == 1
    out = capsys.readouterr().out
    for kind in ("bad_header", "unknown_location", "bad_value", "missing_volume", "bad_spacing"):
        assert kind in out
    # the rest still reads: the broken rows are left out, the others kept
    index = load_radchest(rad, "train")
    assert names[3] in index.volumes and names[0] not in index.volumes


def test_missing_metadata_and_unreadable_npz(rad: Path) -> None:
    (rad / METADATA_FILE).unlink()
    npz = next(rad.rglob("*.npz"))
    npz.write_bytes(b"not a zip")
    kinds = [p.kind for p in check_radchest(rad).errors]
    assert kinds.count("missing_metadata") == 1  # once for the folder, not per split


def test_unreadable_npz_is_named(rad: Path) -> None:
    npz = sorted(rad.rglob("*.npz"))[0]
    npz.write_bytes(b"not a zip")
    errors = check_radchest(rad).errors
    assert [p.kind for p in errors] == ["unreadable_volume"] and npz.name in errors[0].message
    assert check_radchest(rad, deep=False).errors == []


def test_npz_holds_the_phantom_volume(rad_root: Path) -> None:
    index = load_radchest(rad_root, "train")
    name, path = next(iter(index.volumes.items()))
    with np.load(path) as z:
        assert z["ct"].dtype == np.int16 and z["ct"].shape == SHAPE
