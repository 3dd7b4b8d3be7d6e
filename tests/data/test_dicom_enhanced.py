"""Enhanced CT (one multi-frame file) reads exactly like the same volume as a classic series."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from rgct.data.io import ENHANCED_CT_SOP_CLASS, VolumeReadError, load_volume

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
K, ROWS, COLS = 5, 6, 7
ROW_SPACING, COL_SPACING, STEP = 0.8, 0.7, 2.5
ORIGIN = np.array([-30.0, -20.0, 100.0])


def _stored(seed: int = 0) -> np.ndarray:
    """(K, rows, cols) int16 stored values, every voxel different."""
    rng = np.random.default_rng(seed)
    return rng.permutation(K * ROWS * COLS).reshape(K, ROWS, COLS).astype(np.int16) * 3


def _geometry(iop: list[float]) -> list[list[float]]:
    normal = np.cross(iop[:3], iop[3:])
    return [(ORIGIN + STEP * k * normal).round(4).tolist() for k in range(K)]


def _base(sop_class: str, series_uid: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.Rows, ds.Columns = ROWS, COLS
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    return ds


def write_classic(folder: Path, stored: np.ndarray, iop: list[float], rescale: list) -> Path:
    """One single-frame CT file per slice, written in shuffled order."""
    folder.mkdir(parents=True, exist_ok=True)
    positions = _geometry(iop)
    for k in (3, 0, 4, 1, 2):
        ds = _base(CT_SOP_CLASS, "1.2.826.0.1.3680043.8.498.2")
        ds.ImagePositionPatient = positions[k]
        ds.ImageOrientationPatient = iop
        ds.PixelSpacing = [ROW_SPACING, COL_SPACING]
        ds.SliceThickness = STEP
        ds.RescaleSlope, ds.RescaleIntercept = rescale[k]
        ds.InstanceNumber = k + 1
        ds.PixelData = stored[k].tobytes()
        ds.save_as(folder / f"IM{k:04d}.dcm", enforce_file_format=True)
    return folder


def write_enhanced(
    path: Path,
    stored: np.ndarray,
    iop: list[float],
    rescale: list,
    *,
    shared_rescale: bool = False,
    order: tuple[int, ...] = (2, 4, 0, 3, 1),
    drop: tuple[int, str] | None = None,
) -> Path:
    """One Enhanced CT file; frames stored in ``order``, geometry in functional groups."""
    ds = _base(ENHANCED_CT_SOP_CLASS, "1.2.826.0.1.3680043.8.498.3")
    ds.NumberOfFrames = len(order)
    positions = _geometry(iop)
    shared = Dataset()
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = iop
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = [ROW_SPACING, COL_SPACING]
    shared.PixelMeasuresSequence[0].SliceThickness = STEP
    if shared_rescale:
        shared.PixelValueTransformationSequence = [Dataset()]
        item = shared.PixelValueTransformationSequence[0]
        item.RescaleSlope, item.RescaleIntercept = rescale[0]
        item.RescaleType = "HU"
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for n, k in enumerate(order):
        group = Dataset()
        group.PlanePositionSequence = [Dataset()]
        group.PlanePositionSequence[0].ImagePositionPatient = positions[k]
        if not shared_rescale:
            group.PixelValueTransformationSequence = [Dataset()]
            item = group.PixelValueTransformationSequence[0]
            item.RescaleSlope, item.RescaleIntercept = rescale[k]
            item.RescaleType = "HU"
        if drop is not None and drop[0] == n:
            delattr(group, drop[1])
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = np.stack([stored[k] for k in order]).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
CORONAL = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
OBLIQUE = [0.8, 0.6, 0.0, 0.0, 0.0, -1.0]


@pytest.mark.parametrize("iop", [AXIAL, CORONAL, OBLIQUE], ids=["axial", "coronal", "oblique"])
def test_enhanced_equals_classic(tmp_path: Path, iop: list[float]) -> None:
    stored = _stored()
    rescale = [(2.0, -1024.0 + 10 * k) for k in range(K)]  # a different intercept per slice
    classic = load_volume(write_classic(tmp_path / "classic", stored, iop, rescale))
    enhanced = load_volume(write_enhanced(tmp_path / "enhanced.dcm", stored, iop, rescale))
    np.testing.assert_array_equal(enhanced.array, classic.array)
    np.testing.assert_allclose(enhanced.affine, classic.affine, atol=1e-6)
    assert enhanced.spacing == pytest.approx(classic.spacing)
    assert sorted(enhanced.spacing) == pytest.approx(sorted((STEP, ROW_SPACING, COL_SPACING)))
    # every stored value lands once, rescaled with its own slice's slope and intercept
    expected = np.concatenate([stored[k].ravel() * 2.0 - 1024.0 + 10 * k for k in range(K)])
    np.testing.assert_array_equal(np.sort(enhanced.array.ravel()), np.sort(expected))


def test_enhanced_axial_values_and_affine(tmp_path: Path) -> None:
    stored = _stored(1)
    vol = load_volume(write_enhanced(tmp_path / "e.dcm", stored, AXIAL, [(1.0, -1000.0)] * K))
    assert vol.shape == (K, ROWS, COLS)
    assert vol.spacing == pytest.approx((STEP, ROW_SPACING, COL_SPACING))
    # LPS identity orientation: canonical RAS flips rows and columns, slices ascend in z
    expected = stored[:, ::-1, ::-1].astype(np.float32) - 1000.0
    np.testing.assert_array_equal(vol.array, expected)
    corner = vol.affine @ np.array([COLS - 1, ROWS - 1, 0, 1.0])  # stored pixel (0, 0) of slice 0
    np.testing.assert_allclose(corner[:3], [-ORIGIN[0], -ORIGIN[1], ORIGIN[2]], atol=1e-6)


def test_shared_rescale_and_folder_and_zip(tmp_path: Path) -> None:
    stored = _stored(2)
    rescale = [(1.5, -1024.0)] * K
    path = write_enhanced(tmp_path / "one" / "enh", stored, CORONAL, rescale, shared_rescale=True)
    from_file = load_volume(path)
    np.testing.assert_array_equal(from_file.array.max(), stored.max() * 1.5 - 1024.0)
    zpath = tmp_path / "enh.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.write(path, "study/enh")
    for other in (tmp_path / "one", zpath):
        np.testing.assert_array_equal(load_volume(other).array, from_file.array)


@pytest.mark.parametrize(
    ("drop", "names"),
    [
        ((3, "PlanePositionSequence"), ["frame 4", "PlanePositionSequence"]),
        ((0, "PixelValueTransformationSequence"), ["frame 1", "PixelValueTransformationSequence"]),
    ],
)
def test_missing_functional_groups(tmp_path: Path, drop, names) -> None:
    stored = _stored()
    rescale = [(1.0, -1024.0)] * K
    path = write_enhanced(tmp_path / "bad.dcm", stored, AXIAL, rescale, drop=drop)
    with pytest.raises(VolumeReadError) as e:
        load_volume(path)
    assert str(path) in str(e.value)
    for name in names:
        assert name in str(e.value)


def test_no_rescale_anywhere_is_identity(tmp_path: Path) -> None:
    stored = _stored()
    path = write_enhanced(tmp_path / "raw.dcm", stored, AXIAL, [(1.0, 0.0)] * K)
    ds = pydicom.dcmread(path)
    for group in ds.PerFrameFunctionalGroupsSequence:
        del group.PixelValueTransformationSequence
    ds.save_as(path)
    np.testing.assert_array_equal(np.sort(load_volume(path).array.ravel()), np.sort(stored.ravel()))


def test_missing_shared_orientation_and_frame_count(tmp_path: Path) -> None:
    stored = _stored()
    path = write_enhanced(tmp_path / "noiop.dcm", stored, AXIAL, [(1.0, 0.0)] * K)
    ds = pydicom.dcmread(path)
    del ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence
    ds.save_as(path)
    with pytest.raises(VolumeReadError, match="PlaneOrientationSequence") as e:
        load_volume(path)
    assert str(path) in str(e.value)
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = K + 1
    ds.save_as(path)
    with pytest.raises(VolumeReadError, match="NumberOfFrames is 6"):
        load_volume(path)


def test_multiframe_without_functional_groups_refused(tmp_path: Path) -> None:
    path = write_enhanced(tmp_path / "nogroups.dcm", _stored(), AXIAL, [(1.0, 0.0)] * K)
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence
    del ds.SharedFunctionalGroupsSequence
    ds.save_as(path)
    with pytest.raises(VolumeReadError, match="5 frames but no Per-frame") as e:
        load_volume(path)
    assert str(path) in str(e.value)


def test_frames_of_differing_geometry_named(tmp_path: Path) -> None:
    path = write_enhanced(tmp_path / "mixed.dcm", _stored(), AXIAL, [(1.0, 0.0)] * K)
    ds = pydicom.dcmread(path)
    group = ds.PerFrameFunctionalGroupsSequence[2]
    group.PixelMeasuresSequence = [Dataset()]
    group.PixelMeasuresSequence[0].PixelSpacing = [0.5, 0.5]
    ds.save_as(path)
    with pytest.raises(VolumeReadError, match=r"frame 3\): PixelSpacing \[0.5, 0.5\] differs"):
        load_volume(path)
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence[2].PixelMeasuresSequence
    ds.PerFrameFunctionalGroupsSequence[4].PlaneOrientationSequence = [Dataset()]
    ds.PerFrameFunctionalGroupsSequence[4].PlaneOrientationSequence[
        0
    ].ImageOrientationPatient = CORONAL
    ds.save_as(path)
    with pytest.raises(VolumeReadError, match=r"frame 5\): ImageOrientationPatient"):
        load_volume(path)


def test_duplicate_frame_positions_named(tmp_path: Path) -> None:
    stored = _stored()
    path = write_enhanced(
        tmp_path / "dup.dcm", stored, AXIAL, [(1.0, 0.0)] * K, order=(0, 1, 2, 2, 4)
    )
    with pytest.raises(VolumeReadError, match="share one ImagePositionPatient") as e:
        load_volume(path)
    assert "frame 3" in str(e.value) and "frame 4" in str(e.value)
