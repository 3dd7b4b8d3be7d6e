"""Layout paths, CSV parsing of the hand-written mini release, samples and mixing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rgct.constants import (
    CT_RATE_LABELS,
    QUESTION_TEMPLATES,
    RADGENOME_TASKS,
    REPORT_PROMPTS,
    WHOLE_SCAN,
)
from rgct.data.layout import (
    UnknownRegionError,
    VolumeNameError,
    anatomy_mask_path,
    csv_path,
    parse_volume_name,
    region_mask_path,
    resolve_mask,
    volume_path,
)
from rgct.data.records import build_samples, load_split, mix_samples

MINI = Path(__file__).parents[1] / "fixtures" / "mini_radgenome"


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    """A writable copy of the mini release."""
    dst = tmp_path / "mini"
    shutil.copytree(MINI, dst)
    return dst


def test_parse_volume_name_with_and_without_suffix() -> None:
    for name in ("train_12_b_1", "train_12_b_1.nii.gz"):
        v = parse_volume_name(name)
        assert (v.split, v.pid, v.scan, v.recon, v.name) == (
            "train",
            "12",
            "b",
            "1",
            "train_12_b_1",
        )
    with pytest.raises(VolumeNameError, match="foo_1"):
        parse_volume_name("foo_1")


def test_layout_paths() -> None:
    root = Path("/r")
    assert volume_path(root, "valid_3_a_1.nii.gz") == Path(
        "/r/valid_preprocessed/valid_3/valid_3a/valid_3_a_1.nii.gz"
    )
    assert region_mask_path(root, "train_1_a_1", "lung") == Path(
        "/r/train_region_mask/seg_train_1_a_1/lung.nii.gz"
    )
    assert anatomy_mask_path(root, "train_1_a_1", "aorta") == Path(
        "/r/train_anatomy_mask/seg_train_1_a_1/aorta.nii.gz"
    )
    assert csv_path(root, "valid", "vqa_size") == Path("/r/radgenome_files/validation_vqa_size.csv")


def test_resolve_mask_fallbacks() -> None:
    vol = "train_1_a_1"
    leaf = resolve_mask(MINI, vol, "lung/lung/right lung/right lung upper lobe")
    assert leaf is not None and leaf.name == "right lung upper lobe.nii.gz"
    parent = resolve_mask(MINI, vol, "lung/lung/right lung/right lung lower lobe")
    assert parent is not None and parent.name == "right lung.nii.gz"
    top = resolve_mask(MINI, vol, "lung/lung/left lung")
    assert top is not None and top.name == "lung.nii.gz" and "region_mask" in str(top)
    assert resolve_mask(MINI, vol, "others") is None
    assert resolve_mask(MINI, vol, "") is None
    assert resolve_mask(MINI, vol, WHOLE_SCAN) is None
    with pytest.raises(UnknownRegionError, match="spleenish") as e:
        resolve_mask(MINI, vol, "spleenish")
    assert "trachea and bronchie" in str(e.value)


def test_load_split_parses_quirks() -> None:
    index = load_split(MINI, "train")
    assert index.volumes == ["train_1_a_1", "train_2_a_1"]
    report = index.tables["region_report"]
    # the row naming a missing volume is dropped and recorded
    assert len(report) == 8
    assert [p.kind for p in index.problems] == ["missing_volume"]
    assert "train_99_a_1" in index.problems[0].message
    assert "train_region_report.csv:10" in index.problems[0].message
    # empty Anatomy = whole report; quoted commas kept; suffix stripped
    whole = [r for r in report if r["Anatomy"] == ""]
    assert {r["Volumename"] for r in whole} == {"train_1_a_1", "train_2_a_1"}
    lung = next(r for r in report if r["Volumename"] == "train_1_a_1" and r["Anatomy"] == "lung")
    assert lung["Sentence"].startswith(
        "Several nonspecific nodules are observed in both lungs, the"
    )
    abn = index.tables["vqa_abnormality"][0]
    assert abn["Anatomy"] == "lung/lung/right lung/right lung upper lobe"
    assert abn["Abnormality"] == "nodule, ground glass areas"
    assert index.ground_truth is not None and set(index.ground_truth) == set(index.volumes)


def test_build_samples_templates_masks_and_labels() -> None:
    index = load_split(MINI, "train")
    by = build_samples(index, list(RADGENOME_TASKS))
    assert {t: len(s) for t, s in by.items()} == {
        "report": 2,
        "region_report": 6,
        "abnormality": 2,
        "presence": 3,
        "location": 2,
        "size": 1,
        "disorders": 2,
    }
    rr = {(s.volume, s.region): s for s in by["region_report"]}
    lung = rr[("train_1_a_1", "lung")]
    assert lung.prompt == REPORT_PROMPTS["region_report"].format(region="lung")
    assert lung.mask_path.endswith("train_region_mask/seg_train_1_a_1/lung.nii.gz")
    assert lung.labels[CT_RATE_LABELS.index("Lung nodule")] == 1
    assert lung.labels[CT_RATE_LABELS.index("Cardiomegaly")] == 0
    assert rr[("train_1_a_1", "others")].mask_path is None
    assert rr[("train_1_a_1", "trachea and bronchie")].labels == [0] * 18

    report = by["report"][0]
    assert report.region == WHOLE_SCAN and report.mask_path is None
    assert report.answer.startswith("Trachea and both main bronchi are open. Several")
    assert sum(report.labels) == 2

    abn = by["abnormality"][0]
    assert abn.prompt == QUESTION_TEMPLATES["abnormality"].format(region="right lung upper lobe")
    assert abn.answer == "nodule, ground glass areas."
    assert abn.mask_path.endswith("right lung upper lobe.nii.gz")
    assert abn.labels[CT_RATE_LABELS.index("Lung nodule")] == 1

    size = by["size"][0]
    assert size.prompt == "What is the approximate size of the nodule in the right lung upper lobe?"
    assert size.answer == "5x4 mm"
    loc = by["location"][0]
    assert (
        loc.answer == "heart/heart/heart tissue" and loc.mask_path is None and loc.anatomy is None
    )
    assert by["disorders"][0].answer == "cardiomegaly, pulmonary nodule"
    pres = by["presence"][2]
    assert (
        pres.prompt == "Can pleural effusion be identified in the pleura?" and pres.answer == "No."
    )


def test_unnamed_region_fraction_is_seeded() -> None:
    index = load_split(MINI, "train")
    unnamed = REPORT_PROMPTS["region_report_unnamed"]
    all_unnamed = build_samples(index, ["region_report"], unnamed_region_fraction=1.0)
    prompts = [s.prompt for s in all_unnamed["region_report"]]
    # the all-ones 'others' region keeps its name: no mask would identify it
    assert prompts.count(unnamed) == 5
    a = build_samples(index, ["region_report"], unnamed_region_fraction=0.5, seed=3)
    b = build_samples(index, ["region_report"], unnamed_region_fraction=0.5, seed=3)
    assert [s.prompt for s in a["region_report"]] == [s.prompt for s in b["region_report"]]


def test_missing_csv_unknown_region_and_no_ground_truth(mini: Path) -> None:
    (mini / "radgenome_files" / "train_vqa_size.csv").unlink()
    (mini / "ground_truth.jsonl").unlink()
    with (mini / "radgenome_files" / "train_vqa_abnormality.csv").open("a") as f:
        f.write("train_2_a_1.nii.gz,spleenish,mass\n")
    index = load_split(mini, "train")
    assert "vqa_size" not in index.tables
    kinds = [p.kind for p in index.problems]
    assert kinds.count("unknown_region") == 1
    assert "spleenish" in next(p.message for p in index.problems if p.kind == "unknown_region")
    by = build_samples(index, {"size": 1.0, "abnormality": 1.0, "disorders": 0.0})
    assert by["size"] == [] and len(by["abnormality"]) == 2 and "disorders" not in by
    assert all(s.labels is None for s in by["abnormality"])


def test_bad_csv_columns_are_a_problem(mini: Path) -> None:
    (mini / "radgenome_files" / "train_vqa_presence.csv").write_text("Volumename,Where,Answer\n")
    index = load_split(mini, "train")
    bad = [p for p in index.problems if p.kind == "bad_csv"]
    assert len(bad) == 1 and "Finding" in bad[0].message and "train_vqa_presence.csv" in bad[0].path


def test_mix_samples_weighted_and_deterministic() -> None:
    index = load_split(MINI, "train")
    by = build_samples(index, list(RADGENOME_TASKS))
    weights = {"region_report": 3.0, "presence": 1.0, "size": 0.0}
    a = mix_samples(by, weights, 400, seed=1)
    b = mix_samples(by, weights, 400, seed=1)
    assert [(s.task, s.volume, s.prompt) for s in a] == [(s.task, s.volume, s.prompt) for s in b]
    tasks = [s.task for s in a]
    assert set(tasks) == {"region_report", "presence"}
    assert 0.65 < tasks.count("region_report") / 400 < 0.85
    # within a task all samples are used before one repeats
    first = [s for s in a if s.task == "region_report"][:6]
    assert len({(s.volume, s.region) for s in first}) == 6
    c = mix_samples(by, weights, 400, seed=2)
    assert [s.task for s in c] != tasks


def test_a_deeplesion_task_on_a_radgenome_folder_is_refused_by_name():
    from rgct.data.records import DataError

    with pytest.raises(DataError, match="'lesion_type'.*DeepLesion task"):
        build_samples(load_split(MINI, "train"), ["region_report", "lesion_type"])
