"""Phantom radiographs (``rgct synth --layout vindr-cxr|chestxray14``): projected from the 3D
phantoms, boxes around each finding's projection, both DICOM display paths, both layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rgct.cli import main
from rgct.data.chestxray14 import load_chestxray14
from rgct.data.cxr import box_mask, iou, load_radiograph
from rgct.data.drr import Projection, project_phantom
from rgct.data.phantom import build_phantom
from rgct.data.source_report import detect_layout
from rgct.data.synth import build_plan_phantom, plan_volumes
from rgct.data.truth import load_ground_truth
from rgct.data.vindr import image_path, load_vindr

SHAPE = (24, 48, 48)
SEED, COUNT = 6, 7  # as the cxr_phantoms fixture


def _phantoms() -> dict[str, object]:
    return {p.name: build_plan_phantom(p, SEED, SHAPE)[0] for p in plan_volumes(COUNT, SEED)}


def _lung_and_bone_pixels(ph) -> tuple[np.ndarray, np.ndarray]:
    """Film pixels whose ray crosses much lung and no bone, and the 2% crossing most bone."""
    proj = Projection(ph.volume.shape, ph.spacing_mm)
    lung = proj.to_film(ph.region_masks["lung"].sum(axis=1))
    bone = proj.to_film(ph.region_masks["bone"].sum(axis=1))
    lungs = (lung >= 0.5 * lung.max()) & (bone == 0)
    bones = bone >= np.percentile(bone[bone > 0], 98)
    assert lungs.sum() >= 10 and bones.sum() >= 3
    return lungs, bones


def _film_files(root: Path, layout: str) -> dict[str, Path]:
    """RadGenome volume name -> the film file of that phantom."""
    out = {}
    for record in load_ground_truth(root).values():
        if layout == "vindr-cxr":
            split = "train" if record["split"] == "train" else "test"
            out[record["radgenome_volume"]] = image_path(root, split, record["volume"])
        else:
            out[record["radgenome_volume"]] = root / "images" / record["volume"]
    return out


def test_films_read_back_with_lungs_dark_and_bone_bright(cxr_phantoms) -> None:
    phantoms = _phantoms()
    displays = {r["display"] for r in load_ground_truth(cxr_phantoms["vindr"]).values()}
    assert displays == {"plain", "monochrome1-window", "voi-lut"}
    for key, layout in (("vindr", "vindr-cxr"), ("nih", "chestxray14")):
        for volume, path in _film_files(cxr_phantoms[key], layout).items():
            ph = phantoms[volume]
            film = load_radiograph(path)
            expected = project_phantom(ph).image
            assert film.array.shape == expected.shape
            # every display path gives back the projected film (a missing VOI LUT, window or
            # MONOCHROME1 inversion is off by far more than the 12- or 8-bit rounding)
            assert np.abs(film.array - expected).mean() < 0.005, (path, layout)
            lungs, bones = _lung_and_bone_pixels(ph)
            assert film.array[lungs].mean() + 0.2 < film.array[bones].mean(), path


def test_dicom_files_exercise_both_display_paths(cxr_phantoms) -> None:
    import pydicom

    seen = {}
    for path in sorted((cxr_phantoms["vindr"]).rglob("*.dicom")):
        ds = pydicom.dcmread(path)
        seen.setdefault(str(ds.PhotometricInterpretation), []).append(ds)
    assert set(seen) == {"MONOCHROME1", "MONOCHROME2"}
    assert all("WindowCenter" in ds for ds in seen["MONOCHROME1"])
    assert any("VOILUTSequence" in ds for ds in seen["MONOCHROME2"])
    assert all(
        ds.ViewPosition == "PA" and ds.BodyPartExamined == "CHEST"
        for v in seen.values()
        for ds in v
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_projected_boxes_hold_each_findings_projected_pixels(seed: int) -> None:
    ph = build_phantom(SHAPE, np.random.default_rng([seed, 11]))
    film = project_phantom(ph)
    assert len(film.findings) == len(ph.findings)
    for finding, footprint in zip(film.findings, film.footprints):
        assert footprint.any(), finding["kind"]
        inside = box_mask(finding["box"], film.image.shape)
        assert not (footprint & ~inside).any(), finding["kind"]
        # the box is tight: the footprint reaches every edge row and column of the box
        rows, cols = np.nonzero(footprint)
        r0, c0 = np.nonzero(inside)[0].min(), np.nonzero(inside)[1].min()
        r1, c1 = np.nonzero(inside)[0].max(), np.nonzero(inside)[1].max()
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (r0, r1, c0, c1)
        assert finding["footprint_pixels"] == int(footprint.sum())
        assert finding["zone"] in ("upper", "middle", "lower")
        if finding.get("lobe"):
            assert finding["side"] == finding["lobe"].split()[0]


def test_truth_and_tables_carry_the_projected_boxes(cxr_phantoms) -> None:
    phantoms = _phantoms()
    for key in ("vindr", "nih"):
        for record in load_ground_truth(cxr_phantoms[key]).values():
            film = project_phantom(phantoms[record["radgenome_volume"]])
            assert record["findings"] == [
                f.to_dict() for f in phantoms[record["radgenome_volume"]].findings
            ]
            assert [f["box"] for f in record["cxr_findings"]] == [f["box"] for f in film.findings]
    # ChestX-ray14: every boxed finding is a BBox_List row; the labels are the boxed classes
    index = load_chestxray14(cxr_phantoms["nih"])
    assert not index.problems
    truth = load_ground_truth(cxr_phantoms["nih"])
    for name, image in index.images.items():
        boxed = [f for f in truth[name]["cxr_findings"] if f["class_name"]]
        got = np.array([b.coords for b in image.boxes]).reshape(-1, 4)
        np.testing.assert_allclose(
            got, np.array([f["box"] for f in boxed]).reshape(-1, 4), atol=1e-3
        )
        assert sorted(image.labels) == sorted({f["class_name"] for f in boxed} or {"No Finding"})
        assert image.spacing == pytest.approx(tuple(truth[name]["pixel_spacing_mm"]), abs=1e-3)
    assert {i.split for i in index.images.values()} == {"train", "test"}


def test_vindr_fusion_recovers_every_truth_box(cxr_phantoms) -> None:
    truth = load_ground_truth(cxr_phantoms["vindr"])
    fused = {
        **load_vindr(cxr_phantoms["vindr"], "train").images,
        **load_vindr(cxr_phantoms["vindr"], "test").images,
    }
    assert len(fused) == COUNT
    for image_id, image in fused.items():
        boxed = [f for f in truth[image_id]["cxr_findings"] if f["class_name"]]
        assert len(image.boxes) == len(boxed), image_id  # stray single-reader boxes dropped
        for f in boxed:
            best = max(
                image.boxes,
                key=lambda b: iou(b.coords, f["box"]) if b.class_name == f["class_name"] else 0,
            )
            assert best.class_name == f["class_name"] and iou(best.coords, f["box"]) > 0.7
            assert best.readers >= 2 if image.split == "train" else best.consensus


def test_cli_writes_checks_and_repeats_both_layouts(tmp_path: Path) -> None:
    for layout in ("vindr-cxr", "chestxray14"):
        runs = []
        for run in ("a", "b"):
            out = tmp_path / f"{layout}{run}"
            args = ["synth", "--out", str(out), "--num-volumes", "3", "--shape", *map(str, SHAPE)]
            assert main([*args, "--layout", layout, "--no-progress"]) == 0
            runs.append(out)
        assert detect_layout(runs[0]) == layout
        assert (
            main(["data", "check", str(runs[0]), "--json", str(tmp_path / f"{layout}.json")]) == 0
        )
        report = json.loads((tmp_path / f"{layout}.json").read_text())
        assert report["layout"] == layout and report["ok"]
        files = sorted(p.relative_to(runs[0]) for p in runs[0].rglob("*") if p.is_file())
        assert files and all(
            (runs[0] / f).read_bytes() == (runs[1] / f).read_bytes() for f in files
        )


def test_data_show_draws_a_film_with_its_boxes(cxr_phantoms, tmp_path: Path, capsys) -> None:
    from PIL import Image

    from rgct.data.cxr_show import COLORS

    for root in cxr_phantoms.values():
        truth = load_ground_truth(root)
        name = next(n for n, r in truth.items() if any(f["class_name"] for f in r["cxr_findings"]))
        out = tmp_path / f"{name}.png"
        assert main(["data", "show", str(root), "--volume", name, "--out", str(out)]) == 0
        with Image.open(out) as img:
            pixels = np.asarray(img.convert("RGB"))
        assert min(pixels.shape[:2]) >= 512
        assert (pixels == COLORS[0]).all(axis=-1).sum() > 100  # the first box, drawn
        assert main(["data", "show", str(root), "--volume", "nothere", "--out", str(out)]) == 2
    assert "nothere" in capsys.readouterr().err
