"""Tests of the phantom generator ``rgct synth`` (tiny shapes, a few volumes)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import rgct.data.phantom as phantom_mod
from rgct.cli import main as cli_main
from rgct.constants import CSV_COLUMNS, CT_RATE_LABELS, REGIONS
from rgct.data.phantom_anatomy import LABEL_ID, LOBES
from rgct.data.phantom_findings import APPLY_ORDER, plan_findings
from rgct.data.phantom_text import FINDING_LABELS, FINDING_NAMES, FINDING_REGIONS, vqa_rows
from rgct.data.synth import plan_volumes, write_dataset

SHAPE = (24, 48, 48)
N = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("synth") / "ds"
    write_dataset(root, N, seed=3, shape=SHAPE, valid_fraction=0.34, progress=False)
    with (root / "ground_truth.jsonl").open() as f:
        records = [json.loads(line) for line in f]
    return root, records


def _csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def _split_csv(root: Path, split: str, stem: str) -> Path:
    return root / "radgenome_files" / f"{'train' if split == 'train' else 'validation'}_{stem}.csv"


def _load(path: Path) -> nib.Nifti1Image:
    assert path.is_file(), path
    return nib.load(str(path))


def test_layout_names_and_columns(dataset):
    root, records = dataset
    assert len(records) == N
    assert {r["split"] for r in records} == {"train", "valid"}
    keys = ["volume", "split", "shape", "spacing_mm", "findings", "normal_regions"]
    for r in records:
        assert list(r) == keys
        split, pid, scan, recon = r["volume"].split("_")
        assert split == r["split"] and scan in "ab" and recon == "1" and int(pid) >= 1
        vol = root / f"{split}_preprocessed/{split}_{pid}/{split}_{pid}{scan}/{r['volume']}.nii.gz"
        assert vol.is_file()
        seg = root / f"{split}_region_mask/seg_{r['volume']}"
        written = {p.name[: -len(".nii.gz")] for p in seg.iterdir()}
        assert set(REGIONS) - {"breast"} <= written <= set(REGIONS)
        anat = {
            p.name[: -len(".nii.gz")]
            for p in (root / f"{split}_anatomy_mask/seg_{r['volume']}").iterdir()
        }
        assert {
            "left lung",
            "right lung",
            *LOBES,
            "trachea",
            "heart tissue",
            "aorta",
            "esophagus",
        } <= anat
        for f in r["findings"]:
            assert list(f) == [
                "kind",
                "label",
                "region",
                "anatomy",
                "side",
                "lobe",
                "size_mm",
                "size_text",
                "center_voxel",
                "radius_vox",
            ]
            assert f["label"] in CT_RATE_LABELS and f["region"] in REGIONS
            assert f["anatomy"].split("/")[0] == f["region"]
    # both scans of a patient stay in one split
    patients = {}
    for r in records:
        split, pid = r["volume"].split("_")[:2]
        patients.setdefault(pid + split, set()).add(split)
    assert all(len(s) == 1 for s in patients.values())
    for split in ("train", "valid"):
        for stem, columns in CSV_COLUMNS.items():
            header, rows = _csv(_split_csv(root, split, stem))
            assert tuple(header) == columns
            assert all(row["Volumename"].endswith(".nii.gz") for row in rows)
        header, _ = _csv(root / "multi_abnormality_labels" / f"{split}_predicted_labels.csv")
        assert header == ["VolumeName", *CT_RATE_LABELS]


def test_csv_rows_match_ground_truth(dataset):
    root, records = dataset
    for r in records:
        file, split, findings = r["volume"] + ".nii.gz", r["split"], r["findings"]

        def rows(stem, file=file, split=split):
            return [
                row for row in _csv(_split_csv(root, split, stem))[1] if row["Volumename"] == file
            ]

        names = {FINDING_NAMES[f["kind"]] for f in findings}
        disorders = rows("case_disorders")[0]["Disorders"]
        assert set(disorders.split(", ")) == (names or {"no findings"})
        assert {(x["Anatomy"], x["Abnormality"]) for x in rows("vqa_location")} == {
            (f["anatomy"], FINDING_NAMES[f["kind"]]) for f in findings
        }
        assert {(x["Anatomy"], x["Abnormality"], x["Size"]) for x in rows("vqa_size")} == {
            (f["anatomy"], FINDING_NAMES[f["kind"]], f["size_text"])
            for f in findings
            if f["size_text"]
        }
        for x in rows("vqa_abnormality"):
            assert set(x["Abnormality"].split(", ")) == {
                FINDING_NAMES[f["kind"]] for f in findings if f["anatomy"] == x["Anatomy"]
            }
        for x in rows("vqa_presence"):
            truth = any(
                f["region"] == x["Anatomy"] and FINDING_NAMES[f["kind"]] == x["Finding"]
                for f in findings
            )
            assert x["Presence"] == ("Yes." if truth else "No.")
        report = rows("region_report")
        regions = [x["Anatomy"] for x in report]
        assert (
            regions[-1] == ""
            and set(regions[:-1]) <= set(REGIONS)
            and len(set(regions)) == len(regions)
        )
        assert set(r["normal_regions"]) == set(regions[:-1]) - {f["region"] for f in findings}
        for f in findings:  # every finding is named in its region's text, lobe and size included
            text = next(x["Sentence"] for x in report if x["Anatomy"] == f["region"])
            assert f["lobe"] is None or f["lobe"] in text
            if f["kind"] in ("nodule", "lymphadenopathy"):
                assert f["size_text"] in text
        assert all(report[-1]["Sentence"].count(x["Sentence"]) for x in report[:-1])
        labels = next(
            row
            for row in _csv(root / "multi_abnormality_labels" / f"{split}_predicted_labels.csv")[1]
            if row["VolumeName"] == file
        )
        assert {k for k, v in labels.items() if v == "1"} == {f["label"] for f in findings}


def test_masks_binary_with_volume_shape_and_affine(dataset):
    root, records = dataset
    for r in records[:3]:
        split = r["split"]
        pid, scan = r["volume"].split("_")[1:3]
        img = _load(
            root / f"{split}_preprocessed/{split}_{pid}/{split}_{pid}{scan}/{r['volume']}.nii.gz"
        )
        assert img.get_data_dtype() == np.int16
        assert img.shape == tuple(reversed(r["shape"])) and r["shape"] == list(SHAPE)
        aff = img.affine
        assert np.allclose(aff[:3, :3], np.diag(list(reversed(r["spacing_mm"]))))
        assert nib.aff2axcodes(aff) == ("R", "A", "S")
        hu = np.asarray(img.dataobj)
        assert hu.min() >= -1024 and hu.max() > 300  # air and bone present
        for folder in ("region_mask", "anatomy_mask"):
            for path in sorted((root / f"{split}_{folder}/seg_{r['volume']}").iterdir()):
                m = _load(path)
                assert m.shape == img.shape and np.allclose(m.affine, aff), path
                data = np.asarray(m.dataobj)
                assert data.dtype == np.uint8 and set(np.unique(data)) <= {0, 1} and data.any(), (
                    path
                )


def test_center_voxels_lie_in_their_region_mask(dataset):
    root, records = dataset
    n = 0
    for r in records:
        for f in r["findings"]:
            path = root / f"{r['split']}_region_mask/seg_{r['volume']}/{f['region']}.nii.gz"
            mask = np.asarray(_load(path).dataobj).transpose(2, 1, 0)
            assert mask[tuple(f["center_voxel"])] == 1, (r["volume"], f)
            n += 1
    assert n > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_every_finding_kind_is_visible(monkeypatch, seed):
    plan = [
        {"kind": "pleural_effusion", "lobe": None, "side": "left"},
        {"kind": "nodule", "lobe": "right lung upper lobe", "side": "right"},
        {"kind": "ground_glass_opacity", "lobe": "left lung upper lobe", "side": "left"},
        {"kind": "consolidation", "lobe": "right lung middle lobe", "side": "right"},
        {"kind": "atelectasis", "lobe": "right lung lower lobe", "side": "right"},
        {"kind": "emphysema", "lobe": "left lung upper lobe", "side": "left"},
        {"kind": "bronchiectasis", "lobe": "right lung lower lobe", "side": "right"},
    ]
    plan += [
        {"kind": k, "lobe": None, "side": None}
        for k in APPLY_ORDER
        if k not in {p["kind"] for p in plan}
    ]
    plan.sort(key=lambda p: APPLY_ORDER.index(p["kind"]))
    monkeypatch.setattr(phantom_mod, "plan_findings", lambda rng: plan)
    ph = phantom_mod.build_phantom((32, 64, 64), np.random.default_rng(seed))
    kinds = [f.kind for f in ph.findings]
    assert len(kinds) >= 11, kinds
    hu = ph.volume.astype(np.float32)
    lung = np.isin(ph.label, [LABEL_ID[lobe] for lobe in LOBES])
    lung_median = float(np.median(hu[lung]))
    assert -900 < lung_median < -780
    for f in ph.findings:
        c = tuple(f.center_voxel)
        v = float(hu[c])
        assert f.label == FINDING_LABELS[f.kind] and f.region == FINDING_REGIONS[f.kind]
        if f.kind == "emphysema":
            assert v < lung_median - 60, (f, v)
        elif f.kind == "ground_glass_opacity":
            assert v > lung_median + 150, (f, v)
        elif f.kind in ("arterial_wall_calcification", "coronary_artery_wall_calcification"):
            assert v > 350, (f, v)
        elif f.kind == "cardiomegaly":
            heart = np.nonzero(ph.label == LABEL_ID["heart tissue"])[2]
            body = np.nonzero(ph.region_masks["lung"].any(axis=(0, 1)))[0]
            assert (heart.max() - heart.min() + 1) / (body.max() - body.min() + 1) > 0.55
        else:  # fluid, soft tissue or airway wall where lung or fat was
            assert -40 < v < 90, (f, v)
        if f.lobe:
            assert ph.label[c] == LABEL_ID[f.lobe]


def test_normal_heart_is_not_enlarged():
    ratios = []
    for seed in range(6):
        ph = phantom_mod.build_phantom(SHAPE, np.random.default_rng([9, seed]))
        if any(f.kind == "cardiomegaly" for f in ph.findings):
            continue
        heart = np.nonzero(ph.label == LABEL_ID["heart tissue"])[2]
        lung = np.nonzero(ph.region_masks["lung"].any(axis=(0, 1)))[0]
        ratios.append((heart.max() - heart.min() + 1) / (lung.max() - lung.min() + 1))
    assert ratios and max(ratios) < 0.55


def test_deterministic_and_independent_of_workers(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_dataset(a, 3, seed=5, shape=SHAPE, progress=False, workers=1)
    write_dataset(b, 3, seed=5, shape=SHAPE, progress=False, workers=2)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 30
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert not list(tmp_path.glob("*.tmp-*"))


def test_bad_arguments_exit_2(tmp_path, capsys):
    out = str(tmp_path / "x")
    assert cli_main(["synth", "--out", out, "--shape", "8", "48", "48", "--num-volumes", "1"]) == 2
    assert cli_main(["synth", "--out", out, "--num-volumes", "0"]) == 2
    assert cli_main(["synth", "--out", out, "--num-volumes", "1", "--valid-fraction", "1.0"]) == 2
    assert "valid-fraction" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f.txt").write_text("keep")
    args = [
        "synth",
        "--out",
        str(tmp_path / "full"),
        "--num-volumes",
        "1",
        "--shape",
        *map(str, SHAPE),
        "--no-progress",
    ]
    assert cli_main(args) == 2
    assert (tmp_path / "full" / "f.txt").read_text() == "keep"
    assert cli_main([*args, "--overwrite"]) == 0
    assert (
        not (tmp_path / "full" / "f.txt").exists()
        and (tmp_path / "full" / "ground_truth.jsonl").is_file()
    )


def test_presence_questions_roughly_balanced():
    yes = no = 0
    for i in range(300):
        rng = np.random.default_rng([11, i])
        findings = []
        for p in plan_findings(rng):
            region = FINDING_REGIONS[p["kind"]]
            findings.append(
                {
                    "kind": p["kind"],
                    "region": region,
                    "anatomy": f"{region}/{region}",
                    "size_text": None,
                }
            )
        rows = vqa_rows(findings, rng)["vqa_presence"]
        yes += sum(r[2] == "Yes." for r in rows)
        no += sum(r[2] == "No." for r in rows)
    assert 0.4 < yes / (yes + no) < 0.6


def test_volume_plan_split_fraction():
    plans = plan_volumes(100, seed=0, valid_fraction=0.2)
    assert len(plans) == 100 and len({p.name for p in plans}) == 100
    assert 15 <= sum(p.split == "valid" for p in plans) <= 20
    assert any(p.scan == "b" for p in plans)
    assert all(p.split == "train" for p in plan_volumes(10, seed=0, valid_fraction=0.0))


def test_montage_png(dataset, tmp_path):
    from rgct.data.montage import save_montage

    root, records = dataset
    out = save_montage(root, records[0]["volume"] + ".nii.gz", tmp_path / "m.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
