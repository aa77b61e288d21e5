#!/usr/bin/env python
"""Mask2Former with a DiNAT-mini backbone, end to end on the synthetic demo data, per framework.

    python tools/demo_mask2former.py                          # every installed path, in turn
    python tools/demo_mask2former.py --paths mmseg --iters 150
    MASK2FORMER_ROOT=/path/to/Mask2Former python tools/demo_mask2former.py --paths detectron2

Paths (``--paths``, default: all three; one that is not installed stops with what to install):

* ``mmseg``: semantic segmentation, mmseg's Mask2FormerHead
  (configs/demo/mask2former_dinat-mini_demo_semantic.py) on the ADE20K-layout demo data; mIoU
  from mmseg's IoUMetric next to the majority-class baseline
  (``dinat_backbone.demo_data.semantic_majority_baseline``).
* ``mmdet``: instance segmentation, mmdet's Mask2Former
  (configs/demo/mask2former_dinat-mini_demo_instance.py); mask / box AP from mmdet's CocoMetric.
* ``detectron2``: instance segmentation with the official Mask2Former code (a checkout given by
  ``--mask2former-root`` or MASK2FORMER_ROOT), through projects/Mask2Former's glue
  (configs/demo/d2_mask2former_dinat_mini_demo_instance.yaml); mask AP from detectron2's
  COCOEvaluator. Mask2Former predicts masks only (its boxes are zeros), so its box AP is not
  reported.

The instance paths train on the same demo COCO data written with polygon masks
(``<data>/coco_polygon``: Mask2Former's COCO instance mapper reads polygons); a detector that
predicts nothing has AP 0, the instance baseline. Every path starts from random weights, trains
``--iters`` iterations of batch ``--batch-size`` (linear warm-up, then linear decay to 0) and
evaluates once at the end on the validation split.

Writes ``<out>/<path>/`` (the framework's work dir), ``<out>/<path>.png`` (semantic: image |
ground truth | prediction; instance: predictions over ground truth) and ``<out>/summary.json``
(metrics, losses per iteration, wall / CPU time, load average, the command; results of paths run
earlier into the same folder are kept), and prints one result line per path.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from dinat_backbone.demo_data import COLOUR_MODES, DEMO_COLOURS, DEMO_SIZE  # noqa: E402

SEM_CONFIG = osp.join(ROOT, "configs", "demo", "mask2former_dinat-mini_demo_semantic.py")
INS_CONFIG = osp.join(ROOT, "configs", "demo", "mask2former_dinat-mini_demo_instance.py")
D2_CONFIG = osp.join(ROOT, "configs", "demo", "d2_mask2former_dinat_mini_demo_instance.yaml")
PATHS = ("mmseg", "mmdet", "detectron2")
DEFAULT_SIZE = 128


def data_dirs(data: str, size: int, colours: str = "random") -> dict:
    """Where each dataset goes: the main demo's folders at its size and colours (shared with
    tools/demo.py), folders named by the size (and the colours) otherwise, so that another size
    or colour mode never rewrites the main demo's data."""
    tag = "" if size == DEMO_SIZE else f"_{size}"
    if colours != DEMO_COLOURS and size == DEMO_SIZE:
        tag += f"_{colours}"
    return dict(ade=osp.join(data, "ade" + tag), coco=osp.join(data, "coco_polygon" + tag))


def _demo():
    """tools/demo.py as a module: the main demo's helpers (schedules, pictures, metric names)."""
    spec = importlib.util.spec_from_file_location("dinat_demo_tool", osp.join(ROOT, "tools", "demo.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1], allow_abbrev=False)
    p.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS),
                   help="which framework paths to run, in this order (default: all)")
    p.add_argument("--iters", type=int, default=120, help="training iterations per path")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--out", default=osp.join("demo_out", "mask2former"), help="output folder")
    p.add_argument("--data", default="demo_data", help="demo data folder (default: demo_data)")
    p.add_argument("--n-train", type=int, default=300, help="training images per dataset")
    p.add_argument("--n-val", type=int, default=50, help="validation images per dataset")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE,
                   help=f"image side (default {DEFAULT_SIZE}: a Mask2Former iteration at the main "
                        f"demo's {DEMO_SIZE} px took ~7.5 s on the shared 2-core machine)")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the generated demo data")
    p.add_argument("--colours", choices=COLOUR_MODES, default="random",
                   help="colours of the demo shapes (default random: the data of the figures in "
                        "docs/mask2former_demo.md; class: one colour family per class, as in "
                        "tools/demo.py)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    p.add_argument("--mask2former-root", default=None,
                   help="Mask2Former checkout for the detectron2 path (else $MASK2FORMER_ROOT)")
    a = p.parse_args(argv)
    for name in ("iters", "batch_size", "n_train", "n_val"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if a.size < 96 or a.size % 32:
        p.error(f"--size must be a multiple of 32 and at least 96 (e.g. {DEMO_SIZE}), got {a.size}")
    if not a.lr > 0:
        p.error(f"--lr must be > 0, got {a.lr}")
    a.paths = list(dict.fromkeys(a.paths))
    return a


# ----------------------------------------------------------------------------------- helpers
def _require_mm(what: str) -> None:
    try:
        import mmcv._ext  # noqa: F401
        import mmdet  # noqa: F401  (mmseg's Mask2FormerHead is mmdet's)
        import mmengine  # noqa: F401
        __import__(what)
    except ImportError as e:
        raise SystemExit(f"tools/demo_mask2former.py --paths {what}: needs {what}, mmdet and a "
                         f"compiled mmcv (missing: {e.name or e}); install them with "
                         "`bash tools/install.sh`") from None


class _LossRecorder:
    """mmengine hook: the total loss of every training iteration, and every evaluation."""

    def __init__(self):
        from mmengine.hooks import Hook

        rec = self
        self.losses, self.history = [], []

        class _H(Hook):
            priority = "LOWEST"

            def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
                if outputs and "loss" in outputs:
                    loss = outputs["loss"]
                    rec.losses.append(float(loss.detach() if hasattr(loss, "detach") else loss))

            def after_val_epoch(self, runner, metrics=None):
                rec.history.append((runner.iter, {k: _num(v) for k, v in (metrics or {}).items()}))

        self.hook = _H()

    @property
    def last(self):
        return self.history[-1][1] if self.history else {}


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def _mm_overrides(cfg, args, demo, work, tag, size):
    ns = argparse.Namespace(val_interval=None, batch_size=args.batch_size, seed=args.seed)
    demo._common_overrides(cfg, ns, args.iters, args.lr, work, tag)
    cfg.param_scheduler = demo._schedule(args.iters, args.lr, "poly")
    dil, chans = demo._backbone_fields("mini", size)
    cfg.model.backbone.dilations = dil
    return dil


def _timed_train(runner):
    t0, c0 = time.time(), time.process_time()
    runner.train()
    return time.time() - t0, time.process_time() - c0


# ----------------------------------------------------------------------------------- mmseg
def run_mmseg(args, demo, data, out_dir):
    _require_mm("mmseg")
    from mmengine.config import Config
    from mmengine.runner import Runner

    from dinat_backbone import demo_data
    from dinat_backbone.mmengine import patch_checkpoint_loader

    patch_checkpoint_loader()
    ade = data["ade"]
    cfg = Config.fromfile(SEM_CONFIG)
    for dl in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[dl].dataset.data_root = ade["root"]
    cfg.model.data_preprocessor.size = (args.size, args.size)
    work = osp.join(out_dir, "mmseg")
    dil = _mm_overrides(cfg, args, demo, work, "m2f_seg", args.size)
    runner = Runner.from_cfg(cfg)
    rec = _LossRecorder()
    runner.register_hook(rec.hook)
    wall, cpu = _timed_train(runner)
    png = osp.join(out_dir, "mmseg.png")
    iou = demo.draw_segmentation(runner, ade, png)
    base = demo_data.semantic_majority_baseline(ade["validation"]["ann_dir"])
    m = rec.last
    return dict(task="semantic", framework="mmseg", config=osp.relpath(SEM_CONFIG, ROOT),
                metric="mIoU", value=m.get("mIoU"), aAcc=m.get("aAcc"), IoU=iou,
                baseline=round(100 * base["mIoU"], 2), baseline_what=f"majority class '{base['name']}'",
                metrics=m, losses=rec.losses, time_s=round(wall, 1), cpu_s=round(cpu, 1),
                png=png, work_dir=work, dilations=dil)


# ----------------------------------------------------------------------------------- mmdet
def run_mmdet(args, demo, data, out_dir):
    _require_mm("mmdet")
    from mmengine.config import Config
    from mmengine.runner import Runner

    from dinat_backbone.mmengine import patch_checkpoint_loader

    patch_checkpoint_loader()
    coco = data["coco"]
    cfg = Config.fromfile(INS_CONFIG)
    root = coco["root"].rstrip("/") + "/"
    for dl in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[dl].dataset.data_root = root
    for ev in ("val_evaluator", "test_evaluator"):
        cfg[ev].ann_file = coco["val"]["ann_file"]
    demo._set_resize(cfg, args.size)
    work = osp.join(out_dir, "mmdet")
    dil = _mm_overrides(cfg, args, demo, work, "m2f_ins", args.size)
    runner = Runner.from_cfg(cfg)
    rec = _LossRecorder()
    runner.register_hook(rec.hook)
    wall, cpu = _timed_train(runner)
    png = osp.join(out_dir, "mmdet.png")
    demo.draw_detections_mmdet(runner, coco, png)
    ap = demo.detection_ap(rec.last)
    return dict(task="instance", framework="mmdet", config=osp.relpath(INS_CONFIG, ROOT),
                metric="mask AP", value=ap.get("mask AP"), AP=ap, baseline=0.0,
                baseline_what="no detections", metrics=rec.last, losses=rec.losses,
                time_s=round(wall, 1), cpu_s=round(cpu, 1), png=png, work_dir=work, dilations=dil)


# ------------------------------------------------------------------------------ detectron2
def _m2f_glue():
    spec = importlib.util.spec_from_file_location(
        "mask2former_dinat", osp.join(ROOT, "projects", "Mask2Former", "mask2former_dinat.py"))
    mod = sys.modules.get("mask2former_dinat")
    if mod is None:
        mod = importlib.util.module_from_spec(spec)
        sys.modules["mask2former_dinat"] = mod
        spec.loader.exec_module(mod)
    return mod


def d2_opts(args, coco_root, work):
    return ["DATASETS.DINAT_DEMO.ROOT", coco_root, "DATASETS.DINAT_DEMO.NUM_TRAIN", str(args.n_train),
            "DATASETS.DINAT_DEMO.NUM_VAL", str(args.n_val),
            "DATASETS.DINAT_DEMO.IMAGE_SIZE", str(args.size),
            "DATASETS.DINAT_DEMO.SEED", str(args.data_seed),
            "DATASETS.DINAT_DEMO.MASK_FORMAT", "polygon",
            "INPUT.IMAGE_SIZE", str(args.size), "INPUT.MIN_SIZE_TEST", str(args.size),
            "INPUT.MAX_SIZE_TEST", str(args.size), "MODEL.DINAT.DILATIONS", str(args.size),
            "SOLVER.MAX_ITER", str(args.iters), "SOLVER.WARMUP_ITERS",
            str(max(1, min(50, args.iters // 5))), "SOLVER.BASE_LR", str(args.lr),
            "SOLVER.IMS_PER_BATCH", str(args.batch_size), "OUTPUT_DIR", work,
            "SEED", str(args.seed), "MODEL.DEVICE", "cpu"]


def run_detectron2(args, demo, data, out_dir):
    try:
        import detectron2  # noqa: F401
    except ImportError:
        raise SystemExit("tools/demo_mask2former.py --paths detectron2: needs detectron2 "
                         "(README: detectron2 install notes)") from None
    glue = _m2f_glue()
    try:
        train_net = glue.load_train_net(args.mask2former_root)
    except (FileNotFoundError, ImportError) as e:
        raise SystemExit(f"tools/demo_mask2former.py --paths detectron2: {e}") from None
    from detectron2.engine import default_argument_parser

    work = osp.join(out_dir, "detectron2")
    opts = d2_opts(args, data["coco"]["root"], work)
    d2_args = default_argument_parser().parse_args(["--config-file", D2_CONFIG, *opts])
    cfg = train_net.setup(d2_args)
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    t0, c0 = time.time(), time.process_time()
    trainer.train()
    wall, cpu = time.time() - t0, time.process_time() - c0
    losses = [float(v) for v, _ in trainer.storage.history("total_loss").values()]
    results = train_net.Trainer.test(cfg, trainer.model)
    segm = dict(results.get("segm", {}))
    metrics = {f"d2/segm/{k}": v for k, v in segm.items()}
    png = osp.join(out_dir, "detectron2.png")
    draw_detections_d2(trainer.model, cfg, data["coco"], png, demo)
    ap = {k: v for k, v in demo.detection_ap(metrics).items() if k.startswith("mask")}
    return dict(task="instance", framework="detectron2 + Mask2Former",
                config=osp.relpath(D2_CONFIG, ROOT), metric="mask AP", value=ap.get("mask AP"),
                AP=ap, baseline=0.0, baseline_what="no detections", metrics=metrics,
                losses=losses, time_s=round(wall, 1), cpu_s=round(cpu, 1), png=png, work_dir=work,
                mask2former_root=glue.find_mask2former_root(args.mask2former_root))


def draw_detections_d2(model, cfg, coco, png, demo, n=6, score_thr=0.3):
    """Mask2Former's predictions on the first ``n`` val images (boxes from the masks: Mask2Former's
    own boxes are zeros) over the ground truth, with tools/demo.py's grid."""
    import json

    import numpy as np
    import torch
    from detectron2.data import detection_utils as utils

    with open(coco["val"]["ann_file"]) as f:
        images = json.load(f)["images"][:n]
    model.eval()
    preds = []
    with torch.no_grad():
        for im in images:
            path = osp.join(coco["val"]["img_dir"], im["file_name"])
            img = utils.read_image(path, format=cfg.INPUT.FORMAT)
            t = torch.as_tensor(np.ascontiguousarray(img.transpose(2, 0, 1)))
            inst = model([{"image": t, "height": img.shape[0], "width": img.shape[1]}])[0]["instances"]
            keep = demo._shown(inst.scores, score_thr)
            masks = inst.pred_masks[keep].cpu().numpy() > 0.5
            boxes = []
            for m in masks:
                ys, xs = np.nonzero(m)
                boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else [0, 0, 0, 0])
            preds.append(dict(img_path=path, boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
                              labels=inst.pred_classes[keep].cpu().numpy(),
                              scores=inst.scores[keep].cpu().numpy(), masks=masks, img_id=im["id"]))
    demo.draw_detection_grid(preds, coco, png, score_thr)


# ------------------------------------------------------------------------------------- main
RUNNERS = {"mmseg": run_mmseg, "mmdet": run_mmdet, "detectron2": run_detectron2}


def format_result(r: dict) -> str:
    def pct(v):
        return "n/a" if v is None or not math.isfinite(float(v)) else f"{float(v):.1f}"

    losses = r.get("losses") or []
    loss = (f"loss {losses[0]:.2f} -> {losses[-1]:.2f}" if losses else "no loss recorded")
    extra = ""
    if r["task"] == "instance" and r.get("AP"):
        extra = "  " + "  ".join(f"{k} {pct(v)}" for k, v in r["AP"].items() if k != "mask AP")
    return (f"{r['framework']:<25} {r['task']:<8} {r['metric']} {pct(r['value'])}  (baseline "
            f"{r['baseline_what']}: {pct(r['baseline'])}){extra}  {loss}  {r['iters']} iters in "
            f"{r['time_s'] / 60:.1f} min (CPU {r['cpu_s'] / 60:.1f} min)")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the demo runs on the CPU
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    demo = _demo()
    from dinat_backbone import demo_data

    out_dir = osp.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    data, dirs = {}, data_dirs(args.data, args.size, args.colours)
    if "mmseg" in args.paths:
        data["ade"] = demo_data.make_ade_semantic(dirs["ade"], args.n_train, args.n_val,
                                                  size=args.size, seed=args.data_seed,
                                                  colours=args.colours)
    if {"mmdet", "detectron2"} & set(args.paths):
        data["coco"] = demo_data.make_coco_instances(
            dirs["coco"], args.n_train, args.n_val, size=args.size,
            seed=args.data_seed, mask_format="polygon", colours=args.colours)
    command = [osp.relpath(osp.abspath(__file__), ROOT), *argv]
    summary = dict(command=command, size=args.size, iters=args.iters, batch_size=args.batch_size,
                   lr=args.lr, seed=args.seed, threads=torch.get_num_threads(), results={})
    old = osp.join(out_dir, "summary.json")
    if osp.isfile(old):  # paths run one at a time into the same folder: keep the others' results
        import json

        with open(old) as f:
            kept = json.load(f).get("results", {})
        summary["results"] = {k: v for k, v in kept.items() if k not in args.paths}
    for path in args.paths:
        demo._banner(f"Mask2Former-DiNAT-mini, {path}: {args.iters} iterations, batch "
                     f"{args.batch_size}, {args.size} px")
        load0 = os.getloadavg()
        r = RUNNERS[path](args, demo, data, out_dir)
        r["iters"], r["command"] = args.iters, command
        r["load_average"] = [load0, os.getloadavg()]
        summary["results"][path] = r
        demo.write_json(osp.join(out_dir, "summary.json"), summary)
    demo._banner("Mask2Former-DiNAT-mini demo: results (percent)")
    for r in summary["results"].values():
        print(format_result(r))
        print(f"    picture: {r['png']}")
    print(f"summary: {osp.join(out_dir, 'summary.json')}", flush=True)
    return summary


if __name__ == "__main__":
    main()
