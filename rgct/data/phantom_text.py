"""Report sentences, VQA rows and disorder lists for a phantom, consistent with its findings.

The prose follows CT-RATE's translated, templated style (see DATA_FORMAT.md "Report style");
every finding kind and every normal region has several phrasings, picked with the volume's own
random generator so that the text is deterministic for a seed. Findings are the
``ground_truth.jsonl`` dicts written by :mod:`rgct.data.synth`.
"""

from __future__ import annotations

import numpy as np

from rgct.constants import CT_RATE_LABELS, NO_FINDINGS, REGIONS

FINDING_NAMES: dict[str, str] = {
    "nodule": "nodule",
    "ground_glass_opacity": "ground glass opacity",
    "consolidation": "consolidation",
    "atelectasis": "atelectasis",
    "emphysema": "emphysema",
    "bronchiectasis": "bronchiectasis",
    "pleural_effusion": "pleural effusion",
    "pericardial_effusion": "pericardial effusion",
    "cardiomegaly": "cardiomegaly",
    "coronary_artery_wall_calcification": "coronary artery wall calcification",
    "lymphadenopathy": "lymphadenopathy",
    "arterial_wall_calcification": "arterial wall calcification",
    "hiatal_hernia": "hiatal hernia",
}
"""Finding kind -> the lower-case name used in VQA rows and disorder lists."""

FINDING_LABELS: dict[str, str] = {
    "nodule": "Lung nodule",
    "ground_glass_opacity": "Lung opacity",
    "consolidation": "Consolidation",
    "atelectasis": "Atelectasis",
    "emphysema": "Emphysema",
    "bronchiectasis": "Bronchiectasis",
    "pleural_effusion": "Pleural effusion",
    "pericardial_effusion": "Pericardial effusion",
    "cardiomegaly": "Cardiomegaly",
    "coronary_artery_wall_calcification": "Coronary artery wall calcification",
    "lymphadenopathy": "Lymphadenopathy",
    "arterial_wall_calcification": "Arterial wall calcification",
    "hiatal_hernia": "Hiatal hernia",
}
"""Finding kind -> CT-RATE label (one of :data:`rgct.constants.CT_RATE_LABELS`)."""

FINDING_REGIONS: dict[str, str] = {
    "nodule": "lung",
    "ground_glass_opacity": "lung",
    "consolidation": "lung",
    "atelectasis": "lung",
    "emphysema": "lung",
    "bronchiectasis": "lung",
    "pleural_effusion": "pleura",
    "pericardial_effusion": "heart",
    "cardiomegaly": "heart",
    "coronary_artery_wall_calcification": "heart",
    "lymphadenopathy": "mediastinum",
    "arterial_wall_calcification": "mediastinum",
    "hiatal_hernia": "esophagus",
}
"""Finding kind -> top-level region."""

assert set(FINDING_LABELS.values()) <= set(CT_RATE_LABELS)
assert set(FINDING_REGIONS.values()) <= set(REGIONS)

REPORT_ORDER = (
    "trachea and bronchie",
    "mediastinum",
    "heart",
    "esophagus",
    "thyroid",
    "breast",
    "pleura",
    "lung",
    "abdomen",
    "bone",
)
"""Order of the regions' sentences in the whole report (CT-RATE's usual order)."""
assert set(REPORT_ORDER) == set(REGIONS)

_FINDING_TEMPLATES: dict[str, tuple[str, ...]] = {
    "nodule": (
        "A nodule measuring {size_text} was observed in the {lobe}.",
        "A solid nodule of {size_text} is seen in the {lobe}.",
        "There is a nonspecific nodule of {size_text} in the {lobe}.",
        "In the {lobe}, a solid pulmonary nodule measuring {size_text} was detected.",
    ),
    "ground_glass_opacity": (
        "Ground glass opacity was observed in the {lobe}.",
        "A patchy ground-glass density area of about {size} mm is seen in the {lobe}.",
        "There are ground glass opacities in the {lobe}.",
    ),
    "consolidation": (
        "Consolidation with air bronchograms was observed in the {lobe}.",
        "There is an area of consolidation containing air bronchograms in the {lobe}.",
        "A consolidated area of approximately {size} mm was detected in the {lobe}.",
    ),
    "atelectasis": (
        "Atelectasis was observed in the posterobasal part of the {lobe}.",
        "Subsegmental atelectasis is seen at the base of the {lobe}.",
        "There are atelectatic changes adjacent to the pleura in the {lobe}.",
    ),
    "emphysema": (
        "Emphysematous changes were observed in the {lobe}.",
        "Centriacinar emphysema areas are seen in the {lobe}.",
        "Low-attenuation areas consistent with emphysema are present in the {lobe}.",
    ),
    "bronchiectasis": (
        "Bronchiectasis with bronchial wall thickening was observed in the {lobe}.",
        "Dilated, thick-walled bronchi consistent with bronchiectasis are seen in the {lobe}.",
        "Cylindrical bronchiectasis is present in the {lobe}.",
    ),
    "pleural_effusion": (
        "Pleural effusion reaching {size} mm in thickness was observed on the {side}.",
        "{Side} pleural effusion with a depth of {size} mm is seen.",
        "There is a {side}-sided pleural effusion measuring {size} mm in depth.",
    ),
    "pericardial_effusion": (
        "Pericardial effusion reaching {size} mm in thickness was observed.",
        "There is pericardial effusion with a thickness of {size} mm.",
        "Fluid of {size} mm thickness is seen in the pericardial space (pericardial effusion).",
    ),
    "cardiomegaly": (
        "Heart size is increased (cardiomegaly).",
        "Cardiomegaly was observed.",
        "The heart is enlarged; the cardiothoracic ratio is increased (cardiomegaly).",
    ),
    "coronary_artery_wall_calcification": (
        "Calcific atheroma plaques were observed in the coronary arteries.",
        "Coronary artery wall calcifications are seen.",
        "There are calcifications in the walls of the coronary arteries.",
    ),
    "lymphadenopathy": (
        "A lymph node measuring {size_text} was observed in the mediastinum (lymphadenopathy).",
        "Mediastinal lymphadenopathy is present, the largest node measuring {size_text}.",
        "An enlarged mediastinal lymph node of {size_text} was detected.",
    ),
    "arterial_wall_calcification": (
        "Atherosclerotic calcifications were observed in the aortic wall.",
        "Calcified atheroma plaques are seen in the wall of the thoracic aorta.",
        "There are arterial wall calcifications in the aorta.",
    ),
    "hiatal_hernia": (
        "Hiatal hernia is observed at the lower end of the esophagus.",
        "A sliding hiatal hernia is present.",
        "Herniation of the stomach into the thorax through the esophageal hiatus (hiatal hernia) is observed.",
    ),
}

_NORMAL_TEMPLATES: dict[str, tuple[str, ...]] = {
    "trachea and bronchie": (
        "Trachea and both main bronchi are open.",
        "Trachea and both main bronchi are in the midline and their lumens are open.",
        "No obstructive pathology was detected in the trachea and main bronchi.",
    ),
    "mediastinum_vessels": (
        "Mediastinal main vascular structures are of normal width.",
        "Calibrations of mediastinal main vascular structures are natural.",
        "The thoracic aorta is of normal diameter.",
    ),
    "mediastinum_nodes": (
        "No lymph node in pathological size and appearance was detected in the mediastinum.",
        "No pathologically enlarged lymph node was observed in the mediastinum.",
        "No mass or pathological lymph node was detected in the mediastinum.",
    ),
    "heart": (
        "Heart contour and size are normal.",
        "Heart size is within normal limits.",
        "The heart has a normal contour and size.",
    ),
    "pericardium": (
        "No pericardial effusion was detected.",
        "No pericardial thickening or effusion was observed.",
        "Pericardium is natural.",
    ),
    "esophagus": (
        "Esophagus is of normal caliber and wall thickness.",
        "No significant pathological wall thickening was observed in the esophagus within the sections.",
        "Esophageal course and calibration are natural.",
    ),
    "thyroid": (
        "Thyroid gland is of normal size and appearance.",
        "Both thyroid lobes are of normal size and homogeneous density.",
        "No nodule was detected in the thyroid gland within the sections.",
    ),
    "breast": (
        "Both breasts are of normal appearance.",
        "No mass lesion was observed in the breast tissue within the sections.",
        "Breast tissue is symmetrical and of normal density.",
    ),
    "pleura": (
        "No pleural effusion was detected.",
        "No pleural effusion or thickening was detected.",
        "Pleural surfaces are smooth and no effusion was observed.",
    ),
    "pleura_and_pericardium": ("No pleural or pericardial effusion was detected.",),
    "lung": (
        "Both lungs are aerated normally. No mass or infiltrative lesion was detected in the lung parenchyma.",
        "No nodule, mass or infiltration was detected in both lungs.",
        "Lung parenchyma is natural; no active infiltration or nodule was observed.",
    ),
    "abdomen": (
        "Upper abdominal organs included in the sections are normal.",
        "No mass lesion was detected in the upper abdominal organs within the sections.",
        "Liver, spleen and stomach within the sections are of normal appearance.",
    ),
    "bone": (
        "No lytic-destructive lesion was detected in the bone structures within the sections.",
        "Bone structures within the sections are natural.",
        "No lytic or blastic lesion was observed in the bone structures included in the sections.",
    ),
}

_LUNG_INTRO = "When examined in the lung parenchyma window; "

_PRESENCE_VOCAB: dict[str, tuple[str, ...]] = {}
for _kind, _region in FINDING_REGIONS.items():
    _PRESENCE_VOCAB.setdefault(_region, ())
    _PRESENCE_VOCAB[_region] += (FINDING_NAMES[_kind],)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def finding_sentence(finding: dict, rng: np.random.Generator) -> str:
    """One sentence describing a ground-truth finding (lobe, side and size filled in)."""
    template = _pick(rng, _FINDING_TEMPLATES[finding["kind"]])
    side = finding.get("side") or ""
    return template.format(
        lobe=finding.get("lobe") or "lung",
        side=side,
        Side=side.capitalize(),
        size=f"{finding['size_mm']:.0f}",
        size_text=finding.get("size_text") or f"{finding['size_mm']:.0f} mm",
    )


def region_sentences(
    findings: list[dict], regions: list[str], rng: np.random.Generator
) -> dict[str, str]:
    """Each present region's sentences (joined by spaces), consistent with ``findings``.

    Args:
        findings: ground-truth finding dicts of one volume.
        regions: the regions present in the volume (REGIONS, minus 'breast' without breasts).
        rng: the volume's text generator.
    """
    by_kind: dict[str, list[dict]] = {}
    for f in findings:
        by_kind.setdefault(f["kind"], []).append(f)

    def say(kind: str) -> list[str]:
        return [finding_sentence(f, rng) for f in by_kind.get(kind, [])]

    out: dict[str, str] = {}
    for region in regions:
        parts: list[str] = []
        if region == "lung":
            lung = [s for k in FINDING_NAMES if FINDING_REGIONS[k] == "lung" for s in say(k)]
            if lung:
                if rng.random() < 0.5:
                    lung[0] = _LUNG_INTRO + lung[0][0].lower() + lung[0][1:]
                parts = lung
            else:
                parts = [_pick(rng, _NORMAL_TEMPLATES["lung"])]
        elif region == "mediastinum":
            parts = say("arterial_wall_calcification") or [
                _pick(rng, _NORMAL_TEMPLATES["mediastinum_vessels"])
            ]
            parts += say("lymphadenopathy") or [_pick(rng, _NORMAL_TEMPLATES["mediastinum_nodes"])]
        elif region == "heart":
            parts = say("cardiomegaly") or [_pick(rng, _NORMAL_TEMPLATES["heart"])]
            parts += say("pericardial_effusion") or [_pick(rng, _NORMAL_TEMPLATES["pericardium"])]
            parts += say("coronary_artery_wall_calcification")
        elif region == "pleura":
            parts = say("pleural_effusion")
            if not parts:
                options = _NORMAL_TEMPLATES["pleura"]
                if "pericardial_effusion" not in by_kind:
                    options = options + _NORMAL_TEMPLATES["pleura_and_pericardium"]
                parts = [_pick(rng, options)]
        elif region == "esophagus":
            parts = say("hiatal_hernia") or [_pick(rng, _NORMAL_TEMPLATES["esophagus"])]
        else:
            parts = [_pick(rng, _NORMAL_TEMPLATES[region])]
        out[region] = " ".join(parts)
    return out


def whole_report(sentences: dict[str, str]) -> str:
    """All region sentences in :data:`REPORT_ORDER`."""
    return " ".join(sentences[r] for r in REPORT_ORDER if r in sentences)


def disorders(findings: list[dict]) -> str:
    """Comma-joined lower-case finding names (first-seen order), or 'no findings'."""
    names = list(dict.fromkeys(FINDING_NAMES[f["kind"]] for f in findings))
    return ", ".join(names) if names else NO_FINDINGS


def label_vector(findings: list[dict]) -> list[int]:
    """One 0/1 per :data:`CT_RATE_LABELS`, in that order."""
    present = {f["label"] for f in findings}
    return [int(label in present) for label in CT_RATE_LABELS]


def vqa_rows(findings: list[dict], rng: np.random.Generator) -> dict[str, list[tuple[str, ...]]]:
    """VQA rows (without the Volumename column) for one volume.

    Returns:
        ``{"vqa_abnormality": [(anatomy, abnormality)], "vqa_location": [(anatomy, name)],
        "vqa_size": [(anatomy, name, size)], "vqa_presence": [(region, name, 'Yes.'|'No.')]}``.
        Presence rows hold one 'Yes.' per (region, finding name) present and as many 'No.'
        rows (at least two) for names absent from their region.
    """
    by_anatomy: dict[str, list[str]] = {}
    location: list[tuple[str, str]] = []
    size: list[tuple[str, str, str]] = []
    present: list[tuple[str, str]] = []
    for f in findings:
        name = FINDING_NAMES[f["kind"]]
        names = by_anatomy.setdefault(f["anatomy"], [])
        if name not in names:
            names.append(name)
        if (f["anatomy"], name) not in location:
            location.append((f["anatomy"], name))
        if f.get("size_text"):
            size.append((f["anatomy"], name, f["size_text"]))
        if (f["region"], name) not in present:
            present.append((f["region"], name))
    absent = [
        (region, name)
        for region in REGIONS
        for name in _PRESENCE_VOCAB.get(region, ())
        if (region, name) not in present
    ]
    n_neg = min(len(present) or 2, len(absent))
    chosen = sorted(rng.choice(len(absent), size=n_neg, replace=False).tolist()) if n_neg else []
    presence = [(r, n, "Yes.") for r, n in present] + [(*absent[i], "No.") for i in chosen]
    return {
        "vqa_abnormality": [(a, ", ".join(n)) for a, n in by_anatomy.items()],
        "vqa_location": location,
        "vqa_size": size,
        "vqa_presence": presence,
    }
