"""The segmenter network, its checkpoint I/O, and the mask / finding post-processing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rgct.constants import LUNG_LOBES, REGIONS, SEGMENT_CLASSES, SEGMENT_FINDINGS
from rgct.model.seg_postprocess import (
    finding_probabilities,
    largest_components,
    localize_findings,
    predict_masks,
)
from rgct.model.segmenter import Segmenter, load_segmenter, save_segmenter

TINY = {"channels": (4, 8), "internal_scale": 0.5}


def test_class_list_is_regions_lobes_anatomy_findings():
    assert SEGMENT_CLASSES[:10] == REGIONS
    assert SEGMENT_CLASSES[10:15] == LUNG_LOBES
    assert SEGMENT_CLASSES[-len(SEGMENT_FINDINGS) :] == SEGMENT_FINDINGS
    assert len(set(SEGMENT_CLASSES)) == len(SEGMENT_CLASSES)


def test_phantoms_paint_exactly_the_finding_channels():
    from rgct.data.phantom_anatomy import LOBES
    from rgct.data.phantom_text import FINDING_LABELS

    assert set(FINDING_LABELS.values()) == set(SEGMENT_FINDINGS)
    assert LOBES == LUNG_LOBES


@pytest.mark.parametrize("refine", [0, 2])
def test_output_shape_follows_input(seed, refine):
    net = Segmenter(in_channels=2, refine_channels=refine, **TINY)
    out = net(torch.rand(2, 2, 12, 20, 28))
    assert out.shape == (2, len(SEGMENT_CLASSES), 12, 20, 28)
    assert net.internal_size((12, 20, 28)) == (6, 10, 14)
    assert Segmenter(channels=(4, 8, 16), internal_scale=0.5).internal_size((24, 48, 40)) == (
        12,
        24,
        20,
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"in_channels": 0}, "in_channels"),
        ({"classes": ("a", "a")}, "unique"),
        ({"classes": ()}, "non-empty"),
        ({"channels": (8,)}, "channels"),
        ({"internal_scale": 0.0}, "internal_scale"),
        ({"internal_scale": 1.5}, "internal_scale"),
        ({"refine_channels": -1}, "refine_channels"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Segmenter(**{**TINY, **kwargs})


def test_wrong_input_channels_are_refused():
    with pytest.raises(ValueError, match=r"\(B, 1, D, H, W\)"):
        Segmenter(**TINY)(torch.rand(1, 3, 8, 16, 16))


def test_save_and_load_give_the_same_outputs(tmp_path, seed):
    net = Segmenter(refine_channels=2, **TINY).eval()
    x = torch.rand(1, 1, 8, 16, 16)
    save_segmenter(tmp_path, net, {"steps": 3})
    loaded, meta = load_segmenter(tmp_path / "segmenter.safetensors")
    assert meta == {"steps": 3}
    assert loaded.config() == net.config()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))


def test_load_refuses_missing_files_and_mismatched_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="segmenter.safetensors"):
        load_segmenter(tmp_path)
    save_segmenter(tmp_path, Segmenter(**TINY))
    cfg = json.loads((tmp_path / "segmenter.json").read_text())
    cfg["config"]["channels"] = [4, 16]
    (tmp_path / "segmenter.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="do not fit"):
        load_segmenter(tmp_path)
    cfg["config"]["unknown"] = 1
    (tmp_path / "segmenter.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown segmenter settings"):
        load_segmenter(tmp_path)


# --- post-processing -----------------------------------------------------------------------------


def _logits(shape=(8, 16, 16)) -> torch.Tensor:
    return torch.full((len(SEGMENT_CLASSES), *shape), -8.0)


def test_largest_components_keeps_the_biggest():
    mask = np.zeros((8, 16, 16), bool)
    mask[1:4, 1:4, 1:4] = True  # 27 voxels
    mask[5:7, 10:12, 10:12] = True  # 8 voxels
    assert largest_components(mask, 1).sum() == 27
    assert largest_components(mask, 2).sum() == 35
    assert not largest_components(np.zeros((4, 4, 4), bool), 1).any()


def test_predict_masks_one_component_per_lobe_and_empty_stays_empty():
    logits = _logits()
    k_lobe = SEGMENT_CLASSES.index("right lung upper lobe")
    logits[k_lobe, 1:4, 1:4, 1:4] = 8.0
    logits[k_lobe, 6, 12, 12] = 8.0  # a stray voxel: not a second upper lobe
    k_bone = SEGMENT_CLASSES.index("bone")
    logits[k_bone, 1:3, 1:3, 1:3] = 8.0
    logits[k_bone, 5:7, 10:12, 10:12] = 8.0  # bone keeps every piece
    masks = predict_masks(logits)
    assert set(masks) == {c for c in SEGMENT_CLASSES if c not in SEGMENT_FINDINGS}
    assert masks["right lung upper lobe"].sum() == 27
    assert masks["bone"].sum() == 16
    assert masks["lung"].dtype == bool and not masks["lung"].any()  # reported, never filled


def test_predict_masks_resamples_to_the_volume_grid():
    logits = _logits()
    logits[SEGMENT_CLASSES.index("heart"), 2:6, 4:12, 4:12] = 8.0
    masks = predict_masks(logits[None], out_shape=(16, 32, 32), names=["heart"])
    assert masks["heart"].shape == (16, 32, 32)
    assert 0.8 < masks["heart"].sum() / (8 * 16 * 16) < 1.2
    with pytest.raises(ValueError, match="K = 30"):
        predict_masks(logits[:3])
    with pytest.raises(ValueError, match="unknown class"):
        predict_masks(logits, names=["spleen"])


def _lobes(shape):
    """Four lobes in quadrants of the front three quarters (y < 3/4 H): 'right' lobes at low x,
    upper lobes at high z; the middle lobe is left empty."""
    d, h, w = shape
    y = 3 * h // 4
    lobes = {name: np.zeros(shape, bool) for name in LUNG_LOBES}
    lobes["right lung upper lobe"][d // 2 :, :y, : w // 2] = True
    lobes["right lung lower lobe"][: d // 2, :y, : w // 2] = True
    lobes["left lung upper lobe"][d // 2 :, :y, w // 2 :] = True
    lobes["left lung lower lobe"][: d // 2, :y, w // 2 :] = True
    return lobes


def test_localize_findings_gives_lobe_side_box_and_mm():
    shape = (16, 32, 32)
    lobes = _lobes(shape)
    lung = np.logical_or.reduce(list(lobes.values()))
    prob = np.zeros(shape, np.float32)
    prob[10:13, 4:8, 2:5] = 0.9  # in the right upper lobe
    prob[2, 20, 20] = 0.9  # one voxel: noise (min_voxels)
    affine = np.diag([2.0, 1.5, 5.0, 1.0])
    affine[:3, 3] = [-10.0, -20.0, -30.0]
    found = localize_findings(
        {"Lung nodule": prob, "Emphysema": np.zeros(shape, np.float32)},
        lobe_masks=lobes,
        region_masks={"lung": lung},
        spacing_mm=(5.0, 1.5, 2.0),
        affine=affine,
    )
    assert len(found) == 1
    f = found[0]
    assert f["label"] == "Lung nodule" and f["region"] == "lung"
    assert f["lobes"] == ["right lung upper lobe"] and f["side"] == "right"
    assert f["box_voxel"] == [10, 4, 2, 13, 8, 5]
    assert f["center_voxel"] == [11, 5, 3] or f["center_voxel"] == [11, 6, 3]
    assert f["box_mm"]["size_mm"] == [15.0, 6.0, 6.0]
    # corner voxel (z, y, x) = (9.5, 3.5, 1.5) -> x = 2 * 1.5 - 10, y = 1.5 * 3.5 - 20, z = 5 * 9.5 - 30
    assert f["box_mm"]["min"] == [-7.0, -14.75, 17.5]
    assert f["box_mm"]["max"] == [-1.0, -8.75, 32.5]
    assert f["mask"].sum() == 36 and f["probability"] == pytest.approx(0.9)


def test_localize_findings_spanning_two_lobes_and_side_of_an_effusion():
    shape = (16, 32, 32)
    lobes = _lobes(shape)
    prob = np.zeros(shape, np.float32)
    prob[6:10, 10:14, 4:8] = 0.8  # half in the right upper, half in the right lower lobe
    eff = np.zeros(shape, np.float32)
    eff[2:5, 28:31, 24:30] = 0.95  # outside the lobes (effusions displace the lung), left side
    pleura = np.zeros(shape, bool)
    pleura[2:5, 28:31, 20:31] = True
    found = localize_findings(
        {"Consolidation": prob, "Pleural effusion": eff},
        lobe_masks=lobes,
        region_masks={"lung": np.logical_or.reduce(list(lobes.values())), "pleura": pleura},
        spacing_mm=(2.0, 2.0, 2.0),
    )
    by_label = {f["label"]: f for f in found}
    assert set(by_label["Consolidation"]["lobes"]) == {
        "right lung upper lobe",
        "right lung lower lobe",
    }
    assert by_label["Pleural effusion"]["lobes"] == []
    assert by_label["Pleural effusion"]["region"] == "pleura"
    assert by_label["Pleural effusion"]["side"] == "left"
    assert [f["label"] for f in found] == ["Pleural effusion", "Consolidation"]  # by probability


def test_finding_probabilities_keeps_only_finding_channels():
    probs = finding_probabilities(_logits(), out_shape=(4, 8, 8))
    assert list(probs) == list(SEGMENT_FINDINGS)
    assert probs["Lung nodule"].shape == (4, 8, 8) and probs["Lung nodule"].max() < 0.01


def test_a_parenchymal_finding_in_a_lobe_is_a_lung_finding_whatever_region_holds_it():
    """The predicted lung leaves out dense voxels: a nodule against the chest wall lies mostly
    in the predicted pleura, and is still reported (and placed) as a lung finding."""
    shape = (16, 32, 32)
    lobes = _lobes(shape)
    lung = np.logical_or.reduce(list(lobes.values()))
    pleura = np.zeros(shape, bool)
    pleura[10:13, 4:8, 3:5] = True  # most of the component below
    prob = np.zeros(shape, np.float32)
    prob[10:13, 4:8, 2:5] = 0.9
    regions = {"lung": lung & ~pleura, "pleura": pleura}
    lobe_masks = {k: v & ~pleura for k, v in lobes.items()}
    found = localize_findings(
        {"Lung nodule": prob, "Pleural effusion": prob}, lobe_masks, regions, (5.0, 1.5, 2.0)
    )
    where = {f["label"]: f["region"] for f in found}
    assert where == {"Lung nodule": "lung", "Pleural effusion": "pleura"}
