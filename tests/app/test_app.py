"""The demo's handlers, viewer and wiring, against FakePredictor (fast, no server)."""

from __future__ import annotations

import json
import sys
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

gr = pytest.importorskip("gradio")

sys.path.insert(0, str(Path(__file__).parent))
from fake_predictor import FakePredictor  # noqa: E402

from app import inputs, viewer  # noqa: E402
from app.handlers import (  # noqa: E402
    BOX_MASK,
    DISPLAY_SIZE,
    DemoApp,
    delete_session,
    generation_kwargs,
    report_html,
)
from app.inputs import InputError  # noqa: E402
from app.main import build_demo, guard, parse_auth  # noqa: E402
from rgct.constants import QUESTION_TEMPLATES, REGIONS  # noqa: E402

SHAPE = (12, 24, 20)  # (D, H, W)
SPACING = (2.0, 0.8, 0.8)  # (d, h, w) mm


def save_nifti(path: Path, array: np.ndarray, spacing=SPACING) -> Path:
    """Write a (D, H, W) array so that rgct.data.io reads it back as (D, H, W)."""
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), affine), str(path))
    return path


def phantom() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    vol = rng.integers(-1000, 400, size=SHAPE).astype(np.int16)
    lung = np.zeros(SHAPE, np.uint8)
    lung[2:10, 4:12, 3:9] = 1  # 8*8*6 = 384
    heart = np.zeros(SHAPE, np.uint8)
    heart[4:8, 12:20, 8:16] = 1  # 4*8*8 = 256
    return vol, {"lung": lung, "heart": heart, "breast": np.zeros(SHAPE, np.uint8)}


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
    return tmp_path / "examples"


@pytest.fixture
def app(predictor, tmp_path, examples_dir) -> DemoApp:
    return DemoApp(
        predictor,
        examples_dir=examples_dir,
        max_upload_mb=5,
        upload_roots=[tmp_path / "uploads"],
        tmp_root=tmp_path / "sessions",
    )


# --- wiring ----------------------------------------------------------------------------------------


def test_build_demo_wires_named_endpoints_and_private_ui(predictor, examples_dir, tmp_path):
    demo = build_demo(
        predictor, examples_dir=examples_dir, tmp_root=tmp_path / "s", concurrency_limit=3
    )
    assert isinstance(demo, gr.Blocks)
    public = {f.api_name for f in demo.fns.values() if f.api_visibility == "public"}
    assert public == {"region_report", "report", "answer"}
    assert demo.rgct_app.examples == ["phantom_a"]
    assert demo._queue.default_concurrency_limit == 3
    assert demo.rgct_app.predictor is predictor


def ui_fn(demo: gr.Blocks, name: str):
    return next(f.fn for f in demo.fns.values() if f.name == name)


def test_ui_callbacks_turn_errors_into_status_messages(predictor, files, examples_dir, tmp_path):
    demo = build_demo(
        predictor,
        examples_dir=examples_dir,
        upload_roots=[tmp_path / "uploads"],
        tmp_root=tmp_path / "s",
    )
    status = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "rgct-status")
    on_volume = ui_fn(demo, "on_volume")
    out = on_volume(None, str(files["outside"]), "axial", "lung")
    assert list(out) == [status] and "not uploaded" in out[status]
    out = on_volume(None, str(files["corrupt"]), "axial", "lung")
    assert "Could not read" in out[status]
    ok = on_volume(None, str(files["nii.gz"]), "axial", "lung")
    session = next(v for k, v in ok.items() if isinstance(k, gr.State))
    assert session.scan.volume.array.shape == SHAPE
    on_rr = ui_fn(demo, "on_region_report")
    out = on_rr(session, 64, "greedy", 3)
    assert "Give a region first" in out[status]


def test_guard_hides_unexpected_exceptions():
    status = gr.Markdown()

    @guard(status)
    def boom():
        raise RuntimeError("kaput")

    out = boom()
    assert "RuntimeError: kaput" in out[status] and "Traceback" not in out[status]


# --- loading every input format --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["nii", "nii.gz", "npz"])
def test_load_volume_formats(app, files, kind):
    session, message = app.load_volume(None, files[kind])
    assert session.scan.volume.array.shape == SHAPE
    assert "scan" in message
    assert session.workdir.is_dir()


def test_load_dicom_zip(app, dicom_zip):
    session, _ = app.load_volume(None, dicom_zip)
    assert session.scan.volume.array.shape == (4, 128, 128)
    assert not any(session.workdir.iterdir()), "extracted DICOM files must be deleted after loading"


def test_load_example_with_its_masks(app):
    session, message = app.load_example(None, "phantom_a")
    assert list(session.scan.masks) == ["heart", "lung"]  # canonical order; empty breast skipped
    assert session.selected == "heart"
    text, seconds = app.region_report(session, max_new_tokens=16, num_beams=1)
    assert text == f"heart: 256 voxels in {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} (tokens=16, beams=1)."
    assert seconds >= 0


@pytest.mark.parametrize("zip_name", ["masks_seg.zip", "masks_flat.zip"])
def test_mask_zip_and_region_pick(app, files, zip_name):
    session, _ = app.load_volume(None, files["nii.gz"])
    session, message = app.load_masks(session, files[zip_name])
    assert list(session.scan.masks) == ["heart", "lung"]
    if zip_name == "masks_seg.zip":
        assert "breast" in message and "empty" in message
    session = app.select(session, "lung")
    assert app.region_report(session, max_new_tokens=8, num_beams=1)[0].startswith(
        "lung: 384 voxels"
    )
    session = app.select(session, "no such region")
    assert session.selected == "lung"


def test_single_mask_upload_is_an_unnamed_region(app, files, predictor):
    session, _ = app.load_volume(None, files["nii.gz"])
    session, _ = app.load_masks(session, files["mask:lung"])
    assert session.selected == "lung"  # named by its file, a known region
    assert predictor.calls == []
    app.region_report(session, max_new_tokens=8, num_beams=1)
    assert predictor.calls == [("region_report", "lung")]


def test_box_mask_from_sliders_and_clicks(app, files, predictor):
    session, _ = app.load_volume(None, files["nii.gz"])
    f = viewer.display_factor(SHAPE[1:], DISPLAY_SIZE)  # the axial image is shown f times larger
    assert app.render(session, "axial", 0, "lung").shape == (SHAPE[1] * f, SHAPE[2] * f, 3)
    h, w = SHAPE[1:]  # displayed flipped: patient's right on the left, anterior up
    session, box = app.click(session, (h - 1 - 3) * f + f - 1, (w - 1 - 2) * f)
    assert box is None and session.corner == (3, 2)
    session, box = app.click(session, (h - 1 - 8) * f, (w - 1 - 6) * f + 1)
    assert box == (3, 8, 2, 6) and session.corner is None
    session, message = app.set_box(session, (5, 2), box[:2], box[2:])  # any order, inclusive
    assert session.selected == BOX_MASK
    assert int(session.scan.masks[BOX_MASK].sum()) == 4 * 6 * 5
    text, _ = app.region_report(session, max_new_tokens=8, num_beams=1)
    assert text.startswith("given region: 120 voxels")
    with pytest.raises(InputError, match="outside"):
        app.set_box(session, (50, 60), (0, 1), (0, 1))


def test_full_report_downloads_and_html(app, files):
    session, _ = app.load_volume(None, files["nii.gz"])
    with pytest.raises(InputError, match="region masks"):
        app.full_report(session, max_new_tokens=8, num_beams=1)
    session, _ = app.load_masks(session, files["masks_seg.zip"])
    session, report, _ = app.full_report(session, max_new_tokens=8, num_beams=1)
    assert [s["region"] for s in report["sentences"]] == ["heart", "lung"]
    js, txt = app.report_files(session)
    assert json.loads(js.read_text()) == report
    assert txt.read_text().splitlines() == [
        "heart: The heart has 256 voxels.",
        "lung: The lung has 384 voxels.",
    ]
    page = report_html(report)
    assert viewer.colour_hex("heart") in page and "The lung has 384 voxels." in page
    assert "<script" not in report_html(
        {"sentences": [{"region": "lung", "text": "<script>x</script>"}]}
    )


def test_answer_with_template_and_whole_scan(app, files):
    session, _ = app.load_volume(None, files["nii.gz"])
    q = QUESTION_TEMPLATES["presence"].format(region="lung", abnormality="nodule")
    assert (
        app.answer(session, q, max_new_tokens=8, num_beams=1)[0]
        == f"Q={q} | voxels={np.prod(SHAPE)}"
    )
    session, _ = app.load_masks(session, files["mask:heart"])
    assert (
        app.answer(session, " Free text? ", max_new_tokens=8, num_beams=1)[0]
        == "Q=Free text? | voxels=256"
    )
    with pytest.raises(InputError, match="question"):
        app.answer(session, "  ", max_new_tokens=8, num_beams=1)


def test_generation_settings():
    assert generation_kwargs(64, "greedy", 4) == {"max_new_tokens": 64, "num_beams": 1}
    assert generation_kwargs(32.0, "beam search", 4.0) == {"max_new_tokens": 32, "num_beams": 4}


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
        session, _ = app.load_volume(None, files["nii.gz"])
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
        lambda: app.region_report(None, max_new_tokens=8, num_beams=1),
        lambda: app.full_report(None, max_new_tokens=8, num_beams=1),
        lambda: app.answer(None, "Q?", max_new_tokens=8, num_beams=1),
        lambda: app.load_masks(None, None),
    ):
        with pytest.raises(InputError, match="Load a scan first"):
            call()


def test_session_cleanup(app, files):
    session, _ = app.load_volume(None, files["nii.gz"])
    session, _ = app.load_masks(session, files["masks_seg.zip"])
    session, *_ = app.full_report(session, max_new_tokens=8, num_beams=1)
    app.report_files(session)
    assert any(session.workdir.iterdir())
    delete_session(session)
    assert not session.workdir.exists()


def test_api_helpers_leave_no_session_folder(app, files, tmp_path):
    text = app.api_region_report(
        files["nii.gz"], files["masks_seg.zip"], "lung", max_new_tokens=8, num_beams=1
    )
    assert text.startswith("lung: 384 voxels")
    with pytest.raises(InputError, match="not among"):
        app.api_region_report(
            files["nii.gz"], files["masks_seg.zip"], "thyroid", max_new_tokens=8, num_beams=1
        )
    assert app.api_report(files["nii.gz"], files["masks_flat.zip"], max_new_tokens=8, num_beams=1)[
        "regions"
    ]["lung"]
    assert list((tmp_path / "sessions").iterdir()) == []


def test_parse_auth():
    assert parse_auth("ann:secret:x") == ("ann", "secret:x")
    assert parse_auth(None) is None
    with pytest.raises(ValueError):
        parse_auth("nocolon")


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
    # small slices are enlarged by an integer factor (100 // 24 = 4); the box is in voxels
    big = viewer.render_slice(vol, "axial", 5, "lung", mask=mask, min_size=100, box=(0, 1, 0, 1))
    assert big.shape == (96, 80, 3)
    assert np.array_equal(big[::4, ::4][:10], over[:10])  # rows with neither mask outline nor box
    yellow = (255, 220, 0)
    assert tuple(big[88, 72]) == yellow and tuple(big[87, 72]) != yellow  # box's top-left corner
    assert tuple(big[95, 79]) == yellow and tuple(big[84, 68]) != yellow
    # coronal rows are stretched by d/h spacing (2.0 / 0.8 = 2.5 -> 30 rows for 12 slices)
    assert viewer.render_slice(vol, "coronal", 3, "bone", spacing=SPACING).shape == (30, 20, 3)
    assert viewer.render_slice(vol, "sagittal", 3, (-100, 100)).shape == (12, 24, 3)
    lung_w = viewer.render_slice(np.full((2, 2, 2), -600.0), "axial", 0, "lung")[0, 0, 0]
    med_w = viewer.render_slice(np.full((2, 2, 2), -600.0), "axial", 0, "mediastinum")[0, 0, 0]
    assert med_w == 0 < lung_w
    assert (
        viewer.mask_centre(mask, "axial") == 5
        and viewer.mask_centre(np.zeros(SHAPE), "axial") is None
    )
    assert len({viewer.colour_hex(r) for r in REGIONS}) == len(REGIONS)


def test_render_is_fast_on_a_clinical_size_slice():
    vol = np.random.default_rng(0).normal(-500, 300, size=(40, 512, 512)).astype(np.float32)
    mask = np.zeros(vol.shape, bool)
    mask[10:30, 100:300, 150:350] = True
    viewer.render_slice(vol, "axial", 20, "lung", mask=mask)
    t0 = time.perf_counter()
    for _ in range(5):
        viewer.render_slice(vol, "axial", 20, "lung", mask=mask)
    assert (time.perf_counter() - t0) / 5 < 0.1


def test_inputs_name_helpers():
    assert inputs.strip_suffix("train_1_a_1.nii.gz") == "train_1_a_1"
    assert inputs.region_order(["x", "lung", "abdomen"]) == ["abdomen", "lung", "x"]


def test_demo_cli_options(monkeypatch):
    import argparse

    from rgct import demo_cli

    parser = argparse.ArgumentParser()
    demo_cli.configure(parser)
    args = parser.parse_args([])
    assert (args.host, args.port, args.concurrency, args.max_upload_mb, args.auth) == (
        "127.0.0.1",
        7860,
        2,
        512,
        None,
    )
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
        "app.main.serve", lambda a, auth_env=None: seen.setdefault("auth", auth_env) and 0
    )
    monkeypatch.setenv("RGCT_DEMO_AUTH", "ann:pw")
    demo_cli.run(args)
    assert seen["auth"] == "ann:pw"


def test_bundled_examples_load(predictor, tmp_path):
    from app.main import EXAMPLES_DIR

    app = DemoApp(predictor, examples_dir=EXAMPLES_DIR, tmp_root=tmp_path / "s")
    assert app.examples == ["phantom_1", "phantom_2", "phantom_3"]
    session, _ = app.load_example(None, "phantom_1")
    assert session.scan.volume.array.shape == (64, 128, 128)
    assert {"lung", "heart", "mediastinum"} <= set(session.scan.masks)
    assert list(session.scan.masks) == [r for r in REGIONS if r in session.scan.masks]
