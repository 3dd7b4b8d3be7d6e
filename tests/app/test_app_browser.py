"""Drive the demo in headless Chromium: load an example, move the slider, get a region report.

Skipped when ``/usr/bin/chromium`` or the ``playwright`` package is missing (this test never
downloads a browser). Set ``RGCT_SCREENSHOT_DIR`` to keep the screenshot.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed"
)

sys.path.insert(0, str(Path(__file__).parent))
from app_data import save_nifti  # noqa: E402
from fake_predictor import FakePredictor  # noqa: E402

from app.demo import EXAMPLES_DIR, build_demo, launch  # noqa: E402
from app.inputs import list_examples  # noqa: E402

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


def _phantom_examples(root: Path) -> Path:
    """A chest-like phantom (body, two lungs, heart) used when app/examples is empty."""
    d, h, w = 32, 96, 96
    zz, yy, xx = np.mgrid[:d, :h, :w]
    body = ((yy - 48) / 40) ** 2 + ((xx - 48) / 44) ** 2 < 1
    left = ((yy - 46) / 24) ** 2 + ((xx - 28) / 13) ** 2 < 1
    right = ((yy - 46) / 24) ** 2 + ((xx - 68) / 13) ** 2 < 1
    heart = ((yy - 56) / 12) ** 2 + ((xx - 50) / 12) ** 2 + ((zz - 12) / 10) ** 2 < 1
    vol = np.where(body, 40, -1000) + np.where(left | right, -860, 0) + np.where(heart, 0, 0)
    folder = root / "phantom_chest"
    (folder / "seg_valid_1_a_1").mkdir(parents=True)
    save_nifti(folder / "valid_1_a_1.nii.gz", vol.astype(np.int16), spacing=(2.0, 1.0, 1.0))
    masks = {"lung": (left | right) & ~heart, "heart": heart}
    for name, m in masks.items():
        save_nifti(
            folder / "seg_valid_1_a_1" / f"{name}.nii.gz",
            m.astype(np.uint8),
            spacing=(2.0, 1.0, 1.0),
        )
    return root


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    examples = (
        EXAMPLES_DIR
        if list_examples(EXAMPLES_DIR)
        else _phantom_examples(tmp_path_factory.mktemp("ex"))
    )
    demo = build_demo(
        FakePredictor(), examples_dir=examples, tmp_root=tmp_path_factory.mktemp("sessions")
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True)
    try:
        yield demo.local_url
    finally:
        demo.close()


def test_example_slider_region_report(url, tmp_path):
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#rgct-load-example").click()
            status = page.locator("#rgct-status")
            playwright_api.expect(status).to_contain_text("Loaded example", timeout=20_000)
            viewer_img = page.locator("#rgct-viewer img")
            playwright_api.expect(viewer_img).to_be_visible(timeout=10_000)
            before = viewer_img.get_attribute("src")

            number = page.locator("#rgct-slice input[type=number]")
            start = int(number.input_value())
            number.fill(str(max(start - 6, 0)))
            number.press("Enter")
            playwright_api.expect(number).to_have_value(str(max(start - 6, 0)))
            page.wait_for_function(
                "before => document.querySelector('#rgct-viewer img')?.src !== before",
                arg=before,
                timeout=10_000,
            )

            page.locator("#rgct-rr-btn").click()
            out = page.locator("#rgct-rr-out textarea")
            playwright_api.expect(out).to_have_value(
                __import__("re").compile(r"voxels"), timeout=20_000
            )
            assert "voxels in" in out.input_value()

            _screenshot(page, tmp_path / "demo_region_report.png")

            # full report; picking a sentence shows its region in the viewer
            page.get_by_role("tab", name="Full report").click()
            page.locator("#rgct-fr-btn").click()
            report = page.locator("#rgct-report")
            playwright_api.expect(report).to_contain_text("The lung has", timeout=20_000)
            before = viewer_img.get_attribute("src")
            page.locator("#rgct-sentences label", has_text="lung: The lung has").click()
            playwright_api.expect(status).to_contain_text("Showing lung", timeout=10_000)
            _wait_new_frame(page, before)
            playwright_api.expect(page.locator("#rgct-viewer")).to_contain_text("overlay: lung")
            playwright_api.expect(page.locator("#rgct-json-dl")).to_be_visible()
            _screenshot(page, tmp_path / "demo_full_report.png")
        finally:
            browser.close()


def _wait_new_frame(page, before: str | None) -> None:
    """Wait until the viewer shows a frame other than ``before`` and it has loaded."""
    page.wait_for_function(
        "before => { const i = document.querySelector('#rgct-viewer img');"
        " return i && i.src !== before && i.complete && i.naturalWidth > 0; }",
        arg=before,
        timeout=10_000,
    )
    page.wait_for_timeout(500)


def _screenshot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    if os.environ.get("RGCT_SCREENSHOT_DIR"):
        keep = Path(os.environ["RGCT_SCREENSHOT_DIR"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, keep / path.name)
