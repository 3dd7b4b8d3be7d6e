"""How the other CT datasets' annotations map onto rgct's regions, lobes and labels: one place.

RAD-ChestCT (Duke) labels each CT with one 0/1 column per ``abnormality*location`` pair, the
vocabulary of the SARLE labeler (``src/vocab/vocabulary_ct.py`` and
``vocabulary_locations.py`` of rachellea/sarle-labeler). DeepLesion (NIH) gives each lesion a
coarse type 1-8 (or -1 unknown). This module says what those mean in rgct's vocabulary:

- :data:`RADCHEST_LOCATIONS`: SARLE location -> (RadGenome region, anatomy path). Lobes map to
  the lobe anatomy masks (the lingula, ``left_mid``, to the left upper lobe it belongs to);
  relative words (``right``, ``anterior``, ``subpleural`` ...) name no region (None).
- :data:`RADCHEST_LABELS`: SARLE abnormality -> CT-RATE label where they correspond, with the
  regions where the correspondence holds (a ``nodule`` is a "Lung nodule" only in the lung)
  and a region override (pleural findings carry lung locations in SARLE but belong to the
  pleura region). Abnormalities without a CT-RATE label keep their own name.
- :data:`DEEPLESION_TYPES`: coarse lesion type -> (type name, words for the lesion, region);
  :data:`LESION_REGIONS` and :func:`lesion_region_label`: what a region found at a lesion's box
  says of it.

The chest-radiograph datasets (VinDr-CXR, ChestX-ray14) and the phantom findings' classes on a
radiograph: :mod:`rgct.data.cxr_maps`.

Example::

    >>> map_radchest_pair("nodule", "right_upper")
    MappedLabel(region='lung', anatomy='lung/lung/right lung/right lung upper lobe', label='Lung nodule', ct_rate=True)
    >>> map_radchest_pair("calcification", "aorta").label
    'Arterial wall calcification'
    >>> map_radchest_pair("nodule", "liver").label
    'nodule'
"""

from __future__ import annotations

from dataclasses import dataclass

from rgct.constants import CT_RATE_LABELS, OTHERS, REGIONS

# --- RAD-ChestCT ----------------------------------------------------------------------------------


def _lobe(side: str, lobe: str) -> tuple[str, str]:
    return "lung", f"lung/lung/{side} lung/{side} lung {lobe} lobe"


RADCHEST_LOCATIONS: dict[str, tuple[str, str | None] | None] = {
    # lungs and airways
    "right_upper": _lobe("right", "upper"),
    "right_mid": _lobe("right", "middle"),
    "right_lower": _lobe("right", "lower"),
    "left_upper": _lobe("left", "upper"),
    "left_mid": _lobe("left", "upper"),  # the lingula belongs to the left upper lobe
    "left_lower": _lobe("left", "lower"),
    "right_lung": ("lung", "lung/lung/right lung"),
    "left_lung": ("lung", "lung/lung/left lung"),
    "lung": ("lung", None),
    "airways": ("trachea and bronchie", None),
    # heart
    "heart": ("heart", None),
    "mitral_valve": ("heart", None),
    "aortic_valve": ("heart", None),
    "tricuspid_valve": ("heart", None),
    "pulmonary_valve": ("heart", None),
    # great vessels (RadGenome puts them under the mediastinum)
    "aorta": ("mediastinum", "mediastinum/mediastinum/aorta"),
    "svc": ("mediastinum", "mediastinum/mediastinum/superior vena cava"),
    "ivc": ("mediastinum", None),
    "pulmonary_artery": ("mediastinum", "mediastinum/mediastinum/pulmonary artery"),
    "pulmonary_vein": ("mediastinum", None),
    # relative words: no region of their own
    "right": None,
    "left": None,
    "anterior": None,
    "posterior": None,
    "superior": None,
    "inferior": None,
    "medial": None,
    "lateral": None,
    "interstitial": None,
    "subpleural": None,
    "centrilobular": None,
    # other structures
    "thyroid": ("thyroid", None),
    "breast": ("breast", None),
    "axilla": (OTHERS, None),
    "chest_wall": (OTHERS, None),
    "rib": ("bone", None),
    "spine": ("bone", None),
    "bone": ("bone", None),
    "mediastinum": ("mediastinum", None),
    "diaphragm": ("abdomen", None),
    "hilum": ("mediastinum", None),
    "abdomen": ("abdomen", None),
    "esophagus": ("esophagus", None),
    "stomach": ("abdomen", "abdomen/abdomen/stomach"),
    "intestine": ("abdomen", None),
    "liver": ("abdomen", "abdomen/abdomen/liver"),
    "gallbladder": ("abdomen", "abdomen/abdomen/gallbladder"),
    "kidney": ("abdomen", "abdomen/abdomen/kidney"),
    "adrenal_gland": ("abdomen", None),
    "spleen": ("abdomen", "abdomen/abdomen/spleen"),
    "pancreas": ("abdomen", None),
    "other": (OTHERS, None),
}
"""The 52 SARLE locations -> (region, anatomy path or None), or None for relative words."""

_LUNG_PATHOLOGY = (
    "bandlike_or_linear", "groundglass", "honeycombing", "reticulation", "tree_in_bud",
    "airspace_disease", "air_trapping", "aspiration", "atelectasis", "bronchial_wall_thickening",
    "bronchiectasis", "bronchiolectasis", "bronchiolitis", "bronchitis", "emphysema",
    "hemothorax", "interstitial_lung_disease", "lung_resection", "mucous_plugging",
    "pleural_effusion", "pleural_thickening", "pneumonia", "pneumonitis", "pneumothorax",
    "pulmonary_edema", "septal_thickening", "tuberculosis",
)  # fmt: skip
_HEART_PATHOLOGY = (
    "cabg", "cardiomegaly", "coronary_artery_disease", "heart_failure", "heart_valve_replacement",
    "pacemaker_or_defib", "pericardial_effusion", "pericardial_thickening", "sternotomy",
)  # fmt: skip
_GENERIC_PATHOLOGY = (
    "arthritis", "atherosclerosis", "aneurysm", "breast_implant", "breast_surgery",
    "calcification", "cancer", "catheter_or_port", "cavitation", "clip", "congestion",
    "consolidation", "cyst", "debris", "deformity", "density", "dilation_or_ectasia",
    "distention", "fibrosis", "fracture", "granuloma", "hardware", "hernia", "infection",
    "infiltrate", "inflammation", "lesion", "lucency", "lymphadenopathy", "mass", "nodule",
    "nodulegr1cm", "opacity", "plaque", "postsurgical", "scarring", "scattered_calc",
    "scattered_nod", "secretion", "soft_tissue", "staple", "stent", "suture", "transplant",
    "chest_tube", "tracheal_tube", "gi_tube",
)  # fmt: skip
RADCHEST_ABNORMALITIES: tuple[str, ...] = _LUNG_PATHOLOGY + _HEART_PATHOLOGY + _GENERIC_PATHOLOGY
"""SARLE's abnormality names. A label column with another name is read and kept under that name
(with a warning from ``rgct data check``); only an unknown *location* is an error."""

_LUNG = ("lung",)
_VESSELS = ("mediastinum",)
_DEVICES = (
    "catheter_or_port", "pacemaker_or_defib", "stent", "chest_tube", "tracheal_tube", "gi_tube",
    "clip", "staple", "suture", "hardware", "heart_valve_replacement",
)  # fmt: skip


@dataclass(frozen=True)
class LabelRule:
    """What one SARLE abnormality becomes.

    Attributes:
        label: the CT-RATE label it corresponds to.
        regions: regions (after ``region``) where it does; None: everywhere.
        region: region the finding belongs to whatever its SARLE location (pleural findings).
    """

    label: str
    regions: tuple[str, ...] | None = None
    region: str | None = None


RADCHEST_LABELS: dict[str, LabelRule] = {
    "nodule": LabelRule("Lung nodule", _LUNG),
    "nodulegr1cm": LabelRule("Lung nodule", _LUNG),
    "scattered_nod": LabelRule("Lung nodule", _LUNG),
    "opacity": LabelRule("Lung opacity", _LUNG),
    "groundglass": LabelRule("Lung opacity", _LUNG),
    "consolidation": LabelRule("Consolidation", _LUNG),
    "atelectasis": LabelRule("Atelectasis", _LUNG),
    "emphysema": LabelRule("Emphysema", _LUNG),
    "bronchiectasis": LabelRule("Bronchiectasis", _LUNG),
    "fibrosis": LabelRule("Pulmonary fibrotic sequela", _LUNG),
    "scarring": LabelRule("Pulmonary fibrotic sequela", _LUNG),
    "air_trapping": LabelRule("Mosaic attenuation pattern", _LUNG),
    "bronchial_wall_thickening": LabelRule("Peribronchial thickening"),
    "septal_thickening": LabelRule("Interlobular septal thickening", _LUNG),
    "pleural_effusion": LabelRule("Pleural effusion", region="pleura"),
    "pericardial_effusion": LabelRule("Pericardial effusion", region="heart"),
    "cardiomegaly": LabelRule("Cardiomegaly", region="heart"),
    "coronary_artery_disease": LabelRule("Coronary artery wall calcification", region="heart"),
    "calcification": LabelRule("Arterial wall calcification", _VESSELS),
    "atherosclerosis": LabelRule("Arterial wall calcification", _VESSELS),
    "lymphadenopathy": LabelRule("Lymphadenopathy"),
    "hernia": LabelRule("Hiatal hernia", ("esophagus",), region="esophagus"),
    **{name: LabelRule("Medical material") for name in _DEVICES},
}
"""SARLE abnormality -> the CT-RATE label it becomes (where its rule's regions allow)."""

_REGION_OVERRIDE_WHERE = {
    # hernia: a hiatal hernia is reported at the diaphragm or oesophagus; elsewhere it stays a hernia
    "hernia": ("diaphragm", "esophagus", "stomach"),
    "pleural_effusion": None,
    "pericardial_effusion": None,
    "cardiomegaly": None,
    "coronary_artery_disease": None,
}
_PLEURAL = ("pleural_thickening", "pneumothorax", "hemothorax")

assert all(r.label in CT_RATE_LABELS for r in RADCHEST_LABELS.values())
assert all(v is None or v[0] in (*REGIONS, OTHERS) for v in RADCHEST_LOCATIONS.values())
assert len(RADCHEST_LOCATIONS) == 52


class HeaderError(ValueError):
    """A RAD-ChestCT label column is not ``abnormality*location`` with a known location."""


def parse_radchest_column(column: str) -> tuple[str, str]:
    """``'nodule*right_upper'`` -> ``('nodule', 'right_upper')``.

    Raises:
        HeaderError: not exactly one ``*`` with text on both sides, or an unknown location.
    """
    parts = [p.strip() for p in column.split("*")]
    if len(parts) != 2 or not all(parts):
        raise HeaderError(f"column {column!r} is not 'abnormality*location'")
    abnormality, location = parts
    if location not in RADCHEST_LOCATIONS:
        raise HeaderError(
            f"column {column!r}: unknown location {location!r} "
            f"(known: {', '.join(sorted(RADCHEST_LOCATIONS))})"
        )
    return abnormality, location


@dataclass(frozen=True)
class MappedLabel:
    """One RAD-ChestCT positive in rgct terms.

    Attributes:
        region: RadGenome region.
        anatomy: anatomy path (a lobe, an organ) or None for the region itself.
        label: CT-RATE label, or the SARLE abnormality name when none corresponds.
        ct_rate: True when ``label`` is a CT-RATE label.
    """

    region: str
    anatomy: str | None
    label: str
    ct_rate: bool

    @property
    def words(self) -> str:
        """The label as words for prompts: ``'lung nodule'``, ``'tree in bud'``."""
        return self.label.lower().replace("_", " ")


def map_radchest_pair(abnormality: str, location: str) -> MappedLabel | None:
    """A positive ``abnormality*location`` in rgct terms; None when the location names no region
    (relative words such as ``right`` or ``subpleural``, which only qualify other columns)."""
    place = RADCHEST_LOCATIONS.get(location)
    if place is None:
        return None
    region, anatomy = place
    if abnormality in _PLEURAL and region == "lung":
        region, anatomy = "pleura", None
    rule = RADCHEST_LABELS.get(abnormality)
    if rule is not None and rule.region is not None:
        where = _REGION_OVERRIDE_WHERE.get(abnormality)
        if where is None or location in where:
            if region != rule.region:
                region, anatomy = rule.region, None
    if rule is not None and (rule.regions is None or region in rule.regions):
        return MappedLabel(region, anatomy, rule.label, True)
    return MappedLabel(region, anatomy, abnormality, False)


# --- DeepLesion -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LesionType:
    """One DeepLesion coarse lesion type in report words.

    Attributes:
        name: the type as DeepLesion names it ('lung', 'soft tissue').
        words: the lesion in a sentence ('lung lesion', 'abdominal lesion').
        region: RadGenome region the lesion lies in (``others`` outside the chest's regions).
        ct_rate: the CT-RATE label such a lesion is, where one corresponds (a lung lesion is a
            lung nodule, a mediastinal one an enlarged lymph node); its detections line in
            detect-then-describe training. None: no CT-RATE label (liver, kidney, ...).
    """

    name: str
    words: str
    region: str
    ct_rate: str | None = None


DEEPLESION_TYPES: dict[int, LesionType] = {
    1: LesionType("bone", "bone lesion", "bone"),
    2: LesionType("abdomen", "abdominal lesion", "abdomen"),
    3: LesionType("mediastinum", "mediastinal lesion", "mediastinum", "Lymphadenopathy"),
    4: LesionType("liver", "liver lesion", "abdomen"),
    5: LesionType("lung", "lung lesion", "lung", "Lung nodule"),
    6: LesionType("kidney", "kidney lesion", "abdomen"),
    7: LesionType("soft tissue", "soft tissue lesion", OTHERS),
    8: LesionType("pelvis", "pelvic lesion", OTHERS),
}
"""Coarse lesion type 1-8 (``Coarse_lesion_type``); -1 (unknown, all of the official training
split) has no entry: such lesions get size and description tasks without a type."""

UNKNOWN_LESION_TYPE = -1

LESION_REGIONS: tuple[str, ...] = tuple(
    dict.fromkeys(t.region for t in DEEPLESION_TYPES.values() if t.region in REGIONS)
)
"""The segmenter's regions a DeepLesion lesion type lies in: where the lesion evidence line
(``data.lesion_evidence``) looks for the region holding a box (``others`` is no region of the
segmenter)."""


def lesion_region_label(region: str | None) -> str | None:
    """The CT-RATE label of a lesion in ``region``: the one label of the lesion types of that
    region (``'lung'`` -> ``'Lung nodule'``), None when they have none or disagree."""
    labels = {t.ct_rate for t in DEEPLESION_TYPES.values() if t.region == region}
    return labels.pop() if len(labels) == 1 else None


PHANTOM_LESION_TYPES = {"nodule": 5, "lymphadenopathy": 3}
"""Phantom finding kind -> the DeepLesion type its lesion is written with (``rgct synth
--layout deeplesion``); other findings are not measured lesions."""


def lesion_type_from_text(text: str) -> int | None:
    """The coarse type whose words or name a generated sentence uses first (None: none)."""
    low = text.lower()
    hits = []
    for code, t in DEEPLESION_TYPES.items():
        for phrase in (t.words, t.name):
            pos = low.find(phrase)
            if pos >= 0:
                hits.append((pos, -len(phrase), code))
    return min(hits)[2] if hits else None
