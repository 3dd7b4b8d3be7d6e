"""``rgct segment``: files in the RadGenome layout, on the input's own grid and affine."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from segmenter_double import save_constant_segmenter

from rgct.cli import main
from rgct.constants import LUNG_LOBES, REGIONS, SEGMENT_CLASSES
from rgct.data.io import read_canonical
from rgct.data.layout import volume_path
from rgct.data.totalseg import SUMMARY_FILE
from rgct.generate.segment import Segmentation, write_segmentation

EMPTY = {"lung", "right lung middle lobe", "bone"}
"""Channels the constant segmenter below never predicts (bone too: predicted bone is cut out
of every other mask, which would leave them all empty)."""


@pytest.fixture(scope="module")
def constant_segmenter(tmp_path_factory):
    """A segmenter whose every region is the whole grid, except EMPTY (never found)."""
    return save_constant_segmenter(tmp_path_factory.mktemp("seg") / "segmenter", EMPTY)


def test_segment_writes_layout_files_with_the_input_grid(
    phantom_root, constant_segmenter, tmp_path, capsys
):
    vol = volume_path(phantom_root, "train_1_a_1")
    out = tmp_path / "masks"
    assert (
        main(["segment", str(vol), "--checkpoint", str(constant_segmenter), "--out", str(out)]) == 0
    )
    region_dir = out / "train_region_mask" / "seg_train_1_a_1"
    anatomy_dir = out / "train_anatomy_mask" / "seg_train_1_a_1"
    ref = nib.load(str(vol))
    for region in REGIONS:
        path = region_dir / f"{region}.nii.gz"
        assert path.is_file() == (region not in EMPTY), region
    for name in (*LUNG_LOBES, "aorta", "heart tissue", "right lung", "left lung"):
        assert (anatomy_dir / f"{name}.nii.gz").is_file() == (name not in EMPTY), name
    img = nib.load(str(region_dir / "heart.nii.gz"))
    assert img.shape == ref.shape
    np.testing.assert_allclose(img.affine, ref.affine)
    summary = json.loads((region_dir / SUMMARY_FILE).read_text())
    assert summary["mask_source"] == "learned"
    assert "lung: no mask predicted, region skipped" in summary["warnings"]
    assert "right lung middle lobe" in summary["missing"]
    assert summary["voxels"]["lung"] == 0 and summary["voxels"]["heart"] == int(np.prod(ref.shape))
    assert summary["findings"] == []
    assert "warning: lung: no mask predicted, region skipped" in capsys.readouterr().out


def test_segment_without_checkpoint_is_a_clear_error(phantom_root, tmp_path, capsys):
    vol = volume_path(phantom_root, "train_1_a_1")
    assert main(["segment", str(vol), "--out", str(tmp_path)]) == 1
    assert "needs --checkpoint" in capsys.readouterr().out
    assert main(["segment", str(vol), "--checkpoint", str(tmp_path), "--out", str(tmp_path)]) == 1
    assert "segmenter.safetensors" in capsys.readouterr().out


def test_masks_keep_a_non_ras_input_orientation(tmp_path):
    data = np.zeros((6, 8, 10), np.int16)  # stored (X, Y, Z)
    affine = np.array([[-2.0, 0, 0, 10], [0, 0, 3.0, -5], [0, -1.5, 0, 7], [0, 0, 0, 1]])
    src = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(src))
    array, canon_affine, _ = read_canonical(src)
    mask = np.zeros(array.shape, bool)
    mask[1, 2, 3] = mask[0, 0, 0] = True  # asymmetric, so a wrong flip shows
    seg = Segmentation({"heart": mask}, [], array.shape, canon_affine, (1.5, 3.0, 2.0))
    summary = write_segmentation(seg, tmp_path / "out", "ct", source=src)
    written = tmp_path / "out" / "region_mask" / "seg_ct" / "heart.nii.gz"
    assert summary["regions"] == {"heart": str(written)}
    img = nib.load(str(written))
    np.testing.assert_allclose(img.affine, affine)
    assert img.shape == data.shape
    back, back_affine, _ = read_canonical(written)
    np.testing.assert_array_equal(back.astype(bool), mask)
    np.testing.assert_allclose(back_affine, canon_affine)


def test_evaluate_and_calibrate_on_phantoms(phantom_root, constant_segmenter):
    from rgct.generate.segment import (
        DISABLED_THRESHOLD,
        MIN_VOXEL_GRID,
        THRESHOLD_GRID,
        calibrate_findings,
        evaluate_segmenter,
    )
    from rgct.model.segmenter import load_segmenter

    model, meta = load_segmenter(constant_segmenter)
    result = evaluate_segmenter(model, meta, phantom_root, "valid")
    dice = result["dice"]
    assert result["volumes"] == dice["volumes"] >= 1
    assert dice["per_class"]["lung"] == 0.0  # never predicted
    assert 0.0 < dice["per_class"]["abdomen"] < 0.5  # the whole grid: low but not zero
    assert result["boxes"]["detected"] == 0  # the finding channels stay below threshold
    cal = calibrate_findings(model, meta, phantom_root, "valid", thresholds=(0.5,), min_voxels=(2,))
    assert set(cal["finding_thresholds"]) == set(SEGMENT_CLASSES[17:])
    # the constant channels never localise a finding: labels the phantoms hold are switched off
    assert set(cal["finding_thresholds"].values()) <= {*THRESHOLD_GRID, DISABLED_THRESHOLD}
    assert DISABLED_THRESHOLD in cal["finding_thresholds"].values()
    assert set(cal["finding_min_voxels"].values()) <= set(MIN_VOXEL_GRID)
