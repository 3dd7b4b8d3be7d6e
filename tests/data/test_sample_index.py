"""The columnar sample index (SampleTable) and the release-size index benchmark."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from rgct.config import DataConfig
from rgct.constants import RADGENOME_TASKS
from rgct.data.dataset import RGCTDataset
from rgct.data.records import build_samples, load_split, mix_samples
from rgct.data.sample_table import TEXT_FIELDS, Sample, SampleTable
from rgct.data.scale import measure_index, write_release_csvs

MINI = Path(__file__).parents[1] / "fixtures" / "mini_radgenome"


def _samples() -> list[Sample]:
    labels = [0] * 18
    labels[3] = 1
    return [
        Sample("train_1_a_1", "presence", "Can x be seen?", "Yes.", "lung", "lung", "/m/lung", "/v1", labels),
        Sample("train_2_a_1", "location", "Where is é?", "heart/heart", "whole scan", None, None, "/v2", None),
        Sample("train_1_a_1", "presence", "Can x be seen?", "No.", "lung", "lung", "/m/lung", "/v1", [0] * 18),
    ]  # fmt: skip


def test_sample_table_round_trips_and_takes_rows() -> None:
    samples = _samples()
    table = SampleTable.from_samples(samples)
    assert len(table) == 3 and list(table) == samples and table == samples
    assert table[1].anatomy is None and table[1].labels is None and table[-1] == samples[2]
    assert table[1].prompt == "Where is é?"  # UTF-8 kept
    assert all(c.dtype == np.int32 for c in table.codes.values())
    assert len(table.pools["volume"]) == 2  # distinct values stored once
    assert table.has_finding().tolist() == [True, False, False]
    picked = table.take(np.array([2, 0, 0]))
    assert list(picked) == [samples[2], samples[0], samples[0]]
    assert list(table[1:]) == samples[1:]
    both = SampleTable.concat([table, picked])
    assert list(both) == samples + list(picked) and set(both.codes) == set(TEXT_FIELDS)
    assert len(SampleTable.concat([])) == 0
    with pytest.raises(IndexError):
        table[3]


def test_index_is_columnar_and_mixing_matches_the_object_path(tmp_path) -> None:
    by = build_samples(load_split(MINI, "train"), list(RADGENOME_TASKS), seed=0)
    assert all(isinstance(t, SampleTable) for t in by.values())
    weights = {"region_report": 2.0, "presence": 1.0, "size": 1.0}
    from_tables = mix_samples(by, weights, 300, seed=4, abnormal_fraction=0.5)
    from_lists = mix_samples(
        {t: list(s) for t, s in by.items()}, weights, 300, seed=4, abnormal_fraction=0.5
    )
    assert list(from_tables) == list(from_lists)
    cfg = DataConfig(root=str(MINI), input_shape=(8, 16, 16), cache_dir=str(tmp_path))
    ds = RGCTDataset(cfg, "train", train=True, num_samples=50)
    assert isinstance(ds.samples, SampleTable) and ds.samples.nbytes < 20_000


def test_release_size_writer(tmp_path) -> None:
    root = write_release_csvs(tmp_path / "rg", scale=0.002, seed=1)
    with open(root / "radgenome_files/train_vqa_presence.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Volumename", "Anatomy", "Finding", "Presence"] and len(rows) > 400
    by = build_samples(load_split(root, "train"), list(RADGENOME_TASKS))
    assert len(by["region_report"]) > 0 and len(by["presence"]) == len(rows) - 1


@pytest.mark.slow  # a fresh Python process and two loader workers: ~10-40 s on 2 shared cores
def test_index_measurement_in_a_fresh_process(tmp_path) -> None:
    root = write_release_csvs(tmp_path / "rg", scale=0.002, seed=1)
    result = measure_index(root, num_samples=2000, workers=2, probe=1000)
    assert result["samples_in_index"] == 2000 and result["records_read_per_worker"] == 500
    assert 0 < result["index_build_s"] < 60 and result["worker_extra_mb"] < 50
    assert result["peak_rss_mb"] > result["index_mb"] > 0
