"""The app served with a real (tiny-preset) checkpoint: every endpoint over HTTP, concurrently."""

from __future__ import annotations

import socket
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest

gradio_client = pytest.importorskip("gradio_client")

from app.demo import build_demo, launch  # noqa: E402
from rgct.constants import REGIONS  # noqa: E402
from rgct.data.layout import region_mask_path, volume_path  # noqa: E402
from rgct.data.records import find_volumes  # noqa: E402
from rgct.inference import Predictor  # noqa: E402


def _text(result) -> str:
    """The text of a Predictor result (a dict under the current contract, text before it)."""
    return result if isinstance(result, str) else result["text"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_checkpoint, phantom_root, tmp_path_factory):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    demo = build_demo(predictor, concurrency_limit=4, tmp_root=tmp_path_factory.mktemp("sessions"))
    launch(demo, host="127.0.0.1", port=free_port(), max_upload_mb=50, prevent_thread_lock=True)
    try:
        yield predictor, gradio_client.Client(demo.local_url, verbose=False)
    finally:
        demo.close()


@pytest.fixture(scope="module")
def case(phantom_root, tmp_path_factory):
    volume = find_volumes(phantom_root, "valid")[0]
    masks = {r: p for r in REGIONS if (p := region_mask_path(phantom_root, volume, r)).is_file()}
    zpath = tmp_path_factory.mktemp("zip") / "masks.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for r, p in masks.items():
            zf.write(p, f"seg_{volume}/{r}.nii.gz")
    return volume_path(phantom_root, volume), masks, zpath


def test_endpoints_match_the_predictor(served, case):
    predictor, client = served
    scan, masks, zpath = case
    h = gradio_client.handle_file
    text = client.predict(
        h(str(scan)), h(str(masks["lung"])), "lung", 12, 1, api_name="/region_report"
    )
    assert text == _text(
        predictor.region_report(scan, masks["lung"], region="lung", max_new_tokens=12, num_beams=1)
    )
    answer = client.predict(
        h(str(scan)), None, "What are the abnormalities in the scan?", 8, 1, api_name="/answer"
    )
    assert answer == _text(
        predictor.answer(
            scan, "What are the abnormalities in the scan?", max_new_tokens=8, num_beams=1
        )
    )
    report = client.predict(h(str(scan)), h(str(zpath)), 8, 1, api_name="/report")
    assert report["mask_source"] == "uploaded"
    assert report["regions"] and set(report["regions"]) <= set(masks)  # empty masks skipped


def test_eight_concurrent_calls_all_return(served, case):
    predictor, client = served
    scan, masks, _ = case
    regions = sorted(masks)[:8]
    expected = {
        r: _text(predictor.region_report(scan, masks[r], region=r, max_new_tokens=6, num_beams=1))
        for r in regions
    }
    h = gradio_client.handle_file

    def call(r: str) -> tuple[str, str]:
        c = gradio_client.Client(client.src, verbose=False)
        return r, c.predict(h(str(scan)), h(str(masks[r])), r, 6, 1, api_name="/region_report")

    with ThreadPoolExecutor(8) as pool:
        got = dict(pool.map(call, regions))
    assert got == expected
