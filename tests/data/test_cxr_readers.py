"""VinDr-CXR and ChestX-ray14 readers: the consensus-box fusion rule on a hand-written CSV,
``rgct data check`` naming every planted fault, box locations and the grounded samples."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rgct.cli import main
from rgct.data.cxr import Box, box_location, box_mask
from rgct.data.cxr_samples import chestxray14_samples, vindr_samples
from rgct.data.io import DataError
from rgct.data.source_report import check_layout_tasks, check_source, detect_layout
from rgct.data.synth_cxr import radiograph_dicom_bytes
from rgct.data.truth import load_ground_truth
from rgct.data.vindr import box_path, image_path, label_path, load_vindr

BOXES = """image_id,rad_id,class_name,x_min,y_min,x_max,y_max
img1,R1,Nodule/Mass,10,10,20,20
img1,R2,Nodule/Mass,11,11,21,21
img1,R3,Nodule/Mass,12,10,22,20
img1,R1,Nodule/Mass,50,50,60,60
img1,R1,Nodule/Mass,52,50,62,60
img1,R2,Pleural effusion,0,40,30,80
img1,R3,Pleural effusion,5,50,30,80
img1,R1,Cardiomegaly,30,40,70,70
img1,R2,Cardiomegaly,45,55,80,79
img2,R1,No finding,,,,
img2,R2,No finding,,,,
img2,R3,Aortic enlargement,40,20,50,30
"""
LABELS = """image_id,rad_id,Nodule/Mass,Pleural effusion,Cardiomegaly,COPD,No finding
img1,R1,1,0,1,1,0
img1,R2,1,1,1,0,0
img1,R3,1,1,0,0,0
img2,R1,0,0,0,0,1
img2,R2,0,0,0,0,1
img2,R3,0,0,0,0,0
"""


@pytest.fixture
def hand_written(tmp_path: Path) -> Path:
    """A VinDr-CXR training split of two 80 x 100 images and hand-written reader rows."""
    film = np.tile(np.linspace(0.0, 1.0, 100, dtype=np.float32), (80, 1))
    for image_id in ("img1", "img2"):
        path = image_path(tmp_path, "train", image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(radiograph_dicom_bytes(film, (0.2, 0.2), image_id))
    box_path(tmp_path, "train").parent.mkdir(parents=True)
    box_path(tmp_path, "train").write_text(BOXES)
    label_path(tmp_path, "train").write_text(LABELS)
    return tmp_path


def test_fusion_rule_on_hand_written_reader_boxes(hand_written: Path) -> None:
    index = load_vindr(hand_written, "train")
    assert not index.problems
    img1, img2 = index.images["img1"], index.images["img2"]
    assert img1.size == (100, 80)
    # nodules: three readers linked by IoU >= 0.4 -> the coordinate median, 3 readers; the two
    # overlapping boxes of R1 alone are one reader (same-reader boxes are never linked): dropped.
    # effusion: two readers (IoU 0.625) -> their median; cardiomegaly: IoU 0.23 -> two
    # single-reader boxes, dropped; img2's one aortic box: one reader, dropped.
    assert img1.boxes == [
        Box("Nodule/Mass", 11.0, 10.0, 21.0, 20.0, readers=3),
        Box("Pleural effusion", 2.5, 45.0, 30.0, 80.0, readers=2),
    ]
    assert img2.boxes == []
    # image labels: set by a majority of the image's readers (COPD by 1 of 3: not set)
    assert img1.labels == ["Nodule/Mass", "Pleural effusion", "Cardiomegaly"]
    assert img2.labels == ["No finding"]


def test_samples_of_the_hand_written_split(hand_written: Path, tmp_path: Path) -> None:
    tables = vindr_samples(load_vindr(hand_written, "train"), cache_dir=tmp_path / "masks")
    boxes = tables["cxr_box"]
    assert [s.answer for s in boxes] == ["Nodule or mass.", "Pleural effusion."]
    mask = np.asarray(Image.open(boxes[1].mask_path)) > 0
    assert np.array_equal(mask, box_mask((2.5, 45.0, 30.0, 80.0), (80, 100)))
    assert boxes[0].image_path.endswith("img1.dicom") and boxes[0].region == "box"
    reports = {s.volume: s.answer for s in tables["cxr_report"]}
    assert reports == {
        "img1": "Nodule or mass in the right upper zone. Pleural effusion in the right lower zone. "
        "Cardiomegaly.",
        "img2": "No finding.",
    }
    where = {s.prompt: s.answer for s in tables["cxr_location"]}
    assert where["Where is the pleural effusion in this chest radiograph?"] == "right lower zone."
    presence = [(s.volume, s.answer) for s in tables["cxr_presence"]]
    assert presence.count(("img1", "Yes.")) == 3 and presence.count(("img1", "No.")) == 3
    assert presence.count(("img2", "Yes.")) == 0 and presence.count(("img2", "No.")) == 1
    labels = {s.volume: s.answer for s in tables["cxr_labels"]}
    assert labels["img1"] == "Nodule or mass, pleural effusion, cardiomegaly."
    with pytest.raises(DataError, match="vindr-cxr"):
        check_layout_tasks(["report"], "vindr-cxr", hand_written)


def test_box_location_follows_the_pa_convention() -> None:
    shape = (100, 100)  # lung band rows 10-75: thirds end at rows 31.7 and 53.3
    assert box_location((10, 15, 30, 25), shape) == ("right", "upper")  # image left = patient right
    assert box_location((60, 40, 80, 50), shape) == ("left", "middle")
    assert box_location((30, 60, 80, 90), shape) == ("central", "lower")
    assert box_location((10, 12, 30, 20), shape, lung_rows=(0, 30)) == ("right", "middle")


def _append(path: Path, rows: list[list]) -> int:
    """Append CSV rows; the line number of the first."""
    first = len(path.read_text().splitlines()) + 1
    with path.open("a", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return first


def _found(report) -> set[tuple[str, str]]:
    return {(p.kind, p.path) for p in report.problems if p.severity == "error"}


def test_vindr_check_names_every_planted_fault(cxr_phantoms, tmp_path: Path, capsys) -> None:
    root = tmp_path / "vindr"
    shutil.copytree(cxr_phantoms["vindr"], root)
    train = [r["volume"] for r in load_ground_truth(root).values() if r["split"] == "train"]
    gone, lateral, knee, boxed, broken = train[:5]
    image_path(root, "train", gone).unlink()
    image_path(root, "train", broken).write_bytes(b"not a DICOM file")
    film = np.full((48, 48), 0.5, dtype=np.float32)
    for image_id, view, part in ((lateral, "LL", "CHEST"), (knee, "PA", "KNEE")):
        data = radiograph_dicom_bytes(film, (6.7, 6.7), image_id, view=view, body_part=part)
        image_path(root, "train", image_id).write_bytes(data)
    boxes = box_path(root, "train")
    first = _append(boxes, [
        [boxed, "R1", "Pleural effusion", 10, 10, 1000, 20],
        [boxed, "R1", "Pleural effusion", 10, 10, 10, 20],
        [boxed, "R1", "Alien", 10, 10, 20, 20],
    ])  # fmt: skip
    labels = label_path(root, "test")
    labels.write_text(labels.read_text().replace("image_id,", "imageid,", 1))
    report = check_source(root, detect_layout(root))
    found = _found(report)
    gone_line = next(
        i for i, line in enumerate(boxes.read_text().splitlines(), 1) if line.startswith(gone)
    )
    assert ("missing_image", f"{boxes}:{gone_line}") in found
    assert ("lateral_view", str(image_path(root, "train", lateral))) in found
    assert ("not_chest", str(image_path(root, "train", knee))) in found
    assert ("box_outside", f"{boxes}:{first}") in found
    assert ("zero_area_box", f"{boxes}:{first + 1}") in found
    assert ("unknown_class", f"{boxes}:{first + 2}") in found
    assert ("bad_csv", str(labels)) in found
    assert ("unreadable_image", str(image_path(root, "train", broken))) in found
    assert len(found) == 8, found
    # the check went on: the other images are counted, the boxed image kept its good boxes
    assert report.counts["train"]["images"] == len(train) - 4
    assert main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert "lateral_view" in out and "zero_area_box" in out and "8 error(s)" in out


def test_chestxray14_check_names_every_planted_fault(cxr_phantoms, tmp_path: Path) -> None:
    root = tmp_path / "nih"
    shutil.copytree(cxr_phantoms["nih"], root)
    entry = root / "Data_Entry_2017.csv"
    lines = entry.read_text().splitlines()
    names = [line.split(",")[0] for line in lines[1:]]
    (root / "images" / names[0]).unlink()
    lines[2] = lines[2].replace(",PA,", ",LL,")
    cells = lines[3].split(",")
    cells[1] = "Nodule|Alien"
    lines[3] = ",".join(cells)
    entry.write_text("\n".join(lines) + "\n")
    bbox = root / "BBox_List_2017.csv"
    first = _append(bbox, [
        [names[4], "Nodule", 40, 10, 50, 5],
        [names[4], "Nodule", 10, 10, 0, 5],
        [names[4], "Alien", 10, 10, 5, 5],
        ["99999999_000.png", "Nodule", 10, 10, 5, 5],
    ])  # fmt: skip
    report = check_source(root, detect_layout(root))
    found = _found(report)
    assert ("missing_image", f"{entry}:2") in found
    assert ("lateral_view", f"{entry}:3") in found
    assert ("unknown_class", f"{entry}:4") in found
    assert ("box_outside", f"{bbox}:{first}") in found
    assert ("zero_area_box", f"{bbox}:{first + 1}") in found
    assert ("unknown_class", f"{bbox}:{first + 2}") in found
    assert ("unknown_image", f"{bbox}:{first + 3}") in found
    assert len(found) == 7, found  # the left-out images' own boxes are not named again
    assert sum(c["images"] for c in report.counts.values()) == len(names) - 2
    entry.write_text(entry.read_text().replace("Finding Labels", "Findings", 1))
    assert ("bad_csv", str(entry)) in _found(check_source(root, "chestxray14"))


def test_chestxray14_samples_on_phantoms(cxr_phantoms, tmp_path: Path) -> None:
    from rgct.data.chestxray14 import load_chestxray14

    index = load_chestxray14(cxr_phantoms["nih"])
    tables = chestxray14_samples(index, "train", cache_dir=tmp_path)
    truth = load_ground_truth(cxr_phantoms["nih"])
    train = [name for name, image in index.images.items() if image.split == "train"]
    boxed = sum(1 for n in train for f in truth[n]["cxr_findings"] if f["class_name"])
    assert len(tables["cxr_box"]) == boxed
    assert len(tables["cxr_report"]) == len(tables["cxr_labels"]) == len(index.split("train"))
    for sample in tables["cxr_report"]:
        assert sample.answer.endswith(".") and sample.mask_path is None
