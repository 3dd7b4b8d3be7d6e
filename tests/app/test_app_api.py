"""The demo's named endpoints over HTTP with gradio_client, including concurrent callers."""

from __future__ import annotations

import socket
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

sys.path.insert(0, str(Path(__file__).parent))
from app_data import SHAPE, phantom, save_nifti  # noqa: E402
from fake_predictor import FakePredictor  # noqa: E402

from app.demo import build_demo, launch  # noqa: E402
from rgct.constants import WHOLE_SCAN  # noqa: E402

RATE = 14
"""Requests per minute each client session may make on the test server."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def predictor() -> FakePredictor:
    return FakePredictor(delay=0.05)


@pytest.fixture(scope="module")
def server(predictor, tmp_path_factory):
    demo = build_demo(
        predictor,
        concurrency_limit=4,
        tmp_root=tmp_path_factory.mktemp("sessions"),
        rate_limit=(RATE, 60.0),
    )
    launch(demo, host="127.0.0.1", port=free_port(), max_upload_mb=5, prevent_thread_lock=True)
    try:
        yield demo
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(server):
    return gradio_client.Client(server.local_url, verbose=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("api_files")
    vol, masks = phantom()
    out = {"scan": save_nifti(d / "scan.nii.gz", vol)}
    for name, m in masks.items():
        out[name] = save_nifti(d / f"{name}.nii.gz", m)
    with zipfile.ZipFile(d / "masks.zip", "w") as zf:
        for name in ("lung", "heart"):
            zf.write(out[name], f"seg_scan/{name}.nii.gz")
    out["zip"] = d / "masks.zip"
    # Boxes of known, distinct sizes for the concurrency check: k+1 slices of 2x2.
    for k in range(8):
        m = np.zeros(SHAPE, np.uint8)
        m[: k + 1, :2, :2] = 1
        out[f"box{k}"] = save_nifti(d / f"box{k}.nii.gz", m)
    return out


def test_region_report_endpoint(client, files):
    h = gradio_client.handle_file
    text = client.predict(
        h(str(files["scan"])), h(str(files["lung"])), "lung", 16, 1, api_name="/region_report"
    )
    assert text == "lung: 384 voxels in 12x24x20 (tokens=16, beams=1)."
    text = client.predict(
        h(str(files["scan"])), h(str(files["zip"])), "heart", 64, 2, api_name="/region_report"
    )
    assert text == "heart: 256 voxels in 12x24x20 (tokens=64, beams=2)."


def test_report_endpoint(client, files):
    h = gradio_client.handle_file
    report = client.predict(h(str(files["scan"])), h(str(files["zip"])), 64, 1, api_name="/report")
    assert report["regions"] == {
        "heart": "The heart has 256 voxels.",
        "lung": "The lung has 384 voxels.",
    }
    assert [s["region"] for s in report["sentences"]] == ["heart", "lung"]
    assert report["mask_source"] == "uploaded" and report["findings"] == []


def test_answer_endpoint(client, files):
    h = gradio_client.handle_file
    q = "What are the abnormalities in the scan?"
    assert (
        client.predict(h(str(files["scan"])), None, q, 32, 1, api_name="/answer")
        == f"Q={q} | voxels={np.prod(SHAPE)}"
    )
    assert (
        client.predict(
            h(str(files["scan"])), h(str(files["heart"])), "Big?", 8, 1, api_name="/answer"
        )
        == "Q=Big? | voxels=256"
    )


def test_endpoint_errors_are_messages(client, files):
    h = gradio_client.handle_file
    with pytest.raises(gradio_client.exceptions.AppError, match="empty") as info:
        client.predict(
            h(str(files["scan"])),
            h(str(files["breast"])),
            "breast",
            8,
            1,
            api_name="/region_report",
        )
    assert "/" not in str(info.value), "no server paths in messages"
    for bad, message in ((-1, "max_new_tokens must be a whole number from 1 to 512; got -1"),
                         (10**6, "from 1 to 512")):  # fmt: skip
        with pytest.raises(gradio_client.exceptions.AppError, match=message):
            client.predict(h(str(files["scan"])), None, "Q?", bad, 1, api_name="/answer")
    with pytest.raises(gradio_client.exceptions.AppError, match="num_beams .* from 1 to 8"):
        client.predict(h(str(files["scan"])), None, "Q?", 8, 99, api_name="/answer")


def test_single_mask_counts_as_the_named_region(client, files):
    h = gradio_client.handle_file
    text = client.predict(
        h(str(files["scan"])), h(str(files["box3"])), "lung", 16, 1, api_name="/region_report"
    )
    assert text == "lung: 16 voxels in 12x24x20 (tokens=16, beams=1)."
    details = client.predict(
        h(str(files["scan"])), h(str(files["heart"])), "heart", 16, 1,
        api_name="/region_report_details",
    )  # fmt: skip
    assert details["mask_source"] == "uploaded" and details["sentences"][0]["region"] == "heart"


def test_chat_endpoint_three_turns(client, files):
    """Follow-ups resolved against the history the endpoint returned; each answer names the
    region whose mask it used."""
    h = gradio_client.handle_file
    history = []
    expected = [
        ("Is there a nodule in the lung?", "Can nodule be identified in the lung?", "lung"),
        ("How big is it?", "What is the approximate size of the nodule in the lung?", "lung"),
        ("And where is it?", "Where is the nodule located in the image?", WHOLE_SCAN),
    ]
    for k, (question, resolved, region) in enumerate(expected):
        turn = client.predict(
            h(str(files["scan"])), h(str(files["lung"])), "lung", question, history, 16, 1,
            api_name="/chat",
        )  # fmt: skip
        assert turn["resolved"] == resolved and turn["region"] == region, turn
        source = "uploaded" if region == "lung" else WHOLE_SCAN
        assert turn["mask_source"] == source and turn["clarify"] is False
        assert turn["answer"].endswith(f"turn={k + 1}") == (k > 0)
        history = turn["history"]
        assert len(history) == k + 1 and history[-1]["question"] == question
        assert history[-1]["answer"] == turn["answer"] and history[-1]["region"] == region
    # no region: the conversation's region in focus; a reference it cannot resolve: asked back
    turn = client.predict(
        h(str(files["scan"])), None, "", "Anything else?", history, 16, 1, api_name="/chat"
    )
    assert turn["resolved"] == "What are the abnormalities in the lung?"
    assert turn["mask_source"] == "predicted"
    turn = client.predict(
        h(str(files["scan"])), None, "", "Where is it?", turn["history"], 16, 1, api_name="/chat"
    )
    assert turn["clarify"] and "Which finding" in turn["answer"] and turn["region"] is None


def test_rate_limit_per_client(server, files):
    h = gradio_client.handle_file
    c = gradio_client.Client(server.local_url, verbose=False)
    for _ in range(RATE):
        c.predict(h(str(files["scan"])), None, "Q?", 4, 1, api_name="/answer")
    with pytest.raises(gradio_client.exceptions.AppError, match="Too many requests"):
        c.predict(h(str(files["scan"])), None, "Q?", 4, 1, api_name="/answer")


def test_concurrent_calls_are_not_mixed(client, files, predictor):
    h = gradio_client.handle_file

    def call(k: int) -> tuple[int, str]:
        c = gradio_client.Client(client.src, verbose=False)
        q = f"question {k}?"
        return k, c.predict(
            h(str(files["scan"])), h(str(files[f"box{k}"])), q, 8, 1, api_name="/answer"
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, range(8)))
    for k, text in results:
        assert text == f"Q=question {k}? | voxels={(k + 1) * 4}"
