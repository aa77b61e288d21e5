#!/usr/bin/env python
"""The main job: train a DiNAT detector and a DiNAT segmenter on built-in synthetic data.

    python tools/demo.py                     # default: ~12 min on a 2-core CPU (README)
    python tools/demo.py --iters 1000 --cosine-span 1 --val-interval 250   # long schedule, ~38 min

1. Generates the demo data if absent (``--data``, default ``demo_data/``): a COCO-format instance
   dataset of shapes and an ADE20K-layout semantic dataset (dinat_backbone/demo_data.py).
2. Trains UPerNet-DiNAT-mini (mmseg) on the semantic data from random weights and evaluates mIoU
   with mmseg's IoUMetric, next to the mIoU of predicting the majority class everywhere.
3. Trains Mask R-CNN-DiNAT-mini from the segmenter's backbone (``--warm-start segmenter``, the
   default; ``none`` = random weights) with mmdet (``--framework auto``, the default, whenever mmdet
   is installed: the path the README measures) or with detectron2 (``--framework detectron2``; it
   prints how that path differs) and evaluates COCO box / mask AP with pycocotools (mmdet's
   CocoMetric / detectron2's COCOEvaluator). Both paths use the same learning-rate schedule
   (warm-up, then a cosine ``--cosine-span`` x ``--iters`` long, cut at ``--iters``).
   The backbone's dilations are derived for the demo resolution (``derive_dilations``), not the
   COCO preset made for 800-1333 px images.
4. Writes ``<out>/detections.png`` (predicted boxes and masks over val images, ground truth
   below) and ``<out>/segmentation.png`` (image | ground truth | prediction), ``summary.json``,
   and prints where everything is. The frameworks' loggers show progress with an ETA. Metrics are
   printed as the frameworks print them: AP in percent, mIoU in percent, one decimal.

``--tta`` evaluates each trained model again with multi-scale + flip test-time augmentation
(the demo configs' ``tta_pipeline``: --size x ``tta_ratios`` 0.75, 1.0, 1.25, each view also
flipped), through the adapter's own TTA switch (``dinat_backbone.mmengine.load_config(...,
tta=True)``, as ``tools/mm_test.py --tta``): mmseg's SegTTAModel for the segmenter, mmdet's
DetTTAModel for the detector (it merges boxes, so the mmdet detector's TTA row is bbox AP and the
mask head is left out); on the detectron2 path, detectron2's GeneralizedRCNNWithTTA at the same
views (boxes and masks; tools/_demo_d2_tta.py). Prints "metric | single scale | TTA".

``--seeds N`` runs the whole job N times (training seeds --seed, --seed + 1, ...; the same demo
data, ``--data-seed``), each in its own process with outputs in ``<out>/seed_<s>/``, then prints a
table of every metric per seed with the mean and the min-max, and writes ``<out>/repeat.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from dinat_backbone import demo_data  # noqa: E402
from dinat_backbone.demo_data import DEMO_SIZE  # noqa: E402  (the one definition of the demo's size)

DET_CONFIG = osp.join(ROOT, "configs", "demo", "mask-rcnn_dinat-mini_demo.py")
SEG_CONFIG = osp.join(ROOT, "configs", "demo", "upernet_dinat-mini_demo.py")
D2_CONFIG = osp.join(ROOT, "configs", "demo", "d2_mask_rcnn_dinat_mini_demo.yaml")


_rotation = demo_data.parse_rotation  # --max-rotation


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2], allow_abbrev=False)
    p.add_argument("--framework", choices=("auto", "mmdet", "detectron2"), default="auto",
                   help="detector framework; auto = mmdet (the README's path) when mmdet and a "
                        "compiled mmcv are installed, else detectron2")
    p.add_argument("--variant", default="mini", help="DiNAT variant (mini, tiny, small, base, large)")
    p.add_argument("--iters", type=int, default=300,
                   help="detector training iterations (batch 4; 300 keeps the default job within "
                        "13 min on 2 cores)")
    p.add_argument("--seg-iters", type=int, default=120, help="segmenter training iterations (batch 4)")
    p.add_argument("--lr", type=float, default=3e-4,
                   help="AdamW peak learning rate of the detector (3e-4: docs/demo.md, 'learning rate')")
    p.add_argument("--cosine-span", type=float, default=1.5,
                   help="length of the detector's cosine decay as a multiple of --iters (default "
                        "1.5: the run stops at ~0.4x the peak rate, which learned more in the "
                        "short default run; 1 anneals to ~0 at the end, as the long schedule does)")
    p.add_argument("--seg-lr", type=float, default=1e-3, help="AdamW learning rate of the segmenter")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--warm-start", default="segmenter",
                   help="initialise the detector's backbone from the trained segmenter's "
                        "(segmenter, the default), from random weights (none), or from a "
                        "backbone state dict file (e.g. demo_out/segmenter/backbone.pth)")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--data", default="demo_data", help="demo data folder (default: demo_data)")
    p.add_argument("--n-train", type=int, default=300, help="training images per dataset")
    p.add_argument("--n-val", type=int, default=50, help="validation images per dataset")
    p.add_argument("--size", type=int, default=DEMO_SIZE, help=f"image side in pixels (default {DEMO_SIZE})")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--data-seed", type=int, default=0,
                   help="seed of the generated demo data (default 0: the data every run uses)")
    p.add_argument("--max-rotation", type=_rotation, default=None, metavar="DEG",
                   help="draw the demo shapes within DEG degrees of upright (squares with level "
                        "sides, triangles with a vertex on top); 'any' for any angle (default any)")
    p.add_argument("--colours", choices=demo_data.COLOUR_MODES, default=demo_data.DEMO_COLOURS,
                   help="colours of the demo shapes: class (one colour family per class: red "
                        "circles, green squares, blue triangles; the default) or random (any colour "
                        "for any shape: only the outline tells the classes apart; docs/demo.md, "
                        "'colour families')")
    p.add_argument("--seg-class-weights", choices=("none", "inverse"), default="inverse",
                   help="weights of the segmenter's cross-entropy per class: inverse (the default: "
                        "1 / (classes x the class's share of the training pixels), counted from "
                        "the label PNGs: every class weighs the same in the loss) or none")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="run the whole job N times with training seeds --seed .. --seed + N - 1 "
                        "and print the mean and min-max of every metric")
    p.add_argument("--report", metavar="DIR", default=None,
                   help="print the --seeds table again from the runs in DIR/seed_*/summary.json "
                        "(trains nothing)")
    p.add_argument("--device", default=None,
                   help="cpu or cuda (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: all cores)")
    p.add_argument("--val-interval", type=int, default=None,
                   help="also evaluate every N iterations (default: only at the end)")
    p.add_argument("--tta", action="store_true",
                   help="also evaluate each trained model with multi-scale (--size x 0.75, 1.0, "
                        "1.25) + flip test-time augmentation and print single scale vs TTA "
                        "(mmdet's DetTTAModel merges boxes only: bbox AP; detectron2's "
                        "GeneralizedRCNNWithTTA: bbox and mask AP)")
    p.add_argument("--skip-seg", action="store_true", help="skip the segmentation part")
    p.add_argument("--skip-det", action="store_true", help="skip the detection part")
    p.add_argument("--det-cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides of the detector's config: mmengine style for mmdet, e.g. "
                        "model.roi_head.bbox_head.fc_out_channels=512; detectron2 keys for "
                        "detectron2, e.g. MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE=64")
    p.add_argument("--seg-cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides of the mmseg demo config, mmengine style")
    a = p.parse_args(argv)
    for name in ("iters", "seg_iters", "batch_size", "n_train", "n_val"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 1.0 <= a.cosine_span <= 10.0:
        p.error(f"--cosine-span must be between 1 and 10 (a multiple of --iters), got {a.cosine_span}")
    if a.size < 64 or a.size % 32:
        p.error("--size must be a multiple of 32 and at least 64 (e.g. 192)")
    if a.skip_seg and a.skip_det:
        p.error("nothing to do: both --skip-seg and --skip-det given")
    if a.seeds is not None and a.seeds < 1:
        p.error(f"--seeds must be >= 1, got {a.seeds}")
    if a.warm_start not in ("segmenter", "none") and not osp.isfile(a.warm_start):
        p.error(f"--warm-start must be segmenter, none or an existing file, got {a.warm_start!r}")
    a.det_cfg_pairs = [tuple(item.partition("=")[::2]) for item in a.det_cfg_options]
    for name in ("det_cfg_options", "seg_cfg_options"):
        setattr(a, name, _parse_options(p, name, getattr(a, name)))
    if a.skip_seg and a.warm_start == "segmenter":
        a.warm_start = "none"
    return a


# --------------------------------------------------------------------------------- helpers
def _parse_options(parser, name, items):
    """KEY=VALUE strings -> dict, values read as Python literals where they parse as one.

    Not mmengine's DictAction (tools/mm_train.py's --o): the arguments are parsed before anything
    from mmengine is imported (the detectron2 path needs none of it), and DictAction raises a bare
    ValueError on an item without '=' instead of a usage error.
    """
    import ast

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--{name.replace('_', '-')}: expected KEY=VALUE, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _fmt_time(s: float) -> str:
    m, s = divmod(int(round(s)), 60)
    return f"{m}m{s:02d}s"


def _banner(msg: str) -> None:
    print(f"\n{'=' * 100}\n== {msg}\n{'=' * 100}", flush=True)


def _mm_importable(what: str) -> bool:
    try:
        import mmengine  # noqa: F401
        import mmcv._ext  # noqa: F401
        __import__(what)
    except ImportError:
        return False
    return True


def _d2_importable() -> bool:
    try:
        import detectron2  # noqa: F401
    except ImportError:
        return False
    return True


def pick_framework(choice: str) -> str:
    """auto -> mmdet (the path the README documents and measures) whenever mmdet and a compiled
    mmcv import; detectron2 only when asked for, or when it is the only detector installed."""
    if choice != "auto":
        return choice
    if _mm_importable("mmdet") or not _d2_importable():
        return "mmdet"  # (without mmdet, _require_mm then says what to install)
    return "detectron2"


# ----------------------------------------------------------------- numbers: print and save
def _pct(value, scale: float = 1.0):
    """A metric as a percentage with one decimal ("31.8"), "n/a" when missing or not a number.
    ``scale`` 100 for fractions (mmdet's CocoMetric), 1 for percentages (mmseg, detectron2)."""
    try:
        v = float(value) * scale
    except (TypeError, ValueError):
        return "n/a"
    if math.isnan(v) or math.isinf(v) or v < 0:  # pycocotools: -1 = no ground truth of that size
        return "n/a"
    return f"{v:.1f}"


def strict_json(obj):
    """``obj`` with NaN / inf -> None, tuples -> lists, numpy / tensor scalars -> numbers and
    anything else that JSON cannot hold -> str, so that ``json.dumps(..., allow_nan=False)``
    writes strict JSON (NaN is not JSON; strict readers reject it)."""
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "tolist"):  # numpy scalars and arrays, tensors (0-d: a Python number)
        return strict_json(obj.tolist())
    return str(obj)


def write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(strict_json(obj), f, indent=1, allow_nan=False)
        f.write("\n")


# Every detector metric in percent under one name, from either framework's keys.
_DET_KEYS = {  # name: (mmdet CocoMetric key (fraction), detectron2 COCOEvaluator (task, key) (percent))
    "bbox AP": ("coco/bbox_mAP", ("bbox", "AP")),
    "bbox AP50": ("coco/bbox_mAP_50", ("bbox", "AP50")),
    "bbox AP75": ("coco/bbox_mAP_75", ("bbox", "AP75")),
    "mask AP": ("coco/segm_mAP", ("segm", "AP")),
    "mask AP50": ("coco/segm_mAP_50", ("segm", "AP50")),
}


def detection_ap(metrics: dict, classes=()) -> dict:
    """{"bbox AP": 11.8, "bbox AP50": 31.8, ..., "bbox AP50 circle": ...} in percent (None where
    missing) from mmdet's CocoMetric keys (fractions) or detectron2's (``d2/<task>/<key>``,
    percent)."""
    out = {}

    def val(mm_key, d2_key):
        if mm_key in metrics:
            v = metrics[mm_key]
            return None if v is None or float(v) < 0 else 100.0 * float(v)
        v = metrics.get(f"d2/{d2_key[0]}/{d2_key[1]}")
        return None if v is None or not math.isfinite(float(v)) else float(v)

    for name, (mm_key, d2_key) in _DET_KEYS.items():
        out[name] = val(mm_key, d2_key)
    for c in classes:  # per-class box AP (all IoU thresholds); see run_mmdet for the mmdet key
        out[f"bbox AP {c}"] = val(f"coco/{c}_precision", ("bbox", f"AP-{c}"))
    return out


def format_results(summary: dict) -> list:
    """The result lines the demo prints (rounded as the frameworks print them)."""
    lines = []
    seg = summary.get("segmentation")
    if seg:
        per_class = "  ".join(f"{k} {_pct(v)}" for k, v in (seg.get("IoU") or {}).items())
        lines.append(f"segmentation  UPerNet-DiNAT-{summary['variant']} (mmseg), {seg['iters']} iters in "
                     f"{_fmt_time(seg['time_s'])}: mIoU {_pct(seg.get('mIoU'))}  aAcc "
                     f"{_pct(seg.get('aAcc'))}  (majority-class baseline '{seg['majority_class']}': "
                     f"mIoU {_pct(seg.get('majority_baseline_mIoU'))})"
                     + (f"\n              IoU per class: {per_class}" if per_class else ""))
    det = summary.get("detection")
    if det:
        ap = det.get("AP") or {}
        per_class = "  ".join(f"{k[len('bbox AP '):]} {_pct(v)}" for k, v in ap.items()
                              if k.startswith("bbox AP ") and k[len("bbox AP "):] not in ("50", "75"))
        lines.append(f"detection     Mask R-CNN-DiNAT-{summary['variant']} ({summary['framework']}), "
                     f"{det['iters']} iters in {_fmt_time(det['time_s'])}: bbox AP "
                     f"{_pct(ap.get('bbox AP'))}  AP50 {_pct(ap.get('bbox AP50'))}  mask AP "
                     f"{_pct(ap.get('mask AP'))}  AP50 {_pct(ap.get('mask AP50'))}"
                     + (f"\n              bbox AP per class: {per_class}" if per_class else ""))
    return lines


def tta_rows(summary: dict) -> list:
    """[(metric, single-scale value, TTA value), ...] in percent (None where missing) for the
    segmenter and detector parts that ran with --tta."""
    rows = []
    seg = summary.get("segmentation") or {}
    if seg.get("tta"):
        for k in ("mIoU", "aAcc"):
            rows.append((k, seg.get(k), seg["tta"].get(k)))
    det = summary.get("detection") or {}
    if det.get("tta"):
        ap, tta = det.get("AP") or {}, det["tta"].get("AP") or {}
        for k in ("bbox AP", "bbox AP50", "bbox AP75", "mask AP"):
            rows.append((k, ap.get(k), tta.get(k)))  # mask AP: none from mmdet's DetTTAModel (boxes only)
    return rows


def format_tta_table(summary: dict) -> str:
    """The --tta table: "metric | single scale | TTA", percent with one decimal."""
    table = [("metric", "single scale", "TTA")] + [(k, _pct(a), _pct(b)) for k, a, b in tta_rows(summary)]
    widths = [max(len(r[j]) for r in table) for j in range(3)]
    lines = [" | ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths)))
             for r in table]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def run_tta(cfg, args, checkpoint, work, tag):
    """Evaluate the trained ``checkpoint`` again with the config's multi-scale + flip recipe,
    through the adapter's TTA switch (load_config(..., tta=True), as tools/mm_test.py --tta: the
    config's tta_model wraps the model, its tta_pipeline feeds the test set; for DetTTAModel the
    mask head is left out and bbox AP evaluated). The views are --size x the config's tta_ratios."""
    from dinat_backbone.mmengine import build_runner, load_config

    cfg = cfg.copy()
    ratios = list(cfg.tta_ratios)
    tta_aug = [t for t in cfg.tta_pipeline if t["type"] == "TestTimeAug"][0]
    resizes = [t for t in tta_aug.transforms[0] if t["type"] == "Resize"]
    if len(resizes) != len(ratios):
        raise ValueError(f"tta_ratios={ratios}: {len(resizes)} Resize views in tta_pipeline. Fix: "
                         "give one ratio per Resize view in the demo config")
    for t, r in zip(resizes, ratios):
        t["scale"] = (int(args.size * r), int(args.size * r))
    tcfg = load_config(cfg, work_dir=work, load_from=checkpoint, tta=True)
    tcfg.visualizer.name = f"demo_{tag}_tta_{time.time_ns()}"
    tcfg.experiment_name = f"demo_{tag}_tta_{time.strftime('%Y%m%d_%H%M%S')}"
    runner = build_runner(tcfg)
    t0 = time.time()
    metrics = _plain(runner.test())
    return dict(metrics=metrics, time_s=round(time.time() - t0, 1), ratios=ratios,
                scales=[list(t["scale"]) for t in resizes], flip=True, model=tcfg.model.type)


def _require_mm(what: str) -> None:
    try:
        import mmengine  # noqa: F401
        import mmcv  # noqa: F401
        import mmcv._ext  # noqa: F401
        __import__(what)
    except ImportError as e:
        raise SystemExit(
            f"tools/demo.py needs {what} with a compiled mmcv (missing: {e}). Install everything "
            "with `bash tools/install.sh` (README.md), or run only the other part "
            "(--skip-seg / --skip-det, --framework detectron2).") from None


def _safe_mm_loading() -> None:
    """mmengine's checkpoint loading (the warm start's init_cfg) through the project's safe
    reader: no file is unpickled with code-running globals."""
    from dinat_backbone.mmengine import patch_checkpoint_loader

    patch_checkpoint_loader()


def _backbone_fields(variant: str, size: int):
    from dinat_backbone import DinatConfig, derive_dilations

    cfg = DinatConfig.from_variant(variant)
    dil = derive_dilations(size, cfg.depths, cfg.kernel_size)
    chans = [cfg.embed_dim * 2 ** i for i in range(len(cfg.depths))]
    return dil, chans


def _warmup_iters(iters: int) -> int:
    return max(1, min(50, iters // 5))


ETA_MIN_FACTOR = 0.01  # the cosine's floor, x the peak rate


def _schedule(iters: int, lr: float, kind: str, span: float = 1.0):
    """Linear warm-up, then cosine (``span`` x ``iters`` long, cut at ``iters``) or linear decay."""
    warm = _warmup_iters(iters)
    sched = [dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=warm)]
    if kind == "cosine":
        sched.append(dict(type="CosineAnnealingLR", T_max=max(1, round(span * iters) - warm),
                          eta_min=lr * ETA_MIN_FACTOR, by_epoch=False, begin=warm, end=iters))
    else:
        sched.append(dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=warm,
                          end=iters))
    return sched


def cosine_lr_factor(it: int, iters: int, span: float = 1.0) -> float:
    """The detector's learning rate at iteration ``it`` as a multiple of the peak rate: what
    mmengine's LinearLR + CosineAnnealingLR of :func:`_schedule` give (linear warm-up from 0.01
    reaching 1 on its last iteration, then a cosine that would reach ETA_MIN_FACTOR after
    ``span`` x ``iters`` iterations). The detectron2 path uses it directly."""
    warm = _warmup_iters(iters)
    if it < warm:
        return 0.01 + 0.99 * it / max(1, warm - 1)
    t_max = max(1, round(span * iters) - warm)
    return ETA_MIN_FACTOR + (1 - ETA_MIN_FACTOR) * (1 + math.cos(math.pi * (it - warm) / t_max)) / 2


def d2_lr_scheduler(optimizer, iters: int, span: float):
    """detectron2's LRMultiplier following :func:`cosine_lr_factor`, so that ``--cosine-span`` means
    the same on both paths (detectron2's WarmupCosineLR always anneals over SOLVER.MAX_ITER)."""
    from detectron2.solver.lr_scheduler import LRMultiplier
    from fvcore.common.param_scheduler import ParamScheduler

    class _SpanCosine(ParamScheduler):
        def __call__(self, where: float) -> float:  # where = iteration / iters
            return cosine_lr_factor(int(round(where * iters)), iters, span)

    return LRMultiplier(optimizer, multiplier=_SpanCosine(), max_iter=iters)


def _common_overrides(cfg, args, iters, lr, work_dir, tag):
    cfg.work_dir = work_dir
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = args.val_interval or iters
    cfg.train_dataloader.batch_size = args.batch_size
    cfg.optim_wrapper.optimizer.lr = lr
    cfg.default_hooks.checkpoint.interval = iters
    cfg.default_hooks.logger.interval = max(1, min(10, iters // 10))
    cfg.randomness = dict(seed=args.seed)
    # each Runner in this process gets its own visualizer / logger instance
    cfg.visualizer.name = f"demo_{tag}_{time.time_ns()}"
    cfg.experiment_name = f"demo_{tag}_{time.strftime('%Y%m%d_%H%M%S')}"


def _plain(metrics):
    """numpy / tensor scalars -> float, so that summary.json holds numbers."""
    out = {}
    for k, v in (metrics or {}).items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


class _Recorder:
    """Hook that keeps the metrics of every evaluation (mmengine calls after_val_epoch)."""

    def __init__(self):
        from mmengine.hooks import Hook

        rec = self

        class _H(Hook):
            priority = "LOWEST"

            def after_val_epoch(self, runner, metrics=None):
                rec.history.append((runner.iter, _plain(metrics)))

        self.history = []
        self.hook = _H()

    @property
    def last(self):
        return self.history[-1][1] if self.history else {}


# ---------------------------------------------------------------------------- segmentation
def inverse_frequency_weights(pixels_per_class) -> list:
    """Per-class loss weights ``1 / (K * share)`` (rounded to 3 decimals) for the pixel counts of
    the K classes that occur: weight x share is 1 / K for each of them, so no class's pixels
    dominate the loss. A class without training pixels gets 1.0: no pixel carries it as its
    target, so its weight never enters the loss (tiny data sets may miss a class)."""
    counts = [int(c) for c in pixels_per_class]
    if any(c < 0 for c in counts) or not any(counts):
        raise ValueError(f"the training labels need pixels of at least one class to weight the "
                         f"classes, got counts {counts}; regenerate the demo data (more --n-train "
                         "images) or use --seg-class-weights none")
    present = [c for c in counts if c > 0]
    total, k = sum(present), len(present)
    return [round(total / (k * c), 3) if c > 0 else 1.0 for c in counts]


def _mm_config(package, path, args, data_root):
    """The demo's mmengine config ``path`` for ``package`` (mmseg / mmdet), with the backbone's
    variant and dilations for ``args.size`` and the dataloaders' ``data_root``; returns (cfg,
    dilations, stage channels)."""
    _require_mm(package)
    _safe_mm_loading()
    from mmengine.config import Config

    dil, chans = _backbone_fields(args.variant, args.size)
    cfg = Config.fromfile(path)
    cfg.model.backbone.variant = args.variant
    cfg.model.backbone.dilations = dil
    for dl in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[dl].dataset.data_root = data_root
    return cfg, dil, chans


def _train(cfg):
    """mmengine's Runner on ``cfg``, trained with a _Recorder hook; returns (runner, recorder,
    wall seconds, CPU seconds)."""
    from mmengine.runner import Runner

    runner = Runner.from_cfg(cfg)
    rec = _Recorder()
    runner.register_hook(rec.hook)
    t0, c0 = time.time(), time.process_time()
    runner.train()
    return runner, rec, time.time() - t0, time.process_time() - c0


def run_mmseg(args, ade, out_dir):
    cfg, dil, chans = _mm_config("mmseg", SEG_CONFIG, args, ade["root"])
    cfg.model.decode_head.in_channels = chans
    cfg.model.auxiliary_head.in_channels = chans[2]
    cfg.model.data_preprocessor.size = (args.size, args.size)
    cfg.param_scheduler = _schedule(args.seg_iters, args.seg_lr, "poly")
    work = osp.join(out_dir, "segmenter")
    _common_overrides(cfg, args, args.seg_iters, args.seg_lr, work, "seg")
    if args.seg_class_weights == "inverse":
        counts = demo_data.semantic_majority_baseline(ade["training"]["ann_dir"])["pixels_per_class"]
        weights = inverse_frequency_weights(counts)
        missing = [c for c, n in zip(ade["classes"], counts) if n == 0]
        if missing:
            print(f"WARNING: no training pixels of {missing}: their weight (1.0) is never used; "
                  "more --n-train images give every class pixels", flush=True)
        print(f"segmenter class weights (inverse pixel frequency): "
              f"{dict(zip(ade['classes'], weights))}", flush=True)
        for head in ("decode_head", "auxiliary_head"):
            # reduction='none' (mmengine then averages the per-pixel losses): mmseg 1.2's
            # cross-entropy with class_weight and reduction='mean' fails on the ignore label
            cfg.model[head].loss_decode.class_weight = weights
            cfg.model[head].loss_decode.reduction = "none"
    cfg.merge_from_dict(args.seg_cfg_options)
    runner, rec, elapsed, cpu = _train(cfg)
    ckpt = osp.join(work, f"iter_{args.seg_iters}.pth")
    backbone_file = osp.join(work, "backbone.pth")
    import torch

    sd = {k[len("backbone."):]: v.detach().cpu() for k, v in runner.model.state_dict().items()
          if k.startswith("backbone.")}
    torch.save(sd, backbone_file)
    png = osp.join(out_dir, "segmentation.png")
    per_class = draw_segmentation(runner, ade, png)
    tta = run_tta(cfg, args, ckpt, osp.join(out_dir, "segmenter_tta"), "seg") if args.tta else None
    return dict(tta=tta, metrics=rec.last, history=rec.history, time_s=elapsed, cpu_s=cpu, checkpoint=ckpt,
                backbone=backbone_file, work_dir=work, png=png, dilations=dil, iou=per_class)


def draw_segmentation(runner, ade, png, n=4):
    """Draws the first ``n`` val images (image | ground truth | prediction) into ``png`` and
    returns the IoU of every class in percent over the whole val set, computed with mmseg's
    IoUMetric (the runner's evaluator logs it as a table but returns only the mean)."""
    import numpy as np
    import torch
    from mmseg.evaluation import IoUMetric
    from PIL import Image, ImageDraw

    from dinat_backbone.demo_data import SEMANTIC_CLASSES

    metric = IoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = dict(classes=SEMANTIC_CLASSES)

    palette = np.array(runner.cfg.metainfo.palette if "metainfo" in runner.cfg else
                       [[120, 170, 255], [120, 90, 40], [220, 20, 60], [0, 200, 80], [250, 200, 30]],
                       dtype=np.uint8)
    model = runner.model
    model.eval()
    loader = runner.build_dataloader(dict(runner.cfg.val_dataloader, batch_size=1))
    rows = []
    with torch.no_grad():
        for i, batch in enumerate(loader):
            sample = model.test_step(batch)[0]
            metric.process(batch, [sample.to_dict()])
            if i >= n:
                continue
            img = np.asarray(Image.open(sample.img_path).convert("RGB"))
            pred = sample.pred_sem_seg.data[0].cpu().numpy()
            gt = sample.gt_sem_seg.data[0].cpu().numpy()
            def colour(lab):
                return np.where((lab == 255)[..., None], 0, palette[np.clip(lab, 0, len(palette) - 1)])

            rows.append(np.concatenate([img, colour(gt).astype(np.uint8), colour(pred).astype(np.uint8)], 1))
    grid = np.concatenate(rows, 0)
    w = rows[0].shape[1] // 3
    header = Image.new("RGB", (grid.shape[1], 40), (255, 255, 255))
    d = ImageDraw.Draw(header)
    for j, t in enumerate(("image", "ground truth", "prediction")):
        d.text((j * w + 6, 4), t, fill=(0, 0, 0))
    legend = list(zip(SEMANTIC_CLASSES, palette.tolist())) + [("unlabelled", [0, 0, 0])]
    for k, (name, colour) in enumerate(legend):
        x = 4 + k * (grid.shape[1] // len(legend))
        d.rectangle([x, 22, x + 10, 34], fill=tuple(int(v) for v in colour))
        d.text((x + 13, 22), name, fill=(0, 0, 0))
    out = Image.new("RGB", (grid.shape[1], grid.shape[0] + 40), (255, 255, 255))
    out.paste(header, (0, 0))
    out.paste(Image.fromarray(grid), (0, 40))
    out.save(png)
    totals = [sum(r[k] for r in metric.results).double() for k in range(4)]
    iou = IoUMetric.total_area_to_metrics(*totals, ["mIoU"])["IoU"]
    return {c: (None if math.isnan(float(v)) else round(100.0 * float(v), 2))
            for c, v in zip(SEMANTIC_CLASSES, iou)}


# ------------------------------------------------------------------------------- detection
def run_mmdet(args, coco, out_dir, warm_backbone=None):
    cfg, dil, chans = _mm_config("mmdet", DET_CONFIG, args, coco["root"].rstrip("/") + "/")
    cfg.model.neck.in_channels = chans
    if warm_backbone:
        cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=warm_backbone)
    for ev in ("val_evaluator", "test_evaluator"):
        cfg[ev].ann_file = coco["val"]["ann_file"]
        # per-class AP in the metrics: CocoMetric writes "<class>_precision" for each metric in
        # turn, so the last one listed (bbox) is the one kept (tests/test_evaluation.py)
        cfg[ev].classwise = True
        cfg[ev].metric = ["segm", "bbox"]
    _set_resize(cfg, args.size)
    cfg.param_scheduler = _schedule(args.iters, args.lr, "cosine", args.cosine_span)
    work = osp.join(out_dir, "detector")
    _common_overrides(cfg, args, args.iters, args.lr, work, "det")
    cfg.merge_from_dict(args.det_cfg_options)
    runner, rec, elapsed, cpu = _train(cfg)
    png = osp.join(out_dir, "detections.png")
    draw_detections_mmdet(runner, coco, png)
    ckpt = osp.join(work, f"iter_{args.iters}.pth")
    tta = run_tta(cfg, args, ckpt, osp.join(out_dir, "detector_tta"), "det") if args.tta else None
    return dict(tta=tta, metrics=rec.last, history=rec.history, time_s=elapsed, cpu_s=cpu,
                checkpoint=osp.join(work, f"iter_{args.iters}.pth"), work_dir=work, png=png,
                dilations=dil)


def _set_resize(cfg, size):
    """Every Resize of the detector's pipelines -> size x size.

    The dataloaders hold their own copies of ``train_pipeline`` / ``test_pipeline`` (mmengine
    resolves the config's variables when it loads the file), so those copies are the ones that
    count; changing only the top-level lists would leave the model training at the config's size.
    """
    pipes = [cfg.get("train_pipeline"), cfg.get("test_pipeline")]
    pipes += [cfg[dl].dataset.pipeline for dl in ("train_dataloader", "val_dataloader", "test_dataloader")
              if dl in cfg]
    for pipe in pipes:
        for t in pipe or ():
            if t["type"] == "Resize":
                t["scale"] = (size, size)


def draw_detections_mmdet(runner, coco, png, n=6, score_thr=0.3):
    import torch

    model = runner.model
    model.eval()
    loader = runner.build_dataloader(dict(runner.cfg.val_dataloader, batch_size=1))
    preds = []
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i >= n:
                break
            s = model.test_step(batch)[0]
            p = s.pred_instances
            keep = _shown(p.scores, score_thr)
            masks = p.masks[keep].cpu().numpy() if "masks" in p else None
            preds.append(dict(img_path=s.img_path, boxes=p.bboxes[keep].cpu().numpy(),
                              labels=p.labels[keep].cpu().numpy(), scores=p.scores[keep].cpu().numpy(),
                              masks=masks, img_id=s.img_id))
    draw_detection_grid(preds, coco, png, score_thr)


def _shown(scores, score_thr):
    """Which detections the picture shows: score >= score_thr, or for a weak model that has none
    its 3 best guesses (drawn with their scores)."""
    import torch

    keep = scores >= score_thr
    if not bool(keep.any()):
        keep = torch.zeros_like(keep)
        keep[scores.argsort(descending=True)[:3]] = True
    return keep


def draw_detection_grid(preds, coco, png, score_thr):
    """Top row: predictions (score >= score_thr); bottom row: ground truth. PIL only."""
    import numpy as np
    from PIL import Image, ImageDraw
    from pycocotools.coco import COCO

    classes = list(coco["classes"])
    colours = np.array([(230, 25, 75), (0, 130, 255), (255, 200, 0), (60, 180, 75), (145, 30, 180)])
    gt = COCO(coco["val"]["ann_file"])

    def render(img, boxes, labels, masks, texts):
        out = img.astype(np.float32)
        for m, lab in zip(masks if masks is not None else [None] * len(boxes), labels):
            if m is not None:
                out[m] = 0.45 * out[m] + 0.55 * colours[lab % len(colours)]
        im = Image.fromarray(out.astype(np.uint8))
        d = ImageDraw.Draw(im)
        for b, lab, t in zip(boxes, labels, texts):
            c = tuple(int(v) for v in colours[lab % len(colours)])
            d.rectangle([float(b[0]), float(b[1]), float(b[2]), float(b[3])], outline=c, width=2)
            d.text((float(b[0]) + 2, float(b[1]) + 1), t, fill=(255, 255, 255))
        return np.asarray(im)

    top, bottom = [], []
    for p in preds:
        img = np.asarray(Image.open(p["img_path"]).convert("RGB"))
        texts = [f"{classes[lab]} {s:.2f}" for lab, s in zip(p["labels"], p["scores"])]
        masks = None if p["masks"] is None else [m.astype(bool) for m in p["masks"]]
        top.append(render(img, p["boxes"], p["labels"], masks, texts))
        anns = gt.loadAnns(gt.getAnnIds(imgIds=p["img_id"]))
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        labels = [a["category_id"] - 1 for a in anns]
        gmasks = [gt.annToMask(a).astype(bool) for a in anns]
        bottom.append(render(img, boxes, labels, gmasks, [classes[lab] for lab in labels]))
    grid = np.concatenate([np.concatenate(top, 1), np.concatenate(bottom, 1)], 0)
    h = top[0].shape[0]
    out = Image.new("RGB", (grid.shape[1] + 110, grid.shape[0]), (255, 255, 255))
    out.paste(Image.fromarray(grid), (110, 0))
    d = ImageDraw.Draw(out)
    d.text((4, h // 2 - 18), f"prediction\nscore >= {score_thr}\n(none: top 3)", fill=(0, 0, 0))
    d.text((4, h + h // 2 - 6), "ground truth", fill=(0, 0, 0))
    out.save(png)


D2_DIFFERENCES = """\
The detectron2 path differs from the mmdet path that the README measures by default:
  - the detector: detectron2's Mask R-CNN ({yaml}) instead of mmdet's
    (configs/demo/mask-rcnn_dinat-mini_demo.py): the same backbone, FPN width, RoI-head sizes and
    sampled RoIs, but each framework's own RPN / RoI heads and losses, anchors of 16-256 px on
    P2-P6 (mmdet's: 32-512 px) and its proposal counts;
  - data: detectron2's DatasetMapper (ResizeShortestEdge to {size} px, horizontal flip) on the same
    demo COCO files, registered by dinat_backbone.detectron2.demo;
  - evaluation: detectron2's COCOEvaluator (pycocotools' COCOeval, or detectron2's C++ port of it)
    instead of mmdet's CocoMetric; AP is printed in percent by both;
  - the same optimiser (AdamW, DiNAT's no-decay groups, gradient clipping 10), seed handling by
    detectron2 (SEED), and the same learning-rate schedule: warm-up, then a cosine {span} x {iters}
    iterations long cut at {iters} (a custom LRMultiplier: detectron2's WarmupCosineLR has no span);
  - the README's figures are for the mmdet path; the detectron2 figures there are measured
    separately."""


def _load_train_net():
    """tools/train_net.py as a module (its Trainer: DiNAT optimizer groups, COCOEvaluator,
    DinatCheckpointer)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("dinat_train_net", osp.join(ROOT, "tools", "train_net.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def d2_opts(args, coco, work, warm_backbone=None):
    """The detectron2 config overrides for this run (KEY, VALUE, ... as merge_from_list takes)."""
    opts = ["DATASETS.DINAT_DEMO.ROOT", coco["root"], "DATASETS.DINAT_DEMO.NUM_TRAIN", str(args.n_train),
            "DATASETS.DINAT_DEMO.NUM_VAL", str(args.n_val), "DATASETS.DINAT_DEMO.IMAGE_SIZE", str(args.size),
            "DATASETS.DINAT_DEMO.SEED", str(args.data_seed),
            "DATASETS.DINAT_DEMO.MAX_ROTATION", str(-1.0 if args.max_rotation is None else args.max_rotation),
            "DATASETS.DINAT_DEMO.COLOURS", args.colours,
            "INPUT.MIN_SIZE_TRAIN", f"({args.size},)",
            "INPUT.MAX_SIZE_TRAIN", str(args.size), "INPUT.MIN_SIZE_TEST", str(args.size),
            "INPUT.MAX_SIZE_TEST", str(args.size), "MODEL.DINAT.VARIANT", args.variant,
            "MODEL.DINAT.DILATIONS", str(args.size), "SOLVER.MAX_ITER", str(args.iters),
            "SOLVER.WARMUP_ITERS", str(_warmup_iters(args.iters)),
            "SOLVER.BASE_LR", str(args.lr), "SOLVER.IMS_PER_BATCH", str(args.batch_size),
            "TEST.EVAL_PERIOD", str(args.val_interval or 0),
            "MODEL.DEVICE", args.device, "OUTPUT_DIR", work, "SEED", str(args.seed),
            "MODEL.WEIGHTS", warm_backbone or ""]
    for key, value in args.det_cfg_pairs:
        opts += [key, value]
    return opts


def run_detectron2(args, coco, out_dir, warm_backbone=None):
    """detectron2's DefaultTrainer (tools/train_net.py's Trainer) with the demo YAML, in this
    process, with the demo's learning-rate schedule; then COCOEvaluator and detections.png."""
    if not _d2_importable():
        raise SystemExit("tools/demo.py --framework detectron2 needs detectron2 (README: detectron2 "
                         "install notes); without it use --framework mmdet")
    print(D2_DIFFERENCES.format(yaml=osp.relpath(D2_CONFIG, ROOT), size=args.size, span=args.cosine_span,
                                iters=args.iters), flush=True)
    from detectron2.engine import default_setup

    # the demo data's config keys and registration: explicit, the adapter package registers
    # nothing on import
    from dinat_backbone.detectron2.demo import register_demo_datasets_for

    train_net = _load_train_net()
    work = osp.join(out_dir, "detector_d2")
    opts = d2_opts(args, coco, work, warm_backbone)
    cfg = train_net.build_cfg()  # detectron2's keys + MODEL.DINAT + DATASETS.DINAT_DEMO + the tool's
    cfg.merge_from_file(D2_CONFIG)
    cfg.merge_from_list(opts)
    cfg.freeze()
    default_setup(cfg, argparse.Namespace(config_file=D2_CONFIG, opts=opts, eval_only=False))
    register_demo_datasets_for(cfg)
    iters, span = args.iters, args.cosine_span

    class DemoTrainer(train_net.Trainer):
        @classmethod
        def build_lr_scheduler(cls, cfg, optimizer):
            return d2_lr_scheduler(optimizer, iters, span)

    trainer = DemoTrainer(cfg)
    trainer.resume_or_load(resume=False)
    t0, c0 = time.time(), time.process_time()
    trainer.train()
    elapsed, cpu = time.time() - t0, time.process_time() - c0
    results = getattr(trainer, "_last_eval_results", None) or {}
    metrics = {f"d2/{task}/{k}": v for task, res in results.items() for k, v in res.items()}
    history = []
    mfile = osp.join(work, "metrics.json")
    if osp.isfile(mfile):  # detectron2's JSONWriter: one JSON object per line
        with open(mfile) as f:
            for line in f:
                rec = json.loads(line)
                ev = {f"d2/{k}": v for k, v in rec.items() if k.startswith(("bbox/", "segm/"))}
                if ev:  # an evaluation during training is logged at iteration it (after it + 1
                    # iterations), the final one after training at iters
                    history.append((min(rec.get("iteration", iters - 1) + 1, iters), ev))
    png = osp.join(out_dir, "detections.png")
    draw_detections_d2(trainer.model, cfg, coco, png)
    tta = None
    if args.tta:  # detectron2's GeneralizedRCNNWithTTA at the mmdet path's views
        import importlib.util

        spec = importlib.util.spec_from_file_location("dinat_demo_d2_tta",
                                                      osp.join(ROOT, "tools", "_demo_d2_tta.py"))
        d2_tta = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(d2_tta)
        tta = d2_tta.evaluate_d2_tta(train_net, trainer.model, cfg, args.size)
    return dict(tta=tta, metrics=metrics, history=history, time_s=elapsed, cpu_s=cpu, work_dir=work, png=png,
                checkpoint=osp.join(work, "model_final.pth"),
                dilations=_backbone_fields(args.variant, args.size)[0])  # MODEL.DINAT.DILATIONS = size


def draw_detections_d2(model, cfg, coco, png, n=6, score_thr=0.3):
    """The same picture as the mmdet path (draw_detection_grid), from detectron2's model run the
    way DefaultPredictor runs it (read_image in INPUT.FORMAT, ResizeShortestEdge, CHW float)."""
    import torch
    from detectron2.data import detection_utils
    from detectron2.data import transforms as T

    with open(coco["val"]["ann_file"]) as f:
        images = json.load(f)["images"][:n]
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    model.eval()
    preds = []
    with torch.no_grad():
        for im in images:
            path = osp.join(coco["val"]["img_dir"], im["file_name"])
            img = detection_utils.read_image(path, format=cfg.INPUT.FORMAT)
            h, w = img.shape[:2]
            x = aug.get_transform(img).apply_image(img)
            x = torch.as_tensor(x.astype("float32").transpose(2, 0, 1))
            inst = model([{"image": x, "height": h, "width": w}])[0]["instances"].to("cpu")
            keep = _shown(inst.scores, score_thr)
            masks = inst.pred_masks[keep].numpy() if inst.has("pred_masks") else None
            preds.append(dict(img_path=path, boxes=inst.pred_boxes.tensor[keep].numpy(),
                              labels=inst.pred_classes[keep].numpy(), scores=inst.scores[keep].numpy(),
                              masks=masks, img_id=im["id"]))
    draw_detection_grid(preds, coco, png, score_thr)


# ---------------------------------------------------------------------------- --seeds N
def summary_metrics(summary: dict) -> dict:
    """One run's summary.json -> {metric name: value or None} for the repeat table (percent,
    minutes)."""
    out = {}
    seg = summary.get("segmentation")
    if seg:
        out["mIoU"] = seg.get("mIoU")
        for c, v in (seg.get("IoU") or {}).items():
            out[f"IoU {c}"] = v
    det = summary.get("detection")
    if det:
        out.update(det.get("AP") or {})
    if summary.get("total_time_s") is not None:
        out["wall min"] = summary["total_time_s"] / 60.0
    if summary.get("total_cpu_s") is not None:  # what a run costs when other jobs share the cores
        out["cpu min"] = summary["total_cpu_s"] / 60.0
    return out


def aggregate(rows: list) -> dict:
    """[{metric: value or None}, ...] (one dict per run) -> {metric: dict(mean, min, max, n)} over
    the runs that have a number for it (n of them); metrics in first-seen order."""
    names = []
    for r in rows:
        names += [k for k in r if k not in names]
    out = {}
    for k in names:
        vals = [float(r[k]) for r in rows if r.get(k) is not None and math.isfinite(float(r[k]))]
        out[k] = (dict(mean=sum(vals) / len(vals), min=min(vals), max=max(vals), n=len(vals))
                  if vals else dict(mean=None, min=None, max=None, n=0))
    return out


def format_table(seeds: list, rows: list, agg: dict) -> str:
    """The repeat table: one row per seed, then mean and min-max; one column per metric."""
    names = list(agg)
    cell = lambda v: _pct(v)  # noqa: E731  (one decimal, "n/a" when missing)
    table = [["seed"] + names]
    table += [[str(sd)] + [cell(r.get(k)) for k in names] for sd, r in zip(seeds, rows)]
    table.append(["mean"] + [cell(agg[k]["mean"]) for k in names])
    table.append(["min-max"] + [f"{cell(agg[k]['min'])}-{cell(agg[k]['max'])}" for k in names])
    widths = [max(len(row[j]) for row in table) for j in range(len(names) + 1)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 2, lines[1])
    return "\n".join(lines)


def _argv_without(argv, names_with_value, names_flag=()):
    out, skip = [], False
    for tok in argv:
        if skip:
            skip = False
            continue
        name = tok.split("=", 1)[0]
        if name in names_with_value:
            skip = "=" not in tok
            continue
        if name in names_flag:
            continue
        out.append(tok)
    return out


def report_repeats(out_dir: str) -> dict:
    """``--report DIR``: the repeat table of the runs in ``DIR/seed_*/summary.json``."""
    import glob

    found = []
    for path in glob.glob(osp.join(out_dir, "seed_*", "summary.json")):
        with open(path) as f:
            summary = json.load(f)
        found.append((int(summary.get("seed", -1)), summary))
    if not found:
        raise SystemExit(f"--report: no {osp.join(out_dir, 'seed_*', 'summary.json')}; run "
                         f"tools/demo.py --seeds N --out {out_dir} first")
    found.sort(key=lambda item: item[0])
    seeds = [sd for sd, _ in found]
    rows = [summary_metrics(summary) for _, summary in found]
    agg = aggregate(rows)
    print(f"{len(rows)} runs in {out_dir} ({found[0][1].get('framework')}); metrics in percent, "
          "times in minutes")
    print(format_table(seeds, rows, agg), flush=True)
    return dict(seeds=seeds, rows=rows, aggregate=agg)


def run_repeats(args, argv) -> dict:
    """``--seeds N``: N full runs (own processes, training seeds --seed + i), then the table."""
    out_dir = osp.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    base = _argv_without(argv, ("--seeds", "--seed", "--out"))
    seeds = [args.seed + i for i in range(args.seeds)]
    rows, runs = [], []
    t0 = time.time()
    for k, sd in enumerate(seeds):
        run_out = osp.join(out_dir, f"seed_{sd}")
        _banner(f"--seeds {args.seeds}: run {k + 1}/{args.seeds}, seed {sd}, outputs in {run_out}")
        cmd = [sys.executable, osp.abspath(__file__), *base, "--seed", str(sd), "--out", run_out]
        subprocess.run(cmd, check=True)
        with open(osp.join(run_out, "summary.json")) as f:
            summary = json.load(f)
        rows.append(summary_metrics(summary))
        runs.append(dict(seed=sd, out=run_out, metrics=rows[-1]))
    agg = aggregate(rows)
    table = format_table(seeds, rows, agg)
    _banner(f"DiNAT demo: {args.seeds} seeds ({_fmt_time(time.time() - t0)} in all); metrics in "
            "percent, wall time in minutes")
    print(table, flush=True)
    result = dict(command=[osp.relpath(__file__, ROOT), *argv], seeds=seeds, runs=runs, aggregate=agg)
    write_json(osp.join(out_dir, "repeat.json"), result)
    print(f"per-run outputs in {out_dir}/seed_*/, the table's numbers in {osp.join(out_dir, 'repeat.json')}")
    return result


# ------------------------------------------------------------------------------------ main
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.report is not None:
        return report_repeats(args.report)
    if args.seeds is not None:
        return run_repeats(args, argv)
    t_start = time.time()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the Runners then stay on the CPU
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    framework = pick_framework(args.framework)
    from dinat_backbone import demo_data

    os.makedirs(args.out, exist_ok=True)
    out_dir = osp.abspath(args.out)
    _banner(f"DiNAT demo: data in {osp.abspath(args.data)}, outputs in {out_dir}; "
            f"detector: {framework}; device: {args.device}, {torch.get_num_threads()} threads")
    t0 = time.time()
    coco = demo_data.make_coco_instances(osp.join(args.data, "coco"), args.n_train, args.n_val,
                                         size=args.size, seed=args.data_seed,
                                         max_rotation=args.max_rotation, colours=args.colours)
    ade = demo_data.make_ade_semantic(osp.join(args.data, "ade"), args.n_train, args.n_val,
                                      size=args.size, seed=args.data_seed,
                                      max_rotation=args.max_rotation, colours=args.colours)
    print(f"demo data ready in {time.time() - t0:.1f} s: {coco['root']} "
          f"({coco['train']['num_instances']} train / {coco['val']['num_instances']} val instances), "
          f"{ade['root']}", flush=True)
    summary = dict(framework=framework, variant=args.variant, device=args.device,
                   threads=torch.get_num_threads(), size=args.size, seed=args.seed,
                   data_seed=args.data_seed, max_rotation=args.max_rotation, colours=args.colours,
                   seg_class_weights=args.seg_class_weights,
                   data=osp.abspath(args.data),
                   command=[osp.relpath(osp.abspath(__file__), ROOT), *argv])
    seg = det = None
    if not args.skip_seg:
        _banner(f"1/2 UPerNet-DiNAT-{args.variant} (mmseg) on {ade['root']}: "
                f"{args.seg_iters} iterations, batch {args.batch_size}")
        seg = run_mmseg(args, ade, out_dir)
        base = demo_data.semantic_majority_baseline(ade["validation"]["ann_dir"])
        summary["segmentation"] = dict(
            iters=args.seg_iters, time_s=round(seg["time_s"], 1), cpu_s=round(seg["cpu_s"], 1),
            mIoU=seg["metrics"].get("mIoU"), aAcc=seg["metrics"].get("aAcc"), IoU=seg["iou"],
            majority_baseline_mIoU=round(100 * base["mIoU"], 2), majority_class=base["name"],
            history=seg["history"], png=seg["png"], checkpoint=seg["checkpoint"],
            dilations=seg["dilations"])
        if seg["tta"]:
            t = seg["tta"]
            summary["segmentation"]["tta"] = dict(
                mIoU=t["metrics"].get("mIoU"), aAcc=t["metrics"].get("aAcc"),
                **{k: v for k, v in t.items() if k != "metrics"})
    if not args.skip_det:
        if args.warm_start == "segmenter":
            warm = seg["backbone"] if seg else None
        else:
            warm = None if args.warm_start == "none" else osp.abspath(args.warm_start)
        _banner(f"2/2 Mask R-CNN-DiNAT-{args.variant} ({framework}) on {coco['root']}: "
                f"{args.iters} iterations, batch {args.batch_size}, backbone from "
                f"{warm or 'random weights'}")
        if framework == "detectron2":
            det = run_detectron2(args, coco, out_dir, warm)
        else:
            det = run_mmdet(args, coco, out_dir, warm)
        summary["detection"] = dict(iters=args.iters, cosine_span=args.cosine_span,
                                    time_s=round(det["time_s"], 1), cpu_s=round(det["cpu_s"], 1),
                                    warm_start=(args.warm_start if args.warm_start in ("segmenter", "none")
                                                else warm) if warm else "none",
                                    AP=detection_ap(det["metrics"], coco["classes"]),
                                    metrics=det["metrics"], history=det["history"],
                                    png=det["png"], checkpoint=det["checkpoint"],
                                    dilations=det.get("dilations"))
        if det.get("tta"):
            t = det["tta"]
            summary["detection"]["tta"] = dict(AP=detection_ap(t["metrics"], coco["classes"]), **t)
    summary["total_time_s"] = round(time.time() - t_start, 1)
    summary["total_cpu_s"] = round(time.process_time(), 1)  # this process; cf. wall on a busy machine
    summary["load_average"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    write_json(osp.join(out_dir, "summary.json"), summary)
    _banner("DiNAT demo: results (AP and IoU in percent)")
    print("\n".join(format_results(summary)))
    if args.tta:
        print("single scale vs multi-scale + flip TTA (--size x "
              f"{', '.join(str(r) for r in (seg or det)['tta']['ratios'])}, flipped; percent"
              + ("" if framework == "detectron2" else "; mmdet's detector TTA merges boxes only, so "
                 "mask AP has no TTA value") + "):")
        print(format_tta_table(summary))
    print("files:")
    for label, path in (("detections  ", det and det.get("png")), ("segmentation", seg and seg["png"]),
                        ("detector    ", det and det["work_dir"]), ("segmenter   ", seg and seg["work_dir"]),
                        ("summary     ", osp.join(out_dir, "summary.json"))):
        if path:
            print(f"  {label} {path}")
    print(f"total wall time {_fmt_time(time.time() - t_start)} (process CPU time "
          f"{_fmt_time(time.process_time())}, {torch.get_num_threads()} threads)", flush=True)
    return summary


if __name__ == "__main__":
    main()
