"""The demo's chest-radiograph mode (a Predictor with ``modality == "cxr"``), against
FakeCxrPredictor: loading films (PNG, DICOM in every display encoding), the header flags, CT
uploads refused by name (and radiographs by the CT page), the box (typed, clicked, refused), the
answer for the box, the report's sentences linked to their zone, the chat, memory."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

sys.path.insert(0, str(Path(__file__).parent))
from app_data import phantom, save_nifti  # noqa: E402
from fake_cxr_predictor import FakeCxrPredictor  # noqa: E402
from fake_predictor import FakePredictor  # noqa: E402

from app import viewer  # noqa: E402
from app.callbacks import chat_messages  # noqa: E402
from app.cxr_handlers import CxrDemoApp, CxrSession, zone_rect  # noqa: E402
from app.cxr_results import cxr_report_html, normalise_cxr_report  # noqa: E402
from app.demo import build_demo  # noqa: E402
from app.handlers import DemoApp  # noqa: E402
from app.inputs import InputError  # noqa: E402
from rgct.data.cxr import ZONES, box_location  # noqa: E402
from rgct.data.synth_cxr import DISPLAYS, radiograph_dicom_bytes  # noqa: E402

HEIGHT, WIDTH = 300, 240
BLOB = (40, 180, 70, 200)
"""(x_min, y_min, x_max, y_max) of the bright finding: the right lower zone of the film."""


def film_array() -> np.ndarray:
    """A frontal film in [0, 1]: body grey, two dark lungs, one bright blob."""
    a = np.full((HEIGHT, WIDTH), 0.45, np.float32)
    a[30:230, 20:110] = 0.15  # right lung (image left)
    a[30:230, 130:220] = 0.15  # left lung
    x0, y0, x1, y1 = BLOB
    a[y0:y1, x0:x1] = 0.95
    return a


@pytest.fixture
def uploads(tmp_path: Path) -> dict[str, Path]:
    from PIL import Image

    up = tmp_path / "uploads"
    up.mkdir()
    film = film_array()
    out = {"png": up / "film.png"}
    Image.fromarray(np.rint(film * 255).astype(np.uint8)).save(out["png"])
    for display in DISPLAYS:
        out[display] = up / f"film_{display}.dcm"
        out[display].write_bytes(radiograph_dicom_bytes(film, (0.2, 0.2), display, display))
    out["lateral"] = up / "lateral.dicom"
    out["lateral"].write_bytes(radiograph_dicom_bytes(film, (0.2, 0.2), "lat", view="LL"))
    out["knee"] = up / "knee.dcm"
    out["knee"].write_bytes(radiograph_dicom_bytes(film, (0.2, 0.2), "k", body_part="KNEE"))
    vol, _ = phantom()
    out["ct"] = save_nifti(up / "scan.nii.gz", vol)
    from pydicom.data import get_testdata_file

    out["ct_dcm"] = up / "ct_slice.dcm"
    out["ct_dcm"].write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    out["txt"] = up / "notes.txt"
    out["txt"].write_text("hello")
    out["broken"] = up / "broken.png"
    out["broken"].write_bytes(b"\x89PNG not really")
    return out


@pytest.fixture
def predictor() -> FakeCxrPredictor:
    return FakeCxrPredictor()


@pytest.fixture
def app(predictor, tmp_path) -> CxrDemoApp:
    return CxrDemoApp(predictor, upload_roots=[tmp_path / "uploads"], tmp_root=tmp_path / "s")


GEN = {"max_new_tokens": 64, "num_beams": 1}


def _loaded(app: CxrDemoApp, uploads: dict, kind: str = "png") -> CxrSession:
    return app.load_film(None, uploads[kind])[0]


# --- the page ----------------------------------------------------------------------------------


def ui_fn(demo: gr.Blocks, name: str):
    return next(f.fn for f in demo.fns.values() if f.name == name)


def by_id(demo: gr.Blocks, elem_id: str):
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def test_a_cxr_predictor_gets_the_radiograph_page(predictor, tmp_path):
    demo = build_demo(predictor, tmp_root=tmp_path / "s")
    assert isinstance(demo.rgct_app, CxrDemoApp)
    assert by_id(demo, "rgct-film-file") is not None and by_id(demo, "rgct-box-ask") is not None
    assert not any(getattr(b, "elem_id", None) == "rgct-slice" for b in demo.blocks.values())
    public = {f.api_name for f in demo.fns.values() if f.api_visibility == "public"}
    assert public == {"cxr_ask", "cxr_report"}
    assert any(t[1] == "unload" for f in demo.fns.values() for t in f.targets)
    assert demo.rgct_app.examples == [
        "phantom_film_1.dicom",
        "phantom_film_2.dicom",
        "phantom_film_3.png",
    ]
    ct = build_demo(FakePredictor(), tmp_root=tmp_path / "s2")  # no modality: the CT page
    assert type(ct.rgct_app) is DemoApp
    assert by_id(ct, "rgct-slice") is not None

    class Odd(FakeCxrPredictor):
        modality = "mri"

    with pytest.raises(ValueError, match="modality must be one of"):
        build_demo(Odd(), tmp_root=tmp_path / "s3")


# --- films and bad input -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["png", *DISPLAYS])
def test_films_load_with_lungs_dark_and_the_blob_bright(app, uploads, kind):
    session, message = app.load_film(None, uploads[kind])
    film = session.film
    assert film.shape == (HEIGHT, WIDTH) and "240 x 300 pixels" in message
    x0, y0, x1, y1 = BLOB
    assert film.radiograph.array[y0:y1, x0:x1].mean() > 0.8
    assert film.radiograph.array[100:150, 30:100].mean() < 0.3
    assert film.display.shape == (2 * HEIGHT, 2 * WIDTH)  # small films enlarged, whole pixels
    assert session.warnings() == []
    frame = app.film_frame(session)
    assert frame.shape == (2 * HEIGHT, 2 * WIDTH, 3) and frame.dtype == np.uint8


def test_header_flags_and_ct_uploads_are_told_apart(app, uploads):
    session = _loaded(app, uploads, "lateral")
    assert any("lateral view (ViewPosition 'LL')" in w for w in session.warnings())
    session = _loaded(app, uploads, "knee")
    assert any("'KNEE', not the chest" in w for w in session.warnings())
    for kind, message in (
        ("ct", "'scan.nii.gz' is a CT volume; the loaded model reads chest radiographs"),
        ("ct_dcm", "'ct_slice.dcm' is a CT image (DICOM Modality CT)"),
        ("txt", "unsupported file type"),
        ("broken", "Could not read the radiograph 'broken.png'"),
    ):
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            app.load_film(None, uploads[kind])
    with pytest.raises(InputError, match="not uploaded"):
        app.load_film(None, Path(__file__))


def test_the_ct_page_refuses_radiographs_by_name(uploads, tmp_path):
    ct = DemoApp(FakePredictor(), upload_roots=[tmp_path / "uploads"], tmp_root=tmp_path / "s")
    for kind in ("png", "plain", "lateral"):
        with pytest.raises(InputError, match="is a 2D image .a chest radiograph.*reads chest CT"):
            ct.load_volume(None, uploads[kind])
    session, _ = ct.load_volume(None, uploads["ct"])  # a CT still loads
    assert session.scan is not None


# --- the box --------------------------------------------------------------------------------------


def test_typed_and_clicked_boxes_and_bad_boxes(app, uploads):
    session = _loaded(app, uploads)
    assert "right lower zone" in app.set_box(session, BLOB)
    assert session.box == BLOB
    for box, message in (
        ((0, 0, 300, 10), "outside the 240x300 image"),
        ((50, 50, 50, 80), "has no area"),
        ((80, 50, 60, 90), "has no area"),
        (("a", 1, 2, 3), "four numbers"),
        ((None, 1, 2, 3), "four numbers"),
    ):
        with pytest.raises(InputError, match=message):
            app.set_box(session, box)
    assert session.box == BLOB  # a refused box leaves the last good one
    # two clicks on the shown (2x enlarged) film: the box covers both clicked pixels
    message, done = app.click(session, 2 * 100 + 1, 2 * 20)
    assert not done and "(100, 20)" in message and session.box_corner == (100, 20)
    frame = app.film_frame(session)
    assert (frame == viewer.CURSOR_COLOUR).all(-1).any()  # the first corner is marked
    message, done = app.click(session, 2 * 60, 2 * 90 + 1)
    assert done and session.box == (60, 20, 101, 91) and session.box_corner is None
    frame = app.film_frame(session)
    outline = (frame == viewer.BOX_COLOUR).all(-1)
    rows, cols = np.flatnonzero(outline.any(1)), np.flatnonzero(outline.any(0))
    assert (cols[0], rows[0], cols[-1], rows[-1]) == (120, 40, 201, 181)
    app.clear_box(session)
    assert session.box is None and not (app.film_frame(session) == viewer.BOX_COLOUR).all(-1).any()


def test_the_answer_for_the_box_and_a_box_the_model_refuses(app, uploads, predictor):
    session = _loaded(app, uploads)
    with pytest.raises(InputError, match="Draw a box"):
        app.ask_box(session, **GEN)
    app.set_box(session, BLOB)
    answer, _ = app.ask_box(session, **GEN)
    assert answer["answer"].startswith("Lung opacity. | box=[40, 180, 70, 200] | tokens=64")
    assert answer["place"] == "right lower zone" and answer["box"] == list(BLOB)
    question, box, generation = predictor.calls[-1][1:]
    assert question == "What is in the given box?" and box == BLOB and generation == GEN
    app.set_box(session, (150, 40, 200, 90))
    assert app.ask_box(session, **GEN)[0]["answer"].startswith("No finding.")
    app.set_box(session, (10, 10, 11, 11))  # a valid box the model cannot use: its message
    with pytest.raises(InputError, match=r"smaller than 2x2 pixels"):
        app.ask_box(session, **GEN)


# --- the report and the chat ---------------------------------------------------------------------


def test_report_sentences_show_their_zone_on_the_film(app, uploads):
    session = _loaded(app, uploads)
    report, _ = app.film_report(session, **GEN)
    assert [s["place"] for s in report["sentences"]] == ["right lower zone", None]
    html = cxr_report_html(report)
    assert 'data-sentence="0"' in html and "right lower zone" in html and "no place" in html
    session, message = app.focus_sentence(session, 0)
    assert "right lower zone" in message and "rgct-active" in cxr_report_html(report, active=0)
    assert "1 box where the model found it" in message
    frame = app.film_frame(session).astype(int)

    def extent(tinted):
        rows, cols = np.flatnonzero(tinted.any(1)), np.flatnonzero(tinted.any(0))
        return cols[0], rows[0], cols[-1] + 1, rows[-1] + 1

    def near(got, want):
        return all(abs(g - w) <= 1 for g, w in zip(got, want))

    # the zone the sentence names, and stronger on it the box where the model found it
    tint = np.minimum(frame[..., 0] - frame[..., 1], frame[..., 2] - frame[..., 1])
    assert near(extent(tint > 30), [2 * v for v in zone_rect("right", "lower", (HEIGHT, WIDTH))])
    found = report["sentences"][0]["boxes"][0]
    outline = (frame == viewer.FINDING_COLOUR).all(-1)  # the zone's and the box's outlines
    assert near(extent((tint > 120) & ~outline), [2 * v for v in found])
    session, message = app.focus_sentence(session, 1)
    assert "names no side and zone" in message
    assert not (app.film_frame(session) == viewer.FINDING_COLOUR).all(-1).any()
    with pytest.raises(InputError, match="Write the report first"):
        app.focus_sentence(session, 7)


def test_zone_rect_is_what_box_location_names():
    for shape in ((300, 240), (2048, 2500)):
        for side in ("right", "left", "central"):
            for zone in ZONES:
                assert box_location(zone_rect(side, zone, shape), shape) == (side, zone)
    with pytest.raises(ValueError, match="unknown place"):
        zone_rect("up", "lower", (10, 10))


def test_report_normalising_keeps_unknown_places_out():
    report = normalise_cxr_report(
        {
            "text": "A. B.",
            "sentences": [
                {"text": "A.", "label": "X", "side": "right", "zone": "lower",
                 "boxes": [[1, 2, 5, 9], [3, 3, 3, 8], ["a", 1, 2, 3], [0, 0, float("nan"), 1]]},
                {"text": "B.", "label": "Y", "side": "dorsal", "zone": "lower"},
            ],
            "truncated": True,
        }
    )  # fmt: skip
    assert [s["place"] for s in report["sentences"]] == ["right lower zone", None]
    assert [s["boxes"] for s in report["sentences"]] == [[[1.0, 2.0, 5.0, 9.0]], []]
    assert sum("Unreadable box" in w for w in report["warnings"]) == 3
    assert any("Unknown place 'dorsal'" in w for w in report["warnings"])
    assert any("token limit" in w for w in report["warnings"])
    plain = normalise_cxr_report("Effusion. Cardiomegaly.")
    assert [s["text"] for s in plain["sentences"]] == ["Effusion.", "Cardiomegaly."]


def test_chat_about_the_film_and_about_the_box(app, uploads, predictor):
    session = _loaded(app, uploads)
    with pytest.raises(InputError, match="Type a question"):
        app.ask_film(session, "  ", **GEN)
    with pytest.raises(InputError, match="Draw or type a box first"):
        app.ask_film(session, "Is there an opacity?", about_box=True, **GEN)
    turn, _ = app.ask_film(session, "Is there an opacity?", **GEN)
    assert (
        turn["answer"] == "Q=Is there an opacity? | film 240x300"
        and turn["region"] == "whole image"
    )
    app.set_box(session, BLOB)
    turn, _ = app.ask_film(session, "What is here?", about_box=True, max_new_tokens=2, num_beams=1)
    assert turn["answer"] == "Lung opacity."  # cut at 2 words
    assert turn["region"] == "box [40, 180, 70, 200], right lower zone"
    messages = chat_messages(session)
    assert messages[1]["content"].startswith("**[whole image]** Q=Is there")
    assert messages[3]["content"] == "**[box [40, 180, 70, 200], right lower zone]** Lung opacity."


# --- through the page's callbacks ----------------------------------------------------------------


class _Evt:
    def __init__(self, **data):
        self._data = data


class _Select:
    def __init__(self, col, row):
        self.index = (col, row)


def test_ui_callbacks_from_film_to_report_and_errors(predictor, uploads, tmp_path):
    demo = build_demo(predictor, upload_roots=[tmp_path / "uploads"], tmp_root=tmp_path / "s")
    status, report = by_id(demo, "rgct-status"), by_id(demo, "rgct-report")
    out = ui_fn(demo, "on_film")(None, str(uploads["ct"]), None)
    assert list(out) == [status] and "is a CT volume" in out[status]
    out = ui_fn(demo, "on_film")(None, str(uploads["lateral"]), None)
    session = next(v for k, v in out.items() if isinstance(k, gr.State))
    assert "lateral view" in out[by_id(demo, "rgct-warnings")]
    out = ui_fn(demo, "on_film")(session, str(uploads["png"]), None)
    assert out[by_id(demo, "rgct-warnings")] == "" and out[report].startswith("<i>")
    assert out[by_id(demo, "rgct-viewer")].label.startswith("film.png · 240 x 300 px")
    out = ui_fn(demo, "on_box")(session, 10, 10, 500, 20)
    assert "outside the 240x300 image" in out[status]
    out = ui_fn(demo, "on_box")(session, *BLOB)
    assert out[by_id(demo, "rgct-x-max")] == 70 and "right lower zone" in out[status]
    out = ui_fn(demo, "on_box_ask")(session, 64, "greedy", 3, None)
    assert "Lung opacity." in out[by_id(demo, "rgct-box-out")]
    assert "right lower zone" in out[by_id(demo, "rgct-box-out")]
    out = ui_fn(demo, "on_box_ask")(session, 0, "greedy", 3, None)
    assert "max_new_tokens must be a whole number from 1 to 512" in out[status]
    out = ui_fn(demo, "on_report")(session, 64, "beam search", 3, None)
    assert "Lung opacity in the right lower zone." in out[report]
    assert predictor.calls[-1][3] == {"max_new_tokens": 64, "num_beams": 3}
    out = ui_fn(demo, "on_sentence")(session, _Evt(sentence="0"))
    assert "rgct-active" in out[report] and "right lower zone" in out[status]
    out = ui_fn(demo, "on_click")(session, _Select(2 * 10, 2 * 10))
    assert "First corner at (10, 10)" in out[status]
    out = ui_fn(demo, "on_click")(session, _Select(2 * 10, 2 * 10))  # the same pixel again
    assert out[by_id(demo, "rgct-x-min")] == 10 and out[by_id(demo, "rgct-x-max")] == 11
    out = ui_fn(demo, "on_box_ask")(session, 64, "greedy", 1, None)
    assert "smaller than 2x2 pixels" in out[status]  # the model's refusal, shown
    question = ui_fn(demo, "on_template")("location", "pleural effusion")
    text = question[by_id(demo, "rgct-question")]
    assert text == "Where is the pleural effusion in this chest radiograph?"
    out = ui_fn(demo, "on_ask")(session, text, "whole image", 64, "greedy", 1, None)
    assert out[by_id(demo, "rgct-chat")][1]["content"].startswith("**[whole image]** Q=Where")
    # a new film clears every output of the last one
    out = ui_fn(demo, "on_film")(session, str(uploads["plain"]), None)
    assert out[by_id(demo, "rgct-chat")] == [] and out[by_id(demo, "rgct-box-out")] == ""
    assert out[by_id(demo, "rgct-x-min")] is None and session.report is None


def test_films_are_released_by_tab_close_and_by_the_cap(predictor, uploads, tmp_path):
    app = CxrDemoApp(
        predictor, upload_roots=[tmp_path / "uploads"], tmp_root=tmp_path / "s", max_scans=2
    )
    first = app.load_film(app.session(None, "tab-1"), uploads["png"])[0]
    second = app.load_film(app.session(None, "tab-2"), uploads["png"])[0]
    app.load_film(app.session(None, "tab-3"), uploads["png"])
    assert first.film is None and app.live_scans() == 2
    with pytest.raises(InputError, match="released to free server memory"):
        app.ask_box(first, **GEN)
    assert app.release("tab-2") and second.film is None and not second.workdir.exists()
    assert app.live_scans() == 1


def test_named_endpoints_answer_one_film_and_forget_it(predictor, uploads, tmp_path):
    demo = build_demo(predictor, upload_roots=[tmp_path / "uploads"], tmp_root=tmp_path / "s")
    ask, report = ui_fn(demo, "cxr_ask"), ui_fn(demo, "cxr_report")
    assert ask(str(uploads["png"]), "", list(BLOB), 64, 1, None).startswith("Lung opacity. |")
    assert predictor.calls[-1][1:3] == ("What is in the given box?", BLOB)
    assert ask(str(uploads["png"]), "Any opacity?", "40, 180, 70, 200", 64, 1, None).startswith(
        "Lung opacity."
    )
    assert ask(str(uploads["png"]), "Any opacity?", None, 64, 1, None) == (
        "Q=Any opacity? | film 240x300"
    )
    out = report(str(uploads["lateral"]), 64, 1, None)
    assert out["sentences"][0]["place"] == "right lower zone"
    assert any("lateral view" in w for w in out["warnings"])
    for args, message in (
        ((str(uploads["png"]), "q", [1, 2, 3], 64, 1, None), "box must be"),
        ((str(uploads["png"]), "q", "1, 2, x, 4", 64, 1, None), "box must be"),
        ((str(uploads["png"]), "q", [0, 0, 999, 5], 64, 1, None), "outside the 240x300"),
        ((str(uploads["ct"]), "q", None, 64, 1, None), "is a CT volume"),
        ((str(uploads["png"]), "q", None, 0, 1, None), "max_new_tokens must be"),
    ):
        with pytest.raises(gr.Error, match=message):
            ask(*args)
    assert demo.rgct_app.live_scans() == 0  # every one-shot film is forgotten


def test_bundled_example_films_load_by_name_only(predictor, tmp_path):
    demo = build_demo(predictor, tmp_root=tmp_path / "s")
    app = demo.rgct_app
    for name in app.examples:
        session, message = app.load_film_example(None, name)
        assert session.film.shape == (128, 128) and f"Loaded **{name}**" in message
        assert session.warnings() == []
        # lungs dark, the spine bright, whatever the file stores (MONOCHROME1, VOI LUT, PNG)
        array = session.film.radiograph.array
        assert array[40:90, 20:40].mean() < array[40:90, 60:68].mean()
    for bad in ("", "../test_app_cxr.py", "nope.png"):
        with pytest.raises(InputError, match="Pick an example|Unknown example"):
            app.load_film_example(None, bad)
    out = ui_fn(demo, "on_example")(None, app.examples[1], None)
    assert "Loaded **phantom_film_2.dicom**" in out[by_id(demo, "rgct-status")]
