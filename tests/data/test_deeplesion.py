"""DeepLesion reader, volume assembly and ``rgct data check`` on phantoms in its layout."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from rgct.cli import main
from rgct.data.deeplesion import (
    INFO_FILE,
    check_deeplesion,
    lesion_mask,
    load_deeplesion,
    load_lesion_volume,
    materialise,
    slice_path,
)
from rgct.data.io import load_mask_for, load_volume
from rgct.data.synth import build_plan_phantom, plan_volumes
from rgct.data.synth_layouts import write_layout_dataset
from rgct.data.truth import load_ground_truth

SHAPE = (24, 48, 48)
NUM, SEED = 10, 1


@pytest.fixture(scope="module")
def dl_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dl") / "dl"
    write_layout_dataset(root, "deeplesion", NUM, seed=SEED, shape=SHAPE, progress=False)
    return root


@pytest.fixture
def dl(dl_root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "dl"
    shutil.copytree(dl_root, copy)
    return copy


def test_volumes_and_boxes_are_the_phantoms(dl_root: Path) -> None:
    index = load_deeplesion(dl_root)
    assert len(index.lesions) >= 2 and not index.problems
    truth = load_ground_truth(dl_root)
    phantoms = {p.name: p for p in plan_volumes(NUM, SEED)}
    for lesion in index.lesions:
        record = truth[lesion.series]
        ph, _ = build_plan_phantom(phantoms[record["radgenome_volume"]], SEED, SHAPE)
        volume = load_lesion_volume(dl_root, lesion)
        first, last = lesion.slice_range
        np.testing.assert_array_equal(volume.array, ph.volume[first - 1 : last])
        assert volume.spacing == pytest.approx(ph.spacing_mm)
        mask = lesion_mask(lesion, volume.shape)
        finding = next(
            f for f in record["findings"] if f"_{f['center_voxel'][0] + 1:03d}" in lesion.file_name
        )
        cz, cy, cx = finding["center_voxel"]
        assert mask[cz - (first - 1), cy, cx]  # the box holds the lesion's centre
        assert mask.sum() == mask[cz - (first - 1)].sum()  # on the key slice only
        want = next(les for les in record["lesions"] if les["file_name"] == lesion.file_name)
        assert lesion.diameters_mm[0] == pytest.approx(want["long_mm"], abs=0.2)
        assert lesion.type_known and lesion.lesion_type == want["type"]


def test_materialise_writes_nifti_that_fit(dl_root: Path, tmp_path: Path) -> None:
    lesion = load_deeplesion(dl_root).lesions[0]
    image, mask = materialise(dl_root, lesion, tmp_path)
    volume = load_volume(image)
    np.testing.assert_array_equal(volume.array, load_lesion_volume(dl_root, lesion).array)
    np.testing.assert_array_equal(load_mask_for(mask, image), lesion_mask(lesion, volume.shape))


def test_clean_copy_passes_data_check(dl_root: Path, capsys) -> None:
    assert main(["data", "check", str(dl_root)]) == 0
    assert "deeplesion layout" in capsys.readouterr().out


def test_every_planted_fault_is_named(dl: Path, capsys) -> None:
    lesions = load_deeplesion(dl).lesions
    n = len(lesions)
    # five copies of rows, each broken in one way (appended so each fault has its own line)
    path = dl / INFO_FILE
    with path.open(newline="") as f:
        original = list(csv.DictReader(f))
    broken = [dict(original[i % n]) for i in range(5)]
    broken[0]["Bounding_boxes"] = "10, 10, 900, 20"  # outside the image
    broken[1]["Spacing_mm_px_"] = "0, 0.7, 5"  # zero spacing
    broken[2]["Spacing_mm_px_"] = "-0.7, 0.7, 5"  # negative spacing
    broken[3]["Slice_range"] = "1, 999"  # slices that are not there
    broken[4]["Bounding_boxes"] = "1, 2, 3"  # unreadable field
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(original[0]))
        writer.writeheader()
        writer.writerows(original + broken)
    slice_path(dl, lesions[0].series, lesions[0].key_slice).unlink()  # a slice of a good row gone

    report = check_deeplesion(dl)
    kinds = [p.kind for p in report.errors]
    assert kinds.count("bad_box") == 1 and kinds.count("bad_spacing") == 2
    assert kinds.count("bad_field") == 1
    assert kinds.count("missing_slice") >= 2
    messages = "\n".join(p.message for p in report.errors)
    assert f"{path}:{n + 2}" in messages  # the box row is named by its line
    assert main(["data", "check", str(dl)]) == 1
    out = capsys.readouterr().out
    for kind in ("bad_box", "bad_spacing", "missing_slice", "bad_field"):
        assert kind in out


def test_unreadable_png_is_named(dl: Path) -> None:
    lesion = load_deeplesion(dl).lesions[0]
    png = slice_path(dl, lesion.series, lesion.key_slice)
    png.write_bytes(b"not a png")
    errors = check_deeplesion(dl).errors
    assert [p.kind for p in errors] == ["unreadable_slice"] and str(png) in errors[0].message
