"""Predictor on a radiograph checkpoint: modality, cxr_ask (with and without a box), cxr_report,
bad boxes, and each modality's checkpoint refusing the other's input by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rgct.data.cxr import load_radiograph
from rgct.data.io import Volume
from rgct.inference import Predictor

ASK = "What is in the given box?"


@pytest.fixture(scope="module")
def cxr_predictor(cxr_checkpoint) -> Predictor:
    return Predictor.from_checkpoint(cxr_checkpoint, device="cpu")


def a_film(root: Path) -> tuple[Path, list[float]]:
    """A phantom film with a finding box, and that box."""
    for line in (root / "ground_truth.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["cxr_findings"]:
            name = rec["volume"]  # VinDr-CXR: the image id; ChestX-ray14: the PNG's name
            path = next(p for p in root.rglob(f"{Path(name).stem}.*") if p.suffix != ".json")
            return path, rec["cxr_findings"][0]["box"]
    raise AssertionError("no phantom with a finding")


def test_modality_and_answers(cxr_predictor, cxr_phantoms):
    assert cxr_predictor.modality == "cxr"
    for key in ("vindr", "nih"):  # DICOM and PNG paths
        path, box = a_film(cxr_phantoms[key])
        gen = {"max_new_tokens": 4}
        text = cxr_predictor.cxr_ask(path, ASK, box=box, generation=gen)
        assert isinstance(text, str)
        assert (
            cxr_predictor.cxr_ask(load_radiograph(path), ASK, box=tuple(box), generation=gen)
            == text
        )
        whole = cxr_predictor.cxr_ask(
            path, "Is there cardiomegaly in this chest radiograph?", generation=gen
        )
        assert isinstance(whole, str)
        report = cxr_predictor.cxr_report(path, generation=gen)
        assert set(report) == {"text", "sentences"}
        for s in report["sentences"]:
            assert set(s) == {"text", "label", "side", "zone"}


def test_bad_boxes_are_refused_by_name(cxr_predictor, cxr_phantoms):
    path, _ = a_film(cxr_phantoms["vindr"])
    h, w = load_radiograph(path).shape
    for box, says in (
        ((10, 10, 10, 20), "has no area"),
        ((10, 20, 30, 5), "has no area"),
        ((0, 0, w + 5, 10), f"outside the {w}x{h} image"),
        ((-1, 0, 5, 5), "outside"),
        ((1, 2, 3), r"box must be \(x_min, y_min, x_max, y_max\)"),
        (("a", 1, 2, 3), "box must be"),
    ):
        with pytest.raises(ValueError, match=says):
            cxr_predictor.cxr_ask(path, ASK, box=box)
    with pytest.raises(ValueError, match="question is empty"):
        cxr_predictor.cxr_ask(path, "  ")


def test_each_modality_refuses_the_other(
    cxr_predictor, tiny_checkpoint, cxr_phantoms, phantom_root
):
    volume = next((phantom_root / "valid_preprocessed").rglob("*.nii.gz"))
    with pytest.raises(ValueError, match=r"chest-radiograph checkpoint.*got a CT volume"):
        cxr_predictor.cxr_ask(volume, ASK)
    with pytest.raises(ValueError, match=r"got a CT volume"):
        cxr_predictor.cxr_report(Volume(np.zeros((4, 8, 8), np.float32), np.eye(4), (1, 1, 1), "v"))
    with pytest.raises(ValueError, match=r"reads chest radiographs.*use cxr_ask / cxr_report"):
        cxr_predictor.answer(volume, "What are the abnormalities in the lung?")
    ct = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    assert ct.modality == "ct"
    film, _ = a_film(cxr_phantoms["nih"])
    with pytest.raises(ValueError, match=r"reads CT volumes.*got a radiograph"):
        ct.answer(film, "What are the abnormalities in the lung?")
    with pytest.raises(ValueError, match=r"reads CT volumes.*got a radiograph"):
        ct.answer(load_radiograph(film), "What are the abnormalities in the lung?")
    with pytest.raises(ValueError, match=r"reads CT volumes.*got a radiograph"):
        ct.cxr_ask(film, ASK)
