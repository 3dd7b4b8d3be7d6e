"""Film segmenter targets and the visibility of boxed findings (rgct.data.film_targets)."""

from __future__ import annotations

import pytest
import torch

from rgct.config import DataConfig
from rgct.data.cxr import box_mask
from rgct.data.film_targets import FilmSegmentationDataset, box_visibility, film_classes
from rgct.data.io import DataError

CFG = DataConfig(modality="cxr", input_shape=(32, 32))


def test_a_painted_finding_stands_out_and_a_hidden_one_does_not(cxr_phantoms):
    ds = FilmSegmentationDataset(cxr_phantoms["vindr"], "train", CFG)
    plain = torch.full((1, 32, 32), 0.5)
    for i in range(len(ds)):  # every film the same: only what is painted differs
        ds._items[i] = {**ds[i], "image": plain.clone()}
    i = next(i for i, n in enumerate(ds.names) if ds.films[n].boxes)
    film = ds.films[ds.names[i]]
    box = film.boxes[0]
    s = 32 / film.shape[0]
    inside = box_mask((box.x_min * s, box.y_min * s, box.x_max * s, box.y_max * s), (32, 32))
    for j in range(len(ds)):  # anatomy noise elsewhere, the finding on film i
        ds._items[j]["image"][0] += 0.01 * torch.randn(
            32, 32, generator=torch.Generator().manual_seed(j)
        )
    hidden = box_visibility(ds)[box.class_name]
    ds._items[i]["image"][0][torch.from_numpy(inside)] += 0.3
    seen = box_visibility(ds)
    assert abs(hidden["mean_z"]) < 2 and seen[box.class_name]["mean_z"] > 2
    assert seen[box.class_name]["share_above_2"] > hidden["share_above_2"]
    assert set(seen) <= set(film_classes("vindr-cxr"))


def test_bad_inputs_are_refused(cxr_phantoms, tmp_path):
    with pytest.raises(DataError, match="2D input_shape"):
        FilmSegmentationDataset(cxr_phantoms["vindr"], "train", DataConfig())
    with pytest.raises(DataError, match="no radiograph boxes"):
        film_classes("radgenome")
    ds = FilmSegmentationDataset(cxr_phantoms["vindr"], "train", CFG, max_films=2)
    with pytest.raises(DataError, match="at least 3 films"):
        box_visibility(ds)
