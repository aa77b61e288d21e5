"""``tools/demo.py --tta`` on the detectron2 path: the trained detector evaluated again with
detectron2's own test-time augmentation, ``GeneralizedRCNNWithTTA``, through tools/train_net.py's
``Trainer.test_with_TTA`` (COCOEvaluator into ``<work>/inference_TTA``).

The views are the mmdet path's (configs/demo/mask-rcnn_dinat-mini_demo.py ``tta_ratios``): the
demo's ``--size`` x 0.75, 1.0, 1.25, each also flipped. ``TEST.AUG.MIN_SIZES`` are those sizes and
``TEST.AUG.MAX_SIZE`` the largest, so every view fits in size x size as mmdet's ``Resize(scale=(s,
s), keep_ratio=True)`` does. GeneralizedRCNNWithTTA merges the views' boxes (per-class NMS) and
averages the merged boxes' mask probabilities over the views, so the detectron2 path has a TTA mask
AP too (mmdet's DetTTAModel merges boxes only).

Not a command: tools/demo.py loads it by path (a ``tools`` package may be installed elsewhere).
"""
from __future__ import annotations

import time

# the mmdet demo detector's tta_ratios (configs/demo/mask-rcnn_dinat-mini_demo.py)
TTA_RATIOS = (0.75, 1.0, 1.25)


def tta_sizes(size: int, ratios=TTA_RATIOS) -> list:
    """Short-edge sizes of the views: ``int(size * r)``, as the mmdet path's scales."""
    return [int(size * r) for r in ratios]


def evaluate_d2_tta(train_net, model, cfg, size: int, ratios=TTA_RATIOS) -> dict:
    """Evaluate ``model`` (the trained detectron2 detector) with GeneralizedRCNNWithTTA at
    ``size`` x ``ratios`` + flip on ``cfg.DATASETS.TEST`` (tools/train_net.py's
    ``Trainer.test_with_TTA``: COCOEvaluator into ``cfg.OUTPUT_DIR/inference_TTA``).

    Returns what tools/demo.py stores under ``detection.tta``: ``metrics`` keyed
    ``d2/<task>/<key>`` (percent, as the single-scale metrics), ``time_s``, ``ratios``,
    ``scales`` ([[s, s], ...]), ``flip`` and ``model``."""
    sizes = tta_sizes(size, ratios)
    if len(set(sizes)) != len(sizes) or min(sizes) < 1:
        raise ValueError(f"TTA sizes {sizes} from --size {size} x {list(ratios)} are not distinct "
                         "positive sizes. Fix: a larger --size")
    tcfg = cfg.clone()
    tcfg.defrost()
    tcfg.TEST.AUG.ENABLED = True
    tcfg.TEST.AUG.MIN_SIZES = tuple(sizes)
    tcfg.TEST.AUG.MAX_SIZE = max(sizes)
    tcfg.TEST.AUG.FLIP = True
    tcfg.freeze()
    was_training = model.training
    t0 = time.time()
    try:
        res = train_net.Trainer.test_with_TTA(tcfg, model)  # {"bbox_TTA": {...}, "segm_TTA": ...}
    finally:
        model.train(was_training)
    metrics = {f"d2/{task[:-len('_TTA')]}/{k}": v for task, r in res.items() for k, v in r.items()}
    return dict(metrics=metrics, time_s=round(time.time() - t0, 1), ratios=list(ratios),
                scales=[[s, s] for s in sizes], flip=True, model="GeneralizedRCNNWithTTA")
