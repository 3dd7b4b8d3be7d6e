"""The radiograph pipeline (``data.modality: cxr``): radiograph and box mask resized together,
the deterministic part cached (cold and warm reads equal), 2D augmentation, radiograph folders as
training sources."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rgct.config import DataConfig
from rgct.data.compact import expand_image, expand_mask
from rgct.data.cxr import Radiograph, box_mask, mask_box
from rgct.data.cxr_samples import (
    CXR_SPLIT_ALIASES,
    findings_report,
    layout_samples,
    read_finding_sentence,
)
from rgct.data.cxr_transforms import build_radiograph_transforms, preprocess_radiograph
from rgct.data.io import DataError
from rgct.data.sources import radiograph_sources
from rgct.data.transforms import TransformCache, build_random_transforms


def cxr_cfg(root=None, **kw) -> DataConfig:
    return DataConfig(
        root=None if root is None else str(root), modality="cxr", input_shape=(64, 64), **kw
    )


def test_box_mask_and_image_are_resized_together():
    film = Radiograph(np.zeros((128, 96), np.float32), None, "film")
    film.array[32:64, 48:72] = 1.0  # a bright block
    mask = box_mask((48, 32, 72, 64), film.shape)
    image, masks = preprocess_radiograph(film, {"box": mask}, cxr_cfg())
    assert image.shape == (1, 64, 64) and masks["box"].shape == (1, 64, 64)
    # the mask lands where the block lands: rows 16..32 of 64, columns 32..48 of 64
    inside = masks["box"][0] > 0.5
    assert mask_box(inside.numpy()) == (32, 16, 48, 32)
    assert float(image[0][inside].mean()) > 0.99 and float(image[0][~inside].max()) < 0.01
    with pytest.raises(DataError, match="does not fit"):
        preprocess_radiograph(film, {"box": np.ones((10, 10), bool)}, cxr_cfg())


def test_mask_box_inverts_box_mask():
    assert mask_box(box_mask((3, 5, 9, 12), (20, 20))) == (3, 5, 9, 12)
    with pytest.raises(ValueError, match="empty"):
        mask_box(np.zeros((4, 4), bool))


def test_cache_cold_and_warm_reads_agree(cxr_phantoms, tmp_path):
    root = cxr_phantoms["vindr"]
    tables, problems = layout_samples(root, "vindr-cxr", "train", ["cxr_box"])
    assert not [p for p in problems if p.severity == "error"]
    sample = tables["cxr_box"][0]
    cache = TransformCache(cxr_cfg(root), tmp_path / "cache")
    cold_image = cache.compact_image(sample.image_path)
    cold_mask = cache.compact_mask(sample.mask_path, sample.image_path)
    warm = TransformCache(cxr_cfg(root), tmp_path / "cache")
    assert torch.equal(warm.compact_image(sample.image_path), cold_image)
    assert torch.equal(warm.compact_mask(sample.mask_path, sample.image_path), cold_mask)
    assert warm.hits == 2 and warm.misses == 0
    assert cold_image.shape == (1, 64, 64) and cold_mask.shape == (1, 64, 64)
    # the same pipeline as in memory, within the cache's uint16 tolerance
    det = build_radiograph_transforms(cxr_cfg(root))
    fresh = det({"image": sample.image_path, "mask": sample.mask_path})
    assert torch.allclose(expand_image(cold_image), fresh["image"], atol=1e-5)
    assert torch.equal(expand_mask(cold_mask), fresh["mask"])
    assert fresh["mask"].sum() > 0


def test_2d_augmentation_moves_image_and_mask_together(seed):
    cfg = cxr_cfg()
    image = torch.zeros(1, 64, 64)
    image[0, 20:40, 10:30] = 1.0
    mask = (image > 0.5).float()
    rand = build_random_transforms(cfg)
    rand.set_random_state(seed=3)
    out = rand({"image": image, "mask": mask})
    assert out["image"].shape == (1, 64, 64) and out["mask"].shape == (1, 64, 64)
    overlap = (out["image"][out["mask"] > 0.5] > 0.5).float().mean()
    assert overlap > 0.9


def test_radiograph_folder_becomes_its_one_source(cxr_phantoms, phantom_root):
    cfg = radiograph_sources(cxr_cfg(cxr_phantoms["nih"]))
    assert [(s.layout, s.root) for s in cfg.sources] == [("chestxray14", str(cxr_phantoms["nih"]))]
    with pytest.raises(
        DataError, match=r"radgenome folder \(CT volumes\) but data.modality is 'cxr'"
    ):
        radiograph_sources(cxr_cfg(phantom_root))
    from rgct.data.sources import check_root_modality

    ct = dataclasses.replace(DataConfig(), root=str(cxr_phantoms["vindr"]))
    with pytest.raises(
        DataError, match=r"vindr-cxr folder \(chest radiographs\) but data.modality is 'ct'"
    ):
        check_root_modality(ct)


def test_valid_split_is_the_release_test_split(cxr_phantoms):
    assert CXR_SPLIT_ALIASES["valid"] == "test"
    a, _ = layout_samples(cxr_phantoms["vindr"], "vindr-cxr", "valid", ["cxr_labels"])
    b, _ = layout_samples(cxr_phantoms["vindr"], "vindr-cxr", "test", ["cxr_labels"])
    assert [s.volume for s in a["cxr_labels"]] == [s.volume for s in b["cxr_labels"]]
    with pytest.raises(ValueError, match="unknown radiograph split"):
        layout_samples(cxr_phantoms["vindr"], "vindr-cxr", "dev", ["cxr_labels"])


def test_report_sentences_read_back():
    from rgct.data.cxr import Box

    boxes = [Box("Pleural effusion", 5, 80, 40, 95), Box("Nodule/Mass", 70, 10, 80, 20)]
    text = findings_report(boxes, ["Pleural effusion", "Nodule/Mass", "COPD"], (100, 100))
    read = [read_finding_sentence(s) for s in text.split(". ")]
    assert read == [
        {"label": "Pleural effusion", "side": "right", "zone": "lower"},
        {"label": "Nodule/Mass", "side": "left", "zone": "upper"},
        {"label": "COPD", "side": None, "zone": None},
    ]
    assert read_finding_sentence("No finding.") == {"label": None, "side": None, "zone": None}
