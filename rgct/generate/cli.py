"""``rgct generate``: batch-generate reports and answers for a split to JSONL.

Runs as one process or under ``accelerate launch`` (each process writes its part; the main
process merges them in a stable order). ``--data`` may be a RadGenome, RAD-ChestCT or DeepLesion
folder, or with a radiograph checkpoint (``data.modality: cxr``) a VinDr-CXR or ChestX-ray14
folder (the layout is read from the folder); ``rgct evaluate --data`` on the same folder scores
the output.

Examples::

    rgct generate --data data/phantom --split valid --out preds.jsonl
    rgct generate --data /data/rad-chestct --split valid --tasks region --masks predicted \
        --out preds.jsonl
    rgct generate --data /data/deeplesion --split valid --tasks lesion --out lesions.jsonl
    rgct generate --checkpoint rgct/assets/cxr_demo_model --data /data/vindr --split test \
        --out cxr.jsonl        # cxr_box lines carry "box": [x_min, y_min, x_max, y_max] pixels
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", default=None, help="checkpoint folder (default: the shipped demo model)"
    )
    parser.add_argument(
        "--data",
        required=True,
        help="dataset folder: RadGenome, RAD-ChestCT, DeepLesion, VinDr-CXR or ChestX-ray14 "
        "layout (found from its files; radiographs need a data.modality=cxr checkpoint)",
    )
    parser.add_argument(
        "--split",
        default="valid",
        help="train | valid (validation); test for RAD-ChestCT, DeepLesion, VinDr-CXR and "
        "ChestX-ray14 (valid means their test split)",
    )
    parser.add_argument(
        "--tasks",
        default=None,
        help="comma list of groups (report, region, vqa, lesions, cxr) or task names (default: "
        "report,region,vqa for RadGenome, region for RAD-ChestCT, lesions for DeepLesion, cxr "
        "for radiographs)",
    )
    parser.add_argument("--out", required=True, help="output JSONL")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per generate() call")
    parser.add_argument("--limit", type=int, default=None, help="use at most K volumes")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--num-beams", type=int, default=None, help="beam search width (1: greedy)")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument(
        "--blind", action="store_true", help="blind baseline: visual tokens replaced by zeros"
    )
    parser.add_argument(
        "--masks",
        default="dataset",
        help="region masks: 'dataset' (the data's own; DeepLesion: each lesion's box), "
        "'predicted' (the checkpoint's segmenter) or a folder of seg_<volume>/<name>.nii.gz "
        "files (RAD-ChestCT has no masks: predicted or a folder)",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from accelerate import Accelerator

    from rgct.data.io import DataError
    from rgct.generate.lesion_evidence import build_lesion_evidence
    from rgct.generate.localize import build_localizer
    from rgct.generate.masks import build_mask_provider
    from rgct.generate.runner import (
        LAYOUT_DEFAULT_TASKS,
        check_generation_inputs,
        check_modality,
        expand_tasks,
        generation_layout,
        merge_parts,
        run_generation,
    )
    from rgct.inference import default_checkpoint
    from rgct.model.checkpoint import load_checkpoint

    try:  # before the model loads
        layout = generation_layout(args.data)
        tasks = expand_tasks(args.tasks or LAYOUT_DEFAULT_TASKS[layout])
        check_generation_inputs(args.data, tasks, args.masks)
    except (DataError, ValueError) as e:
        logger.error("%s", e)
        return 2
    accelerator = Accelerator(cpu=args.device == "cpu")
    model, cfg = load_checkpoint(args.checkpoint or default_checkpoint(), device=accelerator.device)
    try:
        check_modality(cfg, layout, args.data)
    except DataError as e:
        logger.error("%s", e)
        return 2
    over = {
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "num_beams": args.num_beams,
        "temperature": args.temperature,
        "top_p": args.top_p,
    }
    gen = replace(cfg.generation, **{k: v for k, v in over.items() if v is not None})
    checkpoint = args.checkpoint or default_checkpoint()
    masks = build_mask_provider(args.masks, checkpoint, cfg, args.data, accelerator.device)
    # a lesion's box is its region: no lobes to place findings in
    if layout == "deeplesion":
        localizer = None
    else:  # a radiograph's: its film's zones (rgct.generate.localize_cxr)
        localizer = build_localizer(model, cfg, checkpoint, args.data, masks)
    lesions = (  # a data.lesion_evidence model measures each lesion box itself
        build_lesion_evidence(cfg, checkpoint, accelerator.device)
        if layout == "deeplesion"
        else None
    )
    if args.sample:
        gen = replace(gen, do_sample=True)
    run_generation(
        model,
        cfg,
        args.data,
        args.split,
        tasks,
        args.out,
        limit=args.limit,
        rank=accelerator.process_index,
        world=accelerator.num_processes,
        device=accelerator.device,
        blind=args.blind,
        gen=gen,
        masks=masks,
        localizer=localizer,
        lesions=lesions,
    )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        out = merge_parts(args.out)
        print(f"predictions written to {out}")
    return 0
