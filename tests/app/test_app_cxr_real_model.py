"""The radiograph page with a real (tiny-preset, few-step) radiograph checkpoint: the app's calls
match the Predictor's radiograph interface (a film as read, a pixel box, generation settings as
a dict), and the Predictor's own refusals reach the user as messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("gradio")

from app.cxr_handlers import CxrDemoApp  # noqa: E402
from app.demo import build_demo  # noqa: E402
from app.inputs import InputError  # noqa: E402
from rgct.data.cxr import ZONES  # noqa: E402
from rgct.inference import Predictor  # noqa: E402


def _film_with_a_box(root: Path) -> tuple[Path, list[float]]:
    for line in (root / "ground_truth.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["cxr_findings"]:
            films = [
                p
                for p in root.rglob(f"{rec['volume']}*")
                if p.suffix in (".dicom", ".png") and ".rgct_cache" not in p.parts
            ]
            return films[0], rec["cxr_findings"][0]["box"]
    raise AssertionError("no phantom with a finding")


def test_the_page_drives_a_real_radiograph_predictor(cxr_checkpoint, cxr_phantoms, tmp_path):
    predictor = Predictor.from_checkpoint(cxr_checkpoint, device="cpu")
    for key in ("vindr", "nih"):  # a DICOM film and a PNG film
        path, box = _film_with_a_box(cxr_phantoms[key])
        demo = build_demo(predictor, upload_roots=[path.parent], tmp_root=tmp_path / key)
        app = demo.rgct_app
        assert isinstance(app, CxrDemoApp)
        session, _ = app.load_film(None, path)
        app.set_box(session, box)
        gen = {"max_new_tokens": 6, "num_beams": 1}
        answer, _ = app.ask_box(session, **gen)
        assert isinstance(answer["answer"], str) and answer["place"].endswith(" zone")
        report, _ = app.film_report(session, **gen)
        assert isinstance(report["text"], str)
        for s in report["sentences"]:
            assert s["place"] is None or (s["side"], s["zone"]) == tuple(s["place"].split()[:2])
            assert s["zone"] in (None, *ZONES)
        turn, _ = app.ask_film(session, "Is there pleural effusion?", about_box=True, **gen)
        assert turn["region"].startswith("box [")
        # a valid box on the page that the model's grid cannot hold is the model's message
        h, w = session.film.shape
        app.set_box(session, (w - 1, h - 1, w, h))
        try:
            app.ask_box(session, **gen)
        except InputError as err:  # refused by the Predictor, shown as it says
            assert str(err)
        app.discard(session)
