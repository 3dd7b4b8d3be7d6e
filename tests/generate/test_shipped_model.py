"""The shipped demo model gives the same region reports and detections as when it was made
(golden values written right after it was rebuilt with places on whole-scan rows: stages
``stage3_places`` and ``places_calibrate`` of configs/recipes/demo.yaml)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rgct.inference import Predictor, default_checkpoint

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "shipped_model_region_reports.json"
EXAMPLES = REPO / "app" / "examples"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_checkpoint(default_checkpoint(), device="cpu")


@pytest.mark.parametrize("example", ["phantom_1", "phantom_2", "phantom_3"])
def test_shipped_model_region_reports_are_pinned(predictor, example):
    golden = json.loads(GOLDEN.read_text())
    folder = EXAMPLES / example
    volume = next(folder.glob("*.nii.gz"))
    seg = next(folder.glob("seg_*"))
    lung = seg / "lung.nii.gz"
    assert predictor.region_report(volume, lung, region="lung") == golden[f"{example}/lung"]
    probs = predictor.detect(volume, lung)
    for label, p in golden[f"{example}/detect_lung"].items():
        assert probs[label] == pytest.approx(p, abs=2e-4), label
