"""Mask2Former-DiNAT end to end on the demo data (tools/demo_mask2former.py), per framework path.

Each test runs the real command in a subprocess at smoke size (96 px images, 2 training images,
batch 2, so every iteration sees the same two images up to flips) for a few iterations, then
checks what the run must produce: a finite loss every iteration that falls on that fixed batch,
the metric computed by the framework's own evaluator (mmseg's IoUMetric, mmdet's CocoMetric,
detectron2's COCOEvaluator) as a finite number in [0, 100], the baseline next to it, the picture,
and strict-JSON summary.json. How well a few iterations learn is not asserted; the measured demo
numbers are in docs/mask2former_demo.md.
"""
import json
import math
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "demo_mask2former.py")
ITERS = 10  # >= 10: the warm-up (iters // 5) reaches the peak rate


def _no_nan(name):
    raise ValueError(f"summary.json holds {name}, which is not JSON")


def _missing(*modules):
    """The first of ``modules`` that does not import (None when all do)."""
    for m in modules:
        try:
            __import__(m)
        except ImportError:
            return m
    return None


def _m2f_root():
    root = os.environ.get("MASK2FORMER_ROOT")
    if root and os.path.isfile(os.path.join(root, "mask2former", "__init__.py")):
        return root
    return None


def _skip_unless(*modules):
    miss = _missing(*modules)
    return pytest.mark.skipif(miss is not None, reason=f"needs {miss} (bash tools/install.sh)")


def run_tool(tmp_path, path, extra=()):
    out = tmp_path / "out"
    cmd = [sys.executable, TOOL, "--paths", path, "--iters", str(ITERS), "--n-train", "2",
           "--n-val", "2", "--batch-size", "2", "--size", "96", "--lr", "1e-3", "--threads", "1",
           "--out", str(out), "--data", str(tmp_path / "data"), *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:]
    with open(out / "summary.json") as f:
        summary = json.loads(f.read(), parse_constant=_no_nan)
    return summary["results"][path], log


def check_training(r):
    losses = r["losses"]
    assert len(losses) == ITERS, losses
    assert all(math.isfinite(v) and v > 0 for v in losses), losses
    # the same two images every iteration: the loss falls (Mask2Former's first losses are
    # dominated by the untrained classifier and dice terms of every decoder layer)
    assert sum(losses[-2:]) / 2 < losses[0], losses


def check_picture(r):
    from PIL import Image

    with Image.open(r["png"]) as im:
        w, h = im.size
    assert w >= 2 * 96 and h >= 96, (w, h)


@_skip_unless("mmcv._ext", "mmengine", "mmdet", "mmseg")
def test_mmseg_semantic_trains_and_evaluates(tmp_path):
    r, log = run_tool(tmp_path, "mmseg")
    check_training(r)
    assert "decode.d2.loss_dice" in log  # Mask2Former's deep supervision: 3 decoder layers + 1
    # mmseg's IoUMetric (the runner's validation) reported mIoU; the picture's second pass over
    # the val images, through IoUMetric's per-class table, gives the same mean
    assert r["metric"] == "mIoU" and 0.0 <= r["value"] <= 100.0
    per_class = [v for v in r["IoU"].values() if v is not None]
    assert per_class and sum(per_class) / len(per_class) == pytest.approx(r["value"], abs=0.01)
    assert re.search(r"\|\s+sky\s+\|", log)  # IoUMetric's own per-class table in the log
    assert 0.0 < r["baseline"] < 100.0 and "majority class" in r["baseline_what"]
    from dinat_backbone import derive_dilations

    assert r["dilations"] == derive_dilations(96)  # derived for the run's size, not the config's
    check_picture(r)


@_skip_unless("mmcv._ext", "mmengine", "mmdet")
def test_mmdet_instance_trains_and_evaluates(tmp_path):
    r, log = run_tool(tmp_path, "mmdet")
    check_training(r)
    # mmdet's CocoMetric ran both tasks (pycocotools' summary) and the AP came back as a number
    assert "Evaluating segm..." in log and "Evaluating bbox..." in log
    assert "coco/segm_mAP" in r["metrics"]
    assert r["metric"] == "mask AP" and 0.0 <= r["value"] <= 100.0
    assert r["value"] == pytest.approx(100 * r["metrics"]["coco/segm_mAP"])
    assert r["baseline"] == 0.0
    check_picture(r)


@_skip_unless("detectron2")
@pytest.mark.skipif(_m2f_root() is None, reason="no Mask2Former checkout: set MASK2FORMER_ROOT to "
                    "a clone of facebookresearch/Mask2Former (its requirements installed)")
def test_detectron2_official_mask2former_instance_trains_and_evaluates(tmp_path):
    r, log = run_tool(tmp_path, "detectron2", ["--mask2former-root", _m2f_root()])
    check_training(r)
    assert "(backbone): D2DiNAT(" in log  # Mask2Former's MaskFormer with the DiNAT backbone
    assert "copypaste: Task: segm" in log  # detectron2's COCOEvaluator
    assert r["metric"] == "mask AP" and 0.0 <= r["value"] <= 100.0
    assert r["baseline"] == 0.0
    check_picture(r)


def test_bad_arguments_are_refused():
    for args, phrase in ((["--size", "100"], "--size must be a multiple of 32"),
                         (["--iters", "0"], "--iters must be >= 1"),
                         (["--paths", "keras"], "invalid choice"),
                         (["--lr", "0"], "--lr must be > 0")):
        res = subprocess.run([sys.executable, TOOL, *args], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 2 and phrase in res.stderr, (args, res.stderr)


@_skip_unless("mmcv._ext", "mmengine", "mmdet", "mmseg")
@pytest.mark.parametrize("name", ["mask2former_dinat-mini_demo_semantic.py",
                                  "mask2former_dinat-mini_demo_instance.py"])
def test_mm_configs_match_the_demo_size_and_the_d2_head(name):
    """The mm demo configs use dilations derived for their image size and the head the detectron2
    YAML describes (128 channels, 20 queries, 3 decoder layers, 2 encoder layers, 3136 points)."""
    import yaml
    from mmengine.config import Config

    from dinat_backbone import derive_dilations

    cfg = Config.fromfile(os.path.join(ROOT, "configs", "demo", name))
    assert cfg.model.backbone.type == "DiNAT" and cfg.model.backbone.variant == "mini"
    assert cfg.model.backbone.dilations == derive_dilations(cfg.image_size)
    head = cfg.model.get("decode_head") or cfg.model.panoptic_head
    points = (head.get("train_cfg") or cfg.model.train_cfg).num_points
    with open(os.path.join(ROOT, "configs", "demo", "d2_mask2former_dinat_mini_demo_instance.yaml")) as f:
        d2 = yaml.safe_load(f)["MODEL"]
    mf = d2["MASK_FORMER"]
    assert head.feat_channels == mf["HIDDEN_DIM"] == d2["SEM_SEG_HEAD"]["CONVS_DIM"]
    assert head.num_queries == mf["NUM_OBJECT_QUERIES"]
    assert head.transformer_decoder.num_layers == mf["DEC_LAYERS"] - 1
    assert head.pixel_decoder.encoder.num_layers == d2["SEM_SEG_HEAD"]["TRANSFORMER_ENC_LAYERS"]
    assert points == mf["TRAIN_NUM_POINTS"]
    assert d2["DINAT"]["DILATIONS"] == cfg.image_size


def test_data_folders_never_rewrite_the_main_demos_data():
    """tools/demo_mask2former.py shares tools/demo.py's data folders only at the main demo's size
    and colours; another size or colour mode gets folders of its own (each generator rewrites a
    folder whose manifest differs, so sharing would regenerate the data back and forth)."""
    import importlib.util

    from dinat_backbone import demo_data

    spec = importlib.util.spec_from_file_location("dinat_m2f_demo_tool", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    main = demo_data.DEMO_SIZE
    assert tool.data_dirs("d", main, demo_data.DEMO_COLOURS) == dict(
        ade=os.path.join("d", "ade"), coco=os.path.join("d", "coco_polygon"))
    assert tool.data_dirs("d", main, "random") == dict(
        ade=os.path.join("d", "ade_random"), coco=os.path.join("d", "coco_polygon_random"))
    assert tool.data_dirs("d", 128, "random") == dict(
        ade=os.path.join("d", "ade_128"), coco=os.path.join("d", "coco_polygon_128"))
    assert tool.parse_args([]).colours == "random"  # the data of docs/mask2former_demo.md
