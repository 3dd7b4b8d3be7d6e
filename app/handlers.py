"""What the demo does, free of layout: loading, masks, viewing, generation, memory.

:class:`DemoApp` holds the one shared Predictor and the app's policies (upload folder, size
limit, examples, scratch root, how many scans the server keeps, how often a session may ask
the model). Each browser session gets its own :class:`Session` (kept in a ``gr.State``) with
its own scratch folder. A session's scan is released when its tab closes
(:meth:`DemoApp.release`, wired to ``demo.unload``) or when more than ``max_scans`` sessions
hold one (least recently used first). Methods raise :class:`~app.inputs.InputError` for
anything the user can fix; the UI layer turns those into messages.

The Predictor contract (``rgct.inference``): ``region_report``, ``report``, ``answer``,
``detect``, and where present ``chat`` (a conversation turn), ``segment`` (predicted masks) and
``check_scan`` (does this look like a chest CT). Features an older Predictor lacks are detected and named in a note.
"""

from __future__ import annotations

import inspect
import logging
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from app import inputs, results, viewer
from app.inputs import InputError, Scan
from app.session import RateLimiter, Session, delete_session, public_message
from rgct.constants import REGIONS, WHOLE_SCAN

log = logging.getLogger(__name__)

BOX_MASK = "drawn box"
"""Mask name used for a box drawn in the viewer."""

STALE_SESSION_S = 24 * 3600
"""Session folders older than this are removed when an app starts."""

DISPLAY_SIZE = 512
"""Small slices are enlarged (integer factor, nearest neighbour) to about this many pixels."""

DEFAULT_BOX_DEPTH_MM = 20.0
"""A new box spans this many millimetres of slices, starting at the slice it was drawn on."""


def ask_model(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the Predictor; its ``ValueError`` (input it cannot use: no mask and no segmenter, an
    empty question, no region found) becomes a message for the user."""
    try:
        return fn(*args, **kwargs)
    except ValueError as err:
        raise InputError(public_message(str(err))) from err


def _parameter(fn: Any, name: str) -> inspect.Parameter | None:
    """``fn``'s parameter ``name``, or None (also when ``fn`` has no readable signature)."""
    try:
        return inspect.signature(fn).parameters.get(name)
    except (TypeError, ValueError):
        return None


def _masks_optional(fn: Any) -> bool:
    p = _parameter(fn, "masks")
    return p is not None and p.default is None


def _source_kwargs(fn: Any, source: str | None) -> dict:
    """``{"mask_source": source}`` for a Predictor method that takes it (the segmenter's masks
    are then classified by its own head where the checkpoint has one), else nothing."""
    takes = _parameter(fn, "mask_source") is not None
    return {"mask_source": source} if takes and source else {}


class DemoApp:
    """The shared half of the demo: one Predictor, policies, and the handlers.

    Args:
        predictor: object with the ``rgct.inference.Predictor`` interface, shared by sessions.
        examples_dir: folder of bundled examples (see :func:`app.inputs.list_examples`).
        max_upload_mb: size limit per uploaded file, in MB.
        upload_roots: folders uploads may come from; default gradio's upload folder.
        tmp_root: parent of the per-session scratch folders; default ``<tmp>/rgct_demo``.
        max_scans: scans the server keeps in memory at once, over all sessions.
        rate_limit: (requests, seconds): model calls allowed per session in that window.
        model_name: how exports name the model (a checkpoint folder name, never a path).
    """

    def __init__(
        self,
        predictor: Any,
        *,
        examples_dir: Path | None = None,
        max_upload_mb: float = 512,
        upload_roots: list[Path] | None = None,
        tmp_root: Path | None = None,
        max_scans: int = 8,
        rate_limit: tuple[int, float] = (30, 60.0),
        model_name: str | None = None,
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
        self.max_scans = max(1, int(max_scans))
        self.limiter = RateLimiter(*rate_limit)
        self.model_name = model_name or type(predictor).__name__
        self._live: OrderedDict[int, Session] = OrderedDict()  # sessions holding a scan, LRU
        self._by_key: dict[str, Session] = {}
        self._lock = threading.Lock()

    def _sweep_stale_sessions(self, max_age_s: float = STALE_SESSION_S) -> None:
        """Delete session folders left behind by a crashed or killed server."""
        now = time.time()
        for folder in self.tmp_root.glob("session-*"):
            if folder.is_dir() and now - folder.stat().st_mtime > max_age_s:
                shutil.rmtree(folder, ignore_errors=True)

    # --- sessions and memory ---------------------------------------------------------------------
    def session(self, session: Session | None, key: str | None = None) -> Session:
        """The given session, or a new one with a fresh scratch folder; ``key`` is the browser
        session it belongs to (released with :meth:`release`)."""
        if not isinstance(session, Session):
            workdir = Path(tempfile.mkdtemp(prefix="session-", dir=self.tmp_root))
            session = Session(workdir=workdir)
        session.workdir.mkdir(parents=True, exist_ok=True)
        if key is not None:
            session.key = key
            with self._lock:
                self._by_key[key] = session
        if session.scan is not None:
            with self._lock:
                if id(session) in self._live:
                    self._live.move_to_end(id(session))
        return session

    def _hold(self, session: Session) -> None:
        """Count ``session``'s new scan against ``max_scans``; release the least recent ones."""
        with self._lock:
            self._live[id(session)] = session
            self._live.move_to_end(id(session))
            while len(self._live) > self.max_scans:
                _, old = self._live.popitem(last=False)
                self._forget_scan(old)
                old.scan, old.report, old.region_result = None, None, None
                old.released = (
                    "This session's scan was released to free server memory (too many open "
                    "scans). Load it again."
                )
                log.info("released the scan of an idle session (limit %d)", self.max_scans)

    def release(self, key: str | None) -> bool:
        """Free everything a browser session holds (its tab closed). Returns whether it had one."""
        with self._lock:
            session = self._by_key.get(key) if key else None
        self.limiter.forget(key)
        if session is None:
            return False
        self.discard(session)
        session.released = "This session was closed. Reload the page."
        return True

    def discard(self, session: Session | None) -> None:
        """Forget a session: its scan, its outputs, its scratch folder and its registry entries.

        Also the ``gr.State`` delete callback (gradio drops a closed session's state later).
        """
        if not isinstance(session, Session):
            return
        with self._lock:
            self._live.pop(id(session), None)
            if session.key is not None and self._by_key.get(session.key) is session:
                del self._by_key[session.key]
        self._forget_scan(session)
        session.clear_outputs()
        delete_session(session)

    def _forget_scan(self, session: Session) -> None:
        """The predictor drops what it cached of this session's scan (its segmentation)."""
        if session.scan is not None and hasattr(self.predictor, "forget"):
            self.predictor.forget(session.scan.volume)

    def live_scans(self) -> int:
        """Scans held in memory now, over all sessions."""
        with self._lock:
            return len(self._live)

    def _checked(self, path: str | Path | None, what: str) -> Path:
        if not path:
            raise InputError(f"Upload {what} first.")
        return inputs.check_upload(path, self.upload_roots, self.max_bytes)

    # --- loading ---------------------------------------------------------------------------------
    def _new_scan(self, session: Session, scan: Scan) -> None:
        session.clear_outputs()
        session.scan = scan
        self._hold(session)
        session.scan_warnings = self._check_scan(scan)

    def _check_scan(self, scan: Scan) -> list[str]:
        check = getattr(self.predictor, "check_scan", None)
        if check is None:
            return []
        return [str(w) for w in ask_model(check, scan.volume)]

    def load_volume(
        self, session: Session | None, path: str | Path | None, *, segment: bool = True
    ) -> tuple[Session, str]:
        """Load an uploaded scan into the session (everything from the previous one cleared).

        With ``segment`` and a Predictor that can segment, its regions are predicted.
        """
        session = self.session(session)
        scan = inputs.load_volume_file(
            self._checked(path, "a scan"), session.workdir, self.max_bytes
        )
        self._new_scan(session, scan)
        message = f"Loaded **{scan.name}**, shape {scan.volume.array.shape}."
        if segment and hasattr(self.predictor, "segment"):
            found = self.predict_masks(session)
            message += (
                f" Predicted {found} region masks; pick one, upload masks, or draw a box."
                if found
                else " No region was predicted (see the warnings): upload masks or draw a box."
            )
        else:
            message += " Now give a region (upload masks or draw a box)."
        return session, message

    def predict_masks(self, session: Session) -> int:
        """Add the Predictor's own region masks to the scan. Returns how many it found."""
        scan = session.require_scan()
        try:
            out = ask_model(self.predictor.segment, scan.volume)
        except InputError as err:  # e.g. a checkpoint without a segmenter
            session.scan_warnings.append(f"No predicted regions: {err}")
            return 0
        masks = {
            n: np.asarray(m, dtype=bool)
            for n, m in (out.get("masks") or {}).items()
            if m is not None
        }
        masks = {n: m for n, m in masks.items() if m.shape == scan.volume.array.shape and m.any()}
        for name in inputs.region_order(list(masks)):
            scan.masks[name] = masks[name]
            scan.sources[name] = "predicted"
        session.scan_warnings += [str(w) for w in out.get("warnings") or []]
        session.selected = next(
            (r for r in REGIONS if r in scan.masks), next(iter(scan.masks), None)
        )
        self._centre_on_selected(session)
        return len(masks)

    def load_example(self, session: Session | None, name: str | None) -> tuple[Session, str]:
        """Load a bundled example (volume and its region masks) by name."""
        session = self.session(session)
        if not name:
            raise InputError("Pick an example first.")
        scan = inputs.load_example(name, self.examples_dir)
        self._new_scan(session, scan)
        session.selected = "lung" if "lung" in scan.masks else next(iter(scan.masks), None)
        self._centre_on_selected(session)
        return session, (
            f"Loaded example **{name}** with {len(scan.masks)} region masks (dataset); "
            f"showing **{session.selected}**."
        )

    def load_masks(self, session: Session | None, path: str | Path | None) -> tuple[Session, str]:
        """Add uploaded masks (one NIfTI or a zip) to the session's scan and select the first."""
        session = self.session(session)
        scan = session.require_scan()
        masks, notes = inputs.load_masks_file(
            self._checked(path, "a mask"), scan.volume, session.workdir, self.max_bytes
        )
        for name, mask in masks.items():
            scan.masks[name] = mask
            scan.sources[name] = "uploaded"
            session.evidence.pop(name, None)
        session.selected = next(iter(masks))
        self._centre_on_selected(session)
        note = f" ({'; '.join(notes)})" if notes else ""
        return session, f"Added {len(masks)} uploaded mask(s): {', '.join(masks)}{note}."

    def rename_single_mask(self, session: Session, old: str, region: str) -> None:
        """Make one uploaded mask count as the named region (API: one file + a region name)."""
        scan = session.require_scan()
        scan.masks[region] = scan.masks.pop(old)
        scan.sources[region] = scan.sources.pop(old, "uploaded")
        session.selected = region

    # --- the box tool ----------------------------------------------------------------------------
    def box_defaults(self, session: Session, z: int) -> tuple[int, int]:
        """Slice range of a new box drawn on slice ``z``: from ``z`` upwards,
        :data:`DEFAULT_BOX_DEPTH_MM` deep (clipped to the scan)."""
        scan = session.require_scan()
        d = scan.volume.array.shape[0]
        step = float(scan.volume.spacing[0]) if scan.volume.spacing else 1.0
        depth = max(1, int(round(DEFAULT_BOX_DEPTH_MM / max(step, 1e-3))))
        z = int(np.clip(z, 0, d - 1))
        return z, min(d - 1, z + depth - 1)

    def set_box(
        self, session: Session | None, z: tuple[int, int], y: tuple[int, int], x: tuple[int, int]
    ) -> tuple[Session, str]:
        """Make a box mask from voxel slice/row/column ranges (inclusive) and select it."""
        session = self.session(session)
        scan = session.require_scan()
        scan.masks[BOX_MASK] = inputs.make_box_mask(scan.volume.array.shape, z, y, x)
        scan.sources[BOX_MASK] = "drawn"
        session.evidence.pop(BOX_MASK, None)
        session.selected = BOX_MASK
        session.box_preview = None
        self._centre_on_selected(session)
        voxels = int(scan.masks[BOX_MASK].sum())
        return (
            session,
            f"Box region set: slices {sorted(z)}, {voxels} voxels.",
        )

    def set_box_from_image(
        self,
        session: Session | None,
        slices: tuple[int, int],
        rows: tuple[int, int],
        cols: tuple[int, int],
    ) -> tuple[Session, str]:
        """Box from the axial image's own coordinates: rows counted from the image's top
        (anterior), columns from its left (the patient's right)."""
        session = self.session(session)
        _, h, w = session.require_scan().volume.array.shape
        y = tuple(h - 1 - int(r) for r in rows)
        x = tuple(w - 1 - int(c) for c in cols)
        return self.set_box(session, slices, y, x)

    def click_box(self, session: Session, voxel: tuple[int, int, int]) -> tuple | None:
        """Register a box corner clicked on the axial view; every second click closes a box.

        Returns:
            None after the first corner, else ((z0, z1), (top, bottom), (left, right)): the
            slice range (starting at the slice drawn on) and the box in axial-image rows and
            columns, each pair ordered.
        """
        z, y, x = voxel
        _, h, w = session.require_scan().volume.array.shape
        if session.corner is None:
            session.corner = (y, x)
            session.box_preview = (y, y, x, x)
            session.box_slice = z
            return None
        (y0, x0), session.corner = session.corner, None
        session.box_preview = (y0, y, x0, x)
        rows = tuple(sorted((h - 1 - y0, h - 1 - y)))
        cols = tuple(sorted((w - 1 - x0, w - 1 - x)))
        return self.box_defaults(session, session.box_slice or z), rows, cols

    def select(self, session: Session | None, name: str | None) -> Session:
        """Select a mask by name (ignored if unknown) and show it where it is largest."""
        session = self.session(session)
        if session.scan is not None and name in session.scan.masks:
            session.selected = name
            session.focus = None
            self._centre_on_selected(session)
        return session

    def _centre_on_selected(self, session: Session) -> None:
        mask = session.mask
        at = viewer.largest_slices(mask) if mask is not None else None
        if at is None and session.scan is not None:
            at = tuple(s // 2 for s in session.scan.volume.array.shape)
        session.cursor = at

    def regions_at(self, session: Session, voxel: tuple[int, int, int]) -> list[str]:
        """Names of the scan's masks that contain ``voxel``, smallest mask first."""
        scan = session.require_scan()
        z, y, x = voxel
        hits = [n for n, m in scan.masks.items() if m[z, y, x]]
        return sorted(hits, key=lambda n: int(scan.masks[n].sum()))

    def focus_sentence(
        self, session: Session | None, index: int, source: str = "report"
    ) -> tuple[Session, str]:
        """Show a sentence of the full report (``source="report"``) or of the region report
        (``"region"``): a finding centred in all three planes with its own mask, a region
        sentence at the region's largest slices."""
        session = self.session(session)
        scan = session.require_scan()
        report = session.result(source)
        if report is None or not 0 <= index < len(report["sentences"]):
            raise InputError("Write the report first, then click one of its sentences.")
        sentence = report["sentences"][index]
        region = sentence["region"]
        session.focus = (source, index)
        if region in scan.masks:
            session.selected = region
        mask = results.finding_mask(report, sentence, scan.volume.array.shape)
        centre = results.finding_centre(sentence, mask)
        if centre is not None:
            session.cursor = centre
            return session, (
                f"Finding: **{results.finding_words(sentence['finding'])}** at voxel "
                f"{list(centre)} (z, y, x); region **{region}** outlined."
            )
        if region not in scan.masks:
            session.focus = None
            return session, f"No mask for **{region}** in this scan."
        self._centre_on_selected(session)
        return session, f"Showing **{region}** where it is largest."

    # --- viewing ---------------------------------------------------------------------------------
    def frame(
        self,
        session: Session | None,
        view: str,
        window: tuple[float, float],
        zoom: float = 1.0,
    ) -> tuple[np.ndarray, viewer.Plane] | None:
        """The current frame (rows, cols, 3) uint8 and its plane, or None without a scan."""
        if not isinstance(session, Session) or session.scan is None:
            return None
        vol = session.scan.volume
        shape = vol.array.shape
        cursor = session.cursor or tuple(s // 2 for s in shape)
        p = viewer.plane(
            shape,
            view,
            cursor[viewer.VIEW_AXIS[view]],
            spacing=tuple(vol.spacing) if getattr(vol, "spacing", None) is not None else None,
            min_size=DISPLAY_SIZE,
            zoom=zoom,
            centre=cursor,
        )
        layers: list[viewer.Layer] = []
        finding = None
        focused = session.focused()
        if focused is not None:
            finding = results.finding_mask(*focused, shape)
        if session.mask is not None:
            colour = viewer.region_colour(session.selected)
            # with a finding shown, its region is an outline only
            layers.append(viewer.Layer(session.mask, colour, 0.0 if finding is not None else 0.3))
        if finding is not None:
            layers.append(viewer.Layer(finding, viewer.FINDING_COLOUR, 0.5))
        rgb = viewer.render_plane(
            vol.array,
            p,
            window,
            layers,
            box=session.box_preview,
            cursor=cursor if finding is not None else None,
        )
        return rgb, p

    def move(self, session: Session, view: str, index: int) -> None:
        """Move the cursor to slice ``index`` of ``view`` (the other two planes follow)."""
        scan = session.require_scan()
        shape = scan.volume.array.shape
        cursor = list(session.cursor or (s // 2 for s in shape))
        axis = viewer.VIEW_AXIS[view]
        cursor[axis] = int(np.clip(index, 0, shape[axis] - 1))
        session.cursor = (cursor[0], cursor[1], cursor[2])

    # --- generation ------------------------------------------------------------------------------
    def _region_arg(self, name: str | None) -> str | None:
        return name if name in getattr(self.predictor, "regions", REGIONS) else None

    def _limit(self, session: Session) -> None:
        self.limiter.check(session.key or str(id(session)))

    def region_report(self, session: Session | None, **gen: int) -> tuple[dict, float]:
        """Report for the selected mask. Returns (normalised report, seconds)."""
        session = self.session(session)
        scan = session.require_scan()
        if session.mask is None:
            raise InputError("Give a region first: upload a mask, pick a region, or draw a box.")
        self._limit(session)
        t0 = time.perf_counter()
        region = self._region_arg(session.selected)
        # the grounded variant (sentences, findings, truncation) where the Predictor has one
        fn = getattr(self.predictor, "region_report_details", None) or self.predictor.region_report
        raw = ask_model(
            fn, scan.volume, session.mask, region, **_source_kwargs(fn, session.mask_source), **gen
        )
        result = results.normalise_report(raw, region or session.selected, session.mask_source)
        if session.focus and session.focus[0] == "region":
            session.focus = None
        session.region_result, session.settings = result, dict(gen)
        return result, time.perf_counter() - t0

    def full_report(self, session: Session | None, **gen: int) -> tuple[Session, dict, float]:
        """Report over every named region mask of the scan (or the Predictor's own masks).

        Returns (session, normalised report, seconds).
        """
        session = self.session(session)
        scan = session.require_scan()
        masks = {n: m for n, m in scan.masks.items() if n in REGIONS}
        sources = sorted({scan.sources.get(n, "unknown") for n in masks})
        if not masks and not _masks_optional(self.predictor.report):
            raise InputError(
                "A full report needs the region masks: load an example or upload a .zip of "
                "<region>.nii.gz masks."
            )
        self._limit(session)
        t0 = time.perf_counter()
        one = sources[0] if masks and len(sources) == 1 else None  # one source for them all
        raw = ask_model(
            self.predictor.report,
            scan.volume,
            masks or None,
            **_source_kwargs(self.predictor.report, one),
            **gen,
        )
        report = results.normalise_report(raw, None, "+".join(sources) if masks else None)
        if session.focus and session.focus[0] == "report":
            session.focus = None
        session.report, session.settings = report, dict(gen)
        return session, report, time.perf_counter() - t0

    def evidence(self, session: Session | None) -> dict[str, float]:
        """The region classifier's label probabilities for the selected region (cached)."""
        session = self.session(session)
        scan = session.require_scan()
        if session.selected is None or session.mask is None:
            raise InputError("Pick a region to see the region classifier's evidence.")
        if session.selected not in session.evidence:
            self._limit(session)
            probs = ask_model(self.predictor.detect, scan.volume, session.mask)
            session.evidence[session.selected] = {k: float(v) for k, v in probs.items()}
        return session.evidence[session.selected]

    def report_files(self, session: Session) -> tuple[Path, Path, Path]:
        """Write the session's last report as JSON, text and HTML (with key images)."""
        if session.report is None:
            raise InputError("Generate a full report first.")
        scan = session.require_scan()
        meta = self.export_meta(session)
        images = results.key_images(scan.volume, session.report, scan.masks)
        return results.write_exports(session.workdir, scan.name, session.report, meta, images)

    def export_meta(self, session: Session) -> dict:
        """Model, settings and scan recorded in every export."""
        scan = session.require_scan()
        return {
            "scan": scan.name,
            "shape": list(scan.volume.array.shape),
            "spacing_mm": [float(s) for s in scan.volume.spacing],
            "model": self.model_name,
            "settings": dict(session.settings),
            "scan_warnings": list(session.scan_warnings),
            "conversation": [
                {k: t.get(k) for k in ("question", "resolved", "answer", "region", "mask_source")}
                for t in session.chat
            ],
        }

    def ask(
        self, session: Session | None, question: str, whole_scan: bool = False, **gen: int
    ) -> tuple[dict, float]:
        """One conversation turn (``Predictor.chat``): the question is resolved against the
        session's earlier turns ("where is it?" -> "Where is the nodule located in the image?")
        and answered with the mask of the region it resolves to; the selection follows that
        region, so the viewer shows what the answer used.

        The selected region (or the whole scan) is the region in view; a region the question
        names wins. A Predictor without ``chat`` answers each question on its own (said).

        Returns:
            (turn, seconds); the turn ``{"question", "answer", "resolved", "task", "region",
            "finding", "mask_source", "clarify", "warnings"}`` is appended to ``session.chat``.
        """
        session = self.session(session)
        scan = session.require_scan()
        if not question or not question.strip():
            raise InputError("Type a question or pick a template.")
        if not hasattr(self.predictor, "chat"):
            return self.answer(session, question, whole_scan, conversation=True, **gen)
        region = WHOLE_SCAN if whole_scan else session.selected
        self._limit(session)
        t0 = time.perf_counter()
        raw = ask_model(
            self.predictor.chat,
            scan.volume,
            question.strip(),
            [{k: v for k, v in t.items() if k != "warnings"} for t in session.chat],
            region=region,
            masks=dict(scan.masks),
            mask_sources=dict(scan.sources),
            **gen,
        )
        warnings = [str(w) for w in raw.get("warnings") or []]
        if raw.get("truncated"):
            warnings.append("The answer was cut at the token limit: raise 'Max new tokens'.")
        if raw.get("resolved"):
            warnings += results.disagreements(session.report, raw["resolved"], raw["answer"])
        turn = {
            "question": question.strip(),
            "answer": str(raw["answer"]),
            "resolved": raw.get("resolved"),
            "task": raw.get("task"),
            "region": raw.get("region"),
            "finding": raw.get("finding"),
            "mask_source": raw.get("mask_source"),
            "clarify": bool(raw.get("clarify")),
            "warnings": warnings,
        }
        session.chat.append(turn)
        if turn["region"] in scan.masks and turn["region"] != session.selected:
            self.select(session, turn["region"])
        session.settings = dict(gen)
        return turn, time.perf_counter() - t0

    def answer(
        self,
        session: Session | None,
        question: str,
        whole_scan: bool = False,
        *,
        conversation: bool = False,
        **gen: int,
    ) -> tuple[dict, float]:
        """One question on its own (``Predictor.answer``), as written, about the selected
        region (or the whole scan); appended to ``session.chat`` like a turn.

        ``conversation``: asked in place of a turn (a Predictor without ``chat``), said so.
        """
        session = self.session(session)
        scan = session.require_scan()
        if not question or not question.strip():
            raise InputError("Type a question or pick a template.")
        if not whole_scan and session.mask is None:
            raise InputError("Pick a region, or choose the whole-scan scope.")
        mask = None if whole_scan else session.mask
        self._limit(session)
        t0 = time.perf_counter()
        warnings: list[str] = []
        if conversation and session.chat:
            warnings.append(
                "This model has no chat(): each question is answered on its own, without the "
                "earlier turns."
            )
        raw = ask_model(self.predictor.answer, scan.volume, question.strip(), mask, **gen)
        text = raw if isinstance(raw, str) else str(raw.get("text", ""))
        if isinstance(raw, dict):
            warnings += [str(w) for w in raw.get("warnings") or []]
            if raw.get("truncated"):
                warnings.append("The answer was cut at the token limit: raise 'Max new tokens'.")
        warnings += results.disagreements(session.report, question, text)
        turn = {
            "question": question.strip(),
            "answer": text,
            "resolved": question.strip(),
            "task": None,
            "region": WHOLE_SCAN if whole_scan else session.selected,
            "finding": None,
            "mask_source": WHOLE_SCAN if whole_scan else session.mask_source,
            "clarify": False,
            "warnings": warnings,
        }
        session.chat.append(turn)
        session.settings = dict(gen)
        return turn, time.perf_counter() - t0
