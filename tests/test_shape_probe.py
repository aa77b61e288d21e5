"""tools/shape_probe.py and demo_data.render_shape_crop: each crop holds one shape of the asked
class (pixel area against the polygon's analytic area), bad arguments raise, the tool's accuracy
equals a hand count, and tiny runs of both models write the JSON."""
import importlib.util
import json
import math
import os

import numpy as np
import pytest
import torch

from dinat_backbone import demo_data

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 128
# area / r^2 and perimeter / r of a circle, of a square and of an equilateral triangle whose
# vertices lie at distance r from the centre
AREA = {"circle": math.pi, "square": 2.0, "triangle": 3 * math.sqrt(3) / 4}
PERIMETER = {"circle": 2 * math.pi, "square": 4 * math.sqrt(2), "triangle": 3 * math.sqrt(3)}


def _tool():
    spec = importlib.util.spec_from_file_location("shape_probe_tool",
                                                  os.path.join(ROOT, "tools", "shape_probe.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _inside(geom, size):
    pts = np.asarray(geom["polygon"])
    return pts.min() >= 0 and pts.max() <= size


@pytest.mark.parametrize("cls", range(3))
def test_crop_draws_the_asked_shape(cls):
    name = demo_data.DEFAULT_CLASSES[cls]
    rng = np.random.default_rng([5, cls])
    checked = 0
    for _ in range(40):
        img, label, geom = demo_data.render_shape_crop(rng, SIZE, cls, background="plain",
                                                       return_geometry=True)
        assert label == cls and img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
        mask, r = geom["mask"], geom["radius"]
        assert 0.18 * SIZE <= r <= 0.42 * SIZE
        assert np.all(np.abs(np.asarray(geom["centre"]) - SIZE / 2) <= 0.12 * SIZE)
        # the image shows the mask: outside it only the plain colour + pixel noise (sigma <= 8,
        # so 7 sigma), inside a colour >= 70 from it (shading averages to 1 over the mask)
        outside = img[~mask].astype(np.float64)
        bg = np.median(outside, 0)
        assert np.abs(outside - bg).max() < 56
        assert np.linalg.norm(img[mask].astype(np.float64).mean(0) - bg) > 60
        if not _inside(geom, SIZE):
            continue  # partly cut off at the border: its area is not the polygon's
        checked += 1
        # A rasterised polygon differs from the true one only at pixels whose centre lies within
        # sqrt(2)/2 px of the outline: a band of area sqrt(2) x perimeter. At r >= 0.18 x 128
        # these bands do not overlap between the three classes, so the count names the class.
        count = mask.sum()
        assert abs(count - AREA[name] * r * r) <= math.sqrt(2) * PERIMETER[name] * r, (count, r)
        nearest = min(AREA, key=lambda s: abs(count - AREA[s] * r * r))
        assert nearest == name
    assert checked >= 25


def test_crop_rotation_follows_max_rotation():
    side = math.sqrt(2)  # the square's side / r
    for max_rot, lo, hi in ((0, side, side), (15, side, side * (math.cos(math.radians(15))
                                                                  + math.sin(math.radians(15))))):
        rng = np.random.default_rng(11)
        for _ in range(20):
            _, _, g = demo_data.render_shape_crop(rng, SIZE, 1, background="plain",
                                                  max_rotation=max_rot, return_geometry=True)
            if not _inside(g, SIZE):
                continue
            ys, xs = np.nonzero(g["mask"])
            r = g["radius"]
            for extent in (xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()):
                assert lo * r - 2 <= extent <= hi * r + 2
    # upright triangles: a vertex on top at the centre's x, r above the centre; height 1.5 r
    rng = np.random.default_rng(12)
    for _ in range(10):
        _, _, g = demo_data.render_shape_crop(rng, SIZE, 2, background="plain", max_rotation=0,
                                              return_geometry=True)
        ys, xs = np.nonzero(g["mask"])
        (cx, cy), r = g["centre"], g["radius"]
        assert abs(ys.min() - (cy - r)) <= 1.5 and abs(xs[ys == ys.min()].mean() - cx) <= 1.5
        if _inside(g, SIZE):
            assert abs(ys.max() + 1 - ys.min() - 1.5 * r) <= 2
    # any angle: some squares stand on a corner (extent up to 2 r)
    rng = np.random.default_rng(13)
    widest = 0.0
    for _ in range(30):
        _, _, g = demo_data.render_shape_crop(rng, SIZE, 1, return_geometry=True)
        xs = np.nonzero(g["mask"])[1]
        widest = max(widest, (xs.max() + 1 - xs.min()) / g["radius"])
    assert widest > 1.8


def test_crop_textured_and_deterministic():
    a, _ = demo_data.render_shape_crop(np.random.default_rng(3), 64, 0)
    b, _ = demo_data.render_shape_crop(np.random.default_rng(3), 64, 0)
    assert np.array_equal(a, b)
    img, _, g = demo_data.render_shape_crop(np.random.default_rng(3), 64, 0, return_geometry=True)
    plain, _, gp = demo_data.render_shape_crop(np.random.default_rng(3), 64, 0, background="plain",
                                               return_geometry=True)
    # the plain background is one colour + pixel noise (sigma <= 8); the textured one varies more
    assert plain[~gp["mask"]].astype(np.float64).std(0).max() <= 8.5
    assert img[~g["mask"]].astype(np.float64).std(0).max() > 10


@pytest.mark.parametrize("kwargs, match", [
    (dict(cls_index=3), "cls_index"),
    (dict(cls_index=-1), "cls_index"),
    (dict(cls_index=True), "cls_index"),
    (dict(cls_index=1.0), "cls_index"),
    (dict(cls_index=0, background="noise"), "background"),
    (dict(cls_index=0, max_rotation=200), "max_rotation"),
    (dict(cls_index=0, max_rotation="any"), "max_rotation"),
    (dict(cls_index=0, classes=("circle", "blob")), "unknown shape"),
    (dict(cls_index=0, size=16), "at least 32"),
])
def test_crop_rejects_bad_arguments(kwargs, match):
    kwargs = dict(dict(size=64), **kwargs)
    with pytest.raises(ValueError, match=match):
        demo_data.render_shape_crop(np.random.default_rng(0), **kwargs)


def test_accuracy_equals_hand_count():
    tool = _tool()
    target = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0]
    pred = [0, 1, 0, 1, 2, 2, 2, 0, 2, 0]
    # hits: 0,2,3,5,6,8,9 = 7 of 10; class 0: 3 of 4, class 1: 1 of 2, class 2: 3 of 4
    acc, per_class = tool.accuracy(torch.tensor(pred), torch.tensor(target), 4)
    assert acc == pytest.approx(0.7)
    assert per_class[:3] == pytest.approx([0.75, 0.5, 0.75]) and per_class[3] is None
    with pytest.raises(ValueError, match="one length"):
        tool.accuracy([0, 1], [0], 3)


def test_schedule_and_eval_points():
    tool = _tool()
    assert tool.eval_points(600, 10) == list(range(60, 601, 60))
    assert tool.eval_points(4, 2) == [2, 4]
    # warm-up over 60 of 600 iterations, then the cosine
    assert tool.lr_factor(0, 600) == pytest.approx(1 / 60 * 0.5 * (1 + math.cos(0)))
    assert tool.lr_factor(299, 600) == pytest.approx(0.5 * (1 + math.cos(math.pi * 299 / 600)))
    assert tool.lr_factor(600, 600) == pytest.approx(0.0)


def test_rejects_bad_flags(capsys):
    tool = _tool()
    for argv in (["--evals", "5", "--iters", "4"], ["--max-rotation", "200"], ["--model", "vit"],
                 ["--size", "16"], ["--lr", "0"]):
        with pytest.raises(SystemExit):
            tool.parse_args(argv)
    assert "--evals 5 is more than --iters 4" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["cnn", "dinat"])
def test_tiny_run_writes_json(tmp_path, model):
    tool = _tool()
    argv = ["--model", model, "--iters", "4", "--size", "32", "--n-train", "16", "--n-val", "12",
            "--evals", "2"]
    out = tmp_path / "probe.json"
    result = tool.main(argv + ["--json", str(out)])
    data = json.loads(out.read_text())
    assert data["classes"] == list(demo_data.DEFAULT_CLASSES) and data["chance"] == pytest.approx(1 / 3)
    assert data["args"]["model"] == model and data["threads"] == 1
    assert [r["iter"] for r in data["rows"]] == [2, 4] and data["final"] == data["rows"][-1]
    for row in data["rows"]:
        assert set(row) == {"iter", "train_loss", "val_acc", "per_class", "wall_s", "cpu_s"}
        assert math.isfinite(row["train_loss"]) and 0 <= row["val_acc"] <= 1
        assert set(row["per_class"]) == set(demo_data.DEFAULT_CLASSES)
        assert all(0 <= a <= 1 for a in row["per_class"].values())
        # 12 balanced validation crops: 4 per class, so the overall accuracy is their mean
        assert row["val_acc"] == pytest.approx(np.mean(list(row["per_class"].values())))
        assert row["wall_s"] > 0 and row["cpu_s"] > 0
    # deterministic per seed at one thread
    again = tool.main(argv)
    assert [(r["train_loss"], r["val_acc"]) for r in again["rows"]] == \
        [(r["train_loss"], r["val_acc"]) for r in result["rows"]]
