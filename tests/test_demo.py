"""The main job (tools/demo.py) and its configs.

The end-to-end test runs the real command on a tiny generated dataset for a few iterations with
mmdet and mmseg: it checks that the whole pipeline runs and reports what it must (metrics from the
frameworks' evaluators, the two PNGs, summary.json), not how well a few iterations learn.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_DIR = os.path.join(ROOT, "configs", "demo")


def _mm_available():
    try:
        import mmcv._ext  # noqa: F401
        import mmdet  # noqa: F401
        import mmengine  # noqa: F401
        import mmseg  # noqa: F401
    except ImportError:
        return False
    return True


needs_mm = pytest.mark.skipif(not _mm_available(), reason="needs mmengine, mmdet, mmseg and a "
                              "compiled mmcv (bash tools/install.sh)")


@needs_mm
@pytest.mark.parametrize("name", ["mask-rcnn_dinat-mini_demo.py", "upernet_dinat-mini_demo.py"])
def test_demo_configs_use_dilations_derived_for_the_demo_resolution(name):
    from mmengine.config import Config

    from dinat_backbone import derive_dilations

    cfg = Config.fromfile(os.path.join(DEMO_DIR, name))
    assert cfg.model.backbone.type == "DiNAT" and cfg.model.backbone.variant == "mini"
    assert cfg.model.backbone.dilations == derive_dilations(cfg.image_size)
    assert cfg.model.backbone.dilations != [[1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 7], [1, 3, 1, 3, 1]]


@needs_mm
@pytest.mark.parametrize("iters,span", [(240, 1.5), (1000, 1.0), (20, 2.0)])
def test_demo_detector_schedule_follows_the_cosine_span(iters, span):
    """Step mmengine's own schedulers built from tools/demo.py's schedule and compare every
    iteration's learning rate with the closed form: linear warm-up, then a cosine that would reach
    eta_min after span x iters, cut at iters."""
    import importlib.util
    import math

    import torch
    from mmengine.optim import OptimWrapper
    from mmengine.registry import PARAM_SCHEDULERS

    spec = importlib.util.spec_from_file_location("demo_tool", os.path.join(ROOT, "tools", "demo.py"))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    lr = 1e-3
    sched_cfg = demo._schedule(iters, lr, "cosine", span)
    opt = OptimWrapper(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr))
    scheds = [PARAM_SCHEDULERS.build(dict(c, optimizer=opt)) for c in sched_cfg]
    warm, eta_min = max(1, min(50, iters // 5)), lr * 0.01
    for it in range(iters):
        got = opt.param_groups[0]["lr"]
        if it < warm:
            # mmengine's LinearLR reaches the full rate on the last iteration of [begin, end)
            want = lr * (0.01 + 0.99 * it / (warm - 1))
        else:
            t_max = round(span * iters) - warm
            want = eta_min + (lr - eta_min) * (1 + math.cos(math.pi * (it - warm) / t_max)) / 2
        assert got == pytest.approx(want, rel=1e-6, abs=1e-12), (it, got, want)
        for sc in scheds:
            sc.step()
    # where the run stops: ~0 with span 1, ~0.4-0.5 x lr with 1.5 (1000 iterations: 50 warm-up)
    last = opt.param_groups[0]["lr"]
    if span == 1.0:
        assert last < 0.02 * lr
    elif span == 1.5:
        assert 0.3 * lr < last < 0.5 * lr


def test_demo_rejects_bad_flags():
    for bad in (["--iters", "0"], ["--size", "100"], ["--framework", "caffe"], ["--cosine-span", "0.5"],
                ["--skip-seg", "--skip-det"], ["--det-cfg-options", "no_equals_sign"]):
        r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "demo.py"), *bad],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, (bad, r.stderr)
        assert "error:" in r.stderr


@needs_mm
@pytest.mark.slow
def test_demo_end_to_end_tiny(tmp_path):
    from PIL import Image

    out, data = tmp_path / "out", tmp_path / "data"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "demo.py"), "--framework", "mmdet",
           "--out", str(out), "--data", str(data), "--n-train", "4", "--n-val", "2",
           "--size", "96", "--iters", "2", "--seg-iters", "2", "--batch-size", "2",
           "--device", "cpu", "--det-cfg-options", "model.roi_head.bbox_head.fc_out_channels=48",
           "--seg-cfg-options", "model.decode_head.channels=24"]
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=str(tmp_path))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"tools/demo.py CPU time: {after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime:.1f} s")
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    # progress with an ETA from the frameworks' loggers, then the summary with the file paths
    assert "Iter(train) [2/2]" in log and "eta:" in log
    assert str(out / "detections.png") in r.stdout and str(out / "segmentation.png") in r.stdout
    with open(out / "summary.json") as f:
        s = json.load(f)
    det, seg = s["detection"]["metrics"], s["segmentation"]
    # CocoMetric (pycocotools) and IoUMetric ran: AP in [0, 1], mIoU in [0, 100]
    for k in ("coco/bbox_mAP", "coco/bbox_mAP_50", "coco/segm_mAP"):
        assert 0.0 <= det[k] <= 1.0, (k, det)
    assert 0.0 <= seg["mIoU"] <= 100.0 and 0.0 < seg["majority_baseline_mIoU"] < 100.0
    assert s["detection"]["warm_start"] == "segmenter"
    from dinat_backbone import derive_dilations

    assert s["detection"]["dilations"] == derive_dilations(96)
    # --size reached the detector's data pipelines (the dataloaders' own copies), so it trained
    # and was evaluated at 96 px, not at the config's default size
    from mmengine.config import Config

    det_dir = s["detection"]["checkpoint"].rsplit(os.sep, 1)[0]
    dumped = Config.fromfile(os.path.join(det_dir, "mask-rcnn_dinat-mini_demo.py"))
    scales = [t["scale"] for dl in ("train_dataloader", "val_dataloader", "test_dataloader")
              for t in dumped[dl].dataset.pipeline if t["type"] == "Resize"]
    assert len(scales) == 3 and all(tuple(sc) == (96, 96) for sc in scales), scales
    # the pictures: detections (2 rows of 96 px tiles) and segmentation (3 columns of 96 px)
    with Image.open(out / "detections.png") as im:
        assert im.size[1] == 2 * 96 and im.size[0] > 2 * 96
    with Image.open(out / "segmentation.png") as im:
        assert im.size[0] == 3 * 96 and im.size[1] == 40 + 2 * 96
    assert os.path.isfile(s["detection"]["checkpoint"])
    assert os.path.isfile(s["segmentation"]["checkpoint"])
    # the --*-cfg-options overrides reached the models that were trained and saved
    import torch

    det_sd = torch.load(s["detection"]["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    assert det_sd["roi_head.bbox_head.shared_fcs.0.weight"].shape[0] == 48
    seg_sd = torch.load(s["segmentation"]["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    assert seg_sd["decode_head.bottleneck.conv.weight"].shape[0] == 24
