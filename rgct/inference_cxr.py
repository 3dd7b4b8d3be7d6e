"""Chest-radiograph inference for :class:`rgct.inference.Predictor` (``data.modality: cxr``
checkpoints): reading the input, checking a box, asking, and the findings report.

The Predictor's ``cxr_ask`` and ``cxr_report`` call :func:`ask` and :func:`report`; this module
holds what is radiograph-specific so the CT predictor stays as it is.

Inputs: a :class:`rgct.data.cxr.Radiograph` or a path (``.dicom``/``.dcm``/``.png``); a CT volume
(a :class:`rgct.data.io.Volume`, a 3D array, a NIfTI / npz file, a DICOM series folder or zip, a
DICOM file whose Modality is CT) is refused by name. A box is ``(x_min, y_min, x_max, y_max)`` in
the radiograph's pixels (x = column, y = row, as the releases give them); outside the image or
without area is a :class:`ValueError` (:func:`rgct.data.cxr.box_problem`).

Example::

    p = Predictor.from_checkpoint("rgct/assets/cxr_demo_model")
    p.cxr_ask("film.dicom", "What is in the given box?", box=(120, 300, 260, 420))
    p.cxr_report("film.png")["sentences"]  # [{"text", "label", "side", "zone"}, ...]
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rgct.config import GenerationConfig, RGCTConfig
from rgct.constants import CXR_PROMPTS, WHOLE_SCAN
from rgct.data.cxr import DICOM_SUFFIXES, Radiograph, box_mask, box_problem, load_radiograph
from rgct.data.cxr_samples import BOX_REGION, read_finding_sentence
from rgct.data.cxr_transforms import preprocess_radiograph
from rgct.generate.localize_cxr import ZoneLocalizer, is_film_segmenter, presupposes_finding
from rgct.text import split_sentences

CT_SUFFIXES = (".nii", ".nii.gz", ".npz", ".zip")
"""Files that hold CT volumes, never a radiograph."""


def describe_input(image: Any) -> str | None:
    """'a CT volume (...)' when ``image`` is a CT input, 'a radiograph (...)' when it is a
    radiograph, None when it cannot tell without reading pixels."""
    from rgct.data.io import Volume

    if isinstance(image, Radiograph):
        return f"a radiograph ({image.source})"
    if isinstance(image, Volume):
        return f"a CT volume ({image.source})"
    if isinstance(image, np.ndarray):
        kinds = {2: "a radiograph array", 3: "a CT volume array"}
        return f"{kinds[image.ndim]} {image.shape}" if image.ndim in kinds else None
    if isinstance(image, (str, Path)):
        path = Path(image)
        name = path.name.lower()
        if path.is_dir() or any(name.endswith(s) for s in CT_SUFFIXES):
            return f"a CT volume ({path})"
        if name.endswith(".png"):
            return f"a radiograph ({path})"
        if path.suffix.lower() in DICOM_SUFFIXES and path.is_file():
            import pydicom

            try:
                modality = str(pydicom.dcmread(path, stop_before_pixels=True).get("Modality", ""))
            except Exception:  # unreadable: the reader names the problem later
                return None
            return f"a CT volume ({path}: Modality CT)" if modality == "CT" else None
    return None


def load_film(image: Any) -> Radiograph:
    """A radiograph from a :class:`Radiograph` or a path; CT inputs refused by name.

    Raises:
        ValueError: a CT volume given to a radiograph checkpoint.
    """
    what = describe_input(image)
    if what is not None and what.startswith("a CT"):
        raise ValueError(
            f"this is a chest-radiograph checkpoint (data.modality=cxr); got {what}: use a CT "
            "checkpoint for CT volumes"
        )
    if isinstance(image, Radiograph):
        return image
    if not isinstance(image, (str, Path)):
        raise ValueError(
            f"a radiograph is a rgct.data.cxr.Radiograph or a .dicom/.dcm/.png path, got "
            f"{type(image).__name__}"
        )
    return load_radiograph(image)


def check_box(box: Any, shape: tuple[int, int]) -> np.ndarray:
    """bool (H, W) mask of a ``(x_min, y_min, x_max, y_max)`` pixel box on an (H, W) film.

    Raises:
        ValueError: not 4 numbers, zero area, or outside the image (named with the image size).
    """
    try:
        coords = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(
            f"box must be (x_min, y_min, x_max, y_max) in pixels, got {box!r}"
        ) from None
    if len(coords) != 4:
        raise ValueError(f"box must be (x_min, y_min, x_max, y_max) in pixels, got {box!r}")
    height, width = shape
    problem = box_problem(coords, width, height)
    if problem is not None:
        raise ValueError(problem[1])
    return box_mask(coords, shape)


def generation_config(
    cfg: RGCTConfig, generation: GenerationConfig | dict | None
) -> GenerationConfig:
    """The checkpoint's generation settings, or ``generation`` (a config, or overrides)."""
    if generation is None:
        return cfg.generation
    if isinstance(generation, GenerationConfig):
        return generation
    return replace(cfg.generation, **generation)


@torch.no_grad()
def generate_rows(
    predictor: Any,
    film: Radiograph,
    masks: list[np.ndarray | None],
    prompts: list[str],
    gen: GenerationConfig,
) -> list[str]:
    """Text for each (mask, prompt) row on one film (None: the whole image); one encoder pass.
    With ``model.evidence_prompt`` each prompt carries the classifier's detections under its
    mask; with ``model.evidence_locations`` a whole-film row's also say where each is."""
    from rgct.inference import autocast_for

    arrays = {str(i): np.ones(film.shape, bool) if m is None else m for i, m in enumerate(masks)}
    image, prepared = preprocess_radiograph(film, arrays, predictor.cfg.data)
    image = image[None].to(predictor.device)  # (1, 1, H, W)
    mask = torch.stack([prepared[str(i)] for i in range(len(masks))]).to(predictor.device)
    model = predictor.model
    with autocast_for(predictor.device):
        grid = model.encode_image(image)  # (1, C, h, w)
        rows = grid.expand(len(prompts), *grid.shape[1:])
        locations = detected = None
        if model.cfg.evidence_locations:  # where the whole film's findings are (zone localiser)
            localizer = film_localizer(predictor)
            places = localizer.locations("film", WHOLE_SCAN, image)
            locations = [places if m is None else None for m in masks]
            # the film segmenter's whole-film detections, and a "where is X?" question's X
            detected = [
                localizer.detected("film", WHOLE_SCAN if m is None else "box", image, prompt)
                for m, prompt in zip(masks, prompts)
            ]
        presupposed = [  # a box question: the box holds something
            presupposes_finding(WHOLE_SCAN if m is None else BOX_REGION, prompt)
            for m, prompt in zip(masks, prompts)
        ]
        out: list[str] = []
        for i in range(0, len(prompts), gen.batch_size):
            part = slice(i, i + gen.batch_size)
            out += model.generate_from_grid(
                rows[part],
                mask[part],
                prompts[part],
                gen,
                image=image,
                locations=None if locations is None else locations[part],
                detected=None if detected is None else detected[part],
                presupposed=presupposed[part],
            )
    return out


def film_localizer(predictor: Any) -> ZoneLocalizer:
    """The predictor's zone localiser: with its checkpoint's film segmenter when it has one."""
    seg = predictor.segmenter
    return ZoneLocalizer(
        predictor.model, seg if seg is not None and is_film_segmenter(seg[0]) else None
    )


def finding_boxes(predictor: Any, film: Radiograph) -> dict[str, list[dict]]:
    """The film segmenter's boxes of each class it finds, in the film's pixels:
    ``{class: [{"box": (x_min, y_min, x_max, y_max), "score", "place"}]}`` (empty without a
    film segmenter)."""
    localizer = film_localizer(predictor)
    if localizer.segmenter is None:
        return {}
    image, _ = preprocess_radiograph(film, None, predictor.cfg.data)
    boxes = localizer.film(image[None].to(predictor.device))["boxes"] or {}
    h, w = predictor.cfg.data.input_shape
    sy, sx = film.shape[0] / h, film.shape[1] / w
    return {
        label: [
            {
                "box": (d["box"][0] * sx, d["box"][1] * sy, d["box"][2] * sx, d["box"][3] * sy),
                "score": round(d["score"], 4),
                "place": d["place"],
            }
            for d in found
        ]
        for label, found in boxes.items()
    }


def ask(
    predictor: Any,
    image: Any,
    question: str,
    box: Any = None,
    generation: GenerationConfig | dict | None = None,
) -> str:
    """Answer ``question`` about the radiograph, about the ``box`` region when given."""
    if not question or not question.strip():
        raise ValueError("the question is empty")
    film = load_film(image)
    mask = None if box is None else check_box(box, film.shape)
    gen = generation_config(predictor.cfg, generation)
    return generate_rows(predictor, film, [mask], [question.strip()], gen)[0]


def report(predictor: Any, image: Any, generation: GenerationConfig | dict | None = None) -> dict:
    """The findings report: ``{"text", "sentences": [{"text", "label", "side", "zone",
    "boxes"}]}``; ``label`` is the class a sentence names (VinDr-CXR or ChestX-ray14
    spelling), ``side`` / ``zone`` where it says it is (None when the sentence says no place,
    or names no class) and ``boxes`` the film segmenter's boxes of that class in the film's
    pixels (:func:`finding_boxes`; those in the place the sentence names when any are, [] when
    the checkpoint has no film segmenter or it found none)."""
    film = load_film(image)
    gen = generation_config(predictor.cfg, generation)
    text = generate_rows(predictor, film, [None], [CXR_PROMPTS["cxr_report"]], gen)[0]
    found = finding_boxes(predictor, film)
    sentences = []
    for s in split_sentences(text):
        said = read_finding_sentence(s)
        mine = found.get(said.get("label") or "", [])
        if said.get("side") and said.get("zone"):
            place = f"{said['side']} {said['zone']} zone"
            mine = [d for d in mine if d["place"] == place] or mine
        sentences.append({"text": s, **said, "boxes": [list(d["box"]) for d in mine]})
    return {"text": text, "sentences": sentences}
