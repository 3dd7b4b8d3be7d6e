"""The chest-radiograph datasets' class names, and how rgct's phantom findings map onto them.

- VinDr-CXR: 22 local labels (boxes) and 6 global labels (image level, ``No finding`` among
  them), spelled as the release spells them (``annotations_*.csv``, ``image_labels_*.csv``).
- NIH ChestX-ray14: 14 labels plus ``No Finding`` (``Data_Entry_2017.csv``, ``|``-joined);
  ``BBox_List_2017.csv`` spells Infiltration ``Infiltrate``.
- :data:`PHANTOM_CXR`: phantom finding kind -> the class each dataset's readers would give it
  on a radiograph (``rgct synth --layout vindr-cxr|chestxray14``); None: the dataset has no
  class for it, the finding stays in the phantom's pixels and truth but gets no box or label.

Example::

    >>> PHANTOM_CXR["pleural_effusion"]
    CxrClasses(vindr='Pleural effusion', chestxray14='Effusion')
    >>> class_words("Nodule/Mass"), class_words("Pleural_Thickening")
    ('nodule or mass', 'pleural thickening')
"""

from __future__ import annotations

from dataclasses import dataclass

from rgct.data.phantom_text import FINDING_NAMES

VINDR_LOCAL = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture",
    "Consolidation", "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity",
    "Lung cavity", "Lung cyst", "Mediastinal shift", "Nodule/Mass", "Pleural effusion",
    "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "Rib fracture", "Other lesion",
)  # fmt: skip
"""VinDr-CXR's 22 local labels: the ``class_name`` of a box row."""

VINDR_GLOBAL = ("COPD", "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases", "No finding")
"""VinDr-CXR's 6 global labels (image level only)."""

VINDR_NO_FINDING = "No finding"
"""A box-file row of this class has no box: the reader saw nothing."""

VINDR_ALIASES = {"Other disease": "Other diseases"}
"""Other spellings found in copies of the release -> the name used here."""

CXR14_LABELS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
    "Hernia",
)  # fmt: skip
"""ChestX-ray14's 14 labels (``Finding Labels``)."""

CXR14_NO_FINDING = "No Finding"

CXR14_ALIASES = {"Infiltrate": "Infiltration"}
"""``BBox_List_2017.csv`` spellings -> the ``Data_Entry_2017.csv`` label."""

_WORDS = {
    "Nodule/Mass": "nodule or mass",
    "ILD": "interstitial lung disease",
    "Enlarged PA": "enlarged pulmonary artery",
    "COPD": "COPD",
    "Effusion": "pleural effusion",
    "Fibrosis": "pulmonary fibrosis",
    "Hernia": "hiatal hernia",
    "Other diseases": "other disease",
}


def class_words(name: str) -> str:
    """A class name as words for prompts and reports (``'Lung Opacity'`` -> ``'lung opacity'``)."""
    return _WORDS.get(name, name.replace("_", " ").lower())


def canonical_class(name: str, layout: str) -> str | None:
    """``name`` as the layout's vocabulary spells it (aliases resolved); None when unknown.

    Args:
        layout: 'vindr-cxr' or 'chestxray14'.
    """
    name = name.strip()
    if layout == "vindr-cxr":
        name = VINDR_ALIASES.get(name, name)
        return name if name in (*VINDR_LOCAL, *VINDR_GLOBAL) else None
    if layout == "chestxray14":
        name = CXR14_ALIASES.get(name, name)
        return name if name in (*CXR14_LABELS, CXR14_NO_FINDING) else None
    raise ValueError(f"layout must be 'vindr-cxr' or 'chestxray14', got {layout!r}")


@dataclass(frozen=True)
class CxrClasses:
    """What one phantom finding kind is called on a radiograph of each dataset (None: no class)."""

    vindr: str | None
    chestxray14: str | None

    def for_layout(self, layout: str) -> str | None:
        return self.vindr if layout == "vindr-cxr" else self.chestxray14


PHANTOM_CXR: dict[str, CxrClasses] = {
    "nodule": CxrClasses("Nodule/Mass", "Nodule"),  # phantom nodules are <= 30 mm: never "Mass"
    "ground_glass_opacity": CxrClasses("Lung Opacity", "Infiltration"),
    "consolidation": CxrClasses("Consolidation", "Consolidation"),
    "atelectasis": CxrClasses("Atelectasis", "Atelectasis"),
    "emphysema": CxrClasses("Emphysema", "Emphysema"),
    "bronchiectasis": CxrClasses("Other lesion", None),
    "pleural_effusion": CxrClasses("Pleural effusion", "Effusion"),
    "pericardial_effusion": CxrClasses("Other lesion", None),  # an enlarged cardiac silhouette
    "cardiomegaly": CxrClasses("Cardiomegaly", "Cardiomegaly"),
    "coronary_artery_wall_calcification": CxrClasses("Calcification", None),
    "lymphadenopathy": CxrClasses("Other lesion", None),
    "arterial_wall_calcification": CxrClasses("Calcification", None),
    "hiatal_hernia": CxrClasses("Other lesion", "Hernia"),
}
"""Phantom finding kind -> its VinDr-CXR local label and ChestX-ray14 label."""

PHANTOM_VINDR_GLOBAL = {"emphysema": "COPD"}
"""Phantom finding kind -> the VinDr-CXR global label it also sets (others set none)."""

assert set(PHANTOM_CXR) == set(FINDING_NAMES)
assert all(c.vindr in (None, *VINDR_LOCAL) for c in PHANTOM_CXR.values())
assert all(c.chestxray14 in (None, *CXR14_LABELS) for c in PHANTOM_CXR.values())
assert set(PHANTOM_VINDR_GLOBAL.values()) <= set(VINDR_GLOBAL)
