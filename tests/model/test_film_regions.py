"""A radiograph model's region classifier: its label vocabulary (``model.labels``), the film
statistics head, the zone masks and places, and the detections line with places."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rgct.config import ConfigError, load_config
from rgct.constants import CT_RATE_LABELS, EVIDENCE_PREFIX
from rgct.data.cxr import PLACES, Box, box_location, location_words, zone_masks
from rgct.data.cxr_samples import VOCABULARY, placeable_labels
from rgct.model import region_classifier as rc
from rgct.model.builder import build_model
from rgct.model.film_regions import zone_places, zone_truth
from rgct.model.film_stats import GEOMETRY, FilmRegionStats, mask_geometry
from rgct.model.pooling import RegionPooler

REPO = Path(__file__).resolve().parents[2]
CXR_TINY = REPO / "configs" / "model" / "cxr_tiny.yaml"
VINDR = list(VOCABULARY["vindr-cxr"])


def test_labels_default_to_ct_rate_and_are_checked():
    tiny = load_config([REPO / "configs" / "model" / "tiny.yaml"])
    assert tiny.model.labels is None and tiny.model.label_names == CT_RATE_LABELS
    cxr = load_config([CXR_TINY], [f"model.labels={VINDR}"])
    assert cxr.model.label_names == tuple(VINDR)
    with pytest.raises(ConfigError, match="18 CT-RATE labels"):
        load_config([REPO / "configs" / "model" / "tiny.yaml"], ["model.labels=[a, b]"])
    with pytest.raises(ConfigError, match="distinct"):
        load_config([CXR_TINY], ["model.labels=[a, a]"])
    with pytest.raises(ConfigError, match="must be 2 probabilities"):
        load_config([CXR_TINY], ["model.labels=[a, b]", "model.evidence_thresholds=[0.5]"])


def test_a_radiograph_model_takes_its_labels_everywhere(rgct_cache, seed):
    cfg = load_config([CXR_TINY], [f"model.labels={VINDR}", "model.region_stats=true"])
    model = build_model(cfg)
    assert model.num_labels == len(VINDR) and model.label_names == tuple(VINDR)
    assert model.evidence.in_features == len(VINDR)
    image, mask = torch.rand(2, 1, 64, 64), torch.zeros(2, 1, 64, 64)
    mask[:, :, 10:30, 5:20] = 1
    _, logits = model.visual_tokens(model.encode_image(image), mask, image)
    assert logits.shape == (2, len(VINDR))
    assert model.label_words[VINDR.index("Nodule/Mass")] == "nodule or mass"


def test_ct_detections_line_is_unchanged():
    row = torch.zeros(len(CT_RATE_LABELS), dtype=torch.bool)
    row[CT_RATE_LABELS.index("Lung nodule")] = True
    row[CT_RATE_LABELS.index("Atelectasis")] = True
    line = rc.evidence_line(row, {"Lung nodule": "right lung upper lobe"})
    assert line == f"{EVIDENCE_PREFIX}atelectasis, lung nodule (right lung upper lobe)."
    assert rc.evidence_line(torch.zeros(18, dtype=torch.bool)) == f"{EVIDENCE_PREFIX}none."


def test_radiograph_detections_line_names_classes_and_places(rgct_cache, seed):
    cfg = load_config(
        [CXR_TINY],
        [f"model.labels={VINDR}", "model.evidence_prompt=true", "model.evidence_locations=true"],
    )
    model = build_model(cfg)
    labels = torch.zeros(1, len(VINDR))
    labels[0, VINDR.index("Nodule/Mass")] = 1
    labels[0, VINDR.index("COPD")] = 1
    where = [{"Nodule/Mass": "right upper zone and left lower zone"}]
    enc = model.tokenize(["What is in this radiograph?"], ["x"], labels, None, where)
    text = model.tokenizer.decode(enc["input_ids"][0])
    assert "nodule or mass (right upper zone and left lower zone), COPD." in text
    with pytest.raises(ValueError, match="27 labels"):
        rc.evidence_line([True] * 18, labels=tuple(VINDR))


def test_film_statistics_count_the_box_and_measure_its_geometry():
    stats = FilmRegionStats()
    image = torch.full((1, 1, 32, 32), 0.22)
    image[0, 0, 4:8, 20:24] = 0.92  # a bright spot
    mask = torch.zeros(2, 1, 32, 32)
    mask[0, 0, 4:8, 20:24] = 1  # the spot's box
    mask[1, 0, 16:32, 0:16] = 1  # a dark lower-left quarter
    f = stats(image, mask)
    assert f.shape == (2, stats.num_features)
    geometry = f[:, -len(GEOMETRY) :]
    assert torch.allclose(geometry, mask_geometry(mask))
    g = dict(zip(GEOMETRY, geometry[0].tolist()))
    assert g["left"] == 20 / 32 and g["top"] == 4 / 32 and g["width"] == 4 / 32
    assert g["area"] == 16 / 1024 and g["fill"] == 1.0
    value = f[:, : stats.bins["value"]] ** 2  # fraction of the region in each value bin
    assert value[0, -2] == 1.0 and value[1, 4] == 1.0  # 0.92 and 0.22
    with pytest.raises(ValueError, match="mask is empty"):
        stats(image, torch.zeros(1, 1, 32, 32))
    pool = RegionPooler(8, num_global_tokens=4, num_labels=3, region_stats=(0, 1), spatial_dims=2)
    assert isinstance(pool.stats, FilmRegionStats)
    assert pool(torch.randn(2, 8, 4, 4), mask, image)[2].shape == (2, 3)


@pytest.mark.parametrize("shape", [(128, 128), (300, 240)])
def test_zone_masks_hold_the_centre_of_every_box_named_by_them(shape):
    names, masks = zone_masks(shape)
    assert names == list(PLACES) and masks.shape == (9, *shape)
    rng = np.random.default_rng(0)
    h, w = shape
    for _ in range(200):
        x0, y0 = rng.uniform(0, w - 4), rng.uniform(0, h - 4)
        box = (x0, y0, rng.uniform(x0 + 2, w), rng.uniform(y0 + 2, h))
        place = location_words(*box_location(box, shape))
        row, col = int((box[1] + box[3]) / 2), int((box[0] + box[2]) / 2)
        assert masks[names.index(place), row, col], (box, place)


def test_zone_truth_and_places():
    labels = ("Pleural effusion", "Cardiomegaly", "COPD")
    boxes = [
        Box("Pleural effusion", 10, 90, 40, 110),
        Box("Pleural effusion", 90, 90, 120, 110),
        Box("Cardiomegaly", 40, 60, 90, 100),
    ]
    names, truth = zone_truth(boxes, (128, 128), labels)
    placed = {labels[j]: {names[z] for z in np.flatnonzero(truth[:, j])} for j in range(3)}
    assert placed == {
        "Pleural effusion": {"right lower zone", "left lower zone"},
        "Cardiomegaly": {"central lower zone"},
        "COPD": set(),
    }
    probs = np.where(truth, 0.9, 0.1)
    probs[4, 2] = 0.3  # COPD: nowhere probable, so its most probable zone
    said = zone_places(probs, labels)
    assert said["Pleural effusion"] == "right lower zone and left lower zone"
    assert said["Cardiomegaly"] == "central lower zone" and said["COPD"] == PLACES[4]
    with pytest.raises(ValueError, match=r"\(9, 3\)"):
        zone_places(probs[:8], labels)


def test_only_boxable_classes_are_placed():
    assert "COPD" not in placeable_labels(VOCABULARY["vindr-cxr"])
    assert "Nodule/Mass" in placeable_labels(VOCABULARY["vindr-cxr"])
    assert placeable_labels(VOCABULARY["chestxray14"]) == VOCABULARY["chestxray14"]
