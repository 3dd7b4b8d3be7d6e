"""``rgct train`` on a radiograph folder: the plain loop on the 2D model, the checkpoint it writes
(same format, ``data.modality: cxr`` recorded), reload equality, resume, wrong-modality folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import CXR_TINY_MODEL, CXR_TRAIN, TINY_MODEL, TINY_TRAIN, cxr_tiny_overrides

from rgct.config import load_config, load_saved_config
from rgct.data.compact import expand_batch
from rgct.data.dataset import collate
from rgct.data.io import DataError
from rgct.model.checkpoint import REQUIRED_FILES, load_checkpoint
from rgct.train.loop import build_data, train
from rgct.train.state import list_checkpoints


def test_radiograph_training_writes_a_cxr_checkpoint_that_reloads(cxr_checkpoint):
    folder = Path(cxr_checkpoint)
    assert all((folder / f).is_file() for f in REQUIRED_FILES)
    saved = load_saved_config(folder / "rgct_config.yaml")
    assert saved.data.modality == "cxr" and tuple(saved.data.input_shape) == (64, 64)
    model, cfg = load_checkpoint(folder)
    assert model.modality == "cxr"
    again, _ = load_checkpoint(folder)
    image = torch.rand(1, 1, 64, 64)
    mask = torch.ones(1, 1, 64, 64)
    grid = model.encode_image(image)
    assert torch.equal(grid, again.encode_image(image))
    a, _ = model.visual_tokens(grid, mask)
    b, _ = again.visual_tokens(grid, mask)
    assert torch.equal(a, b)


def test_radiograph_batches_are_2d_and_grounded_on_box_masks(cxr_phantoms, tmp_path):
    cfg = load_config(
        [CXR_TINY_MODEL, CXR_TRAIN],
        cxr_tiny_overrides(
            cxr_phantoms["nih"], tmp_path / "run", "train.max_steps=2", "data.augment=false"
        ),
    )
    data = build_data(cfg, world=1)
    assert sorted(data.eval_loaders) == [f"chestxray14/{t}" for t in sorted(cfg.data.tasks)]
    items = [data.train_ds[i] for i in range(len(data.train_ds))]
    batch = expand_batch(collate(items), torch.device("cpu"))
    assert batch["image"].shape[1:] == (1, 64, 64) and batch["mask"].shape[1:] == (1, 64, 64)
    boxes = [i for i, t in enumerate(batch["task"]) if t == "cxr_box"]
    whole = [i for i, t in enumerate(batch["task"]) if t != "cxr_box"]
    assert all(batch["mask"][i].mean() < 0.5 for i in boxes)  # a box, not the whole film
    assert all(batch["mask"][i].min() == 1 for i in whole)


def test_radiograph_training_resumes_to_the_same_weights(cxr_phantoms, tmp_path):
    def run(out, *extra):
        cfg = load_config(
            [CXR_TINY_MODEL, CXR_TRAIN],
            cxr_tiny_overrides(
                cxr_phantoms["vindr"],
                out,
                "train.max_steps=4",
                "train.save_every=2",
                "train.eval_every=0",
                "data.augment=false",
                *extra,
            ),
        )
        return train(cfg)

    straight = run(tmp_path / "a")
    run(tmp_path / "b", "train.stop_after=2")
    assert [c.name for c in list_checkpoints(tmp_path / "b")] == ["step_0000002"]
    resumed = run(tmp_path / "b", "train.resume=auto")
    m1, _ = load_checkpoint(straight)
    m2, _ = load_checkpoint(resumed)
    for (k, v1), v2 in zip(m1.encoder.state_dict().items(), m2.encoder.state_dict().values()):
        assert torch.allclose(v1, v2, atol=1e-6), k


def test_wrong_modality_folders_fail_before_work(cxr_phantoms, phantom_root, tmp_path):
    ct = load_config(
        [TINY_MODEL, TINY_TRAIN],
        [f"data.root={cxr_phantoms['vindr']}", f"train.output_dir={tmp_path / 'ct'}"],
    )
    with pytest.raises(DataError, match=r"vindr-cxr folder \(chest radiographs\).*'ct'"):
        train(ct)
    cxr = load_config(
        [CXR_TINY_MODEL, CXR_TRAIN],
        cxr_tiny_overrides(phantom_root, tmp_path / "cxr"),
    )
    with pytest.raises(DataError, match=r"radgenome folder \(CT volumes\).*'cxr'"):
        train(cxr)
    assert not (tmp_path / "ct").exists() and not (tmp_path / "cxr").exists()
