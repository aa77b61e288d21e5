#!/usr/bin/env python
"""Evaluate a trained mmdet / mmseg DiNAT model with the framework's own metrics.

    python tools/mm_test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options KEY=VALUE ...]
    python tools/mm_test.py CONFIG CHECKPOINT --tta      # multi-scale + flip (the config's recipe)
    torchrun --nproc_per_node 8 tools/mm_test.py CONFIG CHECKPOINT --launcher pytorch

The metrics are the config's ``test_evaluator`` (mmseg: IoUMetric mIoU; mmdet: CocoMetric bbox /
segm AP, CocoPanopticMetric PQ). CHECKPOINT may be a checkpoint written by tools/mm_train.py or
one of the authors' released COCO / ADE20K models (same parameter names); it is read without
running code from it (a pickle that would is refused). --tta wraps the model in the config's
``tta_model`` (mmseg's SegTTAModel / mmdet's DetTTAModel) and tests with its ``tta_pipeline``.
"""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mm_train import close_process_group, parse_cfg_options  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("--work-dir")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    p.add_argument("--launcher", choices=["none", "pytorch"], default="none")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: the config's tta_model and tta_pipeline")
    p.add_argument("--out", help="also write the metrics as JSON to this file")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None,
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.local_rank is not None and "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)

    from dinat_backbone.mmengine import build_runner, load_config, patch_checkpoint_loader

    patch_checkpoint_loader()  # CHECKPOINT through the safe reader
    if not os.path.isfile(args.checkpoint) and "://" not in args.checkpoint:
        p.error(f"checkpoint {args.checkpoint!r} does not exist")
    cfg = load_config(args.config, work_dir=args.work_dir,
                      cfg_options=parse_cfg_options(args.cfg_options), launcher=args.launcher,
                      load_from=args.checkpoint, tta=args.tta)
    runner = build_runner(cfg)
    metrics = runner.test()
    from mmengine.dist import is_main_process

    if args.out and is_main_process():  # every process holds the gathered metrics
        def plain(v):  # strict JSON: numbers, null for a missing (NaN) value, else text
            try:
                v = float(v)  # python / numpy / 0-d tensor numbers
            except (TypeError, ValueError):
                return str(v)
            return v if math.isfinite(v) else None

        with open(args.out, "w") as f:
            json.dump({k: plain(v) for k, v in metrics.items()}, f, indent=2, allow_nan=False)
    return metrics


if __name__ == "__main__":
    main()
    close_process_group()
