"""VinDr-CXR and ChestX-ray14 images as grounded task samples (the same :class:`Sample` records
as every other source; the tasks are :data:`rgct.constants.CXR_TASKS`).

Per image, with its boxes (VinDr-CXR: the fused or consensus boxes of :mod:`rgct.data.vindr`)
and its image-level labels:

- ``cxr_box``: one per box, grounded on the box's mask: "What is in the given box?" ->
  "Pleural effusion."
- ``cxr_presence``: "Is there pleural effusion in this chest radiograph?" -> "Yes." for every
  label present, "No." for as many absent labels of the dataset's vocabulary (drawn with
  ``seed``; at least one).
- ``cxr_location``: per boxed class: "Where is the pleural effusion in this chest radiograph?"
  -> "right lower zone." (several boxes: "right lower zone and left lower zone."), side and zone
  from :func:`rgct.data.cxr.box_location`.
- ``cxr_labels``: "What are the findings in this chest radiograph?" -> "Cardiomegaly, pleural
  effusion." or "No finding."
- ``cxr_report``: one sentence per box, "Pleural effusion in the right lower zone.", then one per
  label without a box ("COPD."); "No finding." when there is none.

``image_path`` is the DICOM or PNG (read with :func:`rgct.data.cxr.load_radiograph`); a box's
mask is written once as a 0/255 PNG of the image's size into a cache folder (default
``<root>/.rgct_cache/<layout>/box_masks``), never into the release.

Example::

    tables = vindr_samples(load_vindr(root, "train"), ["cxr_box", "cxr_report"])
    tables = chestxray14_samples(load_chestxray14(root), "test")
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rgct.constants import CXR_PROMPTS, CXR_TASKS, WHOLE_SCAN
from rgct.data.chestxray14 import Cxr14Index
from rgct.data.cxr import Box, box_location, box_mask, location_words
from rgct.data.cxr_maps import (
    CXR14_LABELS,
    CXR14_NO_FINDING,
    VINDR_GLOBAL,
    VINDR_LOCAL,
    VINDR_NO_FINDING,
    class_words,
)
from rgct.data.sample_table import SampleTable
from rgct.data.source_report import check_layout_tasks
from rgct.data.source_samples import TaskTable
from rgct.data.vindr import VindrIndex
from rgct.files import write_bytes
from rgct.text import asked_subject

NO_FINDINGS = (VINDR_NO_FINDING, CXR14_NO_FINDING)
VOCABULARY = {
    "vindr-cxr": tuple(c for c in (*VINDR_LOCAL, *VINDR_GLOBAL) if c != VINDR_NO_FINDING),
    "chestxray14": CXR14_LABELS,
}
"""Layout -> the labels presence questions may ask about."""
_CLASS_OF_WORDS = {
    class_words(c).lower(): c for c in (*VOCABULARY["chestxray14"], *VOCABULARY["vindr-cxr"])
}
"""A class's words (lower case) -> its name; VinDr-CXR's spelling wins where both say them."""
BOX_REGION = "box"
"""``region`` of the box-grounded samples."""


BOXED = {"vindr-cxr": VINDR_LOCAL, "chestxray14": CXR14_LABELS}
"""Layout -> the classes its boxes can have (VinDr-CXR's global labels have none)."""


def placeable_labels(labels: Iterable[str]) -> tuple[str, ...]:
    """The labels of a classifier vocabulary that a box can place (the layout whose
    :data:`VOCABULARY` it is says which); a vocabulary of no layout places every label."""
    labels = tuple(labels)
    for layout, vocab in VOCABULARY.items():
        if labels == tuple(vocab):
            return tuple(lab for lab in labels if lab in BOXED[layout])
    return labels


def label_vector(classes: Iterable[str], layout: str) -> list[int]:
    """0/1 per label of the layout's :data:`VOCABULARY`, in order (the region classifier's
    targets; 'No finding' and classes outside the vocabulary set nothing)."""
    present = set(classes)
    return [int(lab in present) for lab in VOCABULARY[layout]]


def film_places(boxes: list[Box], shape: tuple[int, int]) -> dict[str, str]:
    """Class -> where its boxes are, as a ``cxr_location`` answer says it without the full stop
    ("right lower zone and left lower zone"), for each boxed class of one film."""
    where = box_locations(boxes, shape)
    return {
        lab: " and ".join(dict.fromkeys(w for b, w in zip(boxes, where) if b.class_name == lab))
        for lab in dict.fromkeys(b.class_name for b in boxes)
    }


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def box_locations(boxes: list[Box], shape: tuple[int, int]) -> list[str]:
    """Location words of each box (same order)."""
    return [location_words(*box_location(b.coords, shape)) for b in boxes]


def findings_report(boxes: list[Box], labels: list[str], shape: tuple[int, int]) -> str:
    """The findings text: one sentence per box with its location (repeats said once), then the
    labels without a box."""
    sentences = [
        _sentence(f"{class_words(b.class_name)} in the {where}")
        for b, where in zip(boxes, box_locations(boxes, shape))
    ]
    boxed = {b.class_name for b in boxes}
    sentences += [
        _sentence(class_words(lab)) for lab in labels if lab not in boxed and lab not in NO_FINDINGS
    ]
    return " ".join(dict.fromkeys(sentences)) or "No finding."


_LOCATED = re.compile(
    r"^(?P<what>.+?) in the (?P<side>right|left|central) (?P<zone>upper|middle|lower) zone$"
)


def read_finding_sentence(sentence: str) -> dict[str, str | None]:
    """``{"label", "side", "zone"}`` of one sentence as :func:`findings_report` writes them
    ("Pleural effusion in the right lower zone." -> ('Pleural effusion', 'right', 'lower');
    "COPD." -> ('COPD', None, None)); ``label`` is a VinDr-CXR or ChestX-ray14 class name (the
    VinDr-CXR spelling when both name the words), None for "No finding." or other text."""
    text = sentence.strip().rstrip(".").strip()
    side = zone = None
    found = _LOCATED.match(text)
    if found:
        text, side, zone = found["what"], found["side"], found["zone"]
    return {"label": _CLASS_OF_WORDS.get(text.lower()), "side": side, "zone": zone}


def asked_location(question: str) -> str | None:
    """The class a "where is X?" question asks about (``cxr_location``'s prompt, or a chat
    question such as "Where is the pleural effusion located?"), None for any other question
    or words that name no class."""
    what = asked_subject(question)
    return _CLASS_OF_WORDS.get(what.lower()) if what else None


def save_box_mask(box: Box, shape: tuple[int, int], path: Path) -> Path:
    """Write the box's mask as a 0/255 PNG (once; kept if there)."""
    if not path.is_file():
        buf = io.BytesIO()
        Image.fromarray(box_mask(box.coords, shape).astype(np.uint8) * 255).save(buf, format="PNG")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, buf.getvalue())
    return path


def image_questions(
    boxes: list[Box],
    labels: list[str],
    shape: tuple[int, int],
    layout: str,
    rng: np.random.Generator,
) -> list[tuple[str, str, str, int | None]]:
    """(task, prompt, answer, index of the box it is grounded on or None) of one image, every
    task (rules in the module notes); ``rng`` draws the absent labels asked about."""
    out: list[tuple[str, str, str, int | None]] = []
    for k, box in enumerate(boxes):
        out.append(("cxr_box", CXR_PROMPTS["cxr_box"], _sentence(class_words(box.class_name)), k))
    present = [lab for lab in labels if lab not in NO_FINDINGS]
    absent = [lab for lab in VOCABULARY[layout] if lab not in present]
    asked = [(lab, "Yes.") for lab in present]
    count = min(len(absent), max(1, len(present)))
    asked += [(absent[i], "No.") for i in sorted(rng.permutation(len(absent))[:count])]
    for lab, answer in asked:
        prompt = CXR_PROMPTS["cxr_presence"].format(finding=class_words(lab))
        out.append(("cxr_presence", prompt, answer, None))
    for lab, places in film_places(boxes, shape).items():
        prompt = CXR_PROMPTS["cxr_location"].format(finding=class_words(lab))
        out.append(("cxr_location", prompt, places + ".", None))
    said = ", ".join(class_words(lab) for lab in present)
    out.append(
        ("cxr_labels", CXR_PROMPTS["cxr_labels"], _sentence(said) if said else "No finding.", None)
    )
    out.append(
        ("cxr_report", CXR_PROMPTS["cxr_report"], findings_report(boxes, labels, shape), None)
    )
    return out


def _samples(
    images, layout: str, root: Path, tasks, cache_dir, seed: int
) -> dict[str, SampleTable]:
    """Samples of (name, path, (width, height), boxes, labels) tuples."""
    tasks = check_layout_tasks(list(tasks), layout, root)
    cache = Path(cache_dir) if cache_dir else root / ".rgct_cache" / layout / "box_masks"
    rng = np.random.default_rng(seed)
    tables = {t: TaskTable() for t in tasks}
    for name, path, (width, height), boxes, labels in images:
        shape = (height, width)
        film_labels = label_vector([*labels, *(b.class_name for b in boxes)], layout)
        for task, prompt, answer, k in image_questions(boxes, labels, shape, layout, rng):
            if task not in tables:
                continue
            grounded = dict(region=WHOLE_SCAN, anatomy=None, mask_path=None)
            row_labels = film_labels
            if k is not None:
                mask = save_box_mask(boxes[k], shape, cache / f"{Path(name).stem}_{k}.png")
                grounded = dict(region=BOX_REGION, anatomy=boxes[k].class_name, mask_path=str(mask))
                same = [b.class_name for b in boxes if b.coords == boxes[k].coords]
                row_labels = label_vector(same, layout)
            tables[task].add(
                task=task,
                prompt=prompt,
                answer=answer,
                volume=name,
                image_path=str(path),
                labels=row_labels,
                **grounded,
            )
    width = len(VOCABULARY[layout])
    return {t: SampleTable.from_columns(tab.cols, tab.labels, width) for t, tab in tables.items()}


CXR_SPLIT_ALIASES = {"train": "train", "test": "test", "valid": "test", "validation": "test"}
"""Split names a radiograph folder answers to: the releases have a train and a test split only,
so the held-out split rgct calls 'valid' is their 'test' (the phantoms write 'valid' volumes
there too)."""


def cxr_split(split: str) -> str:
    """'train' or 'test' for a split name (:data:`CXR_SPLIT_ALIASES`)."""
    try:
        return CXR_SPLIT_ALIASES[split]
    except KeyError:
        raise ValueError(
            f"unknown radiograph split {split!r}; known: {sorted(CXR_SPLIT_ALIASES)}"
        ) from None


def _load_index(root: str | Path, layout: str, split: str, max_images: int | None):
    """The layout's index of one split ('train' / 'test'), at most ``max_images`` images."""
    if layout == "vindr-cxr":
        from rgct.data.vindr import load_vindr

        return load_vindr(root, split, max_images=max_images)
    if layout == "chestxray14":
        from rgct.data.chestxray14 import load_chestxray14

        index = load_chestxray14(root)
        if max_images is not None:
            keep = {i.name for i in index.split(split)[:max_images]}
            index.images = {k: v for k, v in index.images.items() if k in keep}
        return index
    raise ValueError(f"{root}: layout {layout!r} is not a radiograph layout")


def layout_samples(
    root: str | Path,
    layout: str,
    split: str,
    tasks: Iterable[str] = CXR_TASKS,
    *,
    seed: int = 0,
    max_images: int | None = None,
) -> tuple[dict[str, SampleTable], list]:
    """(task -> samples, problems) of one split of a VinDr-CXR or ChestX-ray14 folder
    (``split`` through :func:`cxr_split`; at most ``max_images`` images)."""
    split = cxr_split(split)
    index = _load_index(root, layout, split, max_images)
    if layout == "vindr-cxr":
        return vindr_samples(index, tasks, seed=seed), index.problems
    return chestxray14_samples(index, split, tasks, seed=seed), index.problems


@dataclass(frozen=True)
class Film:
    """One radiograph's truth: its file, (H, W), boxes and image-level labels."""

    name: str
    path: str
    shape: tuple[int, int]
    boxes: list[Box]
    labels: list[str]

    def label_vector(self, layout: str) -> list[int]:
        """The film's labels (image labels and boxed classes) over the layout's vocabulary."""
        return label_vector([*self.labels, *(b.class_name for b in self.boxes)], layout)


def places_by_film(
    root: str | Path, layout: str, splits: Iterable[str] = ("train", "test")
) -> dict[str, dict[str, str]]:
    """Image name -> {class: its places} (:func:`film_places`) over ``splits`` of a folder:
    the truth a ``model.evidence_locations`` radiograph model is trained with."""
    out: dict[str, dict[str, str]] = {}
    for split in dict.fromkeys(cxr_split(s) for s in splits):
        for name, film in load_films(root, layout, split).items():
            out[name] = film_places(film.boxes, film.shape)
    return out


def load_films(
    root: str | Path, layout: str, split: str, max_images: int | None = None
) -> dict[str, Film]:
    """Image name -> :class:`Film` of one split of a VinDr-CXR or ChestX-ray14 folder: what
    the samples are made from, for the region classifier's zone rows and the places a
    ``model.evidence_locations`` model is trained with."""
    split = cxr_split(split)
    index = _load_index(root, layout, split, max_images)
    if layout == "vindr-cxr":
        rows = [(i.image_id, i.path, i.size, i.boxes, i.labels) for i in index.images.values()]
    else:
        rows = [(i.name, i.path, i.size, i.boxes, i.labels) for i in index.split(split)]
    return {
        name: Film(name, str(path), (height, width), list(boxes), list(labels))
        for name, path, (width, height), boxes, labels in rows
    }


def vindr_samples(
    index: VindrIndex,
    tasks: Iterable[str] = CXR_TASKS,
    cache_dir: str | Path | None = None,
    *,
    seed: int = 0,
) -> dict[str, SampleTable]:
    """Samples of one VinDr-CXR split (its :func:`~rgct.data.vindr.load_vindr` index)."""
    images = [(i.image_id, i.path, i.size, i.boxes, i.labels) for i in index.images.values()]
    return _samples(images, "vindr-cxr", index.root, tasks, cache_dir, seed)


def chestxray14_samples(
    index: Cxr14Index,
    split: str,
    tasks: Iterable[str] = CXR_TASKS,
    cache_dir: str | Path | None = None,
    *,
    seed: int = 0,
) -> dict[str, SampleTable]:
    """Samples of one ChestX-ray14 split ('train' or 'test', from the official lists)."""
    images = [(i.name, i.path, i.size, i.boxes, i.labels) for i in index.split(split)]
    return _samples(images, "chestxray14", index.root, tasks, cache_dir, seed)
