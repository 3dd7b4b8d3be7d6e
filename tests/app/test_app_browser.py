"""Drive the demo in headless Chromium, the way a reader uses it, with the fake predictor.

One walk through the whole flow: load a chest phantom, write the full report, click the nodule
sentence (all three planes land on the nodule), click the lung in the viewer (its sentences are
listed), scroll slices with the mouse wheel, talk with the scan (follow-ups resolved, each
answer tagged with its region, an unclear "it" asked back), see the warnings (disagreement,
token limit, not a chest CT), switch scans (nothing stale stays), and close the tab (the server
frees the scan).

Skipped when ``/usr/bin/chromium`` or the ``playwright`` package is missing (this test never
downloads a browser; ``make chromium`` installs Debian's). Set ``RGCT_SCREENSHOT_DIR`` to keep
the screenshots.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed"
)
expect = playwright_api.expect

sys.path.insert(0, str(Path(__file__).parent))
from app_data import CHEST_SHAPE, NODULE_CENTRE, save_nifti, write_chest_examples  # noqa: E402
from fake_predictor import FakePredictor  # noqa: E402

from app.demo import build_demo, launch  # noqa: E402

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT = 20_000


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    examples = write_chest_examples(tmp_path_factory.mktemp("examples"))
    demo = build_demo(
        FakePredictor(), examples_dir=examples, tmp_root=tmp_path_factory.mktemp("sessions")
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True)
    try:
        yield demo
    finally:
        demo.close()


def _slice(page) -> int:
    return int(float(page.locator("#rgct-slice input[type=number]").input_value()))


def _wait_slice(page, near: int, tolerance: int = 2) -> int:
    deadline = time.monotonic() + TIMEOUT / 1000
    while time.monotonic() < deadline:
        value = _slice(page)
        if abs(value - near) <= tolerance:
            return value
        page.wait_for_timeout(200)
    raise AssertionError(f"slice {_slice(page)} is not within {tolerance} of {near}")


def _click_voxel_pixel(page, row: float, col: float) -> None:
    """Click the viewer image at pixel (row, col) of the image it shows (object-fit aware)."""
    page.wait_for_function(
        "() => { const i = document.querySelector('#rgct-viewer img');"
        " return i && i.complete && i.naturalWidth > 0; }",
        timeout=TIMEOUT,
    )
    box = page.evaluate(
        """() => { const i = document.querySelector('#rgct-viewer img');
        const r = i.getBoundingClientRect();
        return [r.x, r.y, r.width, r.height, i.naturalWidth, i.naturalHeight]; }"""
    )
    x, y, w, h, nw, nh = box
    scale = min(w / nw, h / nh)
    ox, oy = x + (w - nw * scale) / 2, y + (h - nh * scale) / 2
    page.mouse.click(ox + (col + 0.5) * scale, oy + (row + 0.5) * scale)


def _select_radio(page, elem_id: str, label: str) -> None:
    page.locator(f"#{elem_id} label", has_text=label).first.click()


def _ask(page, question: str) -> None:
    box = page.locator("#rgct-question textarea")
    box.fill(question)
    page.locator("#rgct-ask").click()


def test_the_whole_flow_in_a_browser(served, tmp_path):
    app = served.rgct_app
    bad = tmp_path / "head.nii.gz"  # 6 slices of water: not a chest CT
    save_nifti(bad, np.zeros((6, 32, 32), np.int16), spacing=(5.0, 1.0, 1.0))
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1100})
            page.goto(served.local_url, wait_until="domcontentloaded")
            status = page.locator("#rgct-status")
            warnings = page.locator("#rgct-warnings")
            page.locator("#rgct-load-example").click()
            expect(status).to_contain_text("Loaded example chest_a", timeout=TIMEOUT)
            expect(page.locator("#rgct-viewer img")).to_be_visible(timeout=TIMEOUT)

            # full report; the nodule sentence centres all three planes on the nodule
            page.get_by_role("tab", name="Full report").click()
            page.locator("#rgct-fr-btn").click()
            report = page.locator("#rgct-report")
            expect(report).to_contain_text("nodule is seen in the right", timeout=TIMEOUT)
            report.locator("[data-sentence]", has_text="nodule").click()
            expect(status).to_contain_text("Finding", timeout=TIMEOUT)
            _wait_slice(page, NODULE_CENTRE[0])
            _screenshot(page, tmp_path / "app_finding_axial.png")
            for view, axis in (("coronal", 1), ("sagittal", 2)):
                _select_radio(page, "rgct-plane", view)
                _wait_slice(page, NODULE_CENTRE[axis])
            _screenshot(page, tmp_path / "app_finding_sagittal.png")
            _select_radio(page, "rgct-plane", "axial")
            _wait_slice(page, NODULE_CENTRE[0])

            # a click on the lung in the viewer lists the lung's sentences
            page.wait_for_timeout(500)
            f = 512 // CHEST_SHAPE[1]
            _click_voxel_pixel(
                page,
                (CHEST_SHAPE[1] - 1 - NODULE_CENTRE[1] + 10) * f,
                (CHEST_SHAPE[2] - 1 - NODULE_CENTRE[2]) * f,
            )
            listed = page.locator("#rgct-region-sentences")
            expect(listed).to_contain_text("nodule is seen", timeout=TIMEOUT)
            expect(listed).not_to_contain_text("The heart has")
            expect(status).to_contain_text("inside: lung")

            # the mouse wheel over the image moves one slice per notch
            before = _slice(page)
            page.locator("#rgct-viewer img").hover()
            page.mouse.wheel(0, -120)
            _wait_slice(page, before + 1, tolerance=0)

            # the box tool: two clicks; rows and columns read top/bottom and left/right on the
            # image, and the slice range starts at the slice drawn on
            drawn_on = _slice(page)
            _select_radio(page, "rgct-plane", "axial")
            _select_radio(page, "rgct-click-mode", "draw box")
            _click_voxel_pixel(page, 400, 300)
            expect(status).to_contain_text("First corner", timeout=TIMEOUT)
            _click_voxel_pixel(page, 100, 60)
            expect(status).to_contain_text(f"Box drawn on slice {drawn_on}", timeout=TIMEOUT)
            page.locator("#rgct-box-tool").get_by_text("Draw a box").first.click()
            box = {
                k: int(float(page.locator(f"#rgct-{k} input[type=number]").input_value()))
                for k in ("z0", "z1", "top", "bottom", "left", "right")
            }
            assert box["z0"] == drawn_on and box["z1"] > drawn_on, box
            assert abs(box["top"] - 100 // f) <= 1 and abs(box["bottom"] - 400 // f) <= 1, box
            assert abs(box["left"] - 60 // f) <= 1 and abs(box["right"] - 300 // f) <= 1, box
            page.locator("#rgct-box-btn").click()
            expect(status).to_contain_text("Box region set", timeout=TIMEOUT)
            expect(page.locator("#rgct-viewer")).to_contain_text("drawn box (drawn)")
            _select_radio(page, "rgct-click-mode", "inspect")
            page.locator("#rgct-region input").click()
            page.get_by_role("option", name="lung", exact=True).click()
            expect(status).to_contain_text("Showing lung", timeout=TIMEOUT)

            # a three-turn conversation: follow-ups resolved against the turns before, each
            # answer tagged with the region whose mask it used
            page.get_by_role("tab", name="Chat").click()
            chat = page.locator("#rgct-chat")
            _ask(page, "What is in the lung?")
            expect(chat).to_contain_text("[lung, dataset mask]", timeout=TIMEOUT)
            expect(chat).to_contain_text("asked as: What are the abnormalities in the lung?")
            # "it" is the nodule of the last answer; the report and this answer disagree
            _ask(page, "Where is it?")
            expect(chat).to_contain_text(
                "asked as: Where is the nodule located in the image?", timeout=TIMEOUT
            )
            expect(chat).to_contain_text("[whole scan]")
            expect(warnings).to_contain_text("left lung lower lobe", timeout=TIMEOUT)
            expect(warnings).to_contain_text("right lung upper lobe")
            # another region by name: its mask answers, and the viewer shows it
            _ask(page, "What about the heart?")
            expect(chat).to_contain_text("[heart, dataset mask]", timeout=TIMEOUT)
            expect(chat).to_contain_text("asked as: What are the abnormalities in the heart?")
            expect(status).to_contain_text("Answered about heart (turn 3)")
            expect(page.locator("#rgct-viewer")).to_contain_text("overlay: heart")
            expect(listed).not_to_contain_text("nodule is seen")
            # nothing in focus in the heart: "it" is asked back, not guessed
            _ask(page, "How big is it?")
            expect(chat).to_contain_text("[question back] Which finding", timeout=TIMEOUT)
            expect(page.locator("#rgct-question textarea")).to_have_value("")
            _screenshot(page, tmp_path / "app_chat_warning.png")

            # text cut at the token limit is flagged
            page.locator("#rgct-settings").get_by_text("Generation settings").click()
            _set_number(page, "#rgct-max-new", "3")
            page.get_by_role("tab", name="Full report").click()
            page.locator("#rgct-fr-btn").click()
            expect(warnings).to_contain_text("token limit", timeout=TIMEOUT)

            # another scan: nothing of the first one stays on screen
            page.locator("#rgct-example input").click()
            page.get_by_role("option", name="chest_b").click()
            page.locator("#rgct-load-example").click()
            expect(status).to_contain_text("Loaded example chest_b", timeout=TIMEOUT)
            expect(report).to_contain_text("Write the full report")
            expect(report).not_to_contain_text("nodule")
            expect(warnings).not_to_contain_text("token limit")
            expect(listed).not_to_contain_text("nodule")
            expect(page.locator("#rgct-chat")).not_to_contain_text("Q=")
            expect(page.locator("#rgct-viewer")).to_contain_text("chest_b")

            # a scan that is not a chest CT is called out
            page.get_by_role("tab", name="Upload").click()
            page.locator("#rgct-volume-file input[type=file]").set_input_files(str(bad))
            expect(status).to_contain_text("Loaded head", timeout=TIMEOUT)
            expect(warnings).to_contain_text("Only 6 slices")
            expect(warnings).to_contain_text("No lungs found")
            _screenshot(page, tmp_path / "app_not_chest.png")
            assert app.live_scans() == 1

            # closing the tab frees the session's scan on the server
            page.close()
            deadline = time.monotonic() + 40
            while app.live_scans() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert app.live_scans() == 0
        finally:
            browser.close()


def _set_number(page, elem: str, value: str, tries: int = 3) -> None:
    """Type a value into a slider's number box until the slider shows it.

    The settings accordion renders its children when first opened; a value typed while that
    happens can be lost on a loaded machine, so the typing is repeated (the check is not).
    """
    box = page.locator(f"{elem} input[type=number]")
    slider = page.locator(f"{elem} input[type=range]")
    for _ in range(tries - 1):
        box.fill(value)
        box.press("Enter")
        box.blur()
        try:
            expect(slider).to_have_value(value, timeout=3_000)
            return
        except AssertionError:
            continue
    box.fill(value)
    box.press("Enter")
    box.blur()
    expect(slider).to_have_value(value)


def _screenshot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    if os.environ.get("RGCT_SCREENSHOT_DIR"):
        keep = Path(os.environ["RGCT_SCREENSHOT_DIR"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, keep / path.name)
