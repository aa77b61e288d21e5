#!/usr/bin/env python
"""The main job: train a DiNAT detector and a DiNAT segmenter on built-in synthetic data.

    python tools/demo.py                     # default: 11-13 min on a 2-core CPU (README)
    python tools/demo.py --iters 1000 --cosine-span 1 --val-interval 250   # long schedule, ~38 min

1. Generates the demo data if absent (``--data``, default ``demo_data/``): a COCO-format instance
   dataset of shapes and an ADE20K-layout semantic dataset (dinat_backbone/demo_data.py).
2. Trains UPerNet-DiNAT-mini (mmseg) on the semantic data from random weights and evaluates mIoU
   with mmseg's IoUMetric, next to the mIoU of predicting the majority class everywhere.
3. Trains Mask R-CNN-DiNAT-mini from the segmenter's backbone (``--warm-start segmenter``, the
   default; ``none`` = random weights) with mmdet (or detectron2, ``--framework``) and evaluates
   COCO box / mask AP with pycocotools (mmdet's CocoMetric / detectron2's COCOEvaluator).
   The backbone's dilations are derived for the demo resolution (``derive_dilations``), not the
   COCO preset made for 800-1333 px images.
4. Writes ``<out>/detections.png`` (predicted boxes and masks over val images, ground truth
   below) and ``<out>/segmentation.png`` (image | ground truth | prediction), ``summary.json``,
   and prints where everything is. The frameworks' loggers show progress with an ETA.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from dinat_backbone.demo_data import DEMO_SIZE  # noqa: E402  (the one definition of the demo's size)

DET_CONFIG = osp.join(ROOT, "configs", "demo", "mask-rcnn_dinat-mini_demo.py")
SEG_CONFIG = osp.join(ROOT, "configs", "demo", "upernet_dinat-mini_demo.py")
D2_CONFIG = osp.join(ROOT, "configs", "demo", "d2_mask_rcnn_dinat_mini_demo.yaml")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--framework", choices=("auto", "mmdet", "detectron2"), default="auto",
                   help="detector framework; auto = detectron2 if importable, else mmdet")
    p.add_argument("--variant", default="mini", help="DiNAT variant (mini, tiny, small, base, large)")
    p.add_argument("--iters", type=int, default=240, help="detector training iterations (batch 4)")
    p.add_argument("--seg-iters", type=int, default=120, help="segmenter training iterations (batch 4)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate of the detector")
    p.add_argument("--cosine-span", type=float, default=1.5,
                   help="length of the detector's cosine decay as a multiple of --iters (mmdet; default "
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None,
                   help="cpu or cuda (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: all cores)")
    p.add_argument("--val-interval", type=int, default=None,
                   help="also evaluate every N iterations (default: only at the end)")
    p.add_argument("--skip-seg", action="store_true", help="skip the segmentation part")
    p.add_argument("--skip-det", action="store_true", help="skip the detection part")
    p.add_argument("--det-cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides of the mmdet demo config, mmengine style, e.g. "
                        "model.roi_head.bbox_head.fc_out_channels=512 (mmdet path only)")
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
    if a.warm_start not in ("segmenter", "none") and not osp.isfile(a.warm_start):
        p.error(f"--warm-start must be segmenter, none or an existing file, got {a.warm_start!r}")
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


def pick_framework(choice: str) -> str:
    if choice != "auto":
        return choice
    try:
        import detectron2  # noqa: F401
    except ImportError:
        return "mmdet"
    return "detectron2"


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


def _backbone_fields(variant: str, size: int):
    from dinat_backbone import DinatConfig, derive_dilations

    cfg = DinatConfig.from_variant(variant)
    dil = derive_dilations(size, cfg.depths, cfg.kernel_size)
    chans = [cfg.embed_dim * 2 ** i for i in range(len(cfg.depths))]
    return dil, chans


def _schedule(iters: int, lr: float, kind: str, span: float = 1.0):
    """Linear warm-up, then cosine (``span`` x ``iters`` long, cut at ``iters``) or linear decay."""
    warm = max(1, min(50, iters // 5))
    sched = [dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=warm)]
    if kind == "cosine":
        sched.append(dict(type="CosineAnnealingLR", T_max=max(1, round(span * iters) - warm),
                          eta_min=lr * 0.01, by_epoch=False, begin=warm, end=iters))
    else:
        sched.append(dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=warm,
                          end=iters))
    return sched


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
def run_mmseg(args, ade, out_dir):
    _require_mm("mmseg")
    from mmengine.config import Config
    from mmengine.runner import Runner

    dil, chans = _backbone_fields(args.variant, args.size)
    cfg = Config.fromfile(SEG_CONFIG)
    cfg.model.backbone.variant = args.variant
    cfg.model.backbone.dilations = dil
    cfg.model.decode_head.in_channels = chans
    cfg.model.auxiliary_head.in_channels = chans[2]
    cfg.model.data_preprocessor.size = (args.size, args.size)
    for dl in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[dl].dataset.data_root = ade["root"]
    cfg.param_scheduler = _schedule(args.seg_iters, args.seg_lr, "poly")
    work = osp.join(out_dir, "segmenter")
    _common_overrides(cfg, args, args.seg_iters, args.seg_lr, work, "seg")
    cfg.merge_from_dict(args.seg_cfg_options)
    runner = Runner.from_cfg(cfg)
    rec = _Recorder()
    runner.register_hook(rec.hook)
    t0, c0 = time.time(), time.process_time()
    runner.train()
    elapsed, cpu = time.time() - t0, time.process_time() - c0
    ckpt = osp.join(work, f"iter_{args.seg_iters}.pth")
    backbone_file = osp.join(work, "backbone.pth")
    import torch

    sd = {k[len("backbone."):]: v.detach().cpu() for k, v in runner.model.state_dict().items()
          if k.startswith("backbone.")}
    torch.save(sd, backbone_file)
    png = osp.join(out_dir, "segmentation.png")
    draw_segmentation(runner, ade, png)
    return dict(metrics=rec.last, history=rec.history, time_s=elapsed, cpu_s=cpu, checkpoint=ckpt,
                backbone=backbone_file, work_dir=work, png=png, dilations=dil)


def draw_segmentation(runner, ade, png, n=4):
    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    from dinat_backbone.demo_data import SEMANTIC_CLASSES

    palette = np.array(runner.cfg.metainfo.palette if "metainfo" in runner.cfg else
                       [[120, 170, 255], [120, 90, 40], [220, 20, 60], [0, 200, 80], [250, 200, 30]],
                       dtype=np.uint8)
    model = runner.model
    model.eval()
    loader = runner.build_dataloader(dict(runner.cfg.val_dataloader, batch_size=1))
    rows = []
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i >= n:
                break
            sample = model.test_step(batch)[0]
            img = np.asarray(Image.open(sample.img_path).convert("RGB"))
            pred = sample.pred_sem_seg.data[0].cpu().numpy()
            gt = sample.gt_sem_seg.data[0].cpu().numpy()
            colour = lambda lab: np.where((lab == 255)[..., None], 0, palette[np.clip(lab, 0, len(palette) - 1)])  # noqa: E731
            rows.append(np.concatenate([img, colour(gt).astype(np.uint8), colour(pred).astype(np.uint8)], 1))
    grid = np.concatenate(rows, 0)
    h, w = rows[0].shape[0], rows[0].shape[1] // 3
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


# ------------------------------------------------------------------------------- detection
def run_mmdet(args, coco, out_dir, warm_backbone=None):
    _require_mm("mmdet")
    from mmengine.config import Config
    from mmengine.runner import Runner

    dil, chans = _backbone_fields(args.variant, args.size)
    cfg = Config.fromfile(DET_CONFIG)
    cfg.model.backbone.variant = args.variant
    cfg.model.backbone.dilations = dil
    cfg.model.neck.in_channels = chans
    if warm_backbone:
        cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=warm_backbone)
    root = coco["root"].rstrip("/") + "/"
    for dl in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[dl].dataset.data_root = root
    for ev in ("val_evaluator", "test_evaluator"):
        cfg[ev].ann_file = coco["val"]["ann_file"]
    _set_resize(cfg, args.size)
    cfg.param_scheduler = _schedule(args.iters, args.lr, "cosine", args.cosine_span)
    work = osp.join(out_dir, "detector")
    _common_overrides(cfg, args, args.iters, args.lr, work, "det")
    cfg.merge_from_dict(args.det_cfg_options)
    runner = Runner.from_cfg(cfg)
    rec = _Recorder()
    runner.register_hook(rec.hook)
    t0, c0 = time.time(), time.process_time()
    runner.train()
    elapsed, cpu = time.time() - t0, time.process_time() - c0
    png = osp.join(out_dir, "detections.png")
    draw_detections_mmdet(runner, coco, png)
    return dict(metrics=rec.last, history=rec.history, time_s=elapsed, cpu_s=cpu,
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
    import numpy as np
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
            keep = p.scores >= score_thr
            if not bool(keep.any()):  # a weak model: show its 3 best guesses, with their scores
                keep = torch.zeros_like(keep)
                keep[p.scores.argsort(descending=True)[:3]] = True
            masks = p.masks[keep].cpu().numpy() if "masks" in p else None
            preds.append(dict(img_path=s.img_path, boxes=p.bboxes[keep].cpu().numpy(),
                              labels=p.labels[keep].cpu().numpy(), scores=p.scores[keep].cpu().numpy(),
                              masks=masks, img_id=s.img_id))
    draw_detection_grid(preds, coco, png, score_thr)


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
        texts = [f"{classes[l]} {s:.2f}" for l, s in zip(p["labels"], p["scores"])]
        masks = None if p["masks"] is None else [m.astype(bool) for m in p["masks"]]
        top.append(render(img, p["boxes"], p["labels"], masks, texts))
        anns = gt.loadAnns(gt.getAnnIds(imgIds=p["img_id"]))
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
        labels = [a["category_id"] - 1 for a in anns]
        gmasks = [gt.annToMask(a).astype(bool) for a in anns]
        bottom.append(render(img, boxes, labels, gmasks, [classes[l] for l in labels]))
    grid = np.concatenate([np.concatenate(top, 1), np.concatenate(bottom, 1)], 0)
    h = top[0].shape[0]
    out = Image.new("RGB", (grid.shape[1] + 110, grid.shape[0]), (255, 255, 255))
    out.paste(Image.fromarray(grid), (110, 0))
    d = ImageDraw.Draw(out)
    d.text((4, h // 2 - 18), f"prediction\nscore >= {score_thr}\n(none: top 3)", fill=(0, 0, 0))
    d.text((4, h + h // 2 - 6), "ground truth", fill=(0, 0, 0))
    out.save(png)


def run_detectron2(args, coco, out_dir, warm_backbone=None):
    """detectron2's DefaultTrainer through tools/train_net.py with the demo YAML."""
    work = osp.join(out_dir, "detector_d2")
    cmd = [sys.executable, osp.join(ROOT, "tools", "train_net.py"), "--config-file", D2_CONFIG,
           "DATASETS.DINAT_DEMO.ROOT", coco["root"], "DATASETS.DINAT_DEMO.NUM_TRAIN", str(args.n_train),
           "DATASETS.DINAT_DEMO.NUM_VAL", str(args.n_val), "DATASETS.DINAT_DEMO.IMAGE_SIZE", str(args.size),
           "DATASETS.DINAT_DEMO.SEED", str(args.seed), "INPUT.MIN_SIZE_TRAIN", f"({args.size},)",
           "INPUT.MAX_SIZE_TRAIN", str(args.size), "INPUT.MIN_SIZE_TEST", str(args.size),
           "INPUT.MAX_SIZE_TEST", str(args.size), "MODEL.DINAT.VARIANT", args.variant,
           "MODEL.DINAT.DILATIONS", str(args.size), "SOLVER.MAX_ITER", str(args.iters),
           "SOLVER.WARMUP_ITERS", str(max(1, min(50, args.iters // 5))),
           "SOLVER.BASE_LR", str(args.lr), "SOLVER.IMS_PER_BATCH", str(args.batch_size),
           "MODEL.DEVICE", args.device, "OUTPUT_DIR", work, "SEED", str(args.seed)]
    if warm_backbone:
        cmd += ["MODEL.WEIGHTS", warm_backbone]
    if args.cosine_span != 1.0:
        print(f"note: detectron2's WarmupCosineLR anneals over SOLVER.MAX_ITER; --cosine-span "
              f"{args.cosine_span} applies to the mmdet path only", flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True)
    elapsed = time.time() - t0
    metrics = {}
    mfile = osp.join(work, "metrics.json")
    if osp.isfile(mfile):  # detectron2's JSONWriter: one JSON object per line
        with open(mfile) as f:
            for line in f:
                rec = json.loads(line)
                # detectron2 reports AP in percent; here as a fraction, like mmdet's CocoMetric
                metrics.update({f"d2/{k}": v / 100.0 for k, v in rec.items()
                                if k.startswith(("bbox/", "segm/")) and isinstance(v, (int, float))})
    return dict(metrics=metrics, history=[], time_s=elapsed, work_dir=work, png=None,
                checkpoint=osp.join(work, "model_final.pth"))


# ------------------------------------------------------------------------------------ main
def main(argv=None):
    args = parse_args(argv)
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
                                         size=args.size, seed=args.seed)
    ade = demo_data.make_ade_semantic(osp.join(args.data, "ade"), args.n_train, args.n_val,
                                      size=args.size, seed=args.seed)
    print(f"demo data ready in {time.time() - t0:.1f} s: {coco['root']} "
          f"({coco['train']['num_instances']} train / {coco['val']['num_instances']} val instances), "
          f"{ade['root']}", flush=True)
    summary = dict(framework=framework, variant=args.variant, device=args.device,
                   threads=torch.get_num_threads(), size=args.size, data=osp.abspath(args.data))
    seg = det = None
    if not args.skip_seg:
        _banner(f"1/2 UPerNet-DiNAT-{args.variant} (mmseg) on {ade['root']}: "
                f"{args.seg_iters} iterations, batch {args.batch_size}")
        seg = run_mmseg(args, ade, out_dir)
        base = demo_data.semantic_majority_baseline(ade["validation"]["ann_dir"])
        seg["baseline"] = base
        summary["segmentation"] = dict(
            iters=args.seg_iters, time_s=round(seg["time_s"], 1), cpu_s=round(seg["cpu_s"], 1), mIoU=seg["metrics"].get("mIoU"),
            aAcc=seg["metrics"].get("aAcc"), majority_baseline_mIoU=round(100 * base["mIoU"], 2),
            majority_class=base["name"], history=seg["history"], png=seg["png"],
            checkpoint=seg["checkpoint"], dilations=seg["dilations"])
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
                                    time_s=round(det["time_s"], 1),
                                    cpu_s=round(det.get("cpu_s", float("nan")), 1),
                                    warm_start=(args.warm_start if args.warm_start in ("segmenter", "none")
                                                else warm) if warm else "none",
                                    metrics=det["metrics"], history=det["history"],
                                    png=det["png"], checkpoint=det["checkpoint"],
                                    dilations=det.get("dilations"))
    summary["total_time_s"] = round(time.time() - t_start, 1)
    summary["total_cpu_s"] = round(time.process_time(), 1)  # this process; cf. wall on a busy machine
    summary["load_average"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    with open(osp.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    _banner("DiNAT demo: results")
    if seg:
        m = seg["metrics"]
        print(f"segmentation  UPerNet-DiNAT-{args.variant} (mmseg), {args.seg_iters} iters in "
              f"{_fmt_time(seg['time_s'])}: mIoU {m.get('mIoU')}  aAcc {m.get('aAcc')}  "
              f"(majority-class baseline '{seg['baseline']['name']}': mIoU "
              f"{100 * seg['baseline']['mIoU']:.2f})")
    if det:
        m = det["metrics"]
        get = lambda *ks: next((m[k] for k in ks if k in m), None)  # noqa: E731
        print(f"detection     Mask R-CNN-DiNAT-{args.variant} ({framework}), {args.iters} iters in "
              f"{_fmt_time(det['time_s'])}: bbox AP {get('coco/bbox_mAP', 'd2/bbox/AP')}  "
              f"AP50 {get('coco/bbox_mAP_50', 'd2/bbox/AP50')}  mask AP "
              f"{get('coco/segm_mAP', 'd2/segm/AP')}  AP50 {get('coco/segm_mAP_50', 'd2/segm/AP50')}")
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
