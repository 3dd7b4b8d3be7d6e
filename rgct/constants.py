"""Names and numbers that the whole package shares, defined once.

Everything that reads or writes the RadGenome-Chest CT layout, builds prompts, or scores
reports imports its vocabulary from here. Nothing in this module imports torch.
"""

from __future__ import annotations

# --- training -------------------------------------------------------------------------------
IGNORE_INDEX = -100
"""Label value ignored by the language-model loss (prompt and padding positions)."""

METRICS_FILE = "metrics.jsonl"
"""Per-step training metrics inside a run folder (read by ``rgct plot``)."""

# Placeholder tokens added to the tokenizer. The prompt holds one VOLUME_TOKEN per global
# volume token and one REGION_TOKEN per region token; the model writes the projected visual
# embeddings where they stand.
VOLUME_TOKEN = "<|rgct_volume|>"
REGION_TOKEN = "<|rgct_region|>"
SPECIAL_TOKENS = (VOLUME_TOKEN, REGION_TOKEN)

# --- the RadGenome-Chest CT layout -------------------------------------------------------------
SPLITS = ("train", "valid")
"""Split prefixes used in folder and volume names."""

CSV_SPLIT_NAMES = {"train": "train", "valid": "validation"}
"""Split prefix in ``radgenome_files/<name>_*.csv`` (the release says 'validation')."""

SPLIT_ALIASES = {"train": "train", "valid": "valid", "validation": "valid", "val": "valid"}

REGIONS = (
    "abdomen",
    "bone",
    "breast",
    "esophagus",
    "heart",
    "lung",
    "mediastinum",
    "pleura",
    "thyroid",
    "trachea and bronchie",
)
"""The ten top-level regions, spelled as the release spells them ('bronchie' sic)."""

OTHERS = "others"
"""Pseudo-region for sentences not tied to one region; its mask is all ones."""

WHOLE_SCAN = "whole scan"
"""Name used for the all-ones mask of whole-volume tasks (whole report, disorders)."""

HU_WINDOW = (-1000.0, 200.0)
"""Default Hounsfield window: clip to it, then rescale to [0, 1]."""

# CSV file stems under radgenome_files/, with their exact columns.
CSV_COLUMNS = {
    "region_report": ("Volumename", "Anatomy", "Sentence"),
    "vqa_abnormality": ("Volumename", "Anatomy", "Abnormality"),
    "vqa_location": ("Volumename", "Anatomy", "Abnormality"),
    "vqa_presence": ("Volumename", "Anatomy", "Finding", "Presence"),
    "vqa_size": ("Volumename", "Anatomy", "Abnormality", "Size"),
    "case_disorders": ("Volumename", "Disorders"),
}

# --- tasks and the official question templates --------------------------------------------------
CXR_TASKS = ("cxr_box", "cxr_presence", "cxr_location", "cxr_labels", "cxr_report")
"""The tasks a VinDr-CXR or ChestX-ray14 folder gives samples for (:mod:`rgct.data.cxr_samples`)."""

TASKS = (
    "report",
    "region_report",
    "abnormality",
    "presence",
    "location",
    "size",
    "disorders",
    "lesion",
    "lesion_size",
    "lesion_type",
    *CXR_TASKS,
)
"""Tasks; then DeepLesion's grounded lesion tasks (a box mask, no region name) and the chest
radiograph tasks (:data:`CXR_TASKS`: only a model with ``data.modality: cxr`` reads them)."""

LESION_TASKS = ("lesion", "lesion_size", "lesion_type")
"""DeepLesion's tasks: their samples come from a DeepLesion folder (``data.sources``)."""

RADGENOME_TASKS = tuple(t for t in TASKS if t not in LESION_TASKS and t not in CXR_TASKS)
"""The tasks a RadGenome-layout folder (its CSV files) gives samples for."""

RADCHEST_TASKS = ("region_report", "presence", "abnormality")
"""The tasks a RAD-ChestCT folder (its label matrix) gives samples for. It has no report text:
its region reports are generated and scored against the labels, never trained on."""

QUESTION_TEMPLATES = {
    "abnormality": "What are the abnormalities in the {region}?",
    "presence": "Can {abnormality} be identified in the {region}?",
    "location": "Where is the {abnormality} located in the image?",
    "size": "What is the approximate size of the {abnormality} in the {region}?",
    "disorders": "What are the abnormalities in the scan?",
}

REPORT_PROMPTS = {
    "region_report": "Describe the findings in the {region}.",
    "region_report_unnamed": "Describe the findings in the given region.",
    "report": "Write the radiology report for this chest CT.",
}

LESION_PROMPTS = {
    "lesion": "Describe the lesion in this region.",
    "lesion_size": "What is the approximate size of the lesion in the given region?",
    "lesion_type": "What type of lesion is in the given region?",
}
"""DeepLesion's grounded lesion tasks: the region is the lesion's box mask (kept apart from the
templates above, which the tiny test tokenizer is trained on)."""

# --- CT-RATE abnormality labels (clinical efficacy, auxiliary targets) --------------------------
CT_RATE_LABELS = (
    "Medical material",
    "Arterial wall calcification",
    "Cardiomegaly",
    "Pericardial effusion",
    "Coronary artery wall calcification",
    "Hiatal hernia",
    "Lymphadenopathy",
    "Emphysema",
    "Atelectasis",
    "Lung nodule",
    "Lung opacity",
    "Pulmonary fibrotic sequela",
    "Pleural effusion",
    "Mosaic attenuation pattern",
    "Peribronchial thickening",
    "Consolidation",
    "Bronchiectasis",
    "Interlobular septal thickening",
)
"""The 18 CT-RATE labels, in CT-RATE's column order."""

NO_FINDINGS = "no findings"

MODEL_PARTS = ("encoder", "pooler", "projector", "evidence", "dense")
"""Vision-side sub-modules of RGCTModel (``dense`` only exists with a dense loss)."""

EVIDENCE_PREFIX = "Image findings in this region: "
"""Start of the detections line that ``model.evidence_prompt`` adds to every prompt."""

LESION_EVIDENCE_PREFIX = "Lesion in this box:"
"""Start of the lesion evidence line that ``data.lesion_evidence`` puts before DeepLesion's
lesion prompts (:func:`rgct.data.lesion_measure.lesion_evidence_line`)."""

# --- learned segmentation (rgct.model.segmenter) ------------------------------------------------
LUNG_LOBES = (
    "right lung upper lobe",
    "right lung middle lobe",
    "right lung lower lobe",
    "left lung upper lobe",
    "left lung lower lobe",
)
"""The five lung lobes, spelled as the anatomy mask files are named."""

LUNG_SIDES = {"right lung": LUNG_LOBES[:3], "left lung": LUNG_LOBES[3:]}
"""Anatomy masks that are unions of lobes (written from the predicted lobes)."""

SEGMENT_ANATOMY = ("aorta", "heart tissue")
"""Anatomy masks (besides the lobes) that prompts name and the segmenter predicts."""

UNPAINTED_LABELS = (
    "Medical material",
    "Pulmonary fibrotic sequela",
    "Mosaic attenuation pattern",
    "Peribronchial thickening",
    "Interlobular septal thickening",
)
"""CT-RATE labels the phantoms never paint (no voxel truth)."""

PARENCHYMA_LABELS = frozenset(
    {
        "Emphysema",
        "Atelectasis",
        "Lung nodule",
        "Lung opacity",
        "Pulmonary fibrotic sequela",
        "Mosaic attenuation pattern",
        "Peribronchial thickening",
        "Consolidation",
        "Bronchiectasis",
        "Interlobular septal thickening",
    }
)
"""CT-RATE labels of the lung parenchyma: a segmenter component of one of them that lies in a
lobe is a lung finding whatever region holds most of its voxels (the predicted lung leaves out
dense voxels: a nodule against the pleura is mostly "pleura"), and on a whole-scan row only
these are placed in a lobe without a segmenter component (a heart or mediastinal label has no
lobe)."""
SEGMENT_FINDINGS = tuple(label for label in CT_RATE_LABELS if label not in UNPAINTED_LABELS)
"""CT-RATE labels with a finding voxel-map channel (the 13 the phantoms paint), CT-RATE order."""

SEGMENT_CLASSES = (*REGIONS, *LUNG_LOBES, *SEGMENT_ANATOMY, *SEGMENT_FINDINGS)
"""Output channels of the segmenter, in order: ten regions, five lobes, anatomy, findings."""

# --- chest radiographs (VinDr-CXR, NIH ChestX-ray14) -------------------------------------------
MODALITIES = ("ct", "cxr")
"""What a model reads (``data.modality``): 3D chest CT volumes or 2D chest radiographs."""

CXR_LAYOUTS = ("vindr-cxr", "chestxray14")
"""Dataset layouts of chest radiographs (a ``data.modality: cxr`` model trains on them)."""

CXR_PROMPTS = {
    "cxr_box": "What is in the given box?",
    "cxr_presence": "Is there {finding} in this chest radiograph?",
    "cxr_location": "Where is the {finding} in this chest radiograph?",
    "cxr_labels": "What are the findings in this chest radiograph?",
    "cxr_report": "Write the findings of this chest radiograph.",
}
"""Prompts of the radiograph tasks; ``cxr_box`` is grounded on the box's mask."""
