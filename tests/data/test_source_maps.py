"""The RAD-ChestCT and DeepLesion mappings: every phantom finding survives the round trip."""

from __future__ import annotations

import pytest

from rgct.constants import CT_RATE_LABELS, OTHERS, REGIONS
from rgct.data.phantom_text import FINDING_LABELS, FINDING_REGIONS
from rgct.data.source_maps import (
    DEEPLESION_TYPES,
    LESION_REGIONS,
    RADCHEST_LOCATIONS,
    HeaderError,
    lesion_region_label,
    lesion_type_from_text,
    map_radchest_pair,
    parse_radchest_column,
)
from rgct.data.synth_layouts import PHANTOM_SARLE, sarle_pairs


@pytest.mark.parametrize("kind", sorted(PHANTOM_SARLE))
def test_every_phantom_finding_maps_back_to_its_region_and_label(kind: str) -> None:
    finding = {"kind": kind, "lobe": None, "side": None}
    if FINDING_REGIONS[kind] in ("lung", "pleura"):
        finding.update(
            side="left", lobe="left lung lower lobe" if kind != "pleural_effusion" else None
        )
    mapped = {map_radchest_pair(a, loc) for a, loc in sarle_pairs(finding)}
    assert {(m.region, m.label) for m in mapped} == {(FINDING_REGIONS[kind], FINDING_LABELS[kind])}


def test_lobes_and_lingula() -> None:
    assert (
        map_radchest_pair("nodule", "right_mid").anatomy
        == "lung/lung/right lung/right lung middle lobe"
    )
    assert (
        map_radchest_pair("nodule", "left_mid").anatomy
        == "lung/lung/left lung/left lung upper lobe"
    )
    assert map_radchest_pair("nodule", "right") is None  # relative word, no region


def test_labels_hold_only_where_they_correspond() -> None:
    liver = map_radchest_pair("nodule", "liver")
    assert (liver.region, liver.label, liver.ct_rate) == ("abdomen", "nodule", False)
    assert map_radchest_pair("calcification", "aorta").label == "Arterial wall calcification"
    assert map_radchest_pair("calcification", "heart").label == "calcification"
    assert map_radchest_pair("pneumothorax", "right_lung").region == "pleura"
    assert map_radchest_pair("stent", "aorta").label == "Medical material"
    assert map_radchest_pair("tree_in_bud", "lung").words == "tree in bud"


def test_every_location_and_type_is_a_region() -> None:
    assert len(RADCHEST_LOCATIONS) == 52
    for place in RADCHEST_LOCATIONS.values():
        assert place is None or place[0] in (*REGIONS, OTHERS)
    for t in DEEPLESION_TYPES.values():
        assert t.region in (*REGIONS, OTHERS)
    assert all(map_radchest_pair("nodule", "lung").label in CT_RATE_LABELS for _ in range(1))


@pytest.mark.parametrize(
    "column", ["nodule", "nodule*", "*lung", "nodule*lung*left", "nodule*moon"]
)
def test_malformed_headers_raise(column: str) -> None:
    with pytest.raises(HeaderError, match="column"):
        parse_radchest_column(column)


def test_lesion_type_from_text() -> None:
    assert lesion_type_from_text("A lung lesion of 12 x 8 mm.") == 5
    assert lesion_type_from_text("A mediastinal lesion.") == 3
    assert lesion_type_from_text("Nothing to see.") is None


def test_lesion_regions_and_their_labels() -> None:
    assert set(LESION_REGIONS) == {"bone", "abdomen", "mediastinum", "lung"}  # no 'others'
    assert lesion_region_label("lung") == "Lung nodule"
    assert lesion_region_label("mediastinum") == "Lymphadenopathy"
    assert lesion_region_label("abdomen") is None  # abdomen, liver, kidney: no CT-RATE label
    assert lesion_region_label("pleura") is None and lesion_region_label(None) is None
