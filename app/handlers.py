"""What the demo does, free of layout: sessions, loading, masks, generation, API calls.

:class:`DemoApp` holds the one shared Predictor and the app's policies (upload folder, size
limit, examples, scratch root). Each browser session gets its own :class:`Session` (kept in
a ``gr.State``) with its own scratch folder, deleted when the session ends. Methods raise
:class:`~app.inputs.InputError` for anything the user can fix; the UI layer turns those into
messages.
"""

from __future__ import annotations

import html
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app import inputs, viewer
from app.inputs import InputError, Scan

log = logging.getLogger(__name__)

BOX_MASK = "drawn box"
"""Mask name used for a box drawn in the viewer."""

STALE_SESSION_S = 24 * 3600
"""Session folders older than this are removed when an app starts."""

DISPLAY_SIZE = 512
"""Small slices are enlarged (integer factor, nearest neighbour) to about this many pixels."""


@dataclass
class Session:
    """One browser session's state.

    Attributes:
        workdir: scratch folder (extracted zips, report downloads), deleted with the session.
        scan: the loaded scan and its masks, or None.
        selected: name of the mask in use (a key of ``scan.masks``), or None.
        corner: first click of a box being drawn on the axial view, (y, x), or None.
        report: the last full report, as returned by ``Predictor.report``.
        box_preview: (y0, y1, x0, x1) box outlined on the axial view while drawing, or None.
    """

    workdir: Path
    scan: Scan | None = None
    selected: str | None = None
    corner: tuple[int, int] | None = None
    report: dict | None = None
    box_preview: tuple[int, int, int, int] | None = None

    @property
    def mask(self) -> np.ndarray | None:
        """The selected (D, H, W) bool mask, or None."""
        if self.scan is None or self.selected is None:
            return None
        return self.scan.masks.get(self.selected)

    def require_scan(self) -> Scan:
        if self.scan is None:
            raise InputError("Load a scan first (upload one or pick an example).")
        return self.scan


def delete_session(session: Session | None) -> None:
    """``gr.State`` delete callback: remove the session's scratch folder."""
    if isinstance(session, Session):
        shutil.rmtree(session.workdir, ignore_errors=True)
        log.debug("deleted session folder %s", session.workdir)


def generation_kwargs(max_new_tokens: float, decoding: str, num_beams: float) -> dict[str, int]:
    """Predictor keyword arguments from the settings accordion (greedy means one beam)."""
    beams = 1 if decoding == "greedy" else max(1, int(num_beams))
    return {"max_new_tokens": max(1, int(max_new_tokens)), "num_beams": beams}


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def report_html(report: dict) -> str:
    """The full report as HTML, one coloured line per sentence with its region name."""
    rows = []
    for s in report.get("sentences", []):
        region = s.get("region", "")
        colour = viewer.colour_hex(region)
        rows.append(
            f'<div class="rgct-sentence" style="display:flex;gap:0.75em;border-left:6px solid '
            f'{colour};padding:4px 8px;margin:4px 0"><span style="flex:0 0 9.5em;font-weight:600;'
            f'color:{colour}">{html.escape(region)}</span><span style="flex:1">'
            f"{html.escape(s.get('text', ''))}</span></div>"
        )
    if not rows:
        rows.append(f"<div>{html.escape(report.get('text', ''))}</div>")
    return '<div class="rgct-report">' + "\n".join(rows) + "</div>"


def report_text(report: dict) -> str:
    """Plain-text report: ``region: sentence`` lines."""
    lines = [f"{s['region']}: {s['text']}" for s in report.get("sentences", [])]
    return "\n".join(lines) if lines else report.get("text", "")


class DemoApp:
    """The shared half of the demo: one Predictor, policies, and the handlers.

    Args:
        predictor: object with the ``rgct.inference.Predictor`` interface, shared by sessions.
        examples_dir: folder of bundled examples (see :func:`app.inputs.list_examples`).
        max_upload_mb: size limit per uploaded file, in MB.
        upload_roots: folders uploads may come from; default gradio's upload folder.
        tmp_root: parent of the per-session scratch folders; default ``<tmp>/rgct_demo``.
    """

    def __init__(
        self,
        predictor: Any,
        *,
        examples_dir: Path | None = None,
        max_upload_mb: float = 512,
        upload_roots: list[Path] | None = None,
        tmp_root: Path | None = None,
    ) -> None:
        self.predictor = predictor
        self.examples_dir = Path(examples_dir) if examples_dir is not None else None
        self.max_bytes = int(max_upload_mb * 2**20)
        if upload_roots is None:
            from gradio.utils import get_upload_folder

            upload_roots = [Path(get_upload_folder())]
        self.upload_roots = [Path(r) for r in upload_roots]
        self.tmp_root = Path(tmp_root) if tmp_root else Path(tempfile.gettempdir()) / "rgct_demo"
        self.tmp_root.mkdir(parents=True, exist_ok=True)
        self._sweep_stale_sessions()
        self.examples = inputs.list_examples(self.examples_dir)

    def _sweep_stale_sessions(self, max_age_s: float = STALE_SESSION_S) -> None:
        """Delete session folders left behind by a crashed or killed server."""
        now = time.time()
        for folder in self.tmp_root.glob("session-*"):
            if folder.is_dir() and now - folder.stat().st_mtime > max_age_s:
                shutil.rmtree(folder, ignore_errors=True)

    # --- sessions --------------------------------------------------------------------------------
    def session(self, session: Session | None) -> Session:
        """The given session, or a new one with a fresh scratch folder."""
        if isinstance(session, Session):
            session.workdir.mkdir(parents=True, exist_ok=True)
            return session
        workdir = Path(tempfile.mkdtemp(prefix="session-", dir=self.tmp_root))
        return Session(workdir=workdir)

    def _checked(self, path: str | Path | None, what: str) -> Path:
        if not path:
            raise InputError(f"Upload {what} first.")
        return inputs.check_upload(path, self.upload_roots, self.max_bytes)

    # --- loading ---------------------------------------------------------------------------------
    def load_volume(self, session: Session | None, path: str | Path | None) -> tuple[Session, str]:
        """Load an uploaded scan into the session (dropping previous masks)."""
        session = self.session(session)
        scan = inputs.load_volume_file(
            self._checked(path, "a scan"), session.workdir, self.max_bytes
        )
        session.scan, session.selected, session.corner, session.report = scan, None, None, None
        return (
            session,
            f"Loaded **{scan.name}**, shape {scan.volume.array.shape}. Now give a region.",
        )

    def load_example(self, session: Session | None, name: str | None) -> tuple[Session, str]:
        """Load a bundled example (volume and its region masks) by name."""
        session = self.session(session)
        if not name:
            raise InputError("Pick an example first.")
        scan = inputs.load_example(name, self.examples_dir)
        session.scan, session.corner, session.report = scan, None, None
        session.selected = next(iter(scan.masks), None)
        return session, (
            f"Loaded example **{name}** with {len(scan.masks)} region masks; "
            f"showing **{session.selected}**."
        )

    def load_masks(self, session: Session | None, path: str | Path | None) -> tuple[Session, str]:
        """Add uploaded masks (one NIfTI or a zip) to the session's scan and select the first."""
        session = self.session(session)
        scan = session.require_scan()
        masks, notes = inputs.load_masks_file(
            self._checked(path, "a mask"), scan.volume, session.workdir, self.max_bytes
        )
        scan.masks.update(masks)
        session.selected = next(iter(masks))
        note = f" ({'; '.join(notes)})" if notes else ""
        return session, f"Added {len(masks)} mask(s): {', '.join(masks)}{note}."

    def set_box(
        self, session: Session | None, z: tuple[int, int], y: tuple[int, int], x: tuple[int, int]
    ) -> tuple[Session, str]:
        """Make a box mask from slice/row/column ranges (inclusive) and select it."""
        session = self.session(session)
        scan = session.require_scan()
        scan.masks[BOX_MASK] = inputs.make_box_mask(scan.volume.array.shape, z, y, x)
        session.selected = BOX_MASK
        voxels = int(scan.masks[BOX_MASK].sum())
        return (
            session,
            f"Box region set: slices {sorted(z)}, rows {sorted(y)}, columns {sorted(x)} ({voxels} voxels).",
        )

    def click(
        self, session: Session | None, y: int, x: int
    ) -> tuple[Session, tuple[int, int, int, int] | None]:
        """Register a click on the axial image; every second click closes a box.

        Args:
            session: the session (its scan gives the display scale).
            y, x: clicked pixel in the displayed (possibly enlarged) axial image.

        Returns:
            (session, box) with box (y0, y1, x0, x1) in voxels when this click completed one,
            else None.
        """
        session = self.session(session)
        _, h, w = session.require_scan().volume.array.shape
        f = viewer.display_factor((h, w), DISPLAY_SIZE)
        y, x = viewer.axial_display_to_voxel(y, x, (h, w), f)
        if session.corner is None:
            session.corner = (y, x)
            return session, None
        (y0, x0), session.corner = session.corner, None
        return session, (y0, y, x0, x)

    def select(self, session: Session | None, name: str | None) -> Session:
        """Select a mask by name (ignored if unknown)."""
        session = self.session(session)
        if session.scan is not None and name in session.scan.masks:
            session.selected = name
        return session

    # --- viewing ---------------------------------------------------------------------------------
    def render(
        self,
        session: Session | None,
        view: str,
        index: float,
        window: str,
        box: tuple[int, int, int, int] | None = None,
    ) -> np.ndarray | None:
        """The current frame as (rows, cols, 3) uint8, or None without a scan."""
        if not isinstance(session, Session) or session.scan is None:
            return None
        vol = session.scan.volume
        return viewer.render_slice(
            vol.array,
            view,
            int(index),
            window,
            mask=session.mask,
            colour=viewer.region_colour(session.selected),
            spacing=tuple(vol.spacing) if getattr(vol, "spacing", None) is not None else None,
            box=box,
            min_size=DISPLAY_SIZE,
        )

    # --- generation ------------------------------------------------------------------------------
    def _region_arg(self, name: str | None) -> str | None:
        return name if name in getattr(self.predictor, "regions", ()) else None

    def region_report(self, session: Session | None, **gen: int) -> tuple[str, float]:
        """Report for the selected mask. Returns (text, seconds)."""
        session = self.session(session)
        scan = session.require_scan()
        if session.mask is None:
            raise InputError("Give a region first: upload a mask, pick a region, or draw a box.")
        t0 = time.perf_counter()
        text = self.predictor.region_report(
            scan.volume, session.mask, self._region_arg(session.selected), **gen
        )
        return text, time.perf_counter() - t0

    def full_report(self, session: Session | None, **gen: int) -> tuple[Session, dict, float]:
        """Report over every named region mask of the scan. Returns (session, report, seconds)."""
        session = self.session(session)
        scan = session.require_scan()
        masks = {n: m for n, m in scan.masks.items() if self._region_arg(n)}
        if not masks:
            raise InputError(
                "A full report needs the region masks: load an example or upload a .zip of "
                "<region>.nii.gz masks."
            )
        t0 = time.perf_counter()
        report = self.predictor.report(scan.volume, masks, **gen)
        session.report = report
        return session, report, time.perf_counter() - t0

    def report_files(self, session: Session) -> tuple[Path, Path]:
        """Write the session's last report as JSON and text for download. Returns both paths."""
        if session.report is None:
            raise InputError("Generate a full report first.")
        stem = session.scan.name if session.scan else "report"
        js = write_atomic(
            session.workdir / f"{stem}_report.json", json.dumps(session.report, indent=2)
        )
        txt = write_atomic(
            session.workdir / f"{stem}_report.txt", report_text(session.report) + "\n"
        )
        return js, txt

    def answer(self, session: Session | None, question: str, **gen: int) -> tuple[str, float]:
        """Answer a question about the selected region (whole scan if none). Returns (text, s)."""
        session = self.session(session)
        scan = session.require_scan()
        if not question or not question.strip():
            raise InputError("Type a question or pick a template.")
        t0 = time.perf_counter()
        text = self.predictor.answer(scan.volume, question.strip(), session.mask, **gen)
        return text, time.perf_counter() - t0

    # --- stateless API ---------------------------------------------------------------------------
    def _api_scan(self, volume_file: str | None) -> tuple[Session, Scan]:
        session = self.session(None)
        try:
            session, _ = self.load_volume(session, volume_file)
        except InputError:
            delete_session(session)
            raise
        return session, session.require_scan()

    def api_region_report(
        self, volume_file: str | None, mask_file: str | None, region: str | None, **gen: int
    ) -> str:
        """One-shot region report from files: a scan and a mask NIfTI (or a zip + region)."""
        session, scan = self._api_scan(volume_file)
        try:
            if mask_file:
                session, _ = self.load_masks(session, mask_file)
                if region:
                    if region not in scan.masks:
                        raise InputError(
                            f"Region {region!r} is not among the masks: {', '.join(scan.masks)}."
                        )
                    session.selected = region
            else:
                raise InputError("Upload a mask for the region.")
            return self.region_report(session, **gen)[0]
        finally:
            delete_session(session)

    def api_report(self, volume_file: str | None, masks_file: str | None, **gen: int) -> dict:
        """One-shot full report from a scan and a zip of region masks."""
        session, _ = self._api_scan(volume_file)
        try:
            session, _ = self.load_masks(session, masks_file)
            return self.full_report(session, **gen)[1]
        finally:
            delete_session(session)

    def api_answer(
        self, volume_file: str | None, mask_file: str | None, question: str, **gen: int
    ) -> str:
        """One-shot answer from a scan, an optional mask and a question."""
        session, _ = self._api_scan(volume_file)
        try:
            if mask_file:
                session, _ = self.load_masks(session, mask_file)
            return self.answer(session, question, **gen)[0]
        finally:
            delete_session(session)
