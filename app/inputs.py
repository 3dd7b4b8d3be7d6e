"""Turning what a demo user hands over into a volume and region masks, safely.

Every function here either returns arrays or raises :class:`InputError` with a message meant
for the user (no traceback). Paths coming from the browser are checked to lie inside the
upload area, sizes are bounded, zips are extracted member by member into a per-session folder
with no path escaping it, and examples are opened by name from a fixed list only.
"""

from __future__ import annotations

import logging
import shutil
import uuid
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rgct.constants import REGIONS
from rgct.data import io as rio

log = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".zip", ".npz", ".dcm")
"""Upload types accepted for a scan (a DICOM series as a .zip, one multi-frame DICOM as .dcm)."""

FILM_SUFFIXES = (".png", ".dicom", ".jpg", ".jpeg")
"""2D image uploads: chest radiographs, which a CT model refuses by name."""

RADIOGRAPH_MODALITIES = ("DX", "CR", "RG")
"""DICOM ``Modality`` of a single radiograph (a ``.dcm`` a CT model refuses by name)."""

MASK_SUFFIXES = (".nii.gz", ".nii", ".zip")
"""Upload types accepted for region masks (one binary NIfTI, or a .zip of them)."""

MAX_ZIP_MEMBERS = 4096
ZIP_EXPANSION_LIMIT = 8
"""A zip may expand to at most this many times the upload size limit."""

# Errors the readers underneath may raise for a damaged or unexpected file.
_READ_ERRORS = (
    rio.DataError,
    OSError,
    ValueError,
    EOFError,
    zlib.error,
    zipfile.BadZipFile,
    KeyError,
)


class InputError(Exception):
    """Something the user supplied cannot be used; ``str(err)`` is shown in the UI."""


@dataclass
class Scan:
    """A loaded volume with the masks that belong to it.

    Attributes:
        volume: the :class:`rgct.data.io.Volume` (array (D, H, W) float32 HU).
        name: short display name (file or example name).
        masks: mask name -> (D, H, W) bool array, in display order.
        sources: mask name -> where it came from: "dataset", "predicted", "uploaded", "drawn".
    """

    volume: rio.Volume
    name: str
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


def strip_suffix(name: str, suffixes: tuple[str, ...] = VOLUME_SUFFIXES) -> str:
    """File name without its (double) suffix: ``train_1_a_1.nii.gz`` -> ``train_1_a_1``."""
    lower = name.lower()
    for suffix in suffixes:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _suffix(path: Path, allowed: tuple[str, ...]) -> str:
    lower = path.name.lower()
    for suffix in allowed:
        if lower.endswith(suffix):
            return suffix
    raise InputError(f"'{path.name}': unsupported file type; expected one of {', '.join(allowed)}.")


def check_upload(path: str | Path, roots: list[Path], max_bytes: int) -> Path:
    """Return ``path`` resolved, after checking it is an uploaded file of acceptable size.

    Args:
        path: path received from the browser or an API client.
        roots: folders uploads live in (gradio's upload folder); anything else is refused.
        max_bytes: size limit in bytes.

    Raises:
        InputError: the path lies outside ``roots``, is missing, or is too large.
    """
    resolved = Path(path).resolve()
    if not any(resolved.is_relative_to(Path(root).resolve()) for root in roots):
        log.warning("refused a file outside the upload area: %s", resolved)
        raise InputError(f"'{resolved.name}' was not uploaded through the app; please upload it.")
    if not resolved.is_file():
        raise InputError(
            f"'{resolved.name}' is missing (the upload may have expired); upload again."
        )
    size = resolved.stat().st_size
    if size > max_bytes:
        raise InputError(
            f"'{resolved.name}' is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB."
        )
    return resolved


def safe_extract(archive: Path, dest: Path, max_bytes: int) -> tuple[Path, list[Path]]:
    """Extract a zip into a fresh folder under ``dest``, refusing anything that could escape it.

    Args:
        archive: the .zip file.
        dest: folder to create the extraction folder in.
        max_bytes: limit on the total uncompressed size.

    Returns:
        (folder, files): the new extraction folder (the caller deletes it) and the extracted
        regular files, sorted.

    Raises:
        InputError: not a zip, too many members, too large, or a member path escapes.
    """
    out = dest / f"unzip-{uuid.uuid4().hex[:8]}"
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if len(members) > MAX_ZIP_MEMBERS:
                raise InputError(
                    f"'{archive.name}' holds {len(members)} files; the limit is {MAX_ZIP_MEMBERS}."
                )
            total = sum(m.file_size for m in members)
            if total > max_bytes:
                raise InputError(
                    f"'{archive.name}' expands to {total / 2**20:.0f} MB; "
                    f"the limit is {max_bytes / 2**20:.0f} MB."
                )
            files = []
            out.mkdir(parents=True)
            for member in members:
                target = (out / member.filename).resolve()
                if not target.is_relative_to(out.resolve()) or member.filename.startswith("/"):
                    raise InputError(
                        f"'{archive.name}' has an unsafe member path '{member.filename}'."
                    )
                if (
                    Path(member.filename).name.startswith((".", "__MACOSX"))
                    or "__MACOSX" in member.filename
                ):
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                files.append(target)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        shutil.rmtree(out, ignore_errors=True)
        raise InputError(f"'{archive.name}' is not a readable zip file ({err}).") from err
    except InputError:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return out, sorted(files)


def _public(err: Exception, path: Path) -> str:
    """An error message without the server's folders in it."""
    text = str(err)
    for folder in sorted({str(p) for p in (path, *path.parents)}, key=len, reverse=True):
        if len(folder) > 1:
            text = text.replace(folder + "/", "").replace(folder, path.name)
    return text


def _read_volume(path: Path, label: str) -> rio.Volume:
    try:
        volume = rio.load_volume(path)
    except _READ_ERRORS as err:
        raise InputError(f"Could not read the scan '{label}': {_public(err, path)}") from err
    if volume.array.ndim != 3 or min(volume.array.shape) < 2:
        raise InputError(f"'{label}' is not a 3D volume (shape {volume.array.shape}).")
    return volume


def _refuse_radiograph(path: Path) -> None:
    """A chest radiograph uploaded to the CT model: said so, with what to do.

    Raises:
        InputError: a 2D image file, or a ``.dcm`` whose header says DX/CR/RG.
    """
    lower = path.name.lower()
    is_film = lower.endswith(FILM_SUFFIXES)
    if lower.endswith(".dcm"):
        import pydicom
        from pydicom.errors import InvalidDicomError

        try:
            modality = str(pydicom.dcmread(path, stop_before_pixels=True).get("Modality", ""))
        except (InvalidDicomError, OSError, EOFError, ValueError, AttributeError):
            modality = ""  # unreadable: the volume reader names the problem
        is_film = modality.upper() in RADIOGRAPH_MODALITIES
    if is_film:
        raise InputError(
            f"'{path.name}' is a 2D image (a chest radiograph?); the loaded model reads chest CT "
            "volumes. Upload a CT, or start `rgct demo --checkpoint` with a chest-radiograph model."
        )


def load_volume_file(path: Path, workdir: Path, max_bytes: int) -> Scan:
    """Load an uploaded scan: NIfTI, RAD-ChestCT ``.npz``, or a DICOM series in a ``.zip``.

    Args:
        path: a checked upload (see :func:`check_upload`).
        workdir: the session's scratch folder (zips are extracted there, then deleted).
        max_bytes: upload limit; a zip may expand to ``ZIP_EXPANSION_LIMIT`` times it.

    Raises:
        InputError: unsupported type, unreadable file, or not a 3D volume.
    """
    _refuse_radiograph(path)
    suffix = _suffix(path, VOLUME_SUFFIXES)
    name = strip_suffix(path.name)
    if suffix != ".zip":
        return Scan(volume=_read_volume(path, path.name), name=name)
    folder, files = safe_extract(path, workdir, max_bytes * ZIP_EXPANSION_LIMIT)
    try:
        if not files:
            raise InputError(f"'{path.name}' is empty.")
        folders = sorted({f.parent for f in files}, key=lambda p: (len(p.parts), str(p)))
        # A DICOM series: the folder holding the most files.
        series = max(folders, key=lambda d: sum(f.parent == d for f in files))
        return Scan(volume=_read_volume(series, path.name), name=name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _read_mask(path: Path | np.ndarray, volume: rio.Volume, label: str) -> np.ndarray:
    try:
        mask = rio.load_mask(path, like=volume)
    except rio.EmptyMaskError as err:
        raise InputError(f"The mask '{label}' is empty (no voxel set).") from err
    except _READ_ERRORS as err:
        where = path if isinstance(path, Path) else Path(label)
        raise InputError(f"Could not use the mask '{label}': {_public(err, where)}") from err
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != volume.array.shape:
        raise InputError(
            f"The mask '{label}' has shape {mask.shape} but the scan has shape {volume.array.shape}."
        )
    if not mask.any():
        raise InputError(f"The mask '{label}' is empty (no voxel set).")
    return mask


def region_order(names: list[str]) -> list[str]:
    """Sort mask names: the official regions in their canonical order first, then the rest."""
    rank = {r: i for i, r in enumerate(REGIONS)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def load_masks_file(
    path: Path, volume: rio.Volume, workdir: Path, max_bytes: int
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Load an uploaded binary mask NIfTI, or a zip of ``[seg_<volume>/]<region>.nii.gz`` masks.

    Args:
        path: a checked upload.
        volume: the scan the masks must match.
        workdir: session scratch folder for extraction.
        max_bytes: upload limit.

    Returns:
        (masks, notes): mask name -> (D, H, W) bool, and notes about skipped empty masks.

    Raises:
        InputError: unreadable file, shape mismatch, or no usable mask.
    """
    suffix = _suffix(path, MASK_SUFFIXES)
    if suffix != ".zip":
        return {strip_suffix(path.name, MASK_SUFFIXES): _read_mask(path, volume, path.name)}, []
    folder, files = safe_extract(path, workdir, max_bytes * ZIP_EXPANSION_LIMIT)
    try:
        niftis = [f for f in files if f.name.lower().endswith((".nii.gz", ".nii"))]
        if not niftis:
            raise InputError(f"'{path.name}' holds no .nii/.nii.gz masks.")
        masks: dict[str, np.ndarray] = {}
        notes: list[str] = []
        for f in niftis:
            name = strip_suffix(f.name, MASK_SUFFIXES)
            try:
                masks[name] = _read_mask(f, volume, f"{path.name}:{name}")
            except InputError as err:
                if "is empty" not in str(err):
                    raise
                notes.append(f"'{name}' is empty and was skipped")
        if not masks:
            raise InputError(f"Every mask in '{path.name}' is empty.")
        return {n: masks[n] for n in region_order(list(masks))}, notes
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def list_examples(examples_dir: Path | None) -> list[str]:
    """Names of the bundled examples: sub-folders holding one volume and its ``seg_*`` masks."""
    if examples_dir is None or not Path(examples_dir).is_dir():
        return []
    names = []
    for sub in sorted(Path(examples_dir).iterdir()):
        if sub.is_dir() and any(p.name.endswith(".nii.gz") for p in sub.iterdir() if p.is_file()):
            names.append(sub.name)
    return names


def load_example(name: str, examples_dir: Path | None) -> Scan:
    """Load a bundled example by name (never by path).

    Raises:
        InputError: ``name`` is not one of :func:`list_examples`.
    """
    if name not in list_examples(examples_dir):
        raise InputError(f"Unknown example {name!r}.")
    folder = Path(examples_dir) / name
    vol_path = next(
        p for p in sorted(folder.iterdir()) if p.is_file() and p.name.endswith(".nii.gz")
    )
    scan = Scan(volume=_read_volume(vol_path, name), name=name)
    seg = folder / f"seg_{strip_suffix(vol_path.name)}"
    if seg.is_dir():
        found = {strip_suffix(p.name, MASK_SUFFIXES): p for p in seg.glob("*.nii.gz")}
        for region in region_order(list(found)):
            try:
                scan.masks[region] = _read_mask(found[region], scan.volume, region)
                scan.sources[region] = "dataset"
            except InputError as err:
                log.info("example %s: %s", name, err)
    return scan


def make_box_mask(
    shape: tuple[int, int, int], z: tuple[int, int], y: tuple[int, int], x: tuple[int, int]
) -> np.ndarray:
    """A (D, H, W) bool box mask from inclusive slice/row/column ranges (any order, clipped).

    Raises:
        InputError: the box lies outside the volume.
    """
    bounds = []
    for (a, b), size in zip((z, y, x), shape):
        lo, hi = sorted((int(a), int(b)))
        lo, hi = max(lo, 0), min(hi, size - 1)
        if lo > hi:
            raise InputError(f"The box lies outside the scan (shape {tuple(shape)}).")
        bounds += [lo, hi + 1]
    try:
        mask = rio.box_mask(tuple(shape), *bounds)
    except rio.DataError as err:
        raise InputError(f"Could not build the box mask: {err}") from err
    return np.asarray(mask, dtype=bool)
