#!/usr/bin/env python
"""Run Mask2Former's own train_net.py with the DiNAT backbone (MODEL.BACKBONE.NAME "D2DiNAT").

    CFGS=projects/Mask2Former/configs
    python projects/Mask2Former/train_net.py --mask2former-root /path/to/Mask2Former \\
        --num-gpus 8 --config-file \\
        $CFGS/coco/panoptic-segmentation/maskformer2_dinat_large_IN21k_384_bs16_100ep.yaml \\
        MODEL.WEIGHTS /path/to/dinat_large_in22k_in1k_384_11x11.pth

Every other argument is Mask2Former's (detectron2's ``default_argument_parser``: --config-file,
--eval-only, --resume, --num-gpus, --num-machines, --machine-rank, --dist-url, opts). The
checkout may also be given as MASK2FORMER_ROOT=PATH or on PYTHONPATH; see README.md here.
``--eval-only ... TEST.AUG.ENABLED True`` adds Mask2Former's own semantic test-time augmentation
(its ``SemanticSegmentorWithTTA``, called by its ``main``; results "sem_seg_TTA").
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the dinat-backbone checkout
sys.path.insert(0, HERE)

import mask2former_dinat  # noqa: E402


def worker_main(args):
    """Runs in every process (detectron2's launch spawns one per GPU): Mask2Former's main. A
    checkpoint refused as unsafe (a pickle that needs to run code) ends the run with the
    refusal's message instead of a traceback."""
    from dinat_backbone.weights import UnsafeCheckpointError

    try:
        return mask2former_dinat.load_train_net(args.mask2former_root).main(args)
    except UnsafeCheckpointError as e:
        sys.exit(f"projects/Mask2Former/train_net.py: {e}")


def main():
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--mask2former-root", default=None)
    known, rest = pre.parse_known_args()
    try:
        mask2former_dinat.load_train_net(known.mask2former_root)  # fail early, before launch
    except (FileNotFoundError, ImportError) as e:
        sys.exit(f"projects/Mask2Former/train_net.py: {e}")
    from detectron2.engine import default_argument_parser, launch

    parser = default_argument_parser()
    parser.add_argument("--mask2former-root", default=None,
                        help="Mask2Former checkout (else $MASK2FORMER_ROOT or PYTHONPATH)")
    args = parser.parse_args((["--mask2former-root", known.mask2former_root]
                              if known.mask2former_root else []) + rest)
    if args.mask2former_root:  # so that spawned workers find the same checkout
        os.environ[mask2former_dinat.ENV_VAR] = os.path.abspath(args.mask2former_root)
    print("Command Line Args:", args)
    launch(
        worker_main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    main()
