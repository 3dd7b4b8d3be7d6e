"""Where a radiograph model's detected findings are: the zone localiser.

The radiograph counterpart of :class:`rgct.generate.localize.Localizer` (the same
``locations(volume, region, image)`` call, so generation takes either): a
``model.evidence_locations`` radiograph model's detections line says where each finding is
("pleural effusion (right lower zone)"). In training the places come from the boxes
(:func:`rgct.data.cxr_samples.places_by_film`); at generation from this localiser: the
region classifier run under the nine zone masks of the film, each label placed in the zones
where it is probable (:func:`rgct.model.film_regions.zone_places`). Only whole-film rows get
places (a box row asks what the box holds), only labels a box can have are placed, and the
blind baseline gets none.

Example::

    localizer = build_zone_localizer(model, cfg)       # None unless model.evidence_locations
    localizer.locations(film_name, "whole scan", image)  # {'Pleural effusion': 'right lower zone', ...}
"""

from __future__ import annotations

from typing import Any

import torch

from rgct.constants import WHOLE_SCAN
from rgct.data.cxr_samples import placeable_labels
from rgct.model.film_regions import zone_places, zone_probabilities


class ZoneLocalizer:
    """Places of a radiograph model's labels from its classifier under the zone masks (the
    last film's places are kept: generation groups the rows of one film)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.placeable = placeable_labels(model.label_names)
        self._last: tuple[str, dict[str, str]] | None = None

    def film_places(self, image: torch.Tensor) -> dict[str, str]:
        """{label: places} of one film's model input (C, H, W) or (1, C, H, W)."""
        image = image if image.ndim == 4 else image[None]
        probs = zone_probabilities(self.model, image)
        places = zone_places(probs, self.model.label_names)
        return {label: places[label] for label in self.placeable}

    def locations(self, volume: str, region: str, image: torch.Tensor) -> dict[str, str] | None:
        """{label: places} for a whole-film row of ``volume``; None for a box row."""
        if region != WHOLE_SCAN:
            return None
        if self._last is None or self._last[0] != volume:
            self._last = (volume, self.film_places(image))
        return self._last[1]


def build_zone_localizer(model: Any, cfg: Any) -> ZoneLocalizer | None:
    """The localiser a ``model.evidence_locations`` radiograph model needs (else None)."""
    if not cfg.model.evidence_locations:
        return None
    if cfg.data.modality != "cxr":
        raise ValueError("the zone localiser places findings on chest radiographs only")
    return ZoneLocalizer(model)
