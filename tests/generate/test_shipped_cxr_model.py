"""The shipped radiograph demo model (rgct/assets/cxr_demo_model, made by
configs/recipes/cxr_demo.yaml): it serves radiographs only, its card holds its held-out table
beside the blind baseline, and it answers the bundled example films as when it was made
(golden answers written right after the export)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rgct.inference import Predictor

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "rgct" / "assets" / "cxr_demo_model"
GOLDEN = Path(__file__).parent / "golden" / "shipped_cxr_model.json"
EXAMPLES = REPO / "app" / "examples_cxr"
BOXES = {  # a truth box of each example film (app/examples_cxr/README.md)
    "phantom_film_1.dicom": (29, 74, 30, 76),  # Nodule/Mass
    "phantom_film_2.dicom": (73, 46, 108, 110),  # Pleural effusion
    "phantom_film_3.png": (39, 92, 50, 106),  # Atelectasis
}


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_checkpoint(MODEL, device="cpu")


def test_the_card_holds_the_held_out_table_beside_the_blind_baseline():
    card = (MODEL / "README.md").read_text()
    heldout = json.loads((MODEL / "heldout.json").read_text())
    assert heldout["modality"] == "cxr" and heldout["volumes"] >= 40
    assert "| metric | model | blind baseline |" in card and "issue #18 target" in card
    assert (MODEL / "recipe.yaml").read_text() == (
        REPO / "configs" / "recipes" / "cxr_demo.yaml"
    ).read_text()
    assert sum(f.stat().st_size for f in MODEL.rglob("*") if f.is_file()) < 24 * 2**20


@pytest.mark.parametrize("film", sorted(BOXES))
def test_answers_on_the_example_films_are_pinned(predictor, film):
    golden = json.loads(GOLDEN.read_text())
    path = EXAMPLES / film
    assert (
        predictor.cxr_ask(path, "What is in the given box?", box=BOXES[film])
        == golden[f"{film}/box"]
    )
    assert predictor.cxr_report(path)["text"] == golden[f"{film}/report"]
    question = "Is there pleural effusion in this chest radiograph?"
    assert predictor.cxr_ask(path, question) == golden[f"{film}/presence"]


def test_it_serves_radiographs_only(predictor):
    assert predictor.modality == "cxr"
    with pytest.raises(ValueError, match="CT"):
        predictor.cxr_ask(np.zeros((8, 16, 16), np.float32), "What is here?")
