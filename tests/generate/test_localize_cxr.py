"""The radiograph localiser with a film segmenter: boxes, places, whole-film detections,
calibration and scoring (an oracle map scores perfectly), and the Predictor's finding boxes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from rgct.constants import WHOLE_SCAN
from rgct.data.cxr import box_location, location_words
from rgct.data.film_targets import FilmSegmentationDataset
from rgct.generate import localize_cxr as lc
from rgct.model.rgct_model import override_detections
from rgct.model.segmenter import Segmenter, data_meta, save_segmenter


def test_film_boxes_gives_each_component_its_box_score_and_place():
    probs = np.zeros((2, 40, 40), np.float32)
    probs[0, 30:34, 4:10] = 0.9  # right lower (the patient's right is the film's left)
    probs[0, 30:33, 30:36] = 0.7  # left lower
    probs[1, 5:7, 5:7] = 0.4  # below its threshold
    found = lc.film_boxes(probs, ("Pleural effusion", "Nodule/Mass"), {"Nodule/Mass": 0.5})
    assert set(found) == {"Pleural effusion"}
    boxes = found["Pleural effusion"]
    assert [d["box"] for d in boxes] == [(4, 30, 10, 34), (30, 30, 36, 33)]
    assert [d["score"] for d in boxes] == pytest.approx([0.9, 0.7])
    assert lc.boxes_places(boxes) == "right lower zone and left lower zone"
    assert lc.peak_place(probs[1]) == "right upper zone"
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        lc.film_boxes(probs[:1], ("a", "b"))


def test_detection_overrides_replace_only_the_given_labels():
    evidence = torch.tensor([[True, False, False], [False, False, True]])
    out = override_detections(evidence, [{"b": True, "a": False}, None], ("a", "b", "c"))
    assert out.tolist() == [[False, True, False], [False, False, True]]
    assert evidence[0, 0]  # not edited in place
    with pytest.raises(ValueError, match="'z'"):
        override_detections(evidence, [{"z": True}, None], ("a", "b", "c"))


def _constant(net: Segmenter, logits: list[float]) -> Segmenter:
    """The network made to answer the same logit per class everywhere."""
    with torch.no_grad():
        for q in net.parameters():
            q.zero_()
        net.unet.model[-1][1].conv.unit0.conv.bias.copy_(torch.tensor(logits))
    return net


class _Model:
    """The parts of a radiograph model the localiser reads."""

    label_names = ("Nodule/Mass", "Pleural effusion", "COPD")


def test_the_localiser_detects_and_places_with_its_film_segmenter(seed):
    net = Segmenter(classes=("Nodule/Mass", "Pleural effusion"), channels=(4, 8), spatial_dims=2)
    _constant(net, [5.0, -5.0])  # a nodule everywhere, no effusion
    loc = lc.ZoneLocalizer(_Model(), (net, {"finding_thresholds": {"Nodule/Mass": 0.5}}))
    image = torch.rand(1, 32, 32)
    assert loc.detected("f", WHOLE_SCAN, image) == {"Nodule/Mass": True, "Pleural effusion": False}
    assert loc.detected("f", "box", image) is None and loc.locations("f", "box", image) is None
    places = loc.locations("f", WHOLE_SCAN, image)
    assert set(places) == {"Nodule/Mass", "Pleural effusion"}  # COPD is no box class
    assert places["Nodule/Mass"] == location_words(*box_location((0, 0, 32, 32), (32, 32)))
    before = loc.identity()
    _constant(net, [4.0, -5.0])
    assert lc.ZoneLocalizer(_Model(), (net, {})).identity() != before
    assert lc.ZoneLocalizer(_Model()).identity() == "classifier zones"
    ct = Segmenter(classes=("a",), channels=(4, 8))
    with pytest.raises(ValueError, match="2D"):
        lc.ZoneLocalizer(_Model(), (ct, {}))


def test_an_oracle_map_calibrates_and_scores_perfectly(cxr_phantoms, tmp_path, monkeypatch):
    from rgct.config import DataConfig
    from rgct.data.cxr_samples import BOXED

    root = cxr_phantoms["vindr"]
    cfg = DataConfig(modality="cxr", input_shape=(48, 48))
    classes = tuple(BOXED["vindr-cxr"])
    truth = FilmSegmentationDataset(root, "test", cfg)
    by_image = {}
    for i in range(len(truth)):
        by_image[truth[i]["image"].numpy().tobytes()] = truth[i]["target"].numpy()
    assert any(t.any() for t in by_image.values())

    def oracle(segmenter, image):
        image = image if image.ndim == 3 else image[0]
        return by_image[image.numpy().tobytes()].astype(np.float32)

    monkeypatch.setattr(lc, "film_probabilities", oracle)
    net = Segmenter(classes=classes, channels=(4, 8), spatial_dims=2)
    meta = {"data": data_meta(cfg)}
    cal = lc.calibrate_film_segmenter(net, meta, root, "test")
    assert cal["films"] == len(truth) and set(cal["finding_thresholds"]) == set(classes)
    seen = [c for c, s in cal["scores"].items() if s["true"]]
    assert seen and all(cal["scores"][c]["f1"] == 1.0 for c in seen)
    scored = lc.score_film_segmenter(net, {**meta, **cal}, root, "test")
    assert scored["detection"]["f1"] == 1.0 and scored["detection"]["fp"] == 0
    assert scored["places"]["exact"] == 1.0 and scored["boxes"]["found"] == 1.0


def test_the_predictor_reports_the_boxes_of_its_film_segmenter(
    cxr_checkpoint, cxr_phantoms, tmp_path
):
    from rgct.inference import Predictor
    from rgct.inference_cxr import finding_boxes, load_film

    folder = tmp_path / "with_seg"
    shutil.copytree(cxr_checkpoint, folder)
    p = Predictor.from_checkpoint(cxr_checkpoint)
    classes = ("Nodule/Mass", "Pleural effusion")
    net = _constant(Segmenter(classes=classes, channels=(4, 8), spatial_dims=2), [5.0, -5.0])
    save_segmenter(folder, net, {"data": data_meta(p.cfg.data), "finding_thresholds": {}})
    film_path = next((cxr_phantoms["vindr"] / "test").glob("*.dicom"))
    with_seg = Predictor.from_checkpoint(folder)
    film = load_film(film_path)
    found = finding_boxes(with_seg, film)
    assert set(found) == {"Nodule/Mass"}
    (x0, y0, x1, y1) = found["Nodule/Mass"][0]["box"]
    assert 0 <= x0 < x1 <= film.shape[1] and 0 <= y0 < y1 <= film.shape[0]
    assert finding_boxes(p, film) == {}
    rep = with_seg.cxr_report(film_path)
    assert all(isinstance(s["boxes"], list) for s in rep["sentences"])


def test_a_where_question_presupposes_its_finding():
    from rgct.constants import CXR_PROMPTS
    from rgct.data.cxr_samples import asked_location

    where = CXR_PROMPTS["cxr_location"].format(finding="pleural effusion")
    assert asked_location(where) == "Pleural effusion"
    assert asked_location("Where is the nodule or mass located?") == "Nodule/Mass"
    assert asked_location("Is there pleural effusion in this chest radiograph?") is None
    assert asked_location("Where is the banana?") is None
    from rgct.data.cxr_samples import VOCABULARY

    class Vindr:
        label_names = VOCABULARY["vindr-cxr"]

    loc = lc.ZoneLocalizer(Vindr())  # no film segmenter: only the asked label is set
    image = torch.rand(1, 32, 32)
    assert loc.detected("f", WHOLE_SCAN, image, where) == {"Pleural effusion": True}
    assert loc.detected("f", "box", image, where) is None
    assert loc.detected("f", WHOLE_SCAN, image, "Is there COPD?") is None
    # COPD is a VinDr-CXR global label, no box class: never placed, never forced in
    assert loc.detected("f", WHOLE_SCAN, image, "Where is the COPD?") is None


def test_a_box_question_presupposes_a_finding_in_the_box():
    from rgct.constants import CXR_PROMPTS
    from rgct.model.region_classifier import exactly_one

    assert lc.presupposes_finding("box", CXR_PROMPTS["cxr_box"])
    assert not lc.presupposes_finding(WHOLE_SCAN, CXR_PROMPTS["cxr_box"])
    assert not lc.presupposes_finding("box", "Is there a nodule in the box?")
    present = torch.tensor(
        [[False, False, False], [False, True, False], [False, False, False], [True, True, False]]
    )
    logits = torch.tensor([[0.1, -2.0, 0.3], [3.0, 1.0, 0.0], [0.0, 5.0, 0.0], [2.5, 1.0, 0.0]])
    thresholds = [0.9, 0.5, 0.5]  # logits 2.20, 0, 0
    out = exactly_one(present, logits, [True, True, False, True], thresholds)
    # an empty flagged row takes its most probable label; a flagged row keeps its one
    # detection even when an undetected label is more probable; an unflagged row stays as it
    # was; of two detections the one further above its threshold wins (1.0 > 2.5 - 2.20)
    assert out.tolist() == [
        [False, False, True],
        [False, True, False],
        [False, False, False],
        [False, True, False],
    ]
    assert exactly_one(present, logits, [False] * 4).tolist() == present.tolist()
    with pytest.raises(ValueError, match="row flags"):
        exactly_one(present, logits, [True])
    with pytest.raises(ValueError, match="thresholds"):
        exactly_one(present, logits, [True] * 4, [0.5])
