"""rgct.data.truth: the one reader of ground_truth.jsonl, and finding places in report words."""

from __future__ import annotations

import json

import pytest

from rgct.data.truth import GroundTruthError, finding_locations, load_ground_truth, location_phrase


def _write(root, rows):
    root.mkdir(parents=True, exist_ok=True)
    (root / "ground_truth.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_reads_by_volume_and_split(tmp_path):
    _write(
        tmp_path / "ds",
        [
            {"volume": "train_1_a_1.nii.gz", "split": "train", "findings": []},
            {"volume": "valid_2_a_1", "split": "valid", "findings": []},
        ],
    )
    assert set(load_ground_truth(tmp_path / "ds")) == {"train_1_a_1", "valid_2_a_1"}
    assert set(load_ground_truth(tmp_path / "ds", split="validation")) == {"valid_2_a_1"}
    (tmp_path / "none").mkdir()
    assert load_ground_truth(tmp_path / "none") is None
    with pytest.raises(GroundTruthError, match="does not exist"):
        load_ground_truth(tmp_path / "missing")


def test_bad_lines_name_file_and_line(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "ground_truth.jsonl").write_text('{"volume": "a"}\n{"split": "train"}\n')
    with pytest.raises(GroundTruthError, match=r"ground_truth.jsonl:2: line 2 lacks 'volume'"):
        load_ground_truth(tmp_path / "ds")
    (tmp_path / "ds" / "ground_truth.jsonl").write_text("{not json\n")
    with pytest.raises(GroundTruthError, match=":1:"):
        load_ground_truth(tmp_path / "ds")


def test_finding_locations_in_report_words():
    record = {
        "findings": [
            {
                "label": "Lung nodule",
                "region": "lung",
                "lobe": "right lung upper lobe",
                "side": "right",
            },
            {
                "label": "Lung nodule",
                "region": "lung",
                "lobe": "left lung lower lobe",
                "side": "left",
            },
            {
                "label": "Emphysema",
                "region": "lung",
                "lobe": "left lung upper lobe",
                "side": "left",
            },
            {"label": "Pleural effusion", "region": "pleura", "lobe": None, "side": "left"},
            {"label": "Cardiomegaly", "region": "heart", "lobe": None, "side": None},
        ]
    }
    assert finding_locations(record, "lung") == {
        "Lung nodule": "right lung upper lobe and left lung lower lobe",
        "Emphysema": "left lung upper lobe",
    }
    assert finding_locations(record, "pleura") == {"Pleural effusion": "left"}
    assert finding_locations(record, "heart") == {}
    assert finding_locations(None, "lung") == {}
    assert location_phrase({"lobe": None, "side": None}) is None


def test_whole_scan_rows_place_every_region_only_when_asked():
    record = {
        "findings": [
            {"label": "Consolidation", "region": "lung", "lobe": "left lung upper lobe"},
            {"label": "Pleural effusion", "region": "pleura", "lobe": None, "side": "right"},
            {"label": "Cardiomegaly", "region": "heart", "lobe": None, "side": None},
        ]
    }
    assert finding_locations(record, "whole scan") == {}
    assert finding_locations(record, "whole scan", whole_scan=True) == {
        "Consolidation": "left lung upper lobe",
        "Pleural effusion": "right",
    }
    # the flag changes nothing for a region's own row
    assert finding_locations(record, "lung", whole_scan=True) == {
        "Consolidation": "left lung upper lobe"
    }
