"""``rgct synth --layout``: the RadGenome phantoms, written in the RAD-ChestCT and DeepLesion layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rgct.cli import main
from rgct.data.deeplesion import canonical_box, lesion_mask, load_deeplesion, load_lesion_volume
from rgct.data.io import load_npz, load_volume
from rgct.data.layout import volume_path
from rgct.data.lesion_measure import measure_lesion
from rgct.data.radchestct import load_radchest
from rgct.data.source_maps import PHANTOM_LESION_TYPES
from rgct.data.synth import write_dataset
from rgct.data.synth_layouts import write_layout_dataset
from rgct.data.truth import load_ground_truth

SHAPE = (24, 48, 48)


def test_same_phantoms_as_the_radgenome_layout(tmp_path: Path) -> None:
    rg = write_dataset(tmp_path / "rg", 3, seed=5, shape=SHAPE, progress=False)
    rad = write_layout_dataset(
        tmp_path / "rad", "rad-chestct", 3, seed=5, shape=SHAPE, progress=False
    )
    by_name = {r["volume"]: r for r in rg}
    assert sorted(r["radgenome_volume"] for r in rad) == sorted(by_name)
    spacing = {}
    for split in ("train", "valid"):
        spacing.update(load_radchest(tmp_path / "rad", split).spacing)
    for record in rad:
        same = by_name[record["radgenome_volume"]]
        assert record["findings"] == same["findings"] and record["split"] == same["split"]
        npz = load_npz(
            tmp_path / "rad" / "volumes" / f"{record['volume']}.npz",
            spacing=spacing[record["volume"]],
        )
        nifti = load_volume(volume_path(tmp_path / "rg", same["volume"]))
        np.testing.assert_array_equal(npz.array, nifti.array)
        assert npz.spacing == pytest.approx(nifti.spacing, abs=1e-4)


def test_layouts_are_reproducible(tmp_path: Path) -> None:
    for layout in ("rad-chestct", "deeplesion"):
        a = write_layout_dataset(
            tmp_path / f"{layout}a", layout, 4, seed=2, shape=SHAPE, progress=False
        )
        b = write_layout_dataset(
            tmp_path / f"{layout}b", layout, 4, seed=2, shape=SHAPE, progress=False
        )
        assert a == b
        files_a = sorted(
            p.relative_to(tmp_path / f"{layout}a")
            for p in (tmp_path / f"{layout}a").rglob("*")
            if p.is_file()
        )
        for rel in files_a:
            assert (tmp_path / f"{layout}a" / rel).read_bytes() == (
                tmp_path / f"{layout}b" / rel
            ).read_bytes(), rel


def test_cli_layouts(tmp_path: Path, capsys) -> None:
    for layout in ("rad-chestct", "deeplesion"):
        out = tmp_path / layout
        args = ["synth", "--out", str(out), "--num-volumes", "3", "--shape", *map(str, SHAPE)]
        assert main([*args, "--layout", layout, "--no-progress"]) == 0
        assert load_ground_truth(out)
        assert main(["data", "check", str(out)]) == 0
    assert main([*args, "--layout", "deeplesion", "--montage", str(tmp_path / "m.png")]) == 2
    assert "--montage" in capsys.readouterr().err
    with pytest.raises(ValueError, match="layout"):
        write_layout_dataset(tmp_path / "x", "nih-cxr", 2)


def test_each_lesion_box_surrounds_its_lesion_and_the_pixels_measure_it(tmp_path: Path) -> None:
    """The box's long side lies along the painted lesion's longer in-plane extent (rows or
    columns) and holds its centre; the diameters measured from the pixels under the box
    (rgct.data.lesion_measure) are those of DL_info.csv within a few mm."""
    root = tmp_path / "dl"
    truth = write_layout_dataset(root, "deeplesion", 10, seed=4, shape=(32, 96, 96), progress=False)
    findings = {}
    for record in truth:
        painted = [f for f in record["findings"] if f["kind"] in PHANTOM_LESION_TYPES]
        findings.update({les["file_name"]: f for les, f in zip(record["lesions"], painted)})
    index = load_deeplesion(root)
    assert len(index.lesions) == len(findings) >= 6
    orientations, errors = set(), []
    for lesion in index.lesions:
        finding = findings[lesion.file_name]
        y0, y1, x0, x1 = canonical_box(lesion)
        _, ry, rx = finding["radius_vox"]
        if ry != rx:
            orientations.add(ry > rx)
            tall, wide = (y1 - y0, x1 - x0) if ry > rx else (x1 - x0, y1 - y0)
            assert tall >= wide, lesion.name  # equal when both round to the same pixels
        volume = load_lesion_volume(root, lesion)
        mask = lesion_mask(lesion, volume.shape)
        _, cy, cx = finding["center_voxel"]
        assert mask[lesion.key_slice - lesion.slice_range[0], cy, cx], lesion.name
        measured = measure_lesion(volume.array, mask, volume.spacing)
        assert measured is not None, lesion.name
        errors.append(abs(measured.long_mm - lesion.diameters_mm[0]))
    assert orientations == {True, False}
    assert float(np.median(errors)) < 3.0, errors
