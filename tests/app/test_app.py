"""The demo's handlers, viewer, results and wiring, against FakePredictor (fast, no server)."""

from __future__ import annotations

import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

sys.path.insert(0, str(Path(__file__).parent))
from app_data import (  # noqa: E402
    CHEST_SHAPE,
    NODULE_CENTRE,
    SHAPE,
    SPACING,
    phantom,
    save_nifti,
    write_chest_examples,
)
from fake_predictor import FakePredictor  # noqa: E402

from app import inputs, results, viewer  # noqa: E402
from app.api import answer_once, chat_once, region_report_once, report_once  # noqa: E402
from app.callbacks import guard  # noqa: E402
from app.demo import build_demo  # noqa: E402
from app.handlers import BOX_MASK, DISPLAY_SIZE, DemoApp  # noqa: E402
from app.inputs import InputError  # noqa: E402
from app.main import parse_auth  # noqa: E402
from app.session import (  # noqa: E402
    check_generation,
    delete_session,
    generation_kwargs,
    public_message,
)
from rgct.constants import REGIONS, WHOLE_SCAN  # noqa: E402

LUNG = viewer.level_from_window(viewer.WINDOW_PRESETS["lung"])
VIEW = ("axial", *LUNG, 1.0)  # view, level, width, zoom: what a frame depends on


@pytest.fixture
def predictor() -> FakePredictor:
    return FakePredictor()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Every kind of upload, written inside a fake upload folder ``tmp_path/uploads``."""
    up = tmp_path / "uploads"
    up.mkdir()
    vol, masks = phantom()
    out = {"nii.gz": save_nifti(up / "scan.nii.gz", vol), "nii": save_nifti(up / "scan.nii", vol)}
    np.savez_compressed(up / "scan.npz", ct=vol)
    out["npz"] = up / "scan.npz"
    seg = tmp_path / "seg"
    seg.mkdir()
    for name, m in masks.items():
        out[f"mask:{name}"] = save_nifti(up / f"{name}.nii.gz", m)
        save_nifti(seg / f"{name}.nii.gz", m)
    with zipfile.ZipFile(up / "masks_seg.zip", "w") as zf:
        for name in masks:
            zf.write(seg / f"{name}.nii.gz", f"seg_scan/{name}.nii.gz")
    with zipfile.ZipFile(up / "masks_flat.zip", "w") as zf:
        for name in ("lung", "heart"):
            zf.write(seg / f"{name}.nii.gz", f"{name}.nii.gz")
    out["masks_seg.zip"], out["masks_flat.zip"] = up / "masks_seg.zip", up / "masks_flat.zip"
    out["mask:small"] = save_nifti(up / "small.nii.gz", np.ones((4, 4, 4), np.uint8))
    out["corrupt"] = up / "corrupt.nii.gz"
    out["corrupt"].write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    out["corrupt_zip"] = up / "corrupt.zip"
    out["corrupt_zip"].write_bytes(b"PK\x03\x04 not really a zip")
    with zipfile.ZipFile(up / "evil.zip", "w") as zf:
        zf.writestr("../../escape.nii.gz", b"x")
    out["evil_zip"] = up / "evil.zip"
    out["txt"] = up / "notes.txt"
    out["txt"].write_text("hello")
    out["outside"] = save_nifti(tmp_path / "outside.nii.gz", vol)
    return out


@pytest.fixture
def dicom_zip(tmp_path: Path) -> Path:
    """A 4-slice DICOM series: copies of pydicom's CT_small.dcm at shifted positions."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    src = get_testdata_file("CT_small.dcm")
    up = tmp_path / "uploads"
    up.mkdir(exist_ok=True)
    series = generate_uid()
    path = up / "series.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(4):
            ds = pydicom.dcmread(src)
            ds.SeriesInstanceUID = series
            ds.SOPInstanceUID = generate_uid()
            ds.InstanceNumber = i + 1
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y, z + 2.5 * i]
            ds.SliceLocation = z + 2.5 * i
            tmp = tmp_path / f"slice{i}.dcm"
            ds.save_as(tmp)
            zf.write(tmp, f"series/IM{i:04d}.dcm")
    return path


@pytest.fixture
def examples_dir(tmp_path: Path) -> Path:
    vol, masks = phantom()
    folder = tmp_path / "examples" / "phantom_a"
    (folder / "seg_train_1_a_1").mkdir(parents=True)
    save_nifti(folder / "train_1_a_1.nii.gz", vol)
    for name, m in masks.items():
        save_nifti(folder / "seg_train_1_a_1" / f"{name}.nii.gz", m)
    return write_chest_examples(tmp_path / "examples")


@pytest.fixture
def app(predictor, tmp_path, examples_dir) -> DemoApp:
    return DemoApp(
        predictor,
        examples_dir=examples_dir,
        max_upload_mb=5,
        upload_roots=[tmp_path / "uploads"],
        tmp_root=tmp_path / "sessions",
        model_name="fake-model",
    )


GEN = {"max_new_tokens": 64, "num_beams": 1}


# --- wiring ----------------------------------------------------------------------------------------


def test_build_demo_wires_named_endpoints_and_private_ui(predictor, examples_dir, tmp_path):
    demo = build_demo(
        predictor, examples_dir=examples_dir, tmp_root=tmp_path / "s", concurrency_limit=3
    )
    assert isinstance(demo, gr.Blocks)
    public = {f.api_name for f in demo.fns.values() if f.api_visibility == "public"}
    assert public == {"region_report", "region_report_details", "report", "answer", "chat"}
    assert demo.rgct_app.examples == ["chest_a", "chest_b", "phantom_a"]
    assert demo._queue.default_concurrency_limit == 3
    assert demo.rgct_app.predictor is predictor
    assert any(t[1] == "unload" for f in demo.fns.values() for t in f.targets)


def test_page_config_never_reaches_the_model(examples_dir, tmp_path):
    """gradio deep-copies the page config on every page load; it may not reach the Predictor
    (a bound method as the state's delete callback once made each load copy the whole model)."""
    from gradio.utils import safe_deepcopy

    copies = []

    class Counted(FakePredictor):
        def __deepcopy__(self, memo):
            copies.append(1)
            return self

    demo = build_demo(Counted(), examples_dir=examples_dir, tmp_root=tmp_path / "s")
    safe_deepcopy(demo.get_config_file())
    assert copies == []


def ui_fn(demo: gr.Blocks, name: str):
    return next(f.fn for f in demo.fns.values() if f.name == name)


def by_id(demo: gr.Blocks, elem_id: str):
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def test_ui_callbacks_turn_errors_into_status_messages(predictor, files, examples_dir, tmp_path):
    demo = build_demo(
        predictor,
        examples_dir=examples_dir,
        upload_roots=[tmp_path / "uploads"],
        tmp_root=tmp_path / "s",
    )
    status = by_id(demo, "rgct-status")
    on_volume = ui_fn(demo, "on_volume")
    out = on_volume(None, str(files["outside"]), *VIEW, None)
    assert list(out) == [status] and "not uploaded" in out[status]
    assert str(tmp_path) not in out[status]
    out = on_volume(None, str(files["corrupt"]), *VIEW, None)
    assert "Could not read" in out[status]
    ok = on_volume(None, str(files["nii.gz"]), *VIEW, None)
    session = next(v for k, v in ok.items() if isinstance(k, gr.State))
    assert session.scan.volume.array.shape == SHAPE
    session.selected = None
    out = ui_fn(demo, "on_region_report")(session, 64, "greedy", 3, None)
    assert "Give a region first" in out[status]
    out = ui_fn(demo, "on_region_report")(session, -5, "greedy", 3, None)
    assert "max_new_tokens must be a whole number from 1 to 512" in out[status]


def test_guard_hides_unexpected_exceptions_and_paths():
    status = gr.Markdown()

    @guard(status)
    def boom():
        raise RuntimeError("kaput reading /srv/rgct/uploads/abc/scan.nii.gz")

    out = boom()
    assert "RuntimeError: kaput" in out[status] and "Traceback" not in out[status]
    assert "/srv" not in out[status] and "scan.nii.gz" in out[status]


def test_public_message_and_generation_ranges():
    assert public_message("'/tmp/x/y/z.nii': bad; see /a/b/") == "'z.nii': bad; see b"
    assert check_generation(64, 1) == {"max_new_tokens": 64, "num_beams": 1}
    assert check_generation("16", 2.0) == {"max_new_tokens": 16, "num_beams": 2}
    for bad in ((0, 1), (513, 1), (10**9, 1), (64, 0), (64, 9), (64, -1), (1.5, 1), ("x", 1)):
        with pytest.raises(InputError, match=r"from 1 to (512|8)"):
            check_generation(*bad)
    assert generation_kwargs(64, "greedy", 4) == {"max_new_tokens": 64, "num_beams": 1}
    assert generation_kwargs(32.0, "beam search", 4.0) == {"max_new_tokens": 32, "num_beams": 4}


# --- loading every input format --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["nii", "nii.gz", "npz"])
def test_load_volume_formats(app, files, kind):
    session, message = app.load_volume(None, files[kind], segment=False)
    assert session.scan.volume.array.shape == SHAPE
    assert "scan" not in session.scan.masks and "Loaded" in message
    assert session.workdir.is_dir()


def test_load_dicom_zip(app, dicom_zip):
    session, _ = app.load_volume(None, dicom_zip, segment=False)
    assert session.scan.volume.array.shape == (4, 128, 128)
    assert not any(session.workdir.iterdir()), "extracted DICOM files must be deleted after loading"


def test_example_masks_are_dataset_masks_and_lung_is_shown_where_largest(app):
    session, message = app.load_example(None, "phantom_a")
    assert list(session.scan.masks) == ["heart", "lung"]  # canonical order; empty breast skipped
    assert set(session.scan.sources.values()) == {"dataset"} and "dataset" in message
    assert session.selected == "lung" and session.mask_source == "dataset"
    assert session.cursor == viewer.largest_slices(session.mask)
    result, seconds = app.region_report(session, max_new_tokens=16, num_beams=1)
    assert (
        result["text"]
        == f"lung: 384 voxels in {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} (tokens=16, beams=1)."
    )
    assert result["mask_source"] == "dataset" and seconds >= 0


@pytest.mark.parametrize("zip_name", ["masks_seg.zip", "masks_flat.zip"])
def test_mask_zip_and_region_pick(app, files, zip_name):
    session, _ = app.load_volume(None, files["nii.gz"], segment=False)
    session, message = app.load_masks(session, files[zip_name])
    assert list(session.scan.masks) == ["heart", "lung"]
    assert set(session.scan.sources.values()) == {"uploaded"}
    if zip_name == "masks_seg.zip":
        assert "breast" in message and "empty" in message
    session = app.select(session, "lung")
    assert app.region_report(session, **GEN)[0]["text"].startswith("lung: 384 voxels")
    session = app.select(session, "no such region")
    assert session.selected == "lung"


def test_single_mask_upload_is_named_by_its_file(app, files, predictor):
    session, _ = app.load_volume(None, files["nii.gz"], segment=False)
    session, _ = app.load_masks(session, files["mask:lung"])
    assert session.selected == "lung" and session.mask_source == "uploaded"
    app.region_report(session, **GEN)
    assert predictor.calls == [("region_report", "lung")]


def test_volume_upload_predicts_regions_and_checks_the_scan(app, files):
    session, message = app.load_volume(None, files["nii.gz"])
    assert "Predicted" in message
    assert "lung" in session.scan.masks and session.scan.sources["lung"] == "predicted"
    assert "right lung upper lobe" in session.scan.masks
    warnings = " ".join(session.warnings())
    assert "Only 12 slices" in warnings and "Field of view 16 mm" in warnings


def test_reports_tell_the_predictor_where_the_masks_came_from(app, files, predictor):
    """The segmenter's masks are read by their own classifier head: the app says which masks
    it hands over (one source for all of a full report's masks, else none)."""
    session, _ = app.load_volume(None, files["nii.gz"])
    app.select(session, "lung")
    app.region_report(session, **GEN)
    app.full_report(session, **GEN)
    session, _ = app.load_masks(session, files["mask:lung"])  # an uploaded lung beside them
    app.region_report(session, **GEN)
    app.full_report(session, **GEN)
    assert predictor.mask_sources == ["predicted", "predicted", "uploaded", None]


def test_box_tool_reads_rows_columns_and_starts_at_the_drawn_slice(app, files):
    session, _ = app.load_volume(None, files["nii.gz"], segment=False)
    d, h, w = SHAPE
    f = viewer.display_factor((h, w), DISPLAY_SIZE)
    app.move(session, "axial", 7)
    shown = app.frame(session, "axial", viewer.WINDOW_PRESETS["lung"])
    rgb, p = shown
    assert rgb.shape == (h * f, w * f, 3)
    # first corner low on the image and to the right, second high and to the left
    first = p.voxel(20 * f, 15 * f)
    assert first == (7, h - 1 - 20, w - 1 - 15)
    assert app.click_box(session, first) is None
    slices, rows, cols = app.click_box(session, p.voxel(5 * f, 2 * f))
    assert rows == (5, 20) and cols == (2, 15)  # top < bottom, left < right, on the image
    assert slices[0] == 7 and slices[1] == min(d - 1, 7 + 10 - 1)  # 20 mm of 2 mm slices
    session, message = app.set_box_from_image(session, slices, rows, cols)
    mask = session.scan.masks[BOX_MASK]
    assert session.selected == BOX_MASK and session.mask_source == "drawn"
    assert mask.sum() == (slices[1] - slices[0] + 1) * 16 * 14
    zs, ys, xs = np.nonzero(mask)
    assert (zs.min(), ys.min(), ys.max(), xs.min(), xs.max()) == (
        7,
        h - 1 - 20,
        h - 1 - 5,
        w - 1 - 15,
        w - 1 - 2,
    )
    # on the displayed image the box covers rows 5..20 and columns 2..15
    rgb, p = app.frame(session, "axial", viewer.WINDOW_PRESETS["lung"])
    inside = np.isin(p.rows, ys)[:, None] & np.isin(p.cols, xs)[None, :]
    assert inside[5 * f : 21 * f, 2 * f : 16 * f].all() and inside.sum() == 16 * 14 * f * f
    assert app.region_report(session, **GEN)[0]["text"].startswith("given region:")
    with pytest.raises(InputError, match="outside"):
        app.set_box(session, (50, 60), (0, 1), (0, 1))


# --- reports, findings, conversation ----------------------------------------------------------


def test_finding_sentence_centres_all_planes_and_shows_the_finding(app):
    session, _ = app.load_example(None, "chest_a")
    session, report, _ = app.full_report(session, **GEN)
    assert report["mask_source"] == "dataset"
    index = next(i for i, s in enumerate(report["sentences"]) if s["finding"])
    assert report["sentences"][index]["finding"]["index"] == 0
    session, message = app.focus_sentence(session, index)
    assert session.cursor == NODULE_CENTRE and "Lung nodule" in message
    for view in viewer.VIEWS:
        rgb, p = app.frame(session, view, viewer.WINDOW_PRESETS["lung"])
        assert p.index == NODULE_CENTRE[viewer.VIEW_AXIS[view]]
        r, c = (int(v) for v in p.pixel(NODULE_CENTRE))
        assert tuple(rgb[r, c]) != tuple(rgb[r, c][[0, 0, 0]]), "the finding is tinted"
        assert rgb[r, c][2] > rgb[r, c][1], "magenta finding overlay at the centre"
    # a region sentence shows its region where it is largest
    heart = next(i for i, s in enumerate(report["sentences"]) if s["region"] == "heart")
    session, message = app.focus_sentence(session, heart)
    assert session.cursor == viewer.largest_slices(session.scan.masks["heart"])
    assert "largest" in message
    with pytest.raises(InputError, match="Write the report first"):
        app.focus_sentence(session, 99)


def test_click_in_viewer_lists_the_region_sentences(app):
    session, _ = app.load_example(None, "chest_a")
    session, report, _ = app.full_report(session, **GEN)
    assert app.regions_at(session, NODULE_CENTRE) == ["lung"]
    page = results.report_html(report, only="lung")
    assert "nodule" in page and "The heart has" not in page
    assert 'data-sentence="' in page
    assert "says nothing about thyroid" in results.report_html(report, only="thyroid")


def test_conversation_keeps_context_and_ties_answers_to_regions(app, predictor):
    session, _ = app.load_example(None, "chest_a")
    turn1, _ = app.ask(session, "What is in the lung?", **GEN)
    assert turn1["resolved"] == "What are the abnormalities in the lung?"
    assert turn1["region"] == "lung" and turn1["mask_source"] == "dataset"
    assert turn1["answer"].endswith("| nodule")  # the finding in focus from now on
    turn2, _ = app.ask(session, "And how big is it?", **GEN)
    assert turn2["resolved"] == "What is the approximate size of the nodule in the lung?"
    assert turn2["region"] == "lung" and turn2["answer"].endswith("turn=2")
    # another region by name: answered with its mask, and the selection follows it
    turn3, _ = app.ask(session, "What about the heart?", **GEN)
    assert turn3["resolved"] == "What are the abnormalities in the heart?"
    assert turn3["region"] == "heart" and turn3["mask_source"] == "dataset"
    heart = int(session.scan.masks["heart"].sum())
    assert turn3["answer"] == f"Q={turn3['resolved']} | voxels={heart} | turn=3"
    assert (
        session.selected == "heart"
        and session.cursor[0] == viewer.largest_slices(session.scan.masks["heart"])[0]
    )
    assert [t["question"] for t in predictor.histories[-1]] == [
        "What is in the lung?",
        "And how big is it?",
    ]
    # nothing in focus in a normal heart and nothing detected there: asked back, no model call
    calls = len(predictor.calls)
    turn4, _ = app.ask(session, "Where is it?", **GEN)
    assert turn4["clarify"] and "Which finding" in turn4["answer"]
    assert turn4["region"] is None and len(predictor.calls) == calls
    # the reply completes the question
    turn5, _ = app.ask(session, "the nodule", **GEN)
    assert turn5["resolved"] == "Where is the nodule located in the image?"
    assert turn5["region"] == WHOLE_SCAN and session.selected == "heart"
    turn6, _ = app.ask(session, "What are the abnormalities in the scan?", whole_scan=True, **GEN)
    assert turn6["region"] == WHOLE_SCAN
    assert turn6["answer"].endswith(f"voxels={int(np.prod(CHEST_SHAPE))} | turn=6")
    with pytest.raises(InputError, match="question"):
        app.ask(session, "  ", whole_scan=True, **GEN)
    # a single question on its own is asked as written
    single, _ = app.answer(session, "Where is it?", **GEN)
    assert single["resolved"] == "Where is it?" and single["region"] == "heart"
    session.selected = None
    with pytest.raises(InputError, match="whole-scan scope"):
        app.answer(session, "Anything?", **GEN)
    # a new scan starts a new conversation and clears every output
    app.evidence(app.select(session, "lung"))
    session, _ = app.load_example(session, "chest_b")
    assert session.chat == [] and session.report is None and session.evidence == {}


def test_warnings_truncation_disagreement_and_scan(app, files):
    session, _ = app.load_example(None, "chest_a")
    session, report, _ = app.full_report(session, max_new_tokens=3, num_beams=1)
    assert report["truncated"] and any("token limit" in w for w in session.warnings())
    session, report, _ = app.full_report(session, **GEN)
    assert not report["truncated"]
    turn, _ = app.ask(session, "Where is the nodule located in the image?", **GEN)
    assert any(
        "left lung lower lobe" in w and "right lung upper lobe" in w for w in turn["warnings"]
    ), turn["warnings"]
    turn, _ = app.ask(session, "What are the abnormalities in the lung?", **GEN)
    assert turn["warnings"] == []
    session, _ = app.load_volume(session, files["nii.gz"])
    assert any("No lungs" in w or "slices" in w for w in session.warnings())


def test_disagreement_read_from_the_report_words():
    """Without grounded findings the report's own sentences say where a finding is."""
    report = {
        "sentences": [
            {
                "region": "lung",
                "text": "A nodule of 13x11 mm is seen in the right lung upper lobe.",
            },
            {"region": "pleura", "text": "No pleural effusion."},
        ],
        "findings": [],
    }
    where = "Where is the nodule located in the image?"
    assert results.disagreements(report, where, "lung/lung/right lung/right lung lower lobe") == [
        "The answer places the lung nodule in the right lung lower lobe; the report places it "
        "in the right lung upper lobe."
    ]
    assert results.disagreements(report, where, "right lung upper lobe") == []
    assert results.disagreements(report, "Can nodule be identified in the lung?", "No.") == [
        "The answer says no lung nodule; the report states one."
    ]
    assert results.disagreements(report, "Is there pleural effusion?", "No.") == []
    assert results.disagreements(None, where, "left lung") == []


def test_exports_record_model_settings_and_mask_source(app):
    session, _ = app.load_example(None, "chest_a")
    session, report, _ = app.full_report(session, max_new_tokens=48, num_beams=2)
    app.ask(session, "What is in the lung?", **GEN)
    js, txt, page = app.report_files(session)
    data = json.loads(js.read_text())
    assert data["model"] == "fake-model" and data["settings"] == GEN
    assert data["mask_source"] == "dataset" and data["scan"] == "chest_a"
    assert data["findings"][0]["center_voxel"] == list(NODULE_CENTRE)
    assert "mask" not in data["findings"][0] and data["conversation"][0]["region"] == "lung"
    text = txt.read_text()
    assert "Model: fake-model" in text and "Mask source: dataset" in text
    assert "lung: A 7 mm nodule is seen in the right lung upper lobe." in text
    html_page = page.read_text()
    assert html_page.count("data:image/png;base64,") == 1 and "fake-model" in html_page
    assert "Mask source" in html_page


def test_evidence_is_a_bar_chart_of_detect(app):
    session, _ = app.load_example(None, "chest_a")
    probs = app.evidence(session)
    assert probs["Lung nodule"] == 0.9
    page = results.evidence_html(probs, "lung")
    assert page.count('class="rgct-bar"') == 18 and "width:90.0%" in page
    assert (
        page.index("Lung nodule") < page.index("Medical material")
        or probs["Medical material"] >= 0.9
    )


# --- memory and request policies ---------------------------------------------------------------


def test_scan_cap_and_tab_close_release_memory(predictor, examples_dir, tmp_path, monkeypatch):
    import app.session as session_mod

    trims = []
    real_trim = session_mod.return_free_memory
    monkeypatch.setattr(session_mod, "return_free_memory", lambda: trims.append(real_trim()))
    app = DemoApp(predictor, examples_dir=examples_dir, tmp_root=tmp_path / "s", max_scans=2)
    sessions = [app.load_example(app.session(None, f"tab{i}"), "chest_a")[0] for i in range(3)]
    assert app.live_scans() == 2
    assert sessions[0].scan is None and sessions[1].scan is not None
    with pytest.raises(InputError, match="released to free server memory"):
        app.region_report(sessions[0], **GEN)
    assert app.release("tab2") and sessions[2].scan is None
    assert not sessions[2].workdir.exists() and app.live_scans() == 1
    assert not app.release("tab2") and not app.release(None)
    app.discard(sessions[1])  # gradio's state delete callback
    assert app.live_scans() == 0 and not app.release("tab1")
    # each freed scan (cap, tab closed, state deleted) was forgotten by the predictor too,
    # and the heap trimmed after each closed session that held one
    assert [c for c, _ in predictor.calls].count("forget") == 3
    assert len(trims) == 2


def test_rate_limit_per_session(predictor, examples_dir, tmp_path):
    app = DemoApp(predictor, examples_dir=examples_dir, tmp_root=tmp_path / "s", rate_limit=(2, 60))
    a = app.load_example(app.session(None, "a"), "chest_a")[0]
    b = app.load_example(app.session(None, "b"), "chest_a")[0]
    app.region_report(a, **GEN)
    app.region_report(a, **GEN)
    with pytest.raises(InputError, match="Too many requests: at most 2 per 60 s"):
        app.region_report(a, **GEN)
    app.region_report(b, **GEN)  # another session has its own budget


def test_an_older_predictor_still_works(examples_dir, tmp_path):
    class OldPredictor:
        regions = REGIONS

        def region_report(self, volume, mask, region=None, **gen):
            return f"Text about {region}. Second sentence."

        def report(self, volume, masks, **gen):
            return {"text": "x", "sentences": [{"region": r, "text": "x."} for r in masks],
                    "regions": {r: "x." for r in masks}}  # fmt: skip

        def answer(self, volume, question, mask=None, **gen):
            return "An answer."

        def detect(self, volume, mask=None):
            return {"Lung nodule": 0.5}

        def segment(self, volume):
            raise ValueError("this checkpoint has no segmenter (segmenter.safetensors)")

    app = DemoApp(
        OldPredictor(),
        examples_dir=examples_dir,
        tmp_root=tmp_path / "s",
        upload_roots=[examples_dir],
    )
    upload = next((examples_dir / "chest_b").glob("*.nii.gz"))
    session, message = app.load_volume(None, upload)  # no segmenter: a warning, no regions
    assert "No region was predicted" in message and session.scan.masks == {}
    assert any("no segmenter" in w for w in session.warnings())
    session, _ = app.load_example(None, "chest_a")
    result, _ = app.region_report(session, **GEN)
    assert [s["text"] for s in result["sentences"]] == ["Text about lung.", "Second sentence."]
    assert app.full_report(session, **GEN)[1]["mask_source"] == "dataset"
    app.ask(session, "Q1?", **GEN)
    turn, _ = app.ask(session, "Q2?", **GEN)
    assert (
        turn["answer"] == "An answer."
        and "each question is answered on its own" in (turn["warnings"][0])
    )


# --- bad inputs: a message, never an exception of another kind ----------------------------------


@pytest.mark.parametrize(
    ("what", "kind", "message"),
    [
        ("volume", "outside", "not uploaded through the app"),
        ("volume", "corrupt", "Could not read the scan"),
        ("volume", "corrupt_zip", "not a readable zip"),
        ("volume", "evil_zip", "unsafe member path"),
        ("volume", "txt", "unsupported file type"),
        ("volume", "missing", "missing"),
        ("mask", "mask:small", "shape"),
        ("mask", "mask:breast", "empty"),
        ("mask", "corrupt", "Could not use the mask"),
        ("mask", "outside", "not uploaded through the app"),
    ],
)
def test_bad_inputs_give_messages(app, files, tmp_path, what, kind, message):
    path = tmp_path / "uploads" / "gone.nii.gz" if kind == "missing" else files[kind]
    session = None
    if what == "mask":
        session, _ = app.load_volume(None, files["nii.gz"], segment=False)
    with pytest.raises(InputError, match=message) as info:
        (app.load_volume if what == "volume" else app.load_masks)(session, path)
    assert str(tmp_path) not in str(info.value), "messages must not show server folders"
    assert not (tmp_path / "escape.nii.gz").exists()


def test_too_large_upload(predictor, files, tmp_path):
    small = DemoApp(
        predictor, max_upload_mb=0.001, upload_roots=[tmp_path / "uploads"], tmp_root=tmp_path / "s"
    )
    with pytest.raises(InputError, match="the limit is"):
        small.load_volume(None, files["nii.gz"])


def test_zip_bomb_is_refused(app, tmp_path):
    bomb = tmp_path / "uploads" / "bomb.zip"
    bomb.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.dcm", b"\0" * (45 * 2**20))  # 45 MB > 8 x 5 MB
    with pytest.raises(InputError, match="expands to"):
        app.load_volume(None, bomb)


def test_examples_only_by_name(app):
    for name in ["../phantom_a", "/etc", "phantom_b", ""]:
        with pytest.raises(InputError):
            app.load_example(None, name)


def test_actions_before_a_scan_say_so(app):
    for call in (
        lambda: app.region_report(None, **GEN),
        lambda: app.full_report(None, **GEN),
        lambda: app.ask(None, "Q?", **GEN),
        lambda: app.load_masks(None, None),
        lambda: app.evidence(None),
    ):
        with pytest.raises(InputError, match="Load a scan first"):
            call()


def test_session_cleanup(app, files):
    session, _ = app.load_volume(None, files["nii.gz"], segment=False)
    session, _ = app.load_masks(session, files["masks_seg.zip"])
    session, *_ = app.full_report(session, **GEN)
    app.report_files(session)
    assert any(session.workdir.iterdir())
    delete_session(session)
    assert not session.workdir.exists() and session.scan is None


def test_api_helpers(app, files, tmp_path):
    out = region_report_once(app, files["nii.gz"], files["masks_seg.zip"], "lung", **GEN)
    assert out["text"].startswith("lung: 384 voxels") and out["mask_source"] == "uploaded"
    # one mask file counts as the region the caller names
    out = region_report_once(app, files["nii.gz"], files["mask:heart"], "lung", **GEN)
    assert out["text"].startswith("lung: 256 voxels")
    with pytest.raises(InputError, match="not among"):
        region_report_once(app, files["nii.gz"], files["masks_seg.zip"], "thyroid", **GEN)
    report = report_once(app, files["nii.gz"], files["masks_flat.zip"], **GEN)
    assert report["regions"]["lung"] and json.dumps(report)
    predicted = report_once(app, files["nii.gz"], None, **GEN)
    assert predicted["mask_source"] == "predicted"
    out = region_report_once(app, files["nii.gz"], None, "lung", **GEN)  # the predicted lung
    assert out["mask_source"] == "predicted" and out["text"].startswith("lung: ")
    turn = answer_once(app, files["nii.gz"], None, "Where is it?", **GEN)
    assert turn["resolved"] == "Where is it?" and turn["region"] == WHOLE_SCAN
    # a turn with history: pairs are replayed, the region in focus kept, turns come back
    pairs = [["What is in the lung?", "A nodule."], ["Is it large?", "No."]]
    turn = chat_once(app, files["nii.gz"], None, "How big is it?", history=pairs, **GEN)
    assert turn["resolved"] == "What is the approximate size of the nodule in the lung?"
    assert turn["answer"].endswith("turn=3") and turn["mask_source"] == "predicted"
    assert turn["history"][:2] == [{"question": q, "answer": a} for q, a in pairs]
    assert turn["history"][-1]["resolved"] == turn["resolved"]
    again = chat_once(app, files["nii.gz"], None, "Where is it?", history=turn["history"], **GEN)
    assert again["resolved"] == "Where is the nodule located in the image?"
    with pytest.raises(InputError, match="pairs"):
        chat_once(app, files["nii.gz"], None, "Q?", history=["bad"], **GEN)
    assert list((tmp_path / "sessions").iterdir()) == []
    assert app.live_scans() == 0, "one-shot API sessions must not hold scans"


def test_parse_auth():
    assert parse_auth("ann:secret:x") == ("ann", "secret:x")
    assert parse_auth(None) is None
    with pytest.raises(ValueError):
        parse_auth("nocolon")


# --- UI callbacks: stale state, sentence clicks ------------------------------------------------


CHAT = (64, "greedy", 1, *VIEW, None)
"""on_ask's inputs after the question and scope: settings, view, request."""


def test_ui_chat_tags_each_answer_with_its_region_and_the_viewer_follows(
    predictor, examples_dir, tmp_path
):
    demo = build_demo(predictor, examples_dir=examples_dir, tmp_root=tmp_path / "s")
    out = ui_fn(demo, "on_example")(None, "chest_a", *VIEW, None)
    session = next(v for k, v in out.items() if isinstance(k, gr.State))
    on_ask, chat = ui_fn(demo, "on_ask"), by_id(demo, "rgct-chat")
    out = on_ask(session, "What is in the lung?", "selected region", *CHAT)
    assert out[chat][1]["content"].startswith("**[lung, dataset mask]** Q=What are the")
    assert "*asked as: What are the abnormalities in the lung?*" in out[chat][1]["content"]
    assert out[by_id(demo, "rgct-question")] == "" and "turn 1" in out[by_id(demo, "rgct-status")]
    # a follow-up naming another region: answered with its mask, the viewer and scope follow
    out = on_ask(session, "what about the heart?", "whole scan", *CHAT)
    assert out[chat][3]["content"].startswith("**[heart, dataset mask]**")
    assert out[by_id(demo, "rgct-region")].value == "heart"
    assert "heart" in out[by_id(demo, "rgct-viewer")].label
    assert out[by_id(demo, "rgct-scope")] == "selected region"
    assert out[by_id(demo, "rgct-region-sentences")] == ""  # no report: nothing listed
    # "it" with nothing in focus is asked back, tagged as such
    out = on_ask(session, "How big is it?", "selected region", *CHAT)
    assert out[chat][5]["content"].startswith("**[question back]** Which finding")
    assert "Asked back" in out[by_id(demo, "rgct-status")]
    out = on_ask(session, "Where is the nodule?", "selected region", *CHAT)
    assert out[chat][7]["content"].startswith("**[whole scan]** The nodule is located")
    assert "asked as: Where is the nodule located in the image?" in out[chat][7]["content"]
    out = ui_fn(demo, "on_clear_chat")(session)
    assert out[chat] == [] and session.chat == []


class _Evt:
    def __init__(self, **data):
        self._data = data


def test_ui_loading_a_scan_clears_every_output(predictor, examples_dir, tmp_path):
    demo = build_demo(predictor, examples_dir=examples_dir, tmp_root=tmp_path / "s")
    on_example = ui_fn(demo, "on_example")
    out = on_example(None, "chest_a", *VIEW, None)
    session = next(v for k, v in out.items() if isinstance(k, gr.State))
    report_out = ui_fn(demo, "on_full_report")(session, 64, "greedy", 1, None)
    assert "nodule" in report_out[by_id(demo, "rgct-report")]
    index = next(i for i, s in enumerate(session.report["sentences"]) if s["finding"])
    out = ui_fn(demo, "on_sentence")(session, *VIEW, _Evt(sentence=str(index)))
    assert out[by_id(demo, "rgct-slice")].value == NODULE_CENTRE[0]
    assert "rgct-active" in out[by_id(demo, "rgct-report")]
    assert "rgct-active" not in out[by_id(demo, "rgct-rr-out")]
    # a region report's sentences are clickable too
    rr = ui_fn(demo, "on_region_report")(session, 64, "greedy", 1, None)[by_id(demo, "rgct-rr-out")]
    assert 'data-source="region"' in rr and "nodule" in rr
    out = ui_fn(demo, "on_sentence")(session, *VIEW, _Evt(sentence="1", source="region"))
    assert session.focus == ("region", 1) and "rgct-active" in out[by_id(demo, "rgct-rr-out")]
    assert out[by_id(demo, "rgct-slice")].value == NODULE_CENTRE[0]
    asked = ui_fn(demo, "on_ask")(session, "What is in the lung?", "selected region", *CHAT)
    assert len(asked[by_id(demo, "rgct-chat")]) == 2 and session.chat
    out = on_example(session, "chest_b", *VIEW, None)
    for elem_id, empty in (
        ("rgct-rr-out", ""),
        ("rgct-region-sentences", ""),
        ("rgct-evidence", ""),
        ("rgct-latency", ""),
    ):
        assert out[by_id(demo, elem_id)] == empty, elem_id
    assert "Write the full report" in out[by_id(demo, "rgct-report")]
    assert out[by_id(demo, "rgct-chat")] == []
    assert out[by_id(demo, "rgct-json-dl")].visible is False


# --- viewer ----------------------------------------------------------------------------------------


def test_render_slice_overlay_window_and_planes():
    vol, masks = phantom()
    vol = vol.astype(np.float32)
    mask = masks["lung"].astype(bool)
    plain = viewer.render_slice(vol, "axial", 5, "lung")
    over = viewer.render_slice(vol, "axial", 5, "lung", mask=mask, colour=(255, 0, 0))
    shown = mask[5][::-1, ::-1]  # radiological display flips rows and columns
    assert plain.shape == (24, 20, 3) and plain.dtype == np.uint8
    assert np.array_equal(plain[..., 0], plain[..., 1])  # grey without a mask
    assert np.array_equal(plain[..., 0], viewer.window_to_grey(vol[5, ::-1, ::-1], (-1350, 150)))
    assert (over[shown][:, 0] >= plain[shown][:, 0]).all()
    assert np.array_equal(over[~shown], plain[~shown])
    assert tuple(over[23 - 4, 19 - 3]) == (255, 0, 0)  # outline pixel at voxel (y=4, x=3)
    big = viewer.render_slice(vol, "axial", 5, "lung", mask=mask, min_size=100, box=(0, 1, 0, 1))
    assert big.shape == (96, 80, 3)
    assert np.array_equal(big[::4, ::4][:10], over[:10])
    yellow = viewer.BOX_COLOUR
    assert tuple(big[88, 72]) == yellow and tuple(big[87, 72]) != yellow
    assert tuple(big[95, 79]) == yellow and tuple(big[84, 68]) != yellow
    # coronal rows are stretched by d/w spacing (2.0 / 0.8 = 2.5 -> 30 rows for 12 slices)
    assert viewer.render_slice(vol, "coronal", 3, "bone", spacing=SPACING).shape == (30, 20, 3)
    assert viewer.render_slice(vol, "sagittal", 3, (-100, 100)).shape == (12, 24, 3)
    lung_w = viewer.render_slice(np.full((2, 2, 2), -600.0), "axial", 0, "lung")[0, 0, 0]
    med_w = viewer.render_slice(np.full((2, 2, 2), -600.0), "axial", 0, "mediastinum")[0, 0, 0]
    assert med_w == 0 < lung_w
    assert viewer.mask_centre(mask, "axial") == 5
    assert viewer.mask_centre(np.zeros(SHAPE), "axial") is None
    assert len({viewer.colour_hex(r) for r in REGIONS}) == len(REGIONS)


def test_plane_maps_zoom_and_clicks_round_trip():
    shape = (30, 64, 48)
    centre = (10, 40, 12)
    for view in viewer.VIEWS:
        p = viewer.plane(shape, view, centre[viewer.VIEW_AXIS[view]], zoom=4, centre=centre)
        r, c = p.pixel(centre)
        assert p.voxel(int(r), int(c)) == centre
        a, b = viewer.plane_axes(view)
        assert abs(len(set(p.rows.tolist())) - shape[a] / 4) <= 1.5  # a quarter of the plane
        assert p.rows[0] > p.rows[-1] and p.cols[0] > p.cols[-1]  # flipped for display
    p = viewer.plane(shape, "axial", 0, zoom=8, centre=(0, 0, 0))  # clipped at the edge
    assert p.rows.min() == 0 and p.cols.min() == 0
    assert viewer.window_from_level(*viewer.level_from_window((-1350, 150))) == (-1350, 150)
    m = np.zeros(shape, bool)
    m[5:8, 10:20, 30:31] = True
    m[6, 10:20, 20:40] = True
    assert (
        viewer.largest_slices(m) == (6, 15, 30)
        and viewer.largest_slices(~np.ones(shape, bool)) is None
    )


def test_render_is_fast_on_a_clinical_size_slice():
    vol = np.random.default_rng(0).normal(-500, 300, size=(40, 512, 512)).astype(np.float32)
    mask = np.zeros(vol.shape, bool)
    mask[10:30, 100:300, 150:350] = True
    p = viewer.plane(vol.shape, "axial", 20, zoom=2, centre=(20, 200, 250))
    layers = [viewer.Layer(mask, (255, 0, 0), 0.0), viewer.Layer(mask, (255, 0, 200), 0.5)]
    viewer.render_plane(vol, p, (-1350, 150), layers, cursor=(20, 200, 250))
    t0 = time.perf_counter()
    for _ in range(5):
        viewer.render_plane(vol, p, (-1350, 150), layers, cursor=(20, 200, 250))
    assert (time.perf_counter() - t0) / 5 < 0.15


def test_inputs_name_helpers():
    assert inputs.strip_suffix("train_1_a_1.nii.gz") == "train_1_a_1"
    assert inputs.region_order(["x", "lung", "abdomen"]) == ["abdomen", "lung", "x"]


def test_demo_command_options(monkeypatch):
    import argparse

    from app import main
    from rgct.cli import COMMANDS

    assert COMMANDS["demo"][0] == "app.main"
    parser = argparse.ArgumentParser()
    main.configure(parser)
    args = parser.parse_args([])
    assert (args.host, args.port, args.concurrency, args.max_upload_mb, args.auth) == (
        "127.0.0.1",
        7860,
        2,
        512,
        None,
    )
    assert (args.max_scans, args.rate_limit) == (8, 30)
    args = parser.parse_args(
        ["--checkpoint", "ck", "--port", "8000", "--concurrency", "4", "--max-upload-mb", "64"]
    )
    assert (str(args.checkpoint), args.port, args.concurrency, args.max_upload_mb) == (
        "ck",
        8000,
        4,
        64,
    )
    seen = {}
    monkeypatch.setattr(
        main, "serve", lambda a, auth_env=None: seen.setdefault("auth", auth_env) and 0
    )
    monkeypatch.setenv("RGCT_DEMO_AUTH", "ann:pw")
    main.run(args)
    assert seen["auth"] == "ann:pw"


def test_library_does_not_import_the_app():
    """No import cycle: nothing in rgct/ imports app/ (``rgct demo`` names it by string)."""
    import re

    root = Path(__file__).resolve().parents[2] / "rgct"
    pattern = re.compile(r"^\s*(from app[\s.]|import app\b)", re.MULTILINE)
    offenders = [p.name for p in root.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
    import subprocess

    code = (
        "import sys, rgct.cli; rgct.cli.build_parser(only='demo'); "
        "assert 'gradio' not in sys.modules, 'rgct demo --help must not load gradio'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_bundled_examples_load(predictor, tmp_path):
    from app.demo import EXAMPLES_DIR

    app = DemoApp(predictor, examples_dir=EXAMPLES_DIR, tmp_root=tmp_path / "s")
    assert app.examples == ["phantom_1", "phantom_2", "phantom_3"]
    session, _ = app.load_example(None, "phantom_1")
    assert session.scan.volume.array.shape == (64, 128, 128)
    assert {"lung", "heart", "mediastinum"} <= set(session.scan.masks)
    assert list(session.scan.masks) == [r for r in REGIONS if r in session.scan.masks]
