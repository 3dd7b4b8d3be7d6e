"""Drive the radiograph page in headless Chromium with the fake radiograph predictor: load an
example film, upload a film, draw a box with two clicks, ask what is in it, write the report and click its sentence (the
zone is shown), ask a question, and upload a CT (refused by name).

Skipped as :mod:`test_app_browser` is (no ``/usr/bin/chromium`` or no ``playwright``); set
``RGCT_SCREENSHOT_DIR`` to keep the screenshots.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from app_data import phantom, save_nifti  # noqa: E402
from fake_cxr_predictor import FakeCxrPredictor  # noqa: E402
from test_app_browser import (  # noqa: E402  (skips this module as it skips itself)
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT,
    _click_voxel_pixel,
    _screenshot,
    expect,
    playwright_api,
)
from test_app_cxr import BLOB, film_array  # noqa: E402

from app.demo import build_demo, launch  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    demo = build_demo(FakeCxrPredictor(), tmp_root=tmp_path_factory.mktemp("sessions"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True)
    try:
        yield demo
    finally:
        demo.close()


def test_the_radiograph_flow_in_a_browser(served, tmp_path):
    from PIL import Image

    film = tmp_path / "film.png"
    Image.fromarray(np.rint(film_array() * 255).astype(np.uint8)).save(film)
    ct = save_nifti(tmp_path / "scan.nii.gz", phantom()[0])
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1100})
            page.set_default_timeout(4 * TIMEOUT)  # clicks on a loaded machine (CI) wait longer
            page.goto(served.local_url, wait_until="domcontentloaded")
            status = page.locator("#rgct-status")
            page.locator("#rgct-load-example").click()  # a bundled phantom film first
            expect(status).to_contain_text("Loaded phantom_film_1.dicom", timeout=TIMEOUT)
            _screenshot(page, tmp_path / "app_cxr_example.png")
            page.get_by_role("tab", name="Upload").click()
            page.locator("#rgct-film-file input[type=file]").set_input_files(str(film))
            expect(status).to_contain_text("Loaded film.png", timeout=TIMEOUT)
            expect(page.locator("#rgct-viewer img")).to_be_visible(timeout=TIMEOUT)

            # two clicks on the shown film (2x enlarged) draw the box around the blob
            x0, y0, x1, y1 = BLOB
            _click_voxel_pixel(page, 2 * y0, 2 * x0)
            expect(status).to_contain_text(f"First corner at ({x0}, {y0})", timeout=TIMEOUT)
            _click_voxel_pixel(page, 2 * (y1 - 1), 2 * (x1 - 1))
            expect(status).to_contain_text(f"Box [{x0}, {y0}, {x1}, {y1}] set", timeout=TIMEOUT)
            expect(status).to_contain_text("right lower zone")
            page.locator("#rgct-box-ask").click()
            expect(page.locator("#rgct-box-out")).to_contain_text("Lung opacity.", timeout=TIMEOUT)
            _screenshot(page, tmp_path / "app_cxr_box.png")

            # the report; its sentence shows its zone
            page.get_by_role("tab", name="Findings report").click()
            page.locator("#rgct-fr-btn").click()
            report = page.locator("#rgct-report")
            expect(report).to_contain_text("right lower zone", timeout=TIMEOUT)
            report.locator("[data-sentence]", has_text="Lung opacity").click()
            expect(status).to_contain_text("highlighted", timeout=TIMEOUT)
            expect(report.locator(".rgct-active")).to_have_count(1, timeout=TIMEOUT)
            _screenshot(page, tmp_path / "app_cxr_report.png")

            # a free question about the box
            page.get_by_role("tab", name="Chat").click()
            page.locator("#rgct-scope label", has_text="given box").first.click()
            page.locator("#rgct-question textarea").fill("What is here?")
            page.locator("#rgct-ask").click()
            expect(page.locator("#rgct-chat")).to_contain_text(
                "box [40, 180, 70, 200], right lower zone", timeout=TIMEOUT
            )

            # a CT is refused by name
            page.locator("#rgct-film-file button[aria-label='Clear']").click()
            page.locator("#rgct-film-file input[type=file]").set_input_files(str(ct))
            expect(status).to_contain_text("is a CT volume", timeout=TIMEOUT)
            _screenshot(page, tmp_path / "app_cxr_ct_refused.png")
        finally:
            browser.close()
