"""``rgct generate`` on RAD-ChestCT and DeepLesion folders, scored by ``rgct evaluate --data``:
region reports on masks from a folder or the segmenter, lesion answers on each lesion's box,
resumable and sharded as for RadGenome; bad inputs refused by name."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from segmenter_double import save_constant_segmenter

from rgct.cli import main
from rgct.constants import LESION_PROMPTS, LESION_TASKS, REGIONS, REPORT_PROMPTS
from rgct.data.deeplesion import load_deeplesion
from rgct.data.io import DataError
from rgct.data.radchestct import load_radchest
from rgct.data.source_report import check_layout_tasks
from rgct.eval.sources import score_deeplesion, score_radchest
from rgct.generate.masks import MaskProvider
from rgct.generate.runner import LAYOUT_DEFAULT_TASKS, expand_tasks, merge_parts, run_generation
from rgct.model.checkpoint import load_checkpoint

NOT_PREDICTED = ("lung", "bone")
"""Regions the constant segmenter below never finds."""


@pytest.fixture(scope="module")
def roots(layout_phantoms) -> dict[str, Path]:
    return layout_phantoms


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    model, cfg = load_checkpoint(tiny_checkpoint)
    cfg.generation.max_new_tokens = 4
    return model, cfg


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def evaluate(predictions: Path, root: Path, out: Path) -> dict:
    """``rgct evaluate --data root``'s metrics.json."""
    args = ["evaluate", "--predictions", str(predictions), "--data", str(root), "--out", str(out)]
    assert main(args) == 0
    return json.loads((out / "metrics.json").read_text())


def region_masks(root: Path, volume: str) -> set[str]:
    folder = root / "masks" / "region_mask" / f"seg_{volume}"
    return {r for r in REGIONS if (folder / f"{r}.nii.gz").is_file()}


def test_radchest_region_reports_from_a_mask_folder_resume_shard_and_score(roots, tiny, tmp_path):
    model, cfg = tiny
    root = roots["rad"]
    index = load_radchest(root, "train")
    volumes = sorted(index.volumes)[:2]
    folder = root / "masks" / "region_mask"
    out = tmp_path / "p.jsonl"
    masks = MaskProvider(folder, cfg.data, root)
    run_generation(model, cfg, root, "train", ["region_report"], out, limit=2, masks=masks)
    rows = read(merge_parts(out))
    want = {(v, r) for v in volumes for r in region_masks(root, v)}
    assert len(want) > 4 and {(r["volume"], r["region"]) for r in rows} == want
    assert len(rows) == len(want)
    for r in rows:
        assert r["task"] == "region_report" and r["mask_source"] == "folder:region_mask"
        assert r["question"] == REPORT_PROMPTS["region_report"].format(region=r["region"])
    scores = score_radchest(rows, index)
    assert (scores["reports"], scores["unmatched"], scores["other_tasks"]) == (len(rows), 0, 0)

    # interrupted: a part holding two lines and half of the third; then two shards
    lines = out.read_text().splitlines(keepends=True)
    again = tmp_path / "again.jsonl"
    (tmp_path / "again.jsonl.part-0").write_text("".join(lines[:2]) + lines[2][:20])
    run_generation(model, cfg, root, "train", ["region_report"], again, limit=2, masks=masks)
    assert read(merge_parts(again)) == rows
    sharded = tmp_path / "sharded.jsonl"
    for rank in (1, 0):
        run_generation(
            model,
            cfg,
            root,
            "train",
            ["region_report"],
            sharded,
            limit=2,
            masks=masks,
            rank=rank,
            world=2,
        )
    assert read(merge_parts(sharded)) == rows


@pytest.fixture(scope="module")
def with_segmenter(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint plus a segmenter whose every region is the whole grid, except
    NOT_PREDICTED (never found)."""
    ckpt = tmp_path_factory.mktemp("seg_ckpt") / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    return save_constant_segmenter(ckpt, NOT_PREDICTED)


def test_radchest_cli_predicted_masks_then_evaluate(roots, with_segmenter, tmp_path):
    root = roots["rad"]
    out = tmp_path / "p.jsonl"
    args = ["generate", "--checkpoint", str(with_segmenter), "--data", str(root)]
    args += ["--split", "train", "--tasks", "region", "--masks", "predicted", "--limit", "1"]
    assert main([*args, "--out", str(out), "--max-new-tokens", "4", "--device", "cpu"]) == 0
    rows = read(out)
    volume = sorted(load_radchest(root, "train").volumes)[0]
    assert {r["region"] for r in rows} == region_masks(root, volume) - set(NOT_PREDICTED)
    assert {(r["volume"], r["mask_source"]) for r in rows} == {(volume, "predicted")}
    metrics = evaluate(out, root, tmp_path / "m")["rad-chestct"]
    assert metrics["train"]["reports"] == len(rows) and metrics["train"]["unmatched"] == 0


def test_deeplesion_lesion_tasks_on_each_box_then_evaluate(roots, tiny, tmp_path, monkeypatch):
    model, cfg = tiny
    root = roots["dl"]
    index = load_deeplesion(root)
    split = "train"
    lesions = {les.name: les for les in index.split(split)}
    assert len(lesions) > 2
    seen_masks = []
    generate = model.generate

    def spy(image, mask, *args, **kwargs):
        seen_masks.extend(mask)
        return generate(image, mask, *args, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    out = tmp_path / "dl.jsonl"
    run_generation(model, cfg, root, split, expand_tasks("lesions"), out)
    rows = read(merge_parts(out))
    assert {(r["volume"], r["task"]) for r in rows} == {
        (name, t) for name in lesions for t in LESION_TASKS
    }  # every phantom lesion has its type
    assert {r["mask_source"] for r in rows} == {"dataset"}
    assert {r["question"] for r in rows} == set(LESION_PROMPTS.values())
    assert len(seen_masks) == len(rows)
    for mask in seen_masks:  # the box on the key slice (5 slices resized to 16): a small part
        slices = mask[0].sum(dim=(1, 2))
        assert int((slices > 0).sum()) <= 4 and 0 < float(mask.mean()) < 0.05
    scores = score_deeplesion(rows, index)
    assert scores["lesions"] == len(lesions) and scores["unmatched"] == 0
    assert scores["other_tasks"] == 2 * len(lesions) and scores["typed_lesions"] == len(lesions)
    metrics = evaluate(out, root, tmp_path / "m")["deeplesion"]
    assert metrics["lesions"] == len(lesions)


def test_tasks_and_masks_a_layout_cannot_serve_are_refused_by_name(
    roots, phantom_root, tiny, tmp_path, caplog
):
    model, cfg = tiny
    rad, dl = roots["rad"], roots["dl"]
    folder = MaskProvider(rad / "masks" / "region_mask", cfg.data, rad)

    def gen(root, tasks, masks=None, split="train"):
        run_generation(model, cfg, root, split, tasks, tmp_path / "x.jsonl", masks=masks)

    with pytest.raises(DataError, match=r"\['size'\] cannot be asked of .*deeplesion folder"):
        gen(dl, ["lesion", "size"])
    with pytest.raises(DataError, match=r"\['lesion'\] cannot be asked of .*rad-chestct folder"):
        gen(rad, ["lesion"], folder)
    with pytest.raises(DataError, match=r"\['report'\] cannot be asked of .*rad-chestct folder"):
        gen(rad, expand_tasks("report"), folder)
    with pytest.raises(DataError, match=r"\['lesion_type'\] cannot be asked of .*radgenome"):
        gen(phantom_root, ["lesion_type"])
    with pytest.raises(DataError, match="RAD-ChestCT folder: the release has no region masks"):
        gen(rad, ["region_report"])
    with pytest.raises(DataError, match="DeepLesion folder: .*--masks must be 'dataset'"):
        gen(dl, ["lesion"], MaskProvider(rad / "masks", cfg.data, dl))
    with pytest.raises(DataError, match="split 'test' has no samples"):
        gen(dl, ["lesion"], split="test")
    # the CLI says so before loading any model (this checkpoint does not exist)
    args = ["generate", "--checkpoint", str(tmp_path / "none"), "--data", str(rad)]
    with caplog.at_level(logging.ERROR):
        assert main([*args, "--out", str(tmp_path / "p.jsonl"), "--device", "cpu"]) == 2
    assert "--masks predicted" in caplog.text and "masks/region_mask" in caplog.text
    assert not list(tmp_path.glob("x.jsonl*"))


def test_each_layouts_default_tasks_are_tasks_it_holds():
    for layout, spec in LAYOUT_DEFAULT_TASKS.items():
        assert check_layout_tasks(expand_tasks(spec), layout, "DIR")
    assert expand_tasks("lesions") == list(LESION_TASKS)
