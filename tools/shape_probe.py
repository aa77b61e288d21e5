#!/usr/bin/env python
"""Diagnostic: how many iterations does a backbone need to learn the demo's shape classes from
random weights?

    python tools/shape_probe.py --model cnn                      # the small CNN, textured, any angle
    python tools/shape_probe.py --model dinat --lr 2e-4           # DiNAT-mini, same crops
    python tools/shape_probe.py --model dinat --background plain --max-rotation 15

The demo (tools/demo.py) trains its detector and segmenter from random weights on scenes of
synthetic shapes (dinat_backbone/demo_data.py). This tool isolates the first thing they must
learn, telling a circle from a square from a triangle: it trains a backbone + global average pool
+ linear classifier on crops holding one shape each (``demo_data.render_shape_crop``: the demo's
shape, colour, shading and noise, radius 18-42 % of the crop side) and prints the validation
accuracy, overall and per class, at ``--evals`` points of the run. It measures a backbone's
learning speed on this task, not a model to keep (nothing is saved).

Models (``--model``):

* ``dinat``: ``DinatBackbone(DinatConfig.from_variant(--variant, image_size=--size,
  drop_path_rate=0), out_features=["stage4"])``, stage-4 features averaged over positions, a
  linear layer;
* ``cnn``: four blocks of conv 3x3 - BatchNorm - ReLU - max-pool 2 (32, 64, 128, 256 channels),
  averaged over positions, a linear layer (a reference for how hard the task is).

Training: AdamW (``--lr``, ``--weight-decay``), a linear warm-up over the first ``--iters // 10``
iterations then a cosine to 0 at ``--iters``, gradients clipped at norm 10, each crop mirrored left
to right with probability 0.5, batches of ``--batch-size`` drawn with replacement from
``--n-train`` crops generated up front (``--n-train 0``: fresh crops for every batch). Pixels are
normalised with the ImageNet mean / std (the backbones' configs' values). Validation: ``--n-val``
crops, classes in turn (balanced, so chance is 1 / number of classes).

Random streams (numpy for the crops, torch for weights, batches and flips) all follow ``--seed``:
training crops from (seed, 1), validation crops from (seed, 2). At ``--threads 1`` a run is
deterministic; more threads change float summation orders.

Output: a table (iteration, mean training loss since the previous row, validation accuracy,
per-class accuracy, training wall and CPU time so far, evaluations excluded) and, with ``--json``,
the same rows with the arguments and the data-generation time.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import os.path as osp
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from dinat_backbone import demo_data  # noqa: E402

CLASSES = demo_data.DEFAULT_CLASSES
# ImageNet's mean / std on 0-255 pixels, as the demo configs' data preprocessors use them
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
CNN_CHANNELS = (32, 64, 128, 256)


# ---------------------------------------------------------------------------------- arguments
_rotation = demo_data.parse_rotation  # --max-rotation


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


def _float_check(strict: bool):
    """argparse type: a finite number > 0 (strict) or >= 0."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (strict and value == 0):
            raise argparse.ArgumentTypeError(
                f"expected {'a positive number' if strict else 'a number >= 0'}, got {text!r}")
        return value
    return parse


_positive_float = _float_check(strict=True)
_non_negative_float = _float_check(strict=False)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1], allow_abbrev=False)
    p.add_argument("--model", choices=("dinat", "cnn"), default="dinat", help="backbone to train")
    p.add_argument("--variant", default="mini", help="DiNAT variant (mini, tiny, small, base, large)")
    p.add_argument("--size", type=_int_at_least(32), default=64, help="crop side in pixels (>= 32)")
    p.add_argument("--batch-size", type=_int_at_least(1), default=32)
    p.add_argument("--iters", type=_int_at_least(1), default=600, help="training iterations")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="AdamW peak learning rate")
    p.add_argument("--weight-decay", type=_non_negative_float, default=0.05)
    p.add_argument("--background", choices=("textured", "plain"), default="textured",
                   help="textured: the demo scenes' background; plain: one colour")
    p.add_argument("--max-rotation", type=_rotation, default=None, metavar="DEG|any",
                   help="shapes within DEG degrees of upright, or 'any' angle (default)")
    p.add_argument("--n-train", type=_int_at_least(0), default=4000,
                   help="training crops generated up front (batches sample them with "
                        "replacement); 0 = fresh crops for every batch")
    p.add_argument("--n-val", type=_int_at_least(1), default=300, help="validation crops")
    p.add_argument("--evals", type=_int_at_least(1), default=10,
                   help="evaluation points, evenly spaced, the last at --iters")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--threads", type=_int_at_least(1), default=1,
                   help="torch threads (1 = deterministic per seed)")
    p.add_argument("--json", metavar="PATH", help="also write the arguments and rows here")
    args = p.parse_args(argv)
    if args.evals > args.iters:
        p.error(f"--evals {args.evals} is more than --iters {args.iters}; give --evals <= --iters")
    return args


# ---------------------------------------------------------------------------------- data
def make_crops(rng: np.random.Generator, n: int, size: int, background: str, max_rotation,
               balanced: bool, classes: Sequence[str] = CLASSES) -> Tuple[torch.Tensor, torch.Tensor]:
    """``n`` crops as a normalised float tensor (n, 3, size, size) and their labels (n,).
    Classes in turn when ``balanced``, else drawn uniformly from ``rng``."""
    images, labels = [], []
    for i in range(n):
        cls = i % len(classes) if balanced else int(rng.integers(len(classes)))
        img, cls = demo_data.render_shape_crop(rng, size, cls, classes, background=background,
                                               max_rotation=max_rotation)
        images.append(img)
        labels.append(cls)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    return (x - mean) / std, torch.tensor(labels, dtype=torch.long)


# ---------------------------------------------------------------------------------- models
class PooledClassifier(nn.Module):
    """backbone -> features (B, C, h, w) -> mean over positions -> linear -> logits."""

    def __init__(self, backbone: nn.Module, features, num_classes: int, size: int):
        super().__init__()
        self.backbone = backbone
        self._features = features
        with torch.no_grad():
            was = backbone.training
            backbone.eval()
            channels = features(backbone, torch.zeros(1, 3, size, size)).shape[1]
            backbone.train(was)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._features(self.backbone, x).mean((2, 3)))


def _stage4(backbone, x):
    return backbone(x)["stage4"]


def _whole(backbone, x):
    return backbone(x)


def build_model(model: str, size: int, num_classes: int, variant: str = "mini") -> nn.Module:
    if model == "dinat":
        from dinat_backbone import DinatBackbone, DinatConfig

        cfg = DinatConfig.from_variant(variant, image_size=size, drop_path_rate=0.0)
        return PooledClassifier(DinatBackbone(cfg, out_features=["stage4"]), _stage4, num_classes, size)
    if model == "cnn":
        layers: List[nn.Module] = []
        cin = 3
        for cout in CNN_CHANNELS:
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                       nn.MaxPool2d(2)]
            cin = cout
        return PooledClassifier(nn.Sequential(*layers), _whole, num_classes, size)
    raise ValueError(f"model must be 'dinat' or 'cnn', got {model!r}")


# ---------------------------------------------------------------------------------- metrics
def accuracy(pred, target, num_classes: int) -> Tuple[float, List[Optional[float]]]:
    """(fraction of ``pred == target``, per-class recall: for each class c the fraction of the
    samples of class c predicted as c, None for a class with no samples)."""
    pred = torch.as_tensor(pred).reshape(-1)
    target = torch.as_tensor(target).reshape(-1)
    if pred.shape != target.shape or pred.numel() == 0:
        raise ValueError(f"pred and target must be non-empty and of one length, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    hit = pred == target
    per_class: List[Optional[float]] = []
    for c in range(num_classes):
        sel = target == c
        per_class.append(float(hit[sel].float().mean()) if sel.any() else None)
    return float(hit.float().mean()), per_class


def lr_factor(it: int, iters: int) -> float:
    """Learning-rate multiplier at (0-based) iteration ``it``: linear warm-up over
    ``max(1, iters // 10)`` iterations, times a cosine from 1 at 0 to 0 at ``iters``."""
    warm = max(1, iters // 10)
    return min(1.0, (it + 1) / warm) * 0.5 * (1.0 + math.cos(math.pi * min(it, iters) / iters))


def eval_points(iters: int, evals: int) -> List[int]:
    """``evals`` iteration counts, evenly spaced, the last = ``iters``."""
    return sorted({max(1, int(round(iters * k / evals))) for k in range(1, evals + 1)})


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, chunk: int = 100) -> torch.Tensor:
    was = model.training
    model.eval()
    out = torch.cat([model(x[i:i + chunk]).argmax(1) for i in range(0, len(x), chunk)])
    model.train(was)
    return out


# ---------------------------------------------------------------------------------- run
def run(args: argparse.Namespace) -> Dict[str, object]:
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> Dict[str, object]:
    k = len(CLASSES)
    t0 = time.time()
    train_rng = np.random.default_rng([args.seed, 1])
    val_rng = np.random.default_rng([args.seed, 2])
    crop_kw = dict(size=args.size, background=args.background, max_rotation=args.max_rotation)
    tx, ty = make_crops(train_rng, args.n_train, balanced=False, **crop_kw) if args.n_train else (None, None)
    vx, vy = make_crops(val_rng, args.n_val, balanced=True, **crop_kw)
    data_s = time.time() - t0

    torch.manual_seed(args.seed)
    model = build_model(args.model, args.size, k, args.variant)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(it, args.iters))
    gen = torch.Generator().manual_seed(args.seed)
    points = set(eval_points(args.iters, args.evals))

    print(f"shape probe: {args.model}{' ' + args.variant if args.model == 'dinat' else ''} "
          f"({n_params / 1e6:.2f} M parameters), {args.size} px crops, {args.background} background, "
          f"rotation {'any' if args.max_rotation is None else f'<= {args.max_rotation:g} deg'}, "
          f"batch {args.batch_size}, lr {args.lr:g}, {args.iters} iters, "
          f"{args.n_train or 'fresh'} training crops, {args.n_val} validation crops "
          f"(chance {1 / k:.3f}), {torch.get_num_threads()} thread(s), data {data_s:.1f} s", flush=True)
    header = ("iter", "train loss", "val acc") + tuple(CLASSES) + ("wall s", "cpu s")
    print("  ".join(f"{h:>10}" for h in header), flush=True)

    rows: List[Dict[str, object]] = []
    losses: List[float] = []
    wall = cpu = 0.0
    model.train()
    for it in range(args.iters):
        w0, c0 = time.perf_counter(), time.process_time()
        if tx is None:
            x, y = make_crops(train_rng, args.batch_size, balanced=False, **crop_kw)
        else:
            idx = torch.randint(0, len(tx), (args.batch_size,), generator=gen)
            x, y = tx[idx], ty[idx]
        flip = torch.rand(args.batch_size, generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        if it + 1 in points:
            acc, per_class = accuracy(predict(model, vx), vy, k)
            row = dict(iter=it + 1, train_loss=float(np.mean(losses)), val_acc=acc,
                       per_class=dict(zip(CLASSES, per_class)), wall_s=wall, cpu_s=cpu)
            rows.append(row)
            losses = []
            cells = [f"{it + 1:>10d}", f"{row['train_loss']:>10.3f}", f"{acc:>10.3f}"]
            cells += [f"{a:>10.3f}" if a is not None else f"{'-':>10}" for a in per_class]
            cells += [f"{wall:>10.1f}", f"{cpu:>10.1f}"]
            print("  ".join(cells), flush=True)

    result = dict(args=vars(args), classes=list(CLASSES), chance=1 / k, num_params=n_params,
                  threads=torch.get_num_threads(), data_s=data_s, rows=rows, final=rows[-1])
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}", flush=True)
    return result


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
