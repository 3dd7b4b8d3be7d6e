"""Turning an uploaded chest radiograph into a film the radiograph page can show and ask about.

Every function here returns a :class:`Film` (with warnings) or raises
:class:`~app.inputs.InputError` with a message meant for the user:

- a CT volume (``.nii``/``.nii.gz``/``.zip``/``.npz``, or a DICOM whose header says CT or that
  holds several frames) is refused with what to do;
- a film whose DICOM header says lateral view or another body part than the chest is loaded
  with a warning (the model reads frontal chest films);
- a DICOM is read as :func:`rgct.data.cxr.load_radiograph` reads it (modality and VOI LUT,
  MONOCHROME1 inverted), and shown scaled to :data:`DISPLAY_MAX` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from app.inputs import VOLUME_SUFFIXES, InputError
from app.session import public_message
from rgct.data.cxr import (
    DICOM_SUFFIXES,
    Radiograph,
    dicom_header,
    is_lateral,
    is_non_chest,
    load_radiograph,
)
from rgct.data.io import DataError

FILM_SUFFIXES = (*DICOM_SUFFIXES, ".png")
"""Upload types accepted for a radiograph."""

CT_SUFFIXES = tuple(s for s in VOLUME_SUFFIXES if s not in DICOM_SUFFIXES)
"""Uploads that are CT volumes (refused by a radiograph checkpoint, by name)."""

DISPLAY_MAX = 768
"""The film is shown at most this many pixels on its longer side (clicks map back to pixels)."""

CT_MODALITIES = ("CT", "MR", "PT", "NM")


@dataclass
class Film:
    """A loaded radiograph.

    Attributes:
        radiograph: the film as read (float32 (H, W) in [0, 1], bright = attenuating).
        name: display name (the uploaded file's).
        display: (h, w) uint8, the film scaled to fit :data:`DISPLAY_MAX`.
    """

    radiograph: Radiograph
    name: str
    display: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.radiograph.shape

    def to_film(self, col: float, row: float) -> tuple[int, int]:
        """Film pixel (x, y) under a display pixel (column, row)."""
        (h, w), (dh, dw) = self.shape, self.display.shape
        x = int(np.clip((col + 0.5) * w / dw, 0, w - 1))
        y = int(np.clip((row + 0.5) * h / dh, 0, h - 1))
        return x, y

    def to_display(self, x: float, y: float) -> tuple[float, float]:
        """Display (column, row) of film coordinates (x, y)."""
        (h, w), (dh, dw) = self.shape, self.display.shape
        return x * dw / w, y * dh / h


def _display(array: np.ndarray) -> np.ndarray:
    grey = np.rint(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)
    h, w = grey.shape
    scale = DISPLAY_MAX / max(h, w)
    if scale >= 1:
        factor = max(1, int(DISPLAY_MAX // max(h, w)))  # small films: enlarged, whole pixels
        return np.kron(grey, np.ones((factor, factor), dtype=np.uint8))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.BOX))


def _ct_refusal(name: str, why: str) -> InputError:
    return InputError(
        f"'{name}' is {why}; the loaded model reads chest radiographs. Upload a frontal chest "
        f"film ({', '.join(FILM_SUFFIXES)}), or start `rgct demo --checkpoint` with a CT model."
    )


def load_film_file(path: Path) -> tuple[Film, list[str]]:
    """A radiograph upload as a :class:`Film`, with warnings about what its header says.

    Raises:
        InputError: a CT volume, an unsupported type, an unreadable file.
    """
    lower = path.name.lower()
    if lower.endswith(CT_SUFFIXES):
        raise _ct_refusal(path.name, "a CT volume")
    if not lower.endswith(FILM_SUFFIXES):
        raise InputError(
            f"'{path.name}': unsupported file type; expected one of {', '.join(FILM_SUFFIXES)}."
        )
    warnings: list[str] = []
    try:
        if lower.endswith(DICOM_SUFFIXES):
            warnings = _header_warnings(path)
        radiograph = load_radiograph(path)
    except (DataError, OSError, ValueError) as err:
        raise InputError(
            f"Could not read the radiograph '{path.name}': {public_message(str(err))}"
        ) from err
    return Film(radiograph, path.name, _display(radiograph.array)), warnings


def _header_warnings(path: Path) -> list[str]:
    """Refuse a CT DICOM; warn about a lateral or non-chest film (what its header says)."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    modality = str(ds.get("Modality", "") or "").upper()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if modality in CT_MODALITIES:
        raise _ct_refusal(path.name, f"a {modality} image (DICOM Modality {modality})")
    if frames > 1:
        raise _ct_refusal(path.name, f"a {frames}-frame DICOM (a volume, not one film)")
    head = dicom_header(path)
    out = []
    if is_lateral(head["view"]):
        out.append(
            f"The header says this is a lateral view (ViewPosition {head['view']!r}): the model "
            "reads frontal (PA/AP) chest films, so its answers and zones mean little here."
        )
    if is_non_chest(head["body_part"]):
        out.append(
            f"The header says the body part is {head['body_part']!r}, not the chest: the model "
            "reads chest films only."
        )
    return out


def list_film_examples(examples_dir: Path | None) -> list[str]:
    """File names of the bundled example films (DICOM or PNG) in ``examples_dir``."""
    if examples_dir is None or not Path(examples_dir).is_dir():
        return []
    return sorted(
        p.name
        for p in Path(examples_dir).iterdir()
        if p.is_file() and p.name.lower().endswith(FILM_SUFFIXES)
    )
