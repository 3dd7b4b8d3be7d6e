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
from rgct.constants import CT_RATE_LABELS, LESION_PROMPTS, LESION_TASKS, REGIONS, REPORT_PROMPTS
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


@pytest.fixture(scope="module")
def lesion_evidence_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint saved as trained with data.lesion_evidence, with a segmenter whose
    only lesion region is the mediastinum (the whole grid)."""
    from rgct.config import load_saved_config, save_config
    from rgct.data.source_maps import LESION_REGIONS
    from rgct.model.checkpoint import CONFIG_FILE

    ckpt = tmp_path_factory.mktemp("lesion_ckpt") / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    cfg = load_saved_config(ckpt / CONFIG_FILE)
    cfg.data.lesion_evidence = True
    save_config(cfg, ckpt / CONFIG_FILE)
    return save_constant_segmenter(ckpt, [r for r in LESION_REGIONS if r != "mediastinum"])


def test_lesion_evidence_is_measured_at_generation_never_read_from_the_truth(
    roots, lesion_evidence_checkpoint, tmp_path, monkeypatch
):
    """Each lesion prompt starts with the segmenter's region at the box and the diameters
    measured from its pixels; the detections line gets that region's lesion label; the blind
    baseline's line says nothing was measured. A lesion-evidence checkpoint without the reader
    is refused."""
    from rgct.data.io import load_mask, load_volume
    from rgct.data.lesion_measure import lesion_evidence_line, measure_lesion
    from rgct.generate.lesion_evidence import BLIND_LINE, build_lesion_evidence

    root = roots["dl"]
    model, cfg = load_checkpoint(lesion_evidence_checkpoint)
    cfg.generation.max_new_tokens = 4
    assert cfg.data.lesion_evidence
    lesions = build_lesion_evidence(cfg, lesion_evidence_checkpoint)
    seen: list[tuple[list[str], object]] = []
    generate = model.generate

    def spy(image, mask, prompts, *args, **kwargs):
        seen.append((list(prompts), kwargs.get("evidence")))
        return generate(image, mask, prompts, *args, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    monkeypatch.setattr(model.cfg, "evidence_prompt", True)
    index = {les.name: les for les in load_deeplesion(root).split("train")}
    out = tmp_path / "dl.jsonl"
    run_generation(model, cfg, root, "train", ["lesion"], out, lesions=lesions)
    rows = read(merge_parts(out))
    assert len(rows) == len(index)
    prompts = [p for batch, _ in seen for p in batch]
    for row, prompt in zip(rows, prompts):
        lesion = index[row["volume"]]
        cache = root / ".rgct_cache" / "deeplesion"  # what the samples read
        volume = load_volume(cache / "volumes" / f"{lesion.volume_name}.nii.gz")
        box = load_mask(cache / "masks" / f"{lesion.name}.nii.gz", volume)
        m = measure_lesion(volume.array, box, volume.spacing)
        want = lesion_evidence_line(
            "mediastinum", m.long_mm if m else None, m.short_mm if m else None
        )
        assert row["lesion_evidence"] == want
        assert prompt == f"{want} {LESION_PROMPTS['lesion']}"
        assert row["question"] == LESION_PROMPTS["lesion"]  # scored and keyed as before
    for _, evidence in seen:  # the detections line: the mediastinum's lesion label
        named = {CT_RATE_LABELS[j] for j in evidence.nonzero()[:, 1].tolist()}
        assert named == {"Lymphadenopathy"} and bool(evidence.any(dim=1).all())

    seen.clear()
    blind = tmp_path / "blind.jsonl"
    run_generation(model, cfg, root, "train", ["lesion"], blind, lesions=lesions, blind=True)
    assert {r["lesion_evidence"] for r in read(merge_parts(blind))} == {BLIND_LINE}
    assert all(p.startswith(BLIND_LINE) for batch, _ in seen for p in batch)
    assert all(evidence is None for _, evidence in seen)
    with pytest.raises(ValueError, match="data.lesion_evidence"):
        run_generation(model, cfg, root, "train", ["lesion"], tmp_path / "x.jsonl")


def test_lesion_evidence_cli_needs_the_checkpoints_segmenter(
    roots, lesion_evidence_checkpoint, tmp_path
):
    from rgct.model.segmenter import WEIGHTS_FILE

    out = tmp_path / "p.jsonl"
    args = ["generate", "--checkpoint", str(lesion_evidence_checkpoint), "--data", str(roots["dl"])]
    args += ["--split", "train", "--tasks", "lesion", "--limit", "2", "--device", "cpu"]
    assert main([*args, "--out", str(out), "--max-new-tokens", "4"]) == 0
    assert all(r["lesion_evidence"].startswith("Lesion in this box: ") for r in read(out))
    bare = tmp_path / "bare"
    shutil.copytree(lesion_evidence_checkpoint, bare)
    (bare / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="needs the checkpoint's segmenter"):
        main(["generate", "--checkpoint", str(bare), *args[3:], "--out", str(tmp_path / "q")])
