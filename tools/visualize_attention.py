#!/usr/bin/env python
"""Attention weights and receptive fields of a DiNAT model on one image, as one PNG.

    python tools/visualize_attention.py IMAGE --out PNG [--weights CKPT] [--variant mini]
        [--points Y,X ...] [--size 512] [--dilations PRESET] [--noise 2] [--seed 0]
        [--threads 1] [--erf-decades 5] [--dpi 72] [--full-color]

The picture has three parts (docs/visualize.md shows one):

* attention: for a few query pixels, the softmax weights of one plain NA layer (dilation 1) and
  of the most dilated layer of every stage, taken from the model's own forward pass
  (``NeighborhoodAttention2D.forward(x, return_attn=True)``) and averaged over the heads; each
  key token is drawn at its pixel position (token i of a stride-s stage is centred on pixel
  s * i), so the dilated window's spread and the inward shift at the borders are visible;
* theoretical receptive field of every stage output, for the model's dilations and for the same
  model with every dilation 1 (NA only), computed from the model's modules (two 3x3 stride-2
  stem convolutions, each layer's kernel and dilation, the 3x3 stride-2 downsamplers);
* effective receptive field of every stage output: |d(centre feature, ReLU'd and summed over
  channels) / d(input)|, summed over the colour channels and averaged over the image and
  ``--noise`` Gaussian-noise images.

Without ``--weights`` the model has random weights (seeded), and the title says so.
Exit code 2, with a message and no traceback, for a missing or unreadable image, a bad
``--points`` value or checkpoint. One torch thread unless ``--threads`` says otherwise.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple, Union

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dinat_backbone import DinatBackbone, DinatConfig  # noqa: E402
from dinat_backbone.ops.windows import axis_neighborhood  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POINT_COLORS = ("#e41a1c", "#377eb8", "#4daf4a", "#ff7f00", "#984ea3", "#a65628", "#f781bf",
                "#17becf")


class InputError(ValueError):
    """A user mistake on the command line (reported with exit code 2, no traceback)."""


# =================================================================================== inputs
def load_image(path: Union[str, os.PathLike], size: int = 512) -> np.ndarray:
    """Read ``path`` as RGB and resize it so that its longer side is ``size`` (aspect kept).

    Returns uint8 [H, W, 3]. Raises InputError for a missing path or a file PIL cannot read.
    """
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    if size < 1:
        raise InputError(f"--size {size}: must be a positive number of pixels, e.g. --size 512")
    if not os.path.exists(path):
        raise InputError(f"image {path!r} does not exist; give the path of an image file "
                         "(PNG, JPEG, ...)")
    if os.path.isdir(path):
        raise InputError(f"image {path!r} is a directory; give the path of one image file")
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{path!r} is not an image this tool can read ({e}); give a PNG, JPEG "
                         "or another format PIL opens") from None
    w, h = rgb.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) != (w, h):
        rgb = rgb.resize((nw, nh), Image.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8).copy()


def to_pixel_values(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> ImageNet-normalised float32 [1, 3, H, W]."""
    x = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


def parse_point(text: str) -> Tuple[int, int]:
    """"Y,X" (pixels of the resized image) -> (y, x)."""
    parts = text.replace(" ", "").split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a point is Y,X in pixels of the resized image, e.g. --points 100,200")
    try:
        y, x = (int(float(p)) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: Y and X must be numbers, e.g. --points 100,200") from None
    if y < 0 or x < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: Y and X must be >= 0")
    return y, x


def default_points(height: int, width: int) -> List[Tuple[int, int]]:
    """Four query pixels spread over the image: centre, two inner ones, one near a corner (where
    the neighborhood shifts inward)."""
    rel = [(0.5, 0.5), (0.25, 0.22), (0.72, 0.8), (0.06, 0.93)]
    return [(min(height - 1, int(fy * height)), min(width - 1, int(fx * width))) for fy, fx in rel]


def build_model(variant: str = "mini", weights: Optional[str] = None,
                dilations: Optional[str] = None, image_size: Optional[Tuple[int, int]] = None,
                seed: int = 0) -> Tuple[DinatBackbone, str]:
    """The backbone (eval mode, outputs stage1..stage4) and a description for the title.

    ``dilations``: None (the variant's / checkpoint's own), a preset name (``coco``,
    ``ade20k512``, ...) or ``derive`` (the authors' rule for ``image_size``).
    """
    from dinat_backbone.config import derive_dilations

    if weights is not None:
        if not os.path.exists(weights):
            raise InputError(f"--weights {weights!r} does not exist; give a checkpoint file or "
                             "directory (any format dinat_backbone loads), or leave --weights out "
                             "for random weights")
        over = {}
        if dilations is not None and dilations != "derive":
            over["dilations"] = dilations
        try:
            model = DinatBackbone.from_pretrained(weights, **over)
        except (ValueError, OSError, RuntimeError, KeyError, TypeError) as e:
            raise InputError(f"--weights {weights!r} could not be loaded: {e}") from None
        desc = f"weights {os.path.basename(os.path.normpath(weights))}"
        variant = getattr(model.config, "variant", None) or "custom"
    else:
        try:
            cfg = DinatConfig.from_variant(variant,
                                           dilations=None if dilations == "derive" else dilations)
        except ValueError as e:
            raise InputError(str(e)) from None
        torch.manual_seed(seed)
        model = DinatBackbone(cfg)
        desc = f"random weights (seed {seed})"
        variant = cfg.variant
    cfg = model.config
    change = {}
    if list(model.out_features) != list(cfg.stage_names[1:]):
        change["out_features"] = list(cfg.stage_names[1:])  # every stage's output
    if dilations == "derive":
        if image_size is None:
            raise InputError("--dilations derive needs the image size")
        change["dilations"] = derive_dilations(image_size, cfg.depths, cfg.kernel_size)
    if change:
        # neither changes a trunk parameter: same weights (output norms that the checkpoint
        # lacks stay as initialised, as from_pretrained leaves them)
        rebuilt = DinatBackbone(cfg.copy(**change))
        rebuilt.load_state_dict(model.state_dict(), strict=False)
        model = rebuilt
    model.eval()
    model.variant_name = variant
    return model, desc


# =================================================================================== attention
def _token_of(p: int, stride: int, n: int) -> int:
    """Index of the token whose centre (stride * i) is nearest pixel p."""
    return int(min(max(math.floor(p / stride + 0.5), 0), n - 1))


@torch.no_grad()
def attention_maps(model: DinatBackbone, pixel_values: torch.Tensor,
                   points: Sequence[Tuple[int, int]]) -> Dict:
    """Attention weights of every NA layer for the query pixels ``points`` ((y, x), pixels).

    Runs the model's own trunk (patch_embed, then each stage's blocks with
    ``return_attn=True``). Returns::

        {"image_size": (H, W), "points": [(y, x), ...],
         "stages": [{"name": "stage1", "stride": 4, "map_size": (h, w), "heads": n,
                     "layers": [{"index": j, "kernel_size": k, "dilation": d,
                                 "query_tokens": int [P, 2],       # (row, col) at this stage
                                 "key_tokens":   int [P, k*k, 2],  # row-major window
                                 "key_pixels":   int [P, k*k, 2],  # key_tokens * stride
                                 "weights":      float [P, k*k],   # mean over heads
                                 "weights_per_head": float [P, heads, k*k]}, ...]}, ...]}

    A map smaller than kernel * dilation is padded by the layer at the bottom / right; keys in
    that padding have token indices >= the map size (their weights are returned as computed).
    """
    x = pixel_values
    H, W = int(x.shape[-2]), int(x.shape[-1])
    for y, xx in points:
        if not (0 <= y < H and 0 <= xx < W):
            raise InputError(f"query point {y},{xx} is outside the resized image (height x "
                             f"width {H} x {W}); "
                             f"give Y in [0, {H - 1}] and X in [0, {W - 1}]")
    model._check_input(x)
    h = model.pos_drop(model.patch_embed(x))
    stages = []
    for i, level in enumerate(model.levels):
        stride = 4 * 2 ** i
        mh, mw = int(h.shape[1]), int(h.shape[2])
        q_tok = np.array([[_token_of(py, stride, mh), _token_of(px, stride, mw)]
                          for py, px in points], dtype=np.int64).reshape(-1, 2)
        layers = []
        for j, blk in enumerate(level.blocks):
            h, attn = blk(h, return_attn=True)  # attn [B, heads, mh, mw, k*k]
            na = blk.attn
            k, d = na.kernel_size, na.dilation
            hp, wp = max(mh, k * d), max(mw, k * d)  # the layer's padded map
            rows, _ = axis_neighborhood(hp, k, d)
            cols, _ = axis_neighborhood(wp, k, d)
            rows, cols = rows.numpy(), cols.numpy()
            a = attn[0, :, q_tok[:, 0], q_tok[:, 1], :].permute(1, 0, 2)  # [P, heads, k*k]
            kt = np.stack([
                np.stack(np.meshgrid(rows[ty], cols[tx], indexing="ij"), -1).reshape(-1, 2)
                for ty, tx in q_tok]) if len(q_tok) else np.zeros((0, k * k, 2), np.int64)
            layers.append(dict(index=j, kernel_size=k, dilation=d, query_tokens=q_tok,
                               key_tokens=kt, key_pixels=kt * stride,
                               weights=a.mean(1).double().numpy(),
                               weights_per_head=a.double().numpy()))
        stages.append(dict(name=f"stage{i + 1}", stride=stride, map_size=(mh, mw),
                           heads=level.blocks[0].attn.num_heads, layers=layers))
        if level.downsample is not None:
            h = level.downsample(h)
    return dict(image_size=(H, W), points=[tuple(p) for p in points], stages=stages)


def pick_layers(stage: Dict) -> Tuple[Dict, Optional[Dict]]:
    """(first layer with dilation 1, first layer with the stage's largest dilation > 1 or None)."""
    layers = stage["layers"]
    plain = next((layer for layer in layers if layer["dilation"] == 1), layers[0])
    dmax = max(layer["dilation"] for layer in layers)
    dilated = next((layer for layer in layers if layer["dilation"] == dmax), None) if dmax > 1 else None
    return plain, dilated


# ============================================================================= receptive field
def _rf_steps(model: torch.nn.Module) -> List[Dict]:
    """The model's spatial operators in forward order: (name, stage, kernel, stride, dilation)."""
    import torch.nn as nn

    steps = []
    for name, conv in model.patch_embed.proj.named_children():
        if isinstance(conv, nn.Conv2d):
            steps.append(dict(name=f"patch_embed.proj.{name}", stage="stem", kind="conv",
                              kernel=conv.kernel_size[0], stride=conv.stride[0],
                              dilation=conv.dilation[0]))
    for i, level in enumerate(model.levels):
        for j, blk in enumerate(level.blocks):
            steps.append(dict(name=f"levels.{i}.blocks.{j}.attn", stage=f"stage{i + 1}",
                              kind="na", kernel=blk.attn.kernel_size, stride=1,
                              dilation=blk.attn.dilation))
        if level.downsample is not None:
            c = level.downsample.reduction
            steps.append(dict(name=f"levels.{i}.downsample.reduction", stage=f"down{i + 1}",
                              kind="conv", kernel=c.kernel_size[0], stride=c.stride[0],
                              dilation=c.dilation[0]))
    return steps


def theoretical_rf(config_or_model: Union[DinatConfig, torch.nn.Module]) -> Dict:
    """Theoretical receptive field (pixels, per axis) of every stage output, for the model's
    dilations ("dinat") and for all dilations 1 ("na").

    A token's window (conv or centred NA window with kernel k, dilation d) spans (k - 1) * d + 1
    positions of its input, whose positions are ``jump`` pixels apart, so each operator adds
    (k - 1) * d * jump pixels, and a stride-s operator multiplies the jump by s. MLPs and norms
    act per token. (Interior tokens; at the borders NA windows shift inward, same size.)
    Returns {"steps": [... with rf_dinat, rf_na, jump], "stages": {name: {stride, rf_dinat,
    rf_na}}} with stage outputs taken before the downsampler, as the backbone's.
    """
    if isinstance(config_or_model, DinatConfig):
        with torch.device("meta"):
            model = DinatBackbone(config_or_model)
    else:
        model = config_or_model
    steps = _rf_steps(model)
    rf_d = rf_n = 1
    jump = 1
    stages: Dict[str, Dict] = {}
    for s in steps:
        rf_d += (s["kernel"] - 1) * s["dilation"] * jump
        rf_n += (s["kernel"] - 1) * (1 if s["kind"] == "na" else s["dilation"]) * jump
        jump *= s["stride"]
        s.update(rf_dinat=rf_d, rf_na=rf_n, jump=jump)
        if s["stage"] == "stem" or s["stage"].startswith("stage"):
            stages[s["stage"]] = dict(stride=jump, rf_dinat=rf_d, rf_na=rf_n)
    return dict(steps=steps, stages=stages)


def effective_rf(model: DinatBackbone, inputs: torch.Tensor,
                 stages: Optional[Sequence[str]] = None) -> Dict:
    """Effective receptive field of each stage output.

    For every input n (a batch [N, 3, H, W]), the gradient of the centre token of the stage's
    output (row h // 2, column w // 2 of its map), ReLU'd and summed over its channels, with
    respect to the input; |gradient| summed over the colour channels, averaged over the N
    inputs -> [H, W].
    Returns {stage: {"erf": float64 [H, W], "centre_token": (r, c), "centre_pixel": (y, x),
    "stride": s, "r50": ..., "r90": ...}} where rXX is the half side (pixels) of the smallest
    square centred on the centre pixel that holds XX % of the map's total.
    """
    stages = [s for s in model.out_features if s != "stem"] if stages is None else list(stages)
    was_training = model.training
    model.eval()
    # only the input's gradient is wanted: no weight gradients (about half the backward's work)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    x = inputs.detach().clone().requires_grad_(True)
    strides = dict(zip(model.out_features, model.strides))
    try:
        with torch.enable_grad():
            outs = model(x)
            res = {}
            for n, name in enumerate(stages):
                f = outs[name]
                r, c = f.shape[2] // 2, f.shape[3] // 2
                # ReLU first (as RepLKNet's ERF code): the outputs pass through a LayerNorm, and
                # a LayerNorm output with its initial scale 1 sums to 0 over the channels for
                # every input, so the plain sum would have a zero gradient.
                g, = torch.autograd.grad(torch.relu(f[:, :, r, c]).sum(), x,
                                         retain_graph=n < len(stages) - 1)
                erf = g.abs().sum(1).mean(0).double().numpy()
                stride = strides[name]
                cy, cx = r * stride, c * stride
                res[name] = dict(erf=erf, centre_token=(r, c), centre_pixel=(cy, cx),
                                 stride=stride, r50=_mass_radius(erf, cy, cx, 0.5),
                                 r90=_mass_radius(erf, cy, cx, 0.9))
    finally:
        model.train(was_training)
        for p, flag in flags:
            p.requires_grad_(flag)
    return res


def share_outside(erf: np.ndarray, cy: int, cx: int, side: int) -> float:
    """Share of the ERF's total outside the ``side`` x ``side`` square centred on (cy, cx)
    (e.g. outside the NA-only theoretical RF: what only the dilated layers can reach)."""
    total = erf.sum()
    if total <= 0:
        return 0.0
    h = (side - 1) // 2
    inside = erf[max(0, cy - h):cy + h + 1, max(0, cx - h):cx + h + 1].sum()
    return float(max(0.0, 1.0 - inside / total))


def _mass_radius(erf: np.ndarray, cy: int, cx: int, frac: float) -> int:
    total = erf.sum()
    if total <= 0:
        return 0
    H, W = erf.shape
    cs = np.pad(erf.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    for r in range(max(H, W) + 1):
        y0, y1 = max(0, cy - r), min(H, cy + r + 1)
        x0, x1 = max(0, cx - r), min(W, cx + r + 1)
        if cs[y1, x1] - cs[y0, x1] - cs[y1, x0] + cs[y0, x0] >= frac * total:
            return r
    return max(H, W)


# =================================================================================== picture
def _gray(image: np.ndarray, levels: int = 32) -> np.ndarray:
    """The image as a dimmed gray background in [0.25, 0.75] (``levels`` gray levels: keeps
    the PNG small, 8 panels hold it)."""
    g = np.round(image.astype(np.float64).mean(-1, keepdims=True) / 255.0 * (levels - 1))
    return np.repeat(0.25 + 0.5 * g / (levels - 1), 3, -1)


def _hex(c: str) -> np.ndarray:
    return np.array([int(c[i:i + 2], 16) for i in (1, 3, 5)], np.float64) / 255.0


def attention_canvas(image: np.ndarray, layer: Dict, stride: int) -> np.ndarray:
    """The gray image with every point's key tokens painted in its colour, opacity by weight
    (relative to that point's largest weight), as squares at the keys' pixel positions."""
    canvas = _gray(image)
    H, W = canvas.shape[:2]
    half = stride / 2.0
    gap = 1 if stride >= 8 else 0
    for p, (keys, w) in enumerate(zip(layer["key_pixels"], layer["weights"])):
        col = _hex(POINT_COLORS[p % len(POINT_COLORS)])
        wmax = w.max() if w.max() > 0 else 1.0
        for (ky, kx), wk in zip(keys, w):
            y0 = int(max(0, math.ceil(ky - half) + gap))
            y1 = int(min(H, math.ceil(ky + half) - gap))
            x0 = int(max(0, math.ceil(kx - half) + gap))
            x1 = int(min(W, math.ceil(kx + half) - gap))
            if y1 <= y0 or x1 <= x0:
                continue  # a key in the layer's zero padding, outside the image
            a = 0.2 + 0.75 * float(wk) / wmax
            canvas[y0:y1, x0:x1] = (1 - a) * canvas[y0:y1, x0:x1] + a * col
    return canvas


def render(image: np.ndarray, att: Dict, trf: Dict, erf: Dict, out_path: str, title: str,
           dpi: int = 72, erf_decades: int = 5, palette: bool = True) -> str:
    """Draw the picture (matplotlib, Agg) and write it to ``out_path`` (a 256-colour PNG with
    ``palette``, else full colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    H, W = image.shape[:2]
    n_st = len(att["stages"])
    fig = plt.figure(figsize=(3.3 * (n_st + 1), 3.3 * 3 * max(0.6, H / W) + 1.0))
    gs = fig.add_gridspec(3, n_st + 1, hspace=0.28, wspace=0.08, left=0.02, right=0.99,
                          top=0.9, bottom=0.02)
    fig.suptitle(title, fontsize=11)
    pts = att["points"]

    def mark(ax):
        for p, (y, x) in enumerate(pts):
            ax.plot(x, y, marker="x", ms=7, mew=2.2, color="white")
            ax.plot(x, y, marker="x", ms=6, mew=1.2, color=POINT_COLORS[p % len(POINT_COLORS)])

    def frame(ax):
        ax.set_xlim(-0.5, W - 0.5)
        ax.set_ylim(H - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])

    ax = fig.add_subplot(gs[0, 0])
    ax.imshow(image)
    for p, (y, x) in enumerate(pts):
        c = POINT_COLORS[p % len(POINT_COLORS)]
        ax.plot(x, y, marker="o", ms=7, mfc=c, mec="white", mew=1.5)
        ax.annotate(str(p + 1), (x, y), xytext=(5, 4), textcoords="offset points", color="white",
                    fontsize=9, fontweight="bold")
    frame(ax)
    ax.set_title(f"input {H}x{W}, {len(pts)} query pixels", fontsize=9)

    for row in (0, 1):
        for i, st in enumerate(att["stages"]):
            ax = fig.add_subplot(gs[row, i + 1])
            plain, dilated = pick_layers(st)
            layer = plain if row == 0 else dilated
            frame(ax)
            if layer is None:
                ax.imshow(_gray(image), vmin=0, vmax=1)
                ax.text(W / 2, H / 2, f"{st['name']}: every layer\nhas dilation 1", ha="center",
                        va="center", fontsize=9, color="black",
                        bbox=dict(fc="white", ec="none", alpha=0.8))
                ax.set_title(f"{st['name']}: no dilated layer", fontsize=9)
                continue
            ax.imshow(attention_canvas(image, layer, st["stride"]), vmin=0, vmax=1)
            mark(ax)
            kind = "NA" if layer["dilation"] == 1 else "DiNA"
            ax.set_title(f"{st['name']} (stride {st['stride']}, map {st['map_size'][0]}x"
                         f"{st['map_size'][1]}) layer {layer['index']}\n{kind} "
                         f"k={layer['kernel_size']} d={layer['dilation']}: attention, mean of "
                         f"{st['heads']} heads", fontsize=8)

    # theoretical receptive field vs layer
    ax = fig.add_subplot(gs[1, 0])
    steps = trf["steps"]
    xs = np.arange(1, len(steps) + 1)
    ax.plot(xs, [s["rf_na"] for s in steps], "-o", ms=3, color="#777777",
            label="NA only (all d=1)")
    ax.plot(xs, [s["rf_dinat"] for s in steps], "-o", ms=3, color="#d62728",
            label="DiNAT (model's dilations)")
    ax.axhline(max(H, W), ls="--", lw=1, color="black")
    ax.text(1, max(H, W) * 1.08, f"image {max(H, W)} px", fontsize=7)
    for k, s in enumerate(steps):
        if s["kind"] == "conv":
            ax.axvline(k + 1, color="#bbbbbb", lw=0.6, zorder=0)
    ax.set_yscale("log")
    ax.set_xlabel("operator (stem convs, NA layers, downsamplers)", fontsize=7)
    ax.set_ylabel("theoretical RF (px)", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("theoretical receptive field (log scale)", fontsize=9)

    # table
    ax = fig.add_subplot(gs[2, 0])
    ax.axis("off")
    rows = []
    for name, v in trf["stages"].items():
        if name == "stem":
            continue
        e = erf.get(name)
        rows.append([name, str(v["stride"]), str(v["rf_na"]), str(v["rf_dinat"])] + (
            [f"{2 * e['r50'] + 1}", f"{2 * e['r90'] + 1}",
             f"{100 * share_outside(e['erf'], *e['centre_pixel'], v['rf_na']):.2g}"]
            if e else ["-", "-", "-"]))
    tab = ax.table(cellText=rows, colLabels=["output", "stride", "NA", "DiNAT", "50%", "90%",
                                             "out %"], loc="center", cellLoc="center")
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    tab.scale(1.0, 1.4)
    ax.set_title("side in px: theoretical RF (NA only, DiNAT); ERF: centred\nsquare holding "
                 "50% / 90% of it; out %: ERF share outside the NA-only RF", fontsize=7)

    # effective receptive fields
    for i, st in enumerate(att["stages"]):
        name = st["name"]
        ax = fig.add_subplot(gs[2, i + 1])
        frame(ax)
        if name not in erf:
            continue
        e = erf[name]
        m = e["erf"] / max(e["erf"].max(), 1e-30)
        logm = np.clip(np.log10(np.maximum(m, 1e-30)), -erf_decades, 0)
        ax.imshow(_gray(image), vmin=0, vmax=1)
        ax.imshow(logm, cmap="inferno", vmin=-erf_decades, vmax=0, alpha=0.8)
        cy, cx = e["centre_pixel"]
        for rf, ls, c in ((trf["stages"][name]["rf_na"], "--", "#aaaaaa"),
                          (trf["stages"][name]["rf_dinat"], "-", "#00e5ff")):
            ax.add_patch(Rectangle((cx - rf / 2, cy - rf / 2), rf, rf, fill=False, ls=ls,
                                   lw=1.2, ec=c))
        ax.plot(cx, cy, marker="+", ms=8, mew=1.5, color="#00e5ff")
        ax.text(W / 2, H - 4, f"theoretical RF: NA only {trf['stages'][name]['rf_na']} px, "
                f"DiNAT {trf['stages'][name]['rf_dinat']} px", ha="center", va="bottom",
                fontsize=7, color="white")
        ax.set_title(f"{name} effective RF, log10 (5 decades)\nboxes: theoretical RF (cyan "
                     "DiNAT, dashed NA only)".replace("5", str(erf_decades), 1), fontsize=8)

    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    if not palette:
        fig.savefig(out_path, dpi=dpi)
        plt.close(fig)
        return out_path
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    plt.close(fig)
    buf.seek(0)
    with Image.open(buf) as im:
        # 256 colours (median cut refined by k-means, dithered): about 3x smaller than full
        # colour (240 vs 700 KB for docs/images/attention_grace_hopper.png)
        im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, kmeans=3,
                                   dither=Image.Dither.FLOYDSTEINBERG).save(out_path, optimize=True)
    return out_path


# =================================================================================== CLI
def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        description="Attention weights and receptive fields of a DiNAT model on one image.")
    ap.add_argument("image", help="image file (any format PIL reads)")
    ap.add_argument("--out", required=True, help="output PNG")
    ap.add_argument("--weights", default=None,
                    help="checkpoint (any format dinat_backbone loads); random weights otherwise")
    ap.add_argument("--variant", default="mini",
                    help="variant for random weights (mini); with --weights the checkpoint's")
    ap.add_argument("--points", nargs="+", type=parse_point, default=None, metavar="Y,X",
                    help="query pixels in the resized image (default: 4 spread over it)")
    ap.add_argument("--size", type=int, default=512,
                    help="resize the image so that its longer side is this (512)")
    ap.add_argument("--dilations", default=None,
                    help="dilation preset (coco, ade20k512, ...) or 'derive' (the authors' rule "
                         "at the image size); default: the variant's / checkpoint's own")
    ap.add_argument("--noise", type=int, default=2,
                    help="Gaussian-noise images averaged with the image for the ERF (2)")
    ap.add_argument("--seed", type=int, default=0, help="seed of random weights and noise (0)")
    ap.add_argument("--dpi", type=int, default=72, help="PNG resolution (72)")
    ap.add_argument("--erf-decades", type=int, default=5,
                    help="decades of the ERF's log colour scale (5)")
    ap.add_argument("--full-color", action="store_true",
                    help="write a full-colour PNG (default: 256 colours, ~3x smaller)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a 2-core machine shared with other jobs, 2 "
                         "threads took 3m28s where 1 took 40s; raise it on an idle machine)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    try:
        image = load_image(args.image, args.size)
        H, W = image.shape[:2]
        points = args.points or default_points(H, W)
        for flag, value, low in (("--noise", args.noise, 0), ("--erf-decades", args.erf_decades, 1),
                                 ("--dpi", args.dpi, 10), ("--threads", args.threads, 1)):
            if value < low:
                raise InputError(f"{flag} {value}: must be >= {low}")
        if not args.out.lower().endswith(".png"):
            raise InputError(f"--out {args.out!r}: the picture is a PNG; give a path ending in "
                             ".png")
        torch.set_num_threads(args.threads)
        model, desc = build_model(args.variant, args.weights, args.dilations, (H, W), args.seed)
        x = to_pixel_values(image)
        att = attention_maps(model, x, points)
    except InputError as e:
        print(f"visualize_attention: error: {e}", file=sys.stderr)
        return 2
    t1 = time.perf_counter()
    trf = theoretical_rf(model)
    gen = torch.Generator().manual_seed(args.seed)
    inputs = torch.cat([x, torch.randn((args.noise,) + tuple(x.shape[1:]), generator=gen)])
    erf = effective_rf(model, inputs)
    t2 = time.perf_counter()
    cfg = model.config
    variant = getattr(model, "variant_name", None) or args.variant
    title = (f"DiNAT-{variant}, {desc} - {os.path.basename(args.image)} at {H}x{W}; "
             f"kernel {cfg.kernel_size}, dilations {cfg.dilations}\n"
             f"attention weights averaged over heads; ERF averaged over the image"
             + (f" and {args.noise} Gaussian-noise image{'s' if args.noise > 1 else ''}"
                if args.noise else ""))
    render(image, att, trf, erf, args.out, title, dpi=args.dpi, erf_decades=args.erf_decades,
           palette=not args.full_color)
    t3 = time.perf_counter()
    for name, v in trf["stages"].items():
        e = erf.get(name)
        extra = ""
        if e:
            out = 100 * share_outside(e["erf"], *e["centre_pixel"], v["rf_na"])
            extra = (f"  ERF 50%/90% side {2 * e['r50'] + 1}/{2 * e['r90'] + 1} px, "
                     f"{out:.2g}% outside the NA-only RF")
        print(f"{name:7s} stride {v['stride']:2d}  RF NA-only {v['rf_na']:5d} px  RF DiNAT "
              f"{v['rf_dinat']:5d} px" + extra)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1024:.0f} KB); attention "
          f"{t1 - t0:.1f} s, ERF {t2 - t1:.1f} s, drawing {t3 - t2:.1f} s, "
          f"{torch.get_num_threads()} torch threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
