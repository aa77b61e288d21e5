#!/usr/bin/env python
"""Generate the synthetic demo datasets (deterministic by seed).

    python tools/make_demo_data.py                       # demo_data/coco and demo_data/ade
    python tools/make_demo_data.py --out /tmp/d --n-train 40 --n-val 10 --size 128 --seed 1

Writes a COCO-format instance dataset (``<out>/coco``: train/, val/, annotations/instances_*.json)
and an ADE20K-layout semantic dataset (``<out>/ade``: images/{training,validation},
annotations/{training,validation}, label 0 = unlabelled). See dinat_backbone/demo_data.py.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dinat_backbone import demo_data  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo_data", help="output folder (default: demo_data)")
    p.add_argument("--what", choices=("both", "coco", "ade"), default="both")
    p.add_argument("--n-train", type=int, default=300, help="training images per dataset")
    p.add_argument("--n-val", type=int, default=50, help="validation images per dataset")
    p.add_argument("--size", type=int, default=demo_data.DEMO_SIZE,
                   help=f"image side in pixels (default {demo_data.DEMO_SIZE})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", nargs="+", default=list(demo_data.DEFAULT_CLASSES),
                   help=f"shape classes of the instance dataset, from {demo_data.SHAPES}")
    p.add_argument("--mask-format", choices=("rle", "polygon"), default="rle")
    p.add_argument("--colours", choices=demo_data.COLOUR_MODES, default=demo_data.DEMO_COLOURS,
                   help="class: one colour family per class (default, the main job's data); "
                        "random: any colour for any shape")
    p.add_argument("--overwrite", action="store_true", help="regenerate even if present")
    a = p.parse_args(argv)
    t0 = time.time()
    if a.what in ("both", "coco"):
        info = demo_data.make_coco_instances(
            os.path.join(a.out, "coco"), a.n_train, a.n_val, size=a.size, seed=a.seed,
            classes=a.classes, mask_format=a.mask_format, overwrite=a.overwrite, colours=a.colours)
        print(f"COCO-format instances: {info['root']}  classes {list(info['classes'])}")
        for s in ("train", "val"):
            print(f"  {s}: {info[s]['num_images']} images, {info[s]['num_instances']} instances, "
                  f"{info[s]['ann_file']}")
    if a.what in ("both", "ade"):
        info = demo_data.make_ade_semantic(os.path.join(a.out, "ade"), a.n_train, a.n_val,
                                           size=a.size, seed=a.seed, overwrite=a.overwrite,
                                           colours=a.colours)
        print(f"ADE20K-layout semantic: {info['root']}  classes {list(info['classes'])} "
              "(label PNG value = index + 1, 0 = unlabelled)")
        for s in ("training", "validation"):
            print(f"  {s}: {info[s]['num_images']} images, {info[s]['img_dir']}")
    print(f"done in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
