"""The synthetic demo dataset (``dinat_backbone.demo_data``) in detectron2: its config keys
``DATASETS.DINAT_DEMO.*`` and its registration in detectron2's DatasetCatalog.

Not imported by ``dinat_backbone.detectron2``: tools/train_net.py, tools/demo.py and the
Mask2Former glue call :func:`add_demo_config` / :func:`register_demo_datasets_for` explicitly.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from .. import demo_data

__all__ = ["DEMO_PREFIX", "DEMO_DEFAULTS", "add_demo_config", "register_demo_datasets",
           "register_demo_datasets_for"]

DEMO_PREFIX = "dinat_demo_coco"

# DATASETS.DINAT_DEMO: where and how make_coco_instances generates the data
DEMO_DEFAULTS = {
    "ROOT": os.path.join("demo_data", "coco"),  # as tools/make_demo_data.py writes it (cwd)
    "NUM_TRAIN": 300,
    "NUM_VAL": 50,
    "IMAGE_SIZE": demo_data.DEMO_SIZE,
    "SEED": 0,
    "MAX_OBJECTS": 6,
    # "rle" (shapes may overlap; needs INPUT.MASK_FORMAT "bitmask") or "polygon" (no overlaps;
    # what Mask2Former's COCO instance mappers read)
    "MASK_FORMAT": "rle",
    # shapes within this many degrees of upright; negative: any angle (demo_data's None)
    "MAX_ROTATION": -1.0,
    # "class" (one colour family per shape class, the main job's data) or "random" (any colour
    # for any shape)
    "COLOURS": demo_data.DEMO_COLOURS,
}


def add_demo_config(cfg: CfgNode) -> None:
    """Add ``DATASETS.DINAT_DEMO.*`` (the defaults above) to ``cfg`` if absent."""
    if "DINAT_DEMO" not in cfg.DATASETS:
        cfg.DATASETS.DINAT_DEMO = CfgNode(dict(DEMO_DEFAULTS))


def register_demo_datasets(cfg: Optional[CfgNode] = None, *, root: Optional[str] = None,
                           prefix: str = DEMO_PREFIX, num_train: Optional[int] = None,
                           num_val: Optional[int] = None, image_size: Optional[int] = None,
                           seed: Optional[int] = None, max_objects: Optional[int] = None,
                           mask_format: Optional[str] = None,
                           max_rotation: Optional[float] = None,
                           colours: Optional[str] = None) -> Dict[str, str]:
    """Generate (if absent) the synthetic COCO-format demo data and register
    ``<prefix>_train`` / ``<prefix>_val`` in detectron2's DatasetCatalog (COCO evaluator).

    Each parameter defaults to ``cfg.DATASETS.DINAT_DEMO`` (when given), else to
    :data:`DEMO_DEFAULTS`. Returns {split: dataset name}. Registering the same names with the
    same files again is a no-op.
    """
    node = cfg.DATASETS.get("DINAT_DEMO") if cfg is not None else None
    given = dict(ROOT=root, NUM_TRAIN=num_train, NUM_VAL=num_val, IMAGE_SIZE=image_size,
                 SEED=seed, MAX_OBJECTS=max_objects, MASK_FORMAT=mask_format,
                 MAX_ROTATION=max_rotation, COLOURS=colours)
    v = {k: given[k] if given[k] is not None else (node or {}).get(k, DEMO_DEFAULTS[k])
         for k in DEMO_DEFAULTS}
    root = v["ROOT"] or DEMO_DEFAULTS["ROOT"]
    rotation = float(v["MAX_ROTATION"])
    info = demo_data.make_coco_instances(
        root, n_train=int(v["NUM_TRAIN"]), n_val=int(v["NUM_VAL"]), size=int(v["IMAGE_SIZE"]),
        seed=int(v["SEED"]), max_objects=int(v["MAX_OBJECTS"]), mask_format=str(v["MASK_FORMAT"]),
        max_rotation=None if rotation < 0 else rotation, colours=str(v["COLOURS"]))
    names = {}
    for split in ("train", "val"):
        name = f"{prefix}_{split}"
        ann, img_dir = info[split]["ann_file"], info[split]["img_dir"]
        if name in DatasetCatalog.list():
            meta = MetadataCatalog.get(name)
            if getattr(meta, "json_file", None) == ann and meta.image_root == img_dir:
                names[split] = name
                continue
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_coco_instances(name, {}, ann, img_dir)
        names[split] = name
    logging.getLogger(__name__).info(f"demo data at {root}: {names}")
    return names


def register_demo_datasets_for(cfg: CfgNode) -> List[str]:
    """Register the demo datasets if ``cfg.DATASETS.TRAIN`` / ``TEST`` name any (names starting
    with ``dinat_demo_coco_``); returns the names registered."""
    wanted = [n for n in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
              if n.startswith(DEMO_PREFIX + "_")]
    if not wanted:
        return []
    return list(register_demo_datasets(cfg).values())
