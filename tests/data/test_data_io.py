"""Volume and mask readers: NIfTI orientation, DICOM series, npz, and every bad input."""

from __future__ import annotations

import copy
import gzip
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rgct.data.io import (
    DataError,
    EmptyMaskError,
    MaskAffineError,
    MaskShapeError,
    MixedSeriesError,
    NonBinaryMaskError,
    VolumeReadError,
    box_mask,
    canonical_header,
    load_mask,
    load_volume,
    rescale_from_metadata,
    rescale_raw_values,
)

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402

MINI = Path(__file__).parents[1] / "fixtures" / "mini_radgenome"
LPS_VOL = MINI / "train_preprocessed/train_1/train_1a/train_1_a_1.nii.gz"


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def test_nifti_canonical_axes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 1000, size=(6, 5, 4)).astype(np.int16)  # (X, Y, Z)
    affine = np.diag([-0.7, 0.8, -2.0, 1.0])  # L, A, I: x and z flipped w.r.t. RAS
    path = _save(tmp_path / "v.nii.gz", data, affine)
    vol = load_volume(path)
    canon = np.asarray(nib.as_closest_canonical(nib.load(path)).dataobj)
    assert vol.array.dtype == np.float32 and vol.shape == (4, 5, 6)
    z, y, x = 1, 3, 2
    assert vol.array[z, y, x] == canon[x, y, z]
    np.testing.assert_array_equal(vol.array, canon.transpose(2, 1, 0))
    # x flipped: canonical x = 0 is stored x = 5
    assert vol.array[0, 0, 0] == data[5, 0, 3]
    assert vol.spacing == pytest.approx((2.0, 0.8, 0.7))
    assert np.all(np.diag(vol.affine)[:3] > 0)
    shape, aff = canonical_header(path)
    assert shape == vol.shape and np.allclose(aff, vol.affine)


def test_nifti_spacing_override_and_metadata_csv(tmp_path: Path) -> None:
    path = _save(tmp_path / "train_5_a_1.nii.gz", np.zeros((4, 4, 3), np.int16), np.eye(4))
    assert load_volume(path, spacing=(3.0, 0.5, 0.5)).spacing == pytest.approx((3.0, 0.5, 0.5))
    meta = tmp_path / "meta.csv"
    meta.write_text('VolumeName,XYSpacing,ZSpacing\ntrain_5_a_1.nii.gz,"[0.75, 0.75]",1.5\n')
    assert load_volume(path, metadata_csv=meta).spacing == pytest.approx((1.5, 0.75, 0.75))
    (tmp_path / "other.csv").write_text("VolumeName,XYSpacing,ZSpacing\ntrain_6_a_1,[1 1],1\n")
    with pytest.raises(DataError, match="no row for volume 'train_5_a_1'"):
        load_volume(path, metadata_csv=tmp_path / "other.csv")


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "not_nifti", "missing", "unsupported"])
def test_bad_volume_files_name_file_and_cause(tmp_path: Path, kind: str) -> None:
    if kind == "corrupt":
        path = tmp_path / "c.nii.gz"
        path.write_bytes(b"\x1f\x8b" + b"garbage" * 50)
    elif kind == "truncated":
        path = tmp_path / "t.nii.gz"
        blob = LPS_VOL.read_bytes()
        raw = gzip.decompress(blob)
        path.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])
    elif kind == "not_nifti":
        path = tmp_path / "text.nii"
        path.write_text("this is not an image\n" * 30)
    elif kind == "missing":
        path = tmp_path / "nope.nii.gz"
    else:
        path = tmp_path / "scan.mha"
        path.write_text("x")
    with pytest.raises(VolumeReadError) as e:
        load_volume(path)
    assert str(path) in str(e.value)
    assert isinstance(e.value, ValueError)


def test_masks_good_and_bad(tmp_path: Path) -> None:
    vol = load_volume(LPS_VOL)
    affine = nib.load(LPS_VOL).affine
    good = np.zeros((16, 14, 10), np.uint8)
    good[2:5, 3:6, 4:6] = 1
    mask = load_mask(_save(tmp_path / "good.nii.gz", good, affine), vol)
    assert mask.dtype == bool and mask.shape == vol.shape and mask.sum() == good.sum()
    # same reorientation as the volume: the mask picks the same voxels
    stored = np.asarray(nib.load(LPS_VOL).dataobj)
    assert np.sort(vol.array[mask]).tolist() == np.sort(stored[good == 1]).tolist()

    wrong_shape = _save(tmp_path / "shape.nii.gz", np.ones((16, 14, 9), np.uint8), affine)
    with pytest.raises(MaskShapeError) as e:
        load_mask(wrong_shape, vol)
    assert "(9, 14, 16)" in str(e.value) and "(10, 14, 16)" in str(e.value)
    assert str(wrong_shape) in str(e.value)
    shifted = affine.copy()
    shifted[0, 3] += 5
    with pytest.raises(MaskAffineError, match="affine"):
        load_mask(_save(tmp_path / "aff.nii.gz", good, shifted), vol)
    with pytest.raises(NonBinaryMaskError, match="nonbin"):
        load_mask(_save(tmp_path / "nonbin.nii.gz", good * 3, affine), vol)
    with pytest.raises(EmptyMaskError, match="empty"):
        load_mask(_save(tmp_path / "empty.nii.gz", good * 0, affine), vol)
    with pytest.raises(EmptyMaskError):
        load_mask(np.zeros(vol.shape, bool), vol)
    with pytest.raises(MaskShapeError):
        load_mask(np.ones((2, 2, 2), bool), vol)


def test_box_mask() -> None:
    m = box_mask((4, 5, 6), 1, 3, 0, 2, 4, 6)
    assert m.dtype == bool and m.sum() == 2 * 2 * 2 and m[1, 0, 4] and not m[0, 0, 4]


def _dicom_series(folder: Path, n: int = 4, series_uid: str | None = None, start: int = 0) -> list:
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    folder.mkdir(parents=True, exist_ok=True)
    order = [2, 0, 3, 1][:n] if n == 4 else list(range(n))  # files written out of order
    for i in order:
        ds = copy.deepcopy(src)
        ipp = [float(v) for v in src.ImagePositionPatient]
        ds.ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + 2.5 * i]
        ds.InstanceNumber = i + 1
        ds.SOPInstanceUID = f"{src.SOPInstanceUID}.{start + i}"
        if series_uid:
            ds.SeriesInstanceUID = series_uid
        arr = src.pixel_array.copy()
        arr[0, 0] = 100 * i  # slice marker
        ds.PixelData = arr.tobytes()
        ds.save_as(folder / f"slice_{start + i:03d}.dcm")
    return [src.pixel_array, src]


def test_dicom_series_sorted_hu_spacing(tmp_path: Path) -> None:
    pixels, src = _dicom_series(tmp_path / "series")
    (tmp_path / "series" / "notes.txt").write_text("not dicom")
    vol = load_volume(tmp_path / "series")
    assert vol.shape == (4, 128, 128)
    ps = [float(v) for v in src.PixelSpacing]
    assert vol.spacing == pytest.approx((2.5, ps[0], ps[1]), abs=1e-4)
    slope, inter = float(src.RescaleSlope), float(src.RescaleIntercept)
    # IOP is identity (LPS): canonical RAS flips rows and columns; z ascends (inferior->superior)
    expected = pixels[::-1, ::-1].astype(np.float32) * slope + inter
    np.testing.assert_allclose(vol.array[1, :-1, :-1], expected[:-1, :-1])
    markers = vol.array[:, -1, -1]  # stored pixel [0, 0] lands at canonical [-1, -1]
    np.testing.assert_allclose(markers, [100 * i * slope + inter for i in range(4)])
    # zip of the same series reads the same
    zpath = tmp_path / "series.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted((tmp_path / "series").glob("*.dcm")):
            zf.write(f, f"dir/{f.name}")
    np.testing.assert_array_equal(load_volume(zpath).array, vol.array)


def test_dicom_mixed_series_names_both(tmp_path: Path) -> None:
    _dicom_series(tmp_path / "mixed", n=2)
    _dicom_series(tmp_path / "mixed", n=2, series_uid="1.2.3.4.5", start=10)
    with pytest.raises(MixedSeriesError) as e:
        load_volume(tmp_path / "mixed")
    src_uid = pydicom.dcmread(get_testdata_file("CT_small.dcm")).SeriesInstanceUID
    assert "1.2.3.4.5" in str(e.value) and str(src_uid) in str(e.value)
    assert str(tmp_path / "mixed") in str(e.value)


def test_dicom_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(VolumeReadError, match="no DICOM"):
        load_volume(tmp_path / "empty")


def test_npz(tmp_path: Path) -> None:
    ct = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5) - 1000
    np.savez_compressed(tmp_path / "trn0001.npz", ct=ct)
    vol = load_volume(tmp_path / "trn0001.npz", spacing=(0.8, 0.8, 0.8))
    np.testing.assert_array_equal(vol.array, ct.astype(np.float32))
    assert vol.spacing == (0.8, 0.8, 0.8)
    meta = tmp_path / "meta.csv"
    meta.write_text("NoteAcc_DEID,spacing_d,spacing_h,spacing_w\ntrn0001,1.0,0.7,0.7\n")
    assert load_volume(tmp_path / "trn0001.npz", metadata_csv=meta).spacing == (1.0, 0.7, 0.7)
    assert load_volume(tmp_path / "trn0001.npz").spacing == (1.0, 1.0, 1.0)
    with pytest.raises(VolumeReadError, match="'image'"):
        load_volume(tmp_path / "trn0001.npz", npz_key="image")
    np.savez(tmp_path / "obj.npz", ct=np.array([{"a": 1}], dtype=object))
    with pytest.raises(VolumeReadError, match="obj.npz"):
        load_volume(tmp_path / "obj.npz")


def test_copy_of_fixture_is_read_identically(tmp_path: Path) -> None:
    dst = tmp_path / "v.nii.gz"
    shutil.copy(LPS_VOL, dst)
    np.testing.assert_array_equal(load_volume(dst).array, load_volume(LPS_VOL).array)


def _ct_like(shape: tuple[int, int, int] = (8, 10, 6)) -> np.ndarray:
    """(X, Y, Z) HU: air around a soft-tissue body holding two lungs."""
    hu = np.full(shape, -1000.0, np.float32)
    hu[2:6, 2:8, :] = 40.0
    hu[2:3, 3:7, :] = -850.0
    hu[5:6, 3:7, :] = -850.0
    return hu


def test_metadata_slope_intercept_for_raw_values(tmp_path: Path) -> None:
    hu = _ct_like()
    raw = _save(tmp_path / "train_7_a_1.nii.gz", (hu + 1024).astype(np.int16), np.eye(4))
    good = _save(tmp_path / "train_8_a_1.nii.gz", hu.astype(np.int16), np.eye(4))
    meta = tmp_path / "meta.csv"
    meta.write_text(
        "VolumeName,XYSpacing,ZSpacing,RescaleIntercept,RescaleSlope\n"
        'train_7_a_1.nii.gz,"[0.7, 0.7]",1.5,-1024,1\n'
        'train_8_a_1.nii.gz,"[0.7, 0.7]",1.5,-1024,1\n'
    )
    expected = hu.transpose(2, 1, 0)
    fixed = load_volume(raw, metadata_csv=meta)
    np.testing.assert_array_equal(fixed.array, expected)
    assert fixed.spacing == pytest.approx((1.5, 0.7, 0.7))
    # already HU: the same metadata changes nothing
    np.testing.assert_array_equal(load_volume(good, metadata_csv=meta).array, expected)
    # explicit spacing still takes the metadata's slope/intercept
    np.testing.assert_array_equal(
        load_volume(raw, spacing=(1, 1, 1), metadata_csv=meta).array, expected
    )
    # without metadata the raw values stay raw
    assert load_volume(raw).array.min() == 24.0


def test_metadata_rescale_rule_edges(tmp_path: Path, caplog) -> None:
    hu = _ct_like()
    raw = (hu + 1024) * 2  # slope 0.5
    assert rescale_raw_values(raw, 0.5, -1024.0).min() == -1000.0
    assert rescale_raw_values(hu, 0.5, -1024.0) is hu
    assert rescale_raw_values(raw, 1.0, 0.0) is raw
    water = np.full((4, 4, 4), 500.0, np.float32)  # no air in either reading
    with caplog.at_level("WARNING"):
        assert rescale_raw_values(water, 1.0, -1024.0, source="w.nii") is water
    assert "w.nii" in caplog.text and "no air" in caplog.text


def test_metadata_rescale_bad_rows(tmp_path: Path) -> None:
    path = _save(tmp_path / "train_9_a_1.nii.gz", _ct_like().astype(np.int16), np.eye(4))
    meta = tmp_path / "meta.csv"
    meta.write_text(
        "VolumeName,XYSpacing,ZSpacing,RescaleIntercept,RescaleSlope\n"
        "train_9_a_1,[1 1],1,-1024,abc\n"
    )
    with pytest.raises(DataError, match="RescaleSlope") as e:
        load_volume(path, metadata_csv=meta)
    assert str(meta) in str(e.value) and "train_9_a_1" in str(e.value)
    meta.write_text(
        "VolumeName,XYSpacing,ZSpacing,RescaleIntercept,RescaleSlope\ntrain_9_a_1,[1 1],1,-1024,0\n"
    )
    with pytest.raises(DataError, match="bad RescaleSlope"):
        load_volume(path, metadata_csv=meta)
    meta.write_text("VolumeName,XYSpacing,ZSpacing\ntrain_9_a_1,[1 1],1\n")
    assert rescale_from_metadata(meta, "train_9_a_1") is None
    with pytest.raises(DataError, match="no row for volume 'train_10_a_1'"):
        rescale_from_metadata(meta, "train_10_a_1")
