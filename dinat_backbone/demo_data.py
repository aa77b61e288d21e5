"""Synthetic demo datasets: COCO-format instances and ADE20K-layout semantic maps.

Framework-neutral (numpy, PIL, pycocotools only). The same generator makes the demo's data
(``tools/make_demo_data.py``, ``tools/demo.py``) and the tests' tiny datasets. Every image is drawn
from its own random stream keyed by ``(seed, split, index)``, so the output is deterministic by
seed, and changing ``n_train`` does not change the validation images.

Instances (``make_coco_instances``)::

    root/train/000000.jpg ...            RGB JPEGs, size x size (default DEMO_SIZE = 192)
    root/val/000000.jpg ...
    root/annotations/instances_train.json  COCO format (RLE or polygon masks), category ids 1..K
    root/annotations/instances_val.json

Each scene is a textured background (low-frequency colour noise, stripes, pixel noise) with
1..``max_objects`` shapes of random class, size, rotation and colour. Shapes may occlude each
other; a placement is kept only if every shape keeps at least half of its area visible, and the
masks, boxes and areas describe the visible part (boxes and areas are computed from the masks).

Semantic (``make_ade_semantic``), ADE20K's layout and label convention::

    root/images/training/ADE_train_00000000.jpg       root/annotations/training/ADE_train_00000000.png
    root/images/validation/ADE_val_00000000.jpg       root/annotations/validation/ADE_val_00000000.png

Label maps are 8-bit PNGs: 0 = unlabelled (ignored; mmseg's ``reduce_zero_label=True`` maps it to
255 and class ``c`` to ``c - 1``), 1 = sky, 2 = ground, 3.. = the shape classes. Unlabelled pixels
come from "clutter" blobs (irregular shapes that belong to no class), as in ADE20K.
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "SHAPES",
    "DEFAULT_CLASSES",
    "SEMANTIC_CLASSES",
    "DEMO_SIZE",
    "COLOUR_MODES",
    "DEMO_COLOURS",
    "CLASS_COLOUR_CHANNELS",
    "render_instance_scene",
    "render_semantic_scene",
    "render_shape_crop",
    "make_coco_instances",
    "make_ade_semantic",
    "semantic_majority_baseline",
]

SHAPES = ("circle", "square", "triangle", "star", "hexagon")
DEFAULT_CLASSES = ("circle", "square", "triangle")
# Label value i + 1 in the PNGs (0 = ignore). The shape classes follow DEFAULT_CLASSES.
SEMANTIC_CLASSES = ("sky", "ground") + DEFAULT_CLASSES
# The main job's image side (tools/demo.py, configs/demo/): at 192 px DiNAT-mini's forward +
# backward takes 0.9 s per batch of 4 on 2 CPU cores (1.3 s at 256 px), and the demo detector
# reached a higher AP in less time (README).
DEMO_SIZE = 192

_SPLIT_KEYS = {"train": 1, "val": 2, "training": 1, "validation": 2}
_MANIFEST = "demo_data.json"
_FORMAT_VERSION = 2


# ----------------------------------------------------------------------------------------------
# argument checks


def _check_size(size) -> Tuple[int, int]:
    """size -> (height, width)."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        h, w = int(size[0]), int(size[1])
    else:
        raise TypeError(f"size must be an int or a (height, width) pair, got {size!r}")
    if min(h, w) < 32:
        raise ValueError(f"size must be at least 32 pixels on a side, got {size!r}")
    return h, w


def _check_count(n, name) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")
    return int(n)


def _check_classes(classes) -> Tuple[str, ...]:
    if isinstance(classes, str) or not isinstance(classes, (tuple, list)) or not classes:
        raise TypeError(f"classes must be a non-empty list of shape names from {SHAPES}, got {classes!r}")
    bad = [c for c in classes if c not in SHAPES]
    if bad:
        raise ValueError(f"classes: unknown shape(s) {bad}; choose from {SHAPES}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes: duplicate names in {list(classes)}")
    return tuple(classes)


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _SPLIT_KEYS[split], int(index)])


# ----------------------------------------------------------------------------------------------
# drawing


def _shape_vertices(shape: str, cx: float, cy: float, r: float, theta: float) -> List[Tuple[float, float]]:
    if shape == "circle":
        n, radii = 48, [1.0]
    elif shape == "square":
        n, radii = 4, [1.0]
    elif shape == "triangle":
        n, radii = 3, [1.0]
    elif shape == "hexagon":
        n, radii = 6, [1.0]
    elif shape == "star":
        n, radii = 10, [1.0, 0.45]
    else:  # pragma: no cover - guarded by _check_classes
        raise ValueError(shape)
    pts = []
    for k in range(n):
        a = theta + 2 * math.pi * k / n
        rr = r * radii[k % len(radii)]
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


# Each shape's upright orientation (the angle of its first vertex): squares with axis-aligned
# sides, triangles, stars and hexagons with a vertex on top (image y points down).
_UPRIGHT = {"circle": 0.0, "square": math.pi / 4, "triangle": -math.pi / 2, "star": -math.pi / 2,
            "hexagon": -math.pi / 2}


def _angle(rng, shape: str, max_rotation) -> float:
    """A shape's drawing angle: uniform over the full turn when ``max_rotation`` is None, else
    its upright orientation turned by at most +-``max_rotation`` degrees. One uniform draw either
    way, so the rest of the scene's random stream does not depend on ``max_rotation``."""
    u = rng.uniform(0, 2 * math.pi)
    if max_rotation is None:
        return u
    return _UPRIGHT[shape] + (u / math.pi - 1.0) * math.radians(max_rotation)


def _check_rotation(max_rotation):
    if max_rotation is None:
        return None
    if isinstance(max_rotation, bool) or not isinstance(max_rotation, (int, float, np.integer, np.floating)) \
            or not 0 <= max_rotation <= 180:
        raise ValueError(f"max_rotation must be None (any angle) or a number of degrees in [0, 180], "
                         f"got {max_rotation!r}")
    return float(max_rotation)


def parse_rotation(text: str):
    """A command line's ``--max-rotation``: degrees in [0, 180], or ``any`` / ``none`` for any
    angle (None). For argparse's ``type=``: a bad value raises ``argparse.ArgumentTypeError``."""
    import argparse

    if text.strip().lower() in ("any", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= 180:
        raise argparse.ArgumentTypeError(f"expected degrees in [0, 180] or 'any', got {text!r}")
    return value


def _blob_vertices(rng, cx, cy, r) -> List[Tuple[float, float]]:
    """An irregular (clutter) polygon."""
    n = int(rng.integers(7, 12))
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = r * rng.uniform(0.4, 1.0, n)
    return [(cx + a * math.cos(t), cy + a * math.sin(t)) for a, t in zip(radii, angles)]


def _poly_mask(pts, h, w) -> np.ndarray:
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).polygon([(float(x), float(y)) for x, y in pts], fill=1)
    return np.asarray(im, dtype=bool)


def _smooth_noise(rng, h, w, cells, channels=3) -> np.ndarray:
    """Low-frequency noise in [-1, 1], shape (h, w, channels): a random grid upsampled."""
    gh, gw = max(2, cells), max(2, int(round(cells * w / h)))
    grid = rng.uniform(0, 255, (gh, gw, channels)).astype(np.uint8)
    up = Image.fromarray(grid if channels == 3 else grid[..., 0]).resize((w, h), Image.BICUBIC)
    arr = np.asarray(up, dtype=np.float32).reshape(h, w, channels)
    return arr / 127.5 - 1.0


def _background(rng, h, w) -> np.ndarray:
    base = rng.uniform(40, 215, 3)
    img = np.broadcast_to(base, (h, w, 3)).astype(np.float32)
    img = img + rng.uniform(10, 45) * _smooth_noise(rng, h, w, int(rng.integers(3, 9)))
    if rng.random() < 0.5:  # stripes / grid texture
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ang = rng.uniform(0, math.pi)
        period = rng.uniform(6, 30)
        s = np.sin((xx * math.cos(ang) + yy * math.sin(ang)) * 2 * math.pi / period)
        img = img + rng.uniform(6, 22) * s[..., None] * rng.uniform(0.5, 1.0, 3)
    return img


COLOUR_MODES = ("random", "class")
# The colours of the main job's data (tools/demo.py, tools/make_demo_data.py and detectron2's
# DATASETS.DINAT_DEMO): one colour family per class. With random colours the outline is the only
# cue between the classes and the short CPU schedules leave squares and triangles confused
# (docs/demo.md, "colour families"). The make_* / render_* functions below keep "random" as their
# own default, so data written before the option existed is reproduced byte for byte.
DEMO_COLOURS = "class"
# colours="class": the RGB channels that dominate each shape's colour family (red circles, green
# squares, blue triangles, yellow stars, magenta hexagons); the other channels stay low.
CLASS_COLOUR_CHANNELS = {"circle": (0,), "square": (1,), "triangle": (2,), "star": (0, 1),
                         "hexagon": (0, 2)}


def _check_colours(colours) -> str:
    if colours not in COLOUR_MODES:
        raise ValueError(f"colours must be one of {COLOUR_MODES} ('random': any colour for any "
                         f"shape; 'class': one colour family per shape class), got {colours!r}")
    return colours


def _family_colour(rng, shape: str) -> np.ndarray:
    """A random colour of ``shape``'s family: dominant channels U(150, 255), the others U(0, 110)."""
    c = rng.uniform(0, 110, 3)
    ch = list(CLASS_COLOUR_CHANNELS[shape])
    c[ch] = rng.uniform(150, 255, len(ch))
    return c


def _contrasting_colour(rng, ref: np.ndarray, min_dist: float = 70.0, shape=None) -> np.ndarray:
    """A colour at least ``min_dist`` from ``ref`` (50 tries): any colour, or with ``shape`` one of
    that shape's family (then, if no try is far enough, the farthest try, still of the family)."""
    if shape is None:
        for _ in range(50):
            c = rng.uniform(0, 255, 3)
            if np.linalg.norm(c - ref) >= min_dist:
                return c
        return 255.0 - ref
    best, best_d = None, -1.0
    for _ in range(50):
        c = _family_colour(rng, shape)
        d = float(np.linalg.norm(c - ref))
        if d >= min_dist:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _paint(img, mask, colour, rng):
    """Fill mask with a colour plus a mild linear shading."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return
    g = rng.uniform(-0.25, 0.25, 2)
    shade = 1.0 + g[0] * (ys - ys.mean()) / h + g[1] * (xs - xs.mean()) / w
    img[ys, xs] = np.clip(colour[None, :] * shade[:, None], 0, 255)


def _finish(img, rng) -> np.ndarray:
    img = img + rng.normal(0, rng.uniform(2, 8), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def render_instance_scene(
    rng: np.random.Generator,
    size: Union[int, Tuple[int, int]] = DEMO_SIZE,
    classes: Sequence[str] = DEFAULT_CLASSES,
    max_objects: int = 6,
    min_visible: float = 0.5,
    allow_overlap: bool = True,
    max_rotation: Union[float, None] = None,
    colours: str = "random",
) -> Tuple[np.ndarray, List[dict]]:
    """One synthetic instance scene.

    Returns ``(image, instances)``: image ``uint8 (H, W, 3)``; instances a list of dicts with
    ``category`` (index into ``classes``), ``mask`` (the visible part, ``bool (H, W)``) and
    ``polygon`` (the drawn outline, a list of (x, y)), in drawing order. Every
    shape keeps at least ``min_visible`` of its area visible; with ``allow_overlap=False`` shapes
    do not touch (then each mask is exactly its drawn polygon). ``max_rotation``: None draws each
    shape at any angle; a number of degrees keeps it within that of upright (squares with
    level sides, triangles with a vertex on top). ``colours``: ``"random"`` paints each shape any
    colour that contrasts with the background; ``"class"`` one of its class's colour family
    (``CLASS_COLOUR_CHANNELS``), so that colour as well as outline tells the classes apart.
    """
    h, w = _check_size(size)
    classes = _check_classes(classes)
    max_rotation = _check_rotation(max_rotation)
    colours = _check_colours(colours)
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    img = _background(rng, h, w)
    side = min(h, w)
    n_obj = int(rng.integers(1, max_objects + 1))
    full: List[np.ndarray] = []  # each shape's own full mask, in drawing order
    labels: List[int] = []
    polys: List[list] = []
    for _ in range(n_obj):
        for _try in range(20):
            cls = int(rng.integers(len(classes)))
            r = side * rng.uniform(0.08, 0.25)
            cx = rng.uniform(r * 0.6, w - r * 0.6)
            cy = rng.uniform(r * 0.6, h - r * 0.6)
            pts = _shape_vertices(classes[cls], cx, cy, r, _angle(rng, classes[cls], max_rotation))
            m = _poly_mask(pts, h, w)
            area = m.sum()
            if area < 64:
                continue
            if allow_overlap:  # the new shape goes on top; every shape must stay visible enough
                stack = full + [m]
                ok = all(v.sum() >= min_visible * f.sum() for v, f in zip(_visible(stack), stack))
            else:
                grown = _grow(m, 2)  # keep a gap, so that no rasterisation makes them touch
                ok = not any((prev & grown).any() for prev in full)
            if ok:
                full.append(m)
                labels.append(cls)
                polys.append(pts)
                break
    visible = _visible(full)
    ref = img.reshape(-1, 3).mean(0)
    for v, c in zip(visible, labels):
        shape = classes[c] if colours == "class" else None
        _paint(img, v, _contrasting_colour(rng, ref, shape=shape), rng)
    img = _finish(img, rng)
    return img, [dict(category=c, mask=v, polygon=p) for c, v, p in zip(labels, visible, polys)]


def _grow(m: np.ndarray, r: int) -> np.ndarray:
    out = m.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out[max(dy, 0):m.shape[0] + min(dy, 0), max(dx, 0):m.shape[1] + min(dx, 0)] |= \
                m[max(-dy, 0):m.shape[0] + min(-dy, 0), max(-dx, 0):m.shape[1] + min(-dx, 0)]
    return out


def _visible(stack: List[np.ndarray]) -> List[np.ndarray]:
    """Visible part of each mask when later masks are drawn over earlier ones."""
    out = []
    cover = np.zeros_like(stack[0]) if stack else None
    for m in reversed(stack):
        out.append(m & ~cover)
        cover = cover | m
    return out[::-1]


def render_semantic_scene(
    rng: np.random.Generator,
    size: Union[int, Tuple[int, int]] = DEMO_SIZE,
    max_objects: int = 5,
    max_clutter: int = 2,
    max_rotation: Union[float, None] = None,
    colours: str = "random",
) -> Tuple[np.ndarray, np.ndarray]:
    """One synthetic semantic scene: ``(image uint8 (H, W, 3), label uint8 (H, W))``.

    Labels as in ADE20K's PNGs: 0 = unlabelled (clutter), 1 = sky, 2 = ground, 3.. = the shapes of
    ``DEFAULT_CLASSES`` in order (see ``SEMANTIC_CLASSES``). ``max_rotation`` and ``colours`` as
    in :func:`render_instance_scene` (clutter blobs are always any colour).
    """
    h, w = _check_size(size)
    max_rotation = _check_rotation(max_rotation)
    colours = _check_colours(colours)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # sky over ground, split by a wavy horizon
    y0 = h * rng.uniform(0.3, 0.65)
    amp = h * rng.uniform(0.0, 0.08)
    horizon = y0 + amp * np.sin(xx[0] * 2 * math.pi / (w * rng.uniform(0.5, 2.0)) + rng.uniform(0, 6.3))
    ground = yy >= horizon[None, :]
    label = np.where(ground, 2, 1).astype(np.uint8)
    top, bottom = rng.uniform([60, 110, 170], [170, 200, 255]), rng.uniform([150, 170, 200], [235, 240, 255])
    t = (yy / h)[..., None]
    sky = top * (1 - t) + bottom * t + rng.uniform(3, 12) * _smooth_noise(rng, h, w, 3)
    gbase = rng.uniform([40, 60, 20], [150, 150, 90])
    gnd = gbase + rng.uniform(20, 45) * _smooth_noise(rng, h, w, int(rng.integers(8, 20)))
    gnd = gnd + rng.normal(0, rng.uniform(6, 16), (h, w, 3))
    img = np.where(ground[..., None], gnd, sky).astype(np.float32)
    side = min(h, w)
    n_shapes = int(rng.integers(1, max_objects + 1))
    items = [("shape", int(rng.integers(len(DEFAULT_CLASSES)))) for _ in range(n_shapes)]
    items += [("clutter", -1) for _ in range(int(rng.integers(0, max_clutter + 1)))]
    order = rng.permutation(len(items))
    for i in order:
        kind, cls = items[i]
        r = side * rng.uniform(0.06, 0.18)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        if kind == "shape":
            shape = DEFAULT_CLASSES[cls]
            pts = _shape_vertices(shape, cx, cy, r, _angle(rng, shape, max_rotation))
            value = 3 + cls
        else:
            pts = _blob_vertices(rng, cx, cy, r)
            value = 0
        m = _poly_mask(pts, h, w)
        shape = DEFAULT_CLASSES[cls] if kind == "shape" and colours == "class" else None
        _paint(img, m, _contrasting_colour(rng, img[m].mean(0) if m.any() else img.mean((0, 1)),
                                           shape=shape), rng)
        label[m] = value
    return _finish(img, rng), label


_CROP_BACKGROUNDS = ("textured", "plain")


def render_shape_crop(
    rng: np.random.Generator,
    size: Union[int, Tuple[int, int]],
    cls_index: int,
    classes: Sequence[str] = DEFAULT_CLASSES,
    background: str = "textured",
    max_rotation: Union[float, None] = None,
    return_geometry: bool = False,
):
    """One crop holding a single shape of class ``classes[cls_index]``: the demo's shapes as a
    classification sample (``tools/shape_probe.py``).

    Drawn as the scenes draw their shapes (outline, contrasting colour with mild shading, pixel
    noise), at radius ``side * U(0.18, 0.42)`` (``side = min(H, W)``) around the crop's centre
    moved by ``U(-0.12, 0.12) * side`` on each axis; at the extremes up to 4 % of the side may fall
    outside the crop. ``background``: ``"textured"`` (the instance scenes' background) or
    ``"plain"`` (one uniform colour). ``max_rotation`` as in :func:`render_instance_scene`.

    Returns ``(image uint8 (H, W, 3), cls_index)``; with ``return_geometry=True`` also a dict with
    the drawn ``mask`` (bool (H, W)), ``centre`` (x, y), ``radius``, ``angle`` (radians, the
    first vertex's direction) and ``polygon`` (the outline, a list of (x, y)).
    """
    h, w = _check_size(size)
    classes = _check_classes(classes)
    if isinstance(cls_index, bool) or not isinstance(cls_index, (int, np.integer)) \
            or not 0 <= cls_index < len(classes):
        raise ValueError(f"cls_index must be an int in [0, {len(classes) - 1}] (an index into "
                         f"classes {classes}), got {cls_index!r}")
    if background not in _CROP_BACKGROUNDS:
        raise ValueError(f"background must be one of {_CROP_BACKGROUNDS}, got {background!r}")
    max_rotation = _check_rotation(max_rotation)
    cls_index = int(cls_index)
    shape = classes[cls_index]
    if background == "textured":
        img = _background(rng, h, w)
    else:
        img = np.broadcast_to(rng.uniform(40, 215, 3), (h, w, 3)).astype(np.float32)
    side = min(h, w)
    r = side * rng.uniform(0.18, 0.42)
    cx, cy = np.array([w / 2, h / 2]) + rng.uniform(-0.12, 0.12, 2) * side
    theta = _angle(rng, shape, max_rotation)
    pts = _shape_vertices(shape, float(cx), float(cy), r, theta)
    mask = _poly_mask(pts, h, w)
    _paint(img, mask, _contrasting_colour(rng, img.reshape(-1, 3).mean(0)), rng)
    img = _finish(img, rng)
    if not return_geometry:
        return img, cls_index
    return img, cls_index, dict(mask=mask, centre=(float(cx), float(cy)), radius=float(r),
                                angle=float(theta), polygon=pts)


# ----------------------------------------------------------------------------------------------
# datasets on disk


def _manifest_matches(root: str, params: dict) -> bool:
    p = os.path.join(root, _MANIFEST)
    if not os.path.isfile(p):
        return False
    try:
        with open(p) as f:
            return json.load(f) == params
    except (OSError, ValueError):
        return False


def _write_manifest(root: str, params: dict) -> None:
    with open(os.path.join(root, _MANIFEST), "w") as f:
        json.dump(params, f, indent=1, sort_keys=True)


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _coco_poly_mask(seg, h, w) -> np.ndarray:
    from pycocotools import mask as mask_util

    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(seg, h, w))).astype(bool)


def make_coco_instances(
    root: str,
    n_train: int = 300,
    n_val: int = 50,
    size: Union[int, Tuple[int, int]] = DEMO_SIZE,
    seed: int = 0,
    classes: Sequence[str] = DEFAULT_CLASSES,
    max_objects: int = 6,
    mask_format: str = "rle",
    overwrite: bool = False,
    max_rotation: Union[float, None] = None,
    colours: str = "random",
) -> Dict[str, object]:
    """Write a COCO-format instance dataset of synthetic shape scenes under ``root``.

    ``mask_format``: ``"rle"`` (compressed RLE of the visible mask; shapes may occlude each other)
    or ``"polygon"`` (one polygon per shape; shapes then never overlap, so the polygon is the
    visible region). Category ids are 1..K in the order of ``classes``. ``max_rotation`` and
    ``colours``: see :func:`render_instance_scene`. Reruns with the same arguments reuse the files
    on disk unless ``overwrite``.

    Returns a dict: ``root``, ``classes``, and per split (``"train"``, ``"val"``) a dict with
    ``img_dir``, ``ann_file``, ``num_images``, ``num_instances``.
    """
    n_train, n_val = _check_count(n_train, "n_train"), _check_count(n_val, "n_val")
    h, w = _check_size(size)
    classes = _check_classes(classes)
    if mask_format not in ("rle", "polygon"):
        raise ValueError(f"mask_format must be 'rle' or 'polygon', got {mask_format!r}")
    max_rotation = _check_rotation(max_rotation)
    colours = _check_colours(colours)
    root = os.path.abspath(os.fspath(root))
    params = dict(kind="coco_instances", version=_FORMAT_VERSION, n_train=n_train, n_val=n_val,
                  size=[h, w], seed=int(seed), classes=list(classes), max_objects=int(max_objects),
                  mask_format=mask_format)
    if max_rotation is not None:  # absent = any angle, as in manifests written before it existed
        params["max_rotation"] = max_rotation
    if colours != "random":  # absent = random colours, as before the option existed
        params["colours"] = colours
    out: Dict[str, object] = {"root": root, "classes": classes}
    for split, n in (("train", n_train), ("val", n_val)):
        out[split] = {"img_dir": os.path.join(root, split),
                      "ann_file": os.path.join(root, "annotations", f"instances_{split}.json"),
                      "num_images": n}
    if not overwrite and _manifest_matches(root, params):
        for split in ("train", "val"):
            with open(out[split]["ann_file"]) as f:
                out[split]["num_instances"] = len(json.load(f)["annotations"])
        return out
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    categories = [{"id": i + 1, "name": c, "supercategory": "shape"} for i, c in enumerate(classes)]
    for split, n in (("train", n_train), ("val", n_val)):
        img_dir = out[split]["img_dir"]
        os.makedirs(img_dir, exist_ok=True)
        images, anns = [], []
        for i in range(n):
            img, inst = render_instance_scene(
                _rng(seed, split, i), (h, w), classes, max_objects,
                allow_overlap=(mask_format == "rle"), max_rotation=max_rotation, colours=colours)
            fname = f"{i:06d}.jpg"
            Image.fromarray(img).save(os.path.join(img_dir, fname), quality=92)
            images.append({"id": i + 1, "file_name": fname, "height": h, "width": w})
            for obj in inst:
                cls, m, pts = obj["category"], obj["mask"], obj["polygon"]
                if mask_format == "rle":
                    seg = _rle(m)
                else:
                    seg = [[round(float(v), 2) for xy in pts for v in xy]]
                    m = _coco_poly_mask(seg, h, w)  # area and box as pycocotools rasterises it
                ys, xs = np.nonzero(m)
                x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
                anns.append({
                    "id": len(anns) + 1, "image_id": i + 1, "category_id": cls + 1,
                    "segmentation": seg, "area": float(m.sum()),
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "iscrowd": 0,
                })
        coco = {"info": {"description": f"dinat-backbone synthetic shapes ({split}), seed {seed}"},
                "licenses": [], "images": images, "annotations": anns, "categories": categories}
        with open(out[split]["ann_file"], "w") as f:
            json.dump(coco, f)
        out[split]["num_instances"] = len(anns)
    _write_manifest(root, params)
    return out


def make_ade_semantic(
    root: str,
    n_train: int = 300,
    n_val: int = 50,
    size: Union[int, Tuple[int, int]] = DEMO_SIZE,
    seed: int = 0,
    overwrite: bool = False,
    max_rotation: Union[float, None] = None,
    colours: str = "random",
) -> Dict[str, object]:
    """Write an ADE20K-layout semantic dataset under ``root`` (see the module docstring);
    ``max_rotation`` and ``colours`` as in :func:`render_instance_scene`.

    Returns a dict: ``root``, ``classes`` (``SEMANTIC_CLASSES``, the names of label values 1..K,
    i.e. of train ids 0..K-1 after ``reduce_zero_label``), and per split (``"training"``,
    ``"validation"``) a dict with ``img_dir``, ``ann_dir``, ``num_images``.
    """
    n_train, n_val = _check_count(n_train, "n_train"), _check_count(n_val, "n_val")
    h, w = _check_size(size)
    max_rotation = _check_rotation(max_rotation)
    colours = _check_colours(colours)
    root = os.path.abspath(os.fspath(root))
    params = dict(kind="ade_semantic", version=_FORMAT_VERSION, n_train=n_train, n_val=n_val,
                  size=[h, w], seed=int(seed), classes=list(SEMANTIC_CLASSES))
    if max_rotation is not None:
        params["max_rotation"] = max_rotation
    if colours != "random":
        params["colours"] = colours
    out: Dict[str, object] = {"root": root, "classes": SEMANTIC_CLASSES}
    for split, n in (("training", n_train), ("validation", n_val)):
        out[split] = {"img_dir": os.path.join(root, "images", split),
                      "ann_dir": os.path.join(root, "annotations", split), "num_images": n}
    if not overwrite and _manifest_matches(root, params):
        return out
    for split, n in (("training", n_train), ("validation", n_val)):
        os.makedirs(out[split]["img_dir"], exist_ok=True)
        os.makedirs(out[split]["ann_dir"], exist_ok=True)
        stem = "ADE_train" if split == "training" else "ADE_val"
        for i in range(n):
            img, label = render_semantic_scene(_rng(seed, split, i), (h, w), max_rotation=max_rotation,
                                               colours=colours)
            name = f"{stem}_{i:08d}"
            Image.fromarray(img).save(os.path.join(out[split]["img_dir"], name + ".jpg"), quality=92)
            Image.fromarray(label, mode="L").save(os.path.join(out[split]["ann_dir"], name + ".png"))
    _write_manifest(root, params)
    return out


def semantic_majority_baseline(ann_dir: str, num_classes: int = len(SEMANTIC_CLASSES),
                               reduce_zero_label: bool = True) -> Dict[str, object]:
    """mIoU of predicting the most frequent class everywhere, computed over the PNGs in ``ann_dir``.

    Counts as mmseg's IoUMetric does: ignored pixels (0 with ``reduce_zero_label``) are left out,
    per-class IoU is accumulated over the whole split, and classes whose union is empty are left
    out of the mean. Returns ``{"class": train id, "name"..., "mIoU": float, "aAcc": float}``.
    """
    if not os.path.isdir(ann_dir):
        raise ValueError(f"ann_dir {ann_dir!r} is not a directory; generate the data first "
                         "(dinat_backbone.demo_data.make_ade_semantic)")
    counts = np.zeros(num_classes, dtype=np.int64)
    for name in sorted(os.listdir(ann_dir)):
        if not name.endswith(".png"):
            continue
        lab = np.asarray(Image.open(os.path.join(ann_dir, name)), dtype=np.int64)
        if reduce_zero_label:
            lab = lab - 1  # 0 -> -1 = ignored
        lab = lab[(lab >= 0) & (lab < num_classes)]
        counts += np.bincount(lab, minlength=num_classes)[:num_classes]
    if counts.sum() == 0:
        raise ValueError(f"no labelled pixels in {ann_dir!r}")
    major = int(counts.argmax())
    # predicting `major` everywhere: IoU(major) = count(major) / total; IoU(c != major) = 0 where
    # the class occurs (union = its count), undefined where it does not
    ious = [counts[major] / counts.sum() if c == major else 0.0 for c in range(num_classes) if counts[c] > 0]
    names = SEMANTIC_CLASSES if num_classes == len(SEMANTIC_CLASSES) else None
    return {"class": major, "name": names[major] if names else str(major),
            "mIoU": float(np.mean(ious)), "aAcc": float(counts[major] / counts.sum()),
            "pixels_per_class": counts.tolist()}
