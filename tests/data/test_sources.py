"""Samples of RAD-ChestCT and DeepLesion phantoms, and the weighted, tagged mix of sources."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rgct.config import ConfigError, DataConfig, DataSource, load_config
from rgct.constants import CT_RATE_LABELS
from rgct.data import sources
from rgct.data.dataset import collate
from rgct.data.deeplesion import load_deeplesion
from rgct.data.io import DataError
from rgct.data.radchestct import load_radchest
from rgct.data.sample_table import SampleTable
from rgct.data.source_samples import deeplesion_samples, radchest_samples
from rgct.data.sources import MixedSources, SourceDataset, build_source_datasets, per_source
from rgct.data.synth import write_dataset
from rgct.data.synth_layouts import write_layout_dataset
from rgct.data.truth import load_ground_truth

SHAPE = (24, 48, 48)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("sources")
    out = {"radgenome": base / "rg", "rad-chestct": base / "rad", "deeplesion": base / "dl"}
    write_dataset(out["radgenome"], 4, seed=4, shape=SHAPE, progress=False)
    write_layout_dataset(out["rad-chestct"], "rad-chestct", 4, seed=4, shape=SHAPE, progress=False)
    write_layout_dataset(out["deeplesion"], "deeplesion", 10, seed=1, shape=SHAPE, progress=False)
    return out


def test_radchest_region_targets_match_the_truth(roots) -> None:
    index = load_radchest(roots["rad-chestct"], "train")
    tables = radchest_samples(index, ["presence", "abnormality"])
    truth = load_ground_truth(roots["rad-chestct"])
    presence = list(tables["presence"])
    assert presence and {s.answer for s in presence} <= {"Yes.", "No."}
    for s in presence:
        want = {f["label"] for f in truth[s.volume]["findings"] if f["region"] == s.region}
        got = {lab for lab, v in zip(CT_RATE_LABELS, s.labels) if v}
        assert got == want, (s.volume, s.region)
        assert s.mask_path and s.mask_path.endswith(f"seg_{s.volume}/{s.region}.nii.gz")
        if s.answer == "Yes.":
            assert any(lab.lower() in s.prompt for lab in want)
    for s in tables["abnormality"]:
        assert s.answer.endswith(".") and any(v for v in s.labels)


def test_deeplesion_tasks(roots, tmp_path: Path) -> None:
    index = load_deeplesion(roots["deeplesion"])
    split = index.lesions[0].split
    tables = deeplesion_samples(index, split, cache_dir=tmp_path)
    lesion = list(tables["lesion"])[0]
    assert lesion.prompt == "Describe the lesion in this region."
    assert lesion.answer.startswith(("A lung lesion of", "A mediastinal lesion of"))
    assert list(tables["lesion_size"])[0].answer.endswith(" mm")
    assert list(tables["lesion_type"])[0].answer in ("lung.", "mediastinum.")
    assert Path(lesion.mask_path).is_file() and Path(lesion.image_path).parent.parent == tmp_path
    # the detections line of detect-then-describe training: the type's CT-RATE label
    for sample in tables["lesion"]:
        want = "Lung nodule" if sample.answer.startswith("A lung") else "Lymphadenopathy"
        named = [lab for lab, on in zip(CT_RATE_LABELS, sample.labels) if on]
        assert named == [want]


def test_deeplesion_prompts_with_the_truth_evidence_line(roots, tmp_path: Path) -> None:
    """data.lesion_evidence: each lesion prompt starts with the region of its type and its
    diameters from DL_info.csv (training); without it the prompts are plain."""
    index = load_deeplesion(roots["deeplesion"])
    split = index.lesions[0].split
    lesions = {les.name: les for les in index.split(split)}
    plain = deeplesion_samples(index, split, cache_dir=tmp_path)
    tables = deeplesion_samples(index, split, cache_dir=tmp_path, evidence=True)
    for task, table in tables.items():
        for sample, bare in zip(table, plain[task]):
            lesion = lesions[sample.volume]
            region = "lung" if lesion.lesion_type == 5 else "mediastinum"
            long_mm, short_mm = lesion.diameters_mm
            line = f"Lesion in this box: {region}, {round(long_mm)} x {round(short_mm)} mm."
            assert sample.prompt == f"{line} {bare.prompt}" and sample.answer == bare.answer
    cfg = DataConfig(root=str(roots["radgenome"]), input_shape=SHAPE, lesion_evidence=True)
    source = DataSource(str(roots["deeplesion"]), layout="deeplesion", tasks={"lesion": 1.0})
    ds = SourceDataset(cfg, source, split, train=True)
    assert all(s.prompt.startswith("Lesion in this box: ") for s in ds.samples)


def test_each_source_loads_and_tags_its_items(roots) -> None:
    cfg = DataConfig(
        input_shape=(16, 32, 32),
        augment=False,
        sources=[DataSource(str(p), layout=name) for name, p in roots.items()],
    )
    split = {
        "radgenome": "train",
        "rad-chestct": "train",
        "deeplesion": load_deeplesion(roots["deeplesion"]).lesions[0].split,
    }
    for source in cfg.sources:
        ds = SourceDataset(cfg, source, split[source.name], train=False)
        item = ds[0]
        assert item["source"] == source.name and item["image"].shape[-3:] == (16, 32, 32)
        assert item["mask"].sum() > 0 and item["mask"].sum() < item["mask"].numel()
    datasets = build_source_datasets(cfg, "train", train=False)
    mix = MixedSources(
        datasets, {"radgenome": 1.0, "rad-chestct": 1.0, "deeplesion": 0.0}, 40, seed=0
    )
    tags = [name for name, _ in mix.index]
    assert set(tags) == {"radgenome", "rad-chestct"} and len(mix) == 40
    batch = collate([mix[i] for i in range(2)])
    assert len(batch["source"]) == 2
    assert per_source([1.0, 3.0, 5.0], ["a", "b", "a"]) == {"a": 3.0, "b": 3.0}


def test_a_source_split_without_one_tasks_rows_warns(roots, monkeypatch, caplog) -> None:
    real = sources.source_samples

    def without_presence(*args, **kwargs):
        return {**real(*args, **kwargs), "presence": SampleTable.concat([])}

    monkeypatch.setattr(sources, "source_samples", without_presence)
    cfg = DataConfig(input_shape=(16, 32, 32), augment=False)
    source = DataSource(str(roots["rad-chestct"]), layout="rad-chestct")
    with caplog.at_level(logging.WARNING, logger="rgct.data.sources"):
        ds = SourceDataset(cfg, source, "train", train=True, num_samples=6)
    assert ds.missing_tasks == ["presence"] and len(ds) == 6
    assert {ds.samples.text("task", i) for i in range(len(ds))} == {"abnormality"}
    (warned,) = [r.getMessage() for r in caplog.records if "no rows for task" in r.getMessage()]
    assert "rad-chestct" in warned and "'train'" in warned and "'presence'" in warned


def test_source_config_validates() -> None:
    with pytest.raises(ConfigError, match="layout"):
        DataSource("x", layout="nih-cxr")
    with pytest.raises(ConfigError, match="weight"):
        DataSource("x", weight=0)
    with pytest.raises(ConfigError, match="names must differ"):
        DataConfig(sources=[DataSource("a"), DataSource("b")])
    cfg = load_config(
        [REPO / "configs" / "model" / "tiny.yaml", REPO / "configs" / "train" / "multi_source.yaml"]
    )
    assert [s.layout for s in cfg.data.sources] == ["radgenome", "rad-chestct", "deeplesion"]


def test_radchest_region_reports_are_generated_never_trained_on(roots) -> None:
    root = roots["rad-chestct"]
    tables = radchest_samples(load_radchest(root, "train"), ["region_report", "abnormality"])
    said = {(s.volume, s.region): s.answer for s in tables["abnormality"]}
    reports = list(tables["region_report"])
    assert len(reports) > len(said) > 0
    for s in reports:  # the label matrix in words: RAD-ChestCT has no report text
        assert s.answer == said.get((s.volume, s.region), "") and s.region in s.prompt
    cfg = DataConfig(input_shape=(16, 32, 32), augment=False, max_volumes=1)
    source = DataSource(str(root), layout="rad-chestct", tasks={"region_report": 1.0})
    assert len({s.volume for s in SourceDataset(cfg, source, "train", train=False).samples}) == 1
    with pytest.raises(DataError, match="no report text to train region_report on"):
        SourceDataset(cfg, source, "train", train=True, num_samples=2)
    with pytest.raises(DataError, match=r"\['lesion'\] cannot be asked of .*rad-chestct folder"):
        radchest_samples(load_radchest(root, "train"), ["lesion"])
