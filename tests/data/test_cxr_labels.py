"""Radiograph samples carry the region classifier's truth: each row's labels over the folder's
classes, and the places of each boxed class (what ``model.evidence_locations`` trains with)."""

from __future__ import annotations

import numpy as np
import pytest

from rgct.config import DataConfig
from rgct.data.cxr_samples import (
    BOX_REGION,
    VOCABULARY,
    layout_samples,
    load_films,
    places_by_film,
)
from rgct.data.sample_table import TEXT_FIELDS, SampleTable
from rgct.data.sources import radiograph_labels


@pytest.mark.parametrize(("key", "layout"), [("vindr", "vindr-cxr"), ("nih", "chestxray14")])
def test_rows_carry_labels_over_the_folder_classes(cxr_phantoms, key, layout):
    root = cxr_phantoms[key]
    tables, _ = layout_samples(root, layout, "train", ["cxr_box", "cxr_labels", "cxr_location"])
    films = load_films(root, layout, "train")
    vocab = VOCABULARY[layout]
    assert radiograph_labels(DataConfig(root=str(root), modality="cxr", input_shape=(64, 64))) == (
        tuple(vocab)
    )
    boxes = tables["cxr_box"]
    assert len(boxes) and boxes.labels.shape[1] == len(vocab) and boxes.has_labels.all()
    for i in range(len(boxes)):
        s = boxes[i]
        assert s.region == BOX_REGION and s.labels[vocab.index(s.anatomy)] == 1
    whole = tables["cxr_labels"]
    for i in range(len(whole)):
        s = whole[i]
        film = films[s.volume]
        assert s.labels == film.label_vector(layout)
        assert {b.class_name for b in film.boxes} <= {vocab[j] for j in np.flatnonzero(s.labels)}
    # the places of each boxed class are the location answers
    places = places_by_film(root, layout, ["train"])
    located = tables["cxr_location"]
    assert len(located)
    for i in range(len(located)):
        s = located[i]
        assert s.answer.rstrip(".") in places[s.volume].values()


def test_label_width_follows_the_rows_and_mixes_are_refused():
    cols = {name: ["x"] for name in TEXT_FIELDS}
    assert SampleTable.from_columns(cols, [[0, 1, 0]]).labels.shape == (1, 3)
    assert SampleTable.from_columns(cols, [None]).labels.shape == (1, 18)
    assert SampleTable.from_columns(cols, [None], num_labels=5).labels.shape == (1, 5)
    with pytest.raises(ValueError, match="different lengths"):
        SampleTable.from_columns({n: ["x", "y"] for n in TEXT_FIELDS}, [[0, 1], [1]])
    with pytest.raises(ValueError, match="different label vocabularies"):
        SampleTable.concat(
            [SampleTable.from_columns(cols, [[0, 1]]), SampleTable.from_columns(cols, [[1]])]
        )
