"""TotalSegmentator output (its exact file names) -> RadGenome region and anatomy masks."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rgct.cli import main
from rgct.constants import REGIONS
from rgct.data.layout import resolve_mask
from rgct.data.phantom_anatomy import ANATOMY_LABELS
from rgct.data.totalseg import (
    KNOWN_CLASSES,
    SUMMARY_FILE,
    TARGETS,
    TotalSegmentatorError,
    TotalSegmentatorNotInstalled,
    masks_from_totalsegmentator,
    run_totalsegmentator,
)

SHAPE = (16, 14, 12)  # stored (X, Y, Z)
AFFINE = np.array(  # L, P, S axes: not the canonical RAS orientation
    [[-1.5, 0, 0, 40.0], [0, -1.5, 0, 30.0], [0, 0, 2.0, -100.0], [0, 0, 0, 1]]
)
NAME = "train_3_a_1"


def _box(x0, x1, y0, y1, z0, z1) -> np.ndarray:
    m = np.zeros(SHAPE, bool)
    m[x0:x1, y0:y1, z0:z1] = True
    return m


def total_classes() -> dict[str, np.ndarray]:
    """Disjoint masks of the 'total' task, as TotalSegmentator names them."""
    return {
        "lung_upper_lobe_right": _box(1, 6, 3, 11, 7, 11),
        "lung_middle_lobe_right": _box(1, 6, 3, 11, 5, 7),
        "lung_lower_lobe_right": _box(1, 6, 3, 11, 2, 5),
        "lung_upper_lobe_left": _box(10, 15, 3, 11, 6, 11),
        "lung_lower_lobe_left": _box(10, 15, 3, 11, 2, 6),
        "trachea": _box(7, 9, 5, 7, 8, 12),
        "esophagus": _box(7, 9, 9, 10, 4, 11),
        "thyroid_gland": _box(6, 10, 3, 5, 11, 12),
        "heart": _box(7, 10, 2, 6, 2, 6),
        "aorta": _box(7, 9, 7, 9, 4, 8),
        "rib_left_3": _box(15, 16, 2, 12, 6, 7),
        "rib_right_3": _box(0, 1, 2, 12, 6, 7),
        "vertebrae_T5": _box(7, 9, 11, 13, 5, 7),
        "sternum": _box(7, 9, 0, 1, 3, 9),
        "liver": _box(1, 7, 2, 10, 0, 2),
        "stomach": _box(10, 14, 2, 8, 0, 2),
        # files TotalSegmentator writes that the mapping does not use, and empty structures
        "gluteus_maximus_left": np.zeros(SHAPE, bool),
        "urinary_bladder": np.zeros(SHAPE, bool),
        "rib_left_12": np.zeros(SHAPE, bool),
    }


def extra_task_classes() -> dict[str, np.ndarray]:
    """pleural_pericard_effusion, trunk_cavities, lung_vessels and breasts outputs."""
    effusion = _box(1, 6, 9, 11, 2, 4)  # inside the right lower lobe, as the note warns
    return {
        "lung_pleural": _box(0, 7, 2, 12, 1, 12) & ~_box(1, 6, 3, 11, 2, 11),
        "pleural_effusion": effusion,
        "pericardial_effusion": _box(6, 7, 2, 6, 2, 6),
        "mediastinum": _box(6, 10, 2, 11, 2, 11),
        "pericardium": _box(6, 11, 1, 7, 1, 7),
        "thoracic_cavity": _box(0, 16, 1, 12, 1, 12),
        "lung_airways": _box(7, 9, 5, 7, 5, 12),  # includes the trachea
        "lung_arteries": _box(3, 4, 5, 6, 3, 9),
        "breast": _box(2, 14, 0, 1, 6, 9),
    }


def write_folder(folder: Path, classes: dict[str, np.ndarray], affine=AFFINE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, mask in classes.items():
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), folder / f"{name}.nii.gz")
    (folder / "statistics.json").write_text("{}")  # TotalSegmentator's extra outputs are ignored
    return folder


def label_table_xml(label_map: dict[int, str]) -> bytes:
    """The header extension TotalSegmentator writes with ``--ml`` (a Caret label table)."""
    labels = "".join(
        f'<Label Key="{k}" Red="1" Green="0" Blue="0" Alpha="1"><![CDATA[{v}]]></Label>\n'
        for k, v in label_map.items()
    )
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?> <CaretExtension> <VolumeInformation Index="0">'
        f"<LabelTable>\n{labels}</LabelTable><VolumeType><![CDATA[Label]]></VolumeType>"
        "</VolumeInformation></CaretExtension>\n    "
    )
    return xml.encode()


def write_multilabel(path: Path, classes: dict[str, np.ndarray], header: bool = True):
    labels = np.zeros(SHAPE, np.uint8)
    label_map = {}
    for i, (name, mask) in enumerate(classes.items(), start=1):
        labels[mask] = i
        label_map[i] = name
    img = nib.Nifti1Image(labels, AFFINE)
    if header:
        img.header.extensions.append(nib.nifti1.Nifti1Extension(0, label_table_xml(label_map)))
    nib.save(img, path)
    return path, label_map


def stored(path: Path) -> np.ndarray:
    img = nib.load(path)
    np.testing.assert_allclose(img.affine, AFFINE)  # the input's own grid and affine
    data = np.asarray(img.dataobj)
    assert data.dtype == np.uint8 and data.shape == SHAPE
    return data.astype(bool)


def test_table_covers_the_ten_regions_with_radgenome_names() -> None:
    regions = [t.name for t in TARGETS if t.kind == "region"]
    assert sorted(regions) == sorted(REGIONS)
    anatomy = {t.name for t in TARGETS if t.kind == "anatomy"}
    assert len(anatomy) == sum(t.kind == "anatomy" for t in TARGETS)
    phantom_names = set(ANATOMY_LABELS) - {"spinal canal"}
    assert phantom_names <= anatomy  # spelled as the phantom generator and RadGenome spell them
    assert {
        "lung_upper_lobe_left",
        "trachea",
        "thyroid_gland",
        "costal_cartilages",
    } <= KNOWN_CLASSES


def test_folder_of_total_task(tmp_path: Path) -> None:
    classes = total_classes()
    src = write_folder(tmp_path / "segmentations", classes)
    result = masks_from_totalsegmentator(src, tmp_path / "out", volume_name=NAME)

    assert result.region_dir == tmp_path / "out" / "train_region_mask" / f"seg_{NAME}"
    assert result.anatomy_dir == tmp_path / "out" / "train_anatomy_mask" / f"seg_{NAME}"
    written = {"lung", "trachea and bronchie", "esophagus", "thyroid", "heart", "bone", "abdomen"}
    assert set(result.regions) == written
    assert set(result.missing_regions) == {"mediastinum", "pleura", "breast"}
    assert "trunk_cavities" in result.missing_regions["mediastinum"]
    assert "pleural_pericard_effusion" in result.missing_regions["pleura"]
    assert "breasts" in result.missing_regions["breast"]
    assert not any(p.name.startswith("mediastinum") for p in result.region_dir.iterdir())

    lobes = [k for k in classes if k.startswith("lung_")]
    np.testing.assert_array_equal(
        stored(result.regions["lung"]), np.any([classes[k] for k in lobes], axis=0)
    )
    np.testing.assert_array_equal(
        stored(result.anatomy["left lung"]),
        classes["lung_upper_lobe_left"] | classes["lung_lower_lobe_left"],
    )
    np.testing.assert_array_equal(
        stored(result.anatomy["right lung middle lobe"]), classes["lung_middle_lobe_right"]
    )
    bone = ("rib_left_3", "rib_right_3", "vertebrae_T5", "sternum")
    np.testing.assert_array_equal(
        stored(result.regions["bone"]), np.any([classes[k] for k in bone], axis=0)
    )
    np.testing.assert_array_equal(
        stored(result.regions["abdomen"]), classes["liver"] | classes["stomach"]
    )
    # covered by no file: listed, never written; the airway tree needs task lung_vessels
    assert "bronchie" in result.missing_anatomy and "mediastinal tissue" in result.missing_anatomy
    assert "breasts" in result.missing_anatomy["left breast"]
    np.testing.assert_array_equal(
        stored(result.regions["trachea and bronchie"]), classes["trachea"]
    )

    summary = json.loads((result.region_dir / SUMMARY_FILE).read_text())
    assert summary["mask_source"] == "totalsegmentator"
    assert set(summary["missing_regions"]) == {"mediastinum", "pleura", "breast"}
    assert sorted(summary["mapping"]["bone"]) == sorted(bone)  # rib_left_12.nii.gz is empty
    # the output folder reads as a dataset root: anatomy first, then the region
    root = tmp_path / "out"
    anatomy = "lung/lung/right lung/right lung upper lobe"
    assert resolve_mask(root, NAME, anatomy) == result.anatomy["right lung upper lobe"]
    assert resolve_mask(root, NAME, "heart") == result.regions["heart"]


def test_extra_tasks_effusion_out_of_lobes(tmp_path: Path) -> None:
    total, extra = total_classes(), extra_task_classes()
    srcs = [write_folder(tmp_path / "total", total), write_folder(tmp_path / "extra", extra)]
    result = masks_from_totalsegmentator(srcs, tmp_path / "out", volume_name="patient 7")

    assert result.region_dir == tmp_path / "out" / "region_mask" / "seg_patient 7"
    assert not result.missing_regions and set(result.regions) == set(REGIONS)
    effusion = extra["pleural_effusion"]
    lower = stored(result.anatomy["right lung lower lobe"])
    np.testing.assert_array_equal(lower, total["lung_lower_lobe_right"] & ~effusion)
    assert not (stored(result.regions["lung"]) & effusion).any()
    pleura = stored(result.regions["pleura"])
    assert pleura[effusion].all() and not (pleura & stored(result.regions["lung"])).any()
    np.testing.assert_array_equal(
        stored(result.anatomy["bronchie"]), extra["lung_airways"] & ~total["trachea"]
    )
    mediastinum = stored(result.regions["mediastinum"])
    assert mediastinum[extra["mediastinum"]].all() and mediastinum[total["aorta"]].all()
    heart = stored(result.regions["heart"])
    assert heart[extra["pericardial_effusion"]].all() and heart[total["heart"]].all()
    np.testing.assert_array_equal(stored(result.regions["breast"]), extra["breast"])
    # AFFINE stores x towards the patient's left; the midline structures sit at x 7-8
    left, right = stored(result.anatomy["left breast"]), stored(result.anatomy["right breast"])
    x = np.arange(SHAPE[0])[:, None, None]
    np.testing.assert_array_equal(left, extra["breast"] & (x >= 8))
    np.testing.assert_array_equal(right, extra["breast"] & (x <= 7))


def test_pleura_is_effusion_plus_shell_around_lobes(tmp_path: Path) -> None:
    total = total_classes()
    effusion = extra_task_classes()["pleural_effusion"]
    srcs = [
        write_folder(tmp_path / "total", total),
        write_folder(tmp_path / "eff", {"pleural_effusion": effusion}),
    ]
    result = masks_from_totalsegmentator(srcs, tmp_path / "out")
    pleura = stored(result.regions["pleura"])
    lung = stored(result.regions["lung"])
    assert pleura[effusion].all() and not (pleura & lung).any()
    assert pleura[6, 5, 8] and pleura[0, 5, 8] and pleura[3, 2, 8]  # beside a right upper lobe
    assert not pleura[8, 5, 8]  # two voxels away from any lobe: not pleura
    shell = pleura & ~effusion
    grown = lung.copy()
    for axis in range(3):
        grown |= np.roll(lung, 1, axis) | np.roll(lung, -1, axis)
    np.testing.assert_array_equal(shell, grown & ~lung & ~effusion)


def test_breast_sides_need_a_midline(tmp_path: Path) -> None:
    breast = extra_task_classes()["breast"]
    result = masks_from_totalsegmentator(
        write_folder(tmp_path / "b", {"breast": breast, "liver": total_classes()["liver"]}),
        tmp_path / "out",
    )
    assert "breast" in result.regions
    assert "midline" in result.missing_anatomy["left breast"]


def test_multilabel_with_header_and_class_maps(tmp_path: Path) -> None:
    classes = {k: v for k, v in total_classes().items() if v.any()}
    folder = masks_from_totalsegmentator(
        write_folder(tmp_path / "seg", classes), tmp_path / "a", volume_name=NAME
    )
    ml_path, label_map = write_multilabel(tmp_path / "seg_ml.nii.gz", classes)
    ml = masks_from_totalsegmentator(ml_path, tmp_path / "b", volume_name=NAME)
    assert set(ml.regions) == set(folder.regions) and set(ml.anatomy) == set(folder.anatomy)
    for name, path in {**ml.regions, **ml.anatomy}.items():
        other = folder.regions.get(name) or folder.anatomy[name]
        np.testing.assert_array_equal(stored(path), stored(other), err_msg=name)

    bare, _ = write_multilabel(tmp_path / "bare.nii.gz", classes, header=False)
    with pytest.raises(TotalSegmentatorError, match="--class-map") as e:
        masks_from_totalsegmentator(bare, tmp_path / "c")
    assert str(bare) in str(e.value)
    as_json = tmp_path / "map.json"
    as_json.write_text(json.dumps({str(k): v for k, v in label_map.items()}))
    as_csv = tmp_path / "map.csv"
    as_csv.write_text("id,name\n" + "".join(f"{k},{v}\n" for k, v in label_map.items()))
    for cmap in (as_json, as_csv):
        out = masks_from_totalsegmentator(bare, tmp_path / cmap.stem, class_map=cmap)
        assert out.volume_name == "bare"
        np.testing.assert_array_equal(stored(out.regions["lung"]), stored(folder.regions["lung"]))
    bad = tmp_path / "bad.csv"
    bad.write_text("id,name\n1,liver\nseven,heart\n")
    with pytest.raises(TotalSegmentatorError, match="row 3"):
        masks_from_totalsegmentator(bare, tmp_path / "d", class_map=bad)


def test_unmapped_label_values_warned(tmp_path: Path) -> None:
    classes = {"heart": total_classes()["heart"], "liver": total_classes()["liver"]}
    path, _ = write_multilabel(tmp_path / "ml.nii.gz", classes)
    img = nib.load(path)
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = 99
    out = nib.Nifti1Image(data, AFFINE, header=img.header)
    nib.save(out, path)
    result = masks_from_totalsegmentator(path, tmp_path / "out")
    assert any("[99]" in w for w in result.warnings)
    assert set(result.regions) == {"heart", "abdomen"}
    assert "lung" in result.missing_regions


def test_empty_structures_are_missing_not_written(tmp_path: Path) -> None:
    classes = total_classes()
    for k in classes:
        if k.startswith("lung_"):
            classes[k] = np.zeros(SHAPE, bool)
    result = masks_from_totalsegmentator(write_folder(tmp_path / "s", classes), tmp_path / "o")
    assert result.missing_regions["lung"].startswith("empty")
    assert "lung" not in result.regions and "left lung" in result.missing_anatomy
    assert not (result.region_dir / "lung.nii.gz").exists()


def test_bad_folders_refused_with_file_names(tmp_path: Path) -> None:
    classes = total_classes()
    src = write_folder(tmp_path / "shape", classes)
    odd = src / "heart.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((16, 14, 11), np.uint8), AFFINE), odd)
    with pytest.raises(TotalSegmentatorError, match="shape") as e:
        masks_from_totalsegmentator(src, tmp_path / "o")
    assert str(odd) in str(e.value) and "liver" not in str(e.value)

    src = write_folder(tmp_path / "affine", classes)
    shifted = AFFINE.copy()
    shifted[0, 3] += 3
    nib.save(nib.Nifti1Image(classes["aorta"].astype(np.uint8), shifted), src / "aorta.nii.gz")
    with pytest.raises(TotalSegmentatorError, match="affine") as e:
        masks_from_totalsegmentator(src, tmp_path / "o")
    assert str(src / "aorta.nii.gz") in str(e.value)

    src = write_folder(tmp_path / "none", {"gluteus_maximus_left": classes["liver"]})
    with pytest.raises(TotalSegmentatorError, match="none of the TotalSegmentator classes") as e:
        masks_from_totalsegmentator(src, tmp_path / "o")
    assert "gluteus_maximus_left.nii.gz" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TotalSegmentatorError, match="no NIfTI files"):
        masks_from_totalsegmentator(tmp_path / "empty", tmp_path / "o")
    with pytest.raises(TotalSegmentatorError, match="not found"):
        masks_from_totalsegmentator(tmp_path / "nowhere", tmp_path / "o")

    src = write_folder(tmp_path / "ml_in_folder", {"liver": classes["liver"]})
    nib.save(nib.Nifti1Image(classes["liver"].astype(np.uint8) * 5, AFFINE), src / "liver.nii.gz")
    with pytest.raises(TotalSegmentatorError, match="not a binary mask") as e:
        masks_from_totalsegmentator(src, tmp_path / "o")
    assert "liver.nii.gz" in str(e.value)

    a = write_folder(tmp_path / "a", {"liver": classes["liver"]})
    b = write_folder(tmp_path / "b", {"liver": classes["liver"]})
    with pytest.raises(TotalSegmentatorError, match="given twice") as e:
        masks_from_totalsegmentator([a, b], tmp_path / "o")
    assert str(a / "liver.nii.gz") in str(e.value) and str(b / "liver.nii.gz") in str(e.value)
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_reference_volume_grid(tmp_path: Path) -> None:
    src = write_folder(tmp_path / "s", total_classes())
    ct = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.int16), AFFINE), ct)
    result = masks_from_totalsegmentator(src, tmp_path / "o", ct)
    assert result.volume_name == "ct" and "lung" in result.regions
    # the same grid stored in RAS order is the same grid
    ras = nib.as_closest_canonical(nib.Nifti1Image(np.zeros(SHAPE, np.int16), AFFINE))
    nib.save(ras, tmp_path / "ct_ras.nii.gz")
    masks_from_totalsegmentator(src, tmp_path / "o2", tmp_path / "ct_ras.nii.gz")
    other = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), AFFINE), other)
    with pytest.raises(TotalSegmentatorError, match="not on the grid") as e:
        masks_from_totalsegmentator(src, tmp_path / "o3", other)
    assert str(other) in str(e.value) and "lung_upper_lobe_left.nii.gz" in str(e.value)


def test_cli_end_to_end(tmp_path: Path, capsys) -> None:
    total = write_folder(tmp_path / "total", total_classes())
    effusion = write_folder(
        tmp_path / "effusion",
        {k: v for k, v in extra_task_classes().items() if "effusion" in k or k == "lung_pleural"},
    )
    out = tmp_path / "masks"
    code = main(["masks", "from-totalsegmentator", str(total), str(effusion), "--out", str(out),
                 "--volume-name", NAME])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "missing region mediastinum" in printed and "missing region breast" in printed
    assert "missing region pleura" not in printed
    assert (out / "train_region_mask" / f"seg_{NAME}" / "pleura.nii.gz").is_file()
    assert (out / "train_anatomy_mask" / f"seg_{NAME}" / "left lung.nii.gz").is_file()
    assert (out / "train_region_mask" / f"seg_{NAME}" / SUMMARY_FILE).is_file()

    (tmp_path / "nothing").mkdir()
    code = main(["masks", "from-totalsegmentator", str(tmp_path / "nothing"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "rgct masks: error" in err and str(tmp_path / "nothing") in err

    empty = write_folder(tmp_path / "blank", {"heart": np.zeros(SHAPE, bool)})
    code = main(["masks", "from-totalsegmentator", str(empty), "--out", str(out)])
    assert code == 1 and "missing region heart: empty" in capsys.readouterr().out


def test_run_totalsegmentator_missing_and_present(tmp_path: Path, monkeypatch) -> None:
    ct = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.int16), AFFINE), ct)
    monkeypatch.setitem(sys.modules, "totalsegmentator", None)
    monkeypatch.setitem(sys.modules, "totalsegmentator.python_api", None)
    with pytest.raises(TotalSegmentatorNotInstalled) as e:
        run_totalsegmentator(ct, tmp_path / "ts")
    assert "pip install TotalSegmentator" in str(e.value)
    assert "totalseg_download_weights -t total" in str(e.value)

    calls = []

    def fake_totalsegmentator(input, output, ml=False, task="total", fast=False, quiet=False):
        calls.append((Path(input), Path(output), ml, task, fast))
        write_folder(Path(output), total_classes() if task == "total" else extra_task_classes())

    package = types.ModuleType("totalsegmentator")
    api = types.ModuleType("totalsegmentator.python_api")
    api.totalsegmentator = fake_totalsegmentator
    monkeypatch.setitem(sys.modules, "totalsegmentator", package)
    monkeypatch.setitem(sys.modules, "totalsegmentator.python_api", api)
    folder = run_totalsegmentator(ct, tmp_path / "ts", fast=True, tasks=("total", "trunk_cavities"))
    assert calls == [
        (ct, tmp_path / "ts", False, "total", True),
        (ct, tmp_path / "ts", False, "trunk_cavities", False),
    ]
    result = masks_from_totalsegmentator(folder, tmp_path / "out", ct)
    assert "mediastinum" in result.regions and "pleura" in result.regions
    with pytest.raises(FileNotFoundError, match="no such volume"):
        run_totalsegmentator(tmp_path / "nope.nii.gz", tmp_path / "ts")


def test_phantom_anatomy_round_trip_through_rgct_readers(tmp_path: Path) -> None:
    """TotalSegmentator-named files cut from a phantom give back the phantom's own masks."""
    from rgct.data.io import load_mask, load_volume
    from rgct.data.phantom import build_phantom

    ph = build_phantom((24, 48, 48), np.random.default_rng(5))
    ct = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(ph.volume.transpose(2, 1, 0), ph.affine), ct)
    as_ts = {
        "lung_upper_lobe_right": "right lung upper lobe",
        "lung_middle_lobe_right": "right lung middle lobe",
        "lung_lower_lobe_right": "right lung lower lobe",
        "lung_upper_lobe_left": "left lung upper lobe",
        "lung_lower_lobe_left": "left lung lower lobe",
        "trachea": "trachea",
        "thyroid_gland": "thyroid gland",
        "heart": "heart tissue",
        "sternum": "sternum",
        "liver": "liver",
    }
    folder = tmp_path / "ts"
    folder.mkdir()
    for cls, anatomy in as_ts.items():
        mask = ph.anatomy_masks[anatomy].transpose(2, 1, 0)  # (D, H, W) -> stored (X, Y, Z)
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), ph.affine), folder / f"{cls}.nii.gz")
    result = masks_from_totalsegmentator(folder, tmp_path / "out", ct, volume_name=NAME)
    volume = load_volume(ct)
    np.testing.assert_array_equal(
        load_mask(result.regions["lung"], volume), ph.region_masks["lung"].astype(bool)
    )
    for name in ("left lung", "right lung", "right lung middle lobe", "thyroid gland"):
        np.testing.assert_array_equal(
            load_mask(result.anatomy[name], volume), ph.anatomy_masks[name].astype(bool), name
        )
