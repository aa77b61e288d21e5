"""The main job (tools/demo.py) and its configs.

The end-to-end tests run the real command on a tiny generated dataset for a few iterations (mmdet
and mmseg; detectron2 when installed; two seeds with --seeds): they check that the whole pipeline
runs and reports what it must (metrics from the frameworks' evaluators, the two PNGs, strict-JSON
summary.json, the repeat table), not how well a few iterations learn.
"""
import importlib.util
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_DIR = os.path.join(ROOT, "configs", "demo")
DEMO = os.path.join(ROOT, "tools", "demo.py")


def _demo_module():
    spec = importlib.util.spec_from_file_location("demo_tool", DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo


def _no_nan(name):
    raise ValueError(f"summary.json holds {name}, which is not JSON")


def strict_load(path):
    """json.loads that rejects NaN / Infinity (what strict JSON readers do)."""
    with open(path) as f:
        return json.loads(f.read(), parse_constant=_no_nan)


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
    import torch
    from mmengine.optim import OptimWrapper
    from mmengine.registry import PARAM_SCHEDULERS

    demo = _demo_module()
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
        # the closed form the detectron2 path uses is this same schedule
        assert lr * demo.cosine_lr_factor(it, iters, span) == pytest.approx(want, rel=1e-9), it
        for sc in scheds:
            sc.step()
    # where the run stops: ~0 with span 1, ~0.4-0.5 x lr with 1.5 (1000 iterations: 50 warm-up)
    last = opt.param_groups[0]["lr"]
    if span == 1.0:
        assert last < 0.02 * lr
    elif span == 1.5:
        assert 0.3 * lr < last < 0.5 * lr


@pytest.mark.parametrize("iters,span", [(240, 1.5), (20, 2.0)])
def test_demo_detectron2_schedule_is_the_same(iters, span):
    """detectron2's own LRMultiplier, stepped as its LRScheduler hook steps it, gives the demo's
    schedule (warm-up, cosine span x iters long): --cosine-span means the same on both paths."""
    pytest.importorskip("detectron2", reason="needs detectron2 (README: detectron2 install notes)")
    import torch

    demo = _demo_module()
    lr = 1e-3
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = demo.d2_lr_scheduler(opt, iters, span)
    warm = max(1, min(50, iters // 5))
    for it in range(iters):
        got = opt.param_groups[0]["lr"]
        if it < warm:
            want = lr * (0.01 + 0.99 * it / (warm - 1))
        else:
            t_max = round(span * iters) - warm
            want = lr * 0.01 + lr * 0.99 * (1 + math.cos(math.pi * (it - warm) / t_max)) / 2
        assert got == pytest.approx(want, rel=1e-6, abs=1e-12), (it, got, want)
        opt.step()
        sched.step()


@needs_mm
def test_demo_auto_framework_is_the_readme_mmdet_path():
    # whether or not detectron2 is installed, auto picks the path the README measures
    demo = _demo_module()
    assert demo.pick_framework("auto") == "mmdet"
    assert demo.pick_framework("detectron2") == "detectron2"


def test_demo_summary_is_strict_json(tmp_path):
    import numpy as np
    import torch

    demo = _demo_module()
    path = tmp_path / "summary.json"
    demo.write_json(str(path), {"a": float("nan"), "b": [float("inf"), 1.5, (2, 3)],
                                "c": np.float32(0.25), "d": torch.tensor(2.0), "e": np.arange(2),
                                "f": {"g": -float("inf"), "h": None, "i": "x"}})
    assert strict_load(path) == {"a": None, "b": [None, 1.5, [2, 3]], "c": 0.25, "d": 2.0,
                                 "e": [0, 1], "f": {"g": None, "h": None, "i": "x"}}
    with pytest.raises(ValueError, match="NaN"):  # the check itself rejects NaN
        json.loads('{"a": NaN}', parse_constant=_no_nan)


def test_demo_metrics_printed_in_percent_with_one_decimal():
    demo = _demo_module()
    # mmdet's CocoMetric gives fractions (rounded to 3 decimals), detectron2 percentages, NaN
    # where a size range has no object
    mm = {"coco/bbox_mAP": 0.118, "coco/bbox_mAP_50": 0.318, "coco/bbox_mAP_75": -1.0,
          "coco/segm_mAP": 0.167, "coco/segm_mAP_50": 0.293, "coco/circle_precision": 0.251}
    d2 = {"d2/bbox/AP": 8.3456, "d2/bbox/AP50": 18.112938210487603, "d2/bbox/AP75": float("nan"),
          "d2/segm/AP": 9.04, "d2/segm/AP50": 17.96, "d2/bbox/AP-circle": 12.25}
    ap_mm, ap_d2 = demo.detection_ap(mm, ["circle"]), demo.detection_ap(d2, ["circle"])
    assert ap_mm["bbox AP50"] == pytest.approx(31.8) and ap_mm["bbox AP75"] is None
    assert ap_mm["bbox AP circle"] == pytest.approx(25.1)
    assert ap_d2["bbox AP50"] == pytest.approx(18.112938210487603) and ap_d2["bbox AP75"] is None
    assert ap_d2["bbox AP circle"] == pytest.approx(12.25)
    base = dict(variant="mini", segmentation=dict(iters=120, time_s=203.0, mIoU=45.099998474121094,
                                                  aAcc=80.16, IoU={"sky": 94.91, "square": None},
                                                  majority_baseline_mIoU=9.7, majority_class="sky"))
    lines = demo.format_results(dict(base, framework="mmdet",
                                     detection=dict(iters=240, time_s=556.0, AP=ap_mm)))
    text = "\n".join(lines)
    assert "mIoU 45.1  aAcc 80.2" in text and "mIoU 9.7)" in text and "sky 94.9  square n/a" in text
    assert "bbox AP 11.8  AP50 31.8  mask AP 16.7  AP50 29.3" in text and "circle 25.1" in text
    text = "\n".join(demo.format_results(dict(base, framework="detectron2",
                                              detection=dict(iters=240, time_s=556.0, AP=ap_d2))))
    assert "bbox AP 8.3  AP50 18.1  mask AP 9.0  AP50 18.0" in text and "circle 12.2" in text
    assert not re.search(r"\d\.\d{2,}", text), text  # nothing printed with more than one decimal


def test_demo_repeat_aggregation_on_fixed_inputs():
    demo = _demo_module()
    rows = [{"mIoU": 40.0, "bbox AP50": 30.0, "wall min": 12.0},
            {"mIoU": 46.0, "bbox AP50": None, "wall min": 13.0},
            {"mIoU": 43.0, "bbox AP50": 36.0, "wall min": 11.0, "IoU square": 5.0}]
    agg = demo.aggregate(rows)
    assert list(agg) == ["mIoU", "bbox AP50", "wall min", "IoU square"]
    assert agg["mIoU"] == dict(mean=pytest.approx(43.0), min=40.0, max=46.0, n=3)
    assert agg["bbox AP50"] == dict(mean=pytest.approx(33.0), min=30.0, max=36.0, n=2)  # missing: left out
    assert agg["wall min"] == dict(mean=pytest.approx(12.0), min=11.0, max=13.0, n=3)
    assert agg["IoU square"] == dict(mean=5.0, min=5.0, max=5.0, n=1)
    assert demo.aggregate([{"x": None}])["x"] == dict(mean=None, min=None, max=None, n=0)
    table = demo.format_table([0, 1, 2], rows, agg).splitlines()
    cells = [line.split() for line in table if not line.startswith("-") and line.strip("- ")]
    assert cells[0] == ["seed", "mIoU", "bbox", "AP50", "wall", "min", "IoU", "square"]
    assert cells[1] == ["0", "40.0", "30.0", "12.0", "n/a"]
    assert cells[2] == ["1", "46.0", "n/a", "13.0", "n/a"]
    assert cells[4] == ["mean", "43.0", "33.0", "12.0", "5.0"]
    assert cells[5] == ["min-max", "40.0-46.0", "30.0-36.0", "11.0-13.0", "5.0-5.0"]
    # summary.json -> the table's metrics
    s = dict(segmentation=dict(mIoU=45.1, IoU={"sky": 94.9}), total_time_s=600.0,
             detection=dict(AP={"bbox AP50": 31.8}))
    assert demo.summary_metrics(s) == {"mIoU": 45.1, "IoU sky": 94.9, "bbox AP50": 31.8, "wall min": 10.0}
    assert demo.summary_metrics(dict(s, total_cpu_s=300.0))["cpu min"] == 5.0


def test_demo_report_reprints_the_table_from_the_runs(tmp_path):
    """--report DIR reads DIR/seed_*/summary.json (seed order, not file order) and prints the
    same table as --seeds; the mean / min-max here are worked out by hand."""
    for seed, miou, ap50, wall, cpu in ((10, 30.0, 12.0, 900.0, 600.0), (2, 45.0, 38.0, 600.0, 540.0)):
        d = tmp_path / f"seed_{seed}"
        d.mkdir()
        (d / "summary.json").write_text(json.dumps(dict(
            seed=seed, framework="mmdet", segmentation=dict(mIoU=miou, IoU={"square": 0.0}),
            detection=dict(AP={"bbox AP50": ap50}), total_time_s=wall, total_cpu_s=cpu)))
    r = subprocess.run([sys.executable, DEMO, "--report", str(tmp_path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()[1:] if line.strip("- ")]
    assert rows[0] == ["seed", "mIoU", "IoU", "square", "bbox", "AP50", "wall", "min", "cpu", "min"]
    assert rows[1] == ["2", "45.0", "0.0", "38.0", "10.0", "9.0"]
    assert rows[2] == ["10", "30.0", "0.0", "12.0", "15.0", "10.0"]
    assert rows[3] == ["mean", "37.5", "0.0", "25.0", "12.5", "9.5"]
    assert rows[4] == ["min-max", "30.0-45.0", "0.0-0.0", "12.0-38.0", "10.0-15.0", "9.0-10.0"]
    r = subprocess.run([sys.executable, DEMO, "--report", str(tmp_path / "empty")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--seeds N" in r.stderr


def test_demo_rejects_bad_flags():
    for bad in (["--iters", "0"], ["--size", "100"], ["--framework", "caffe"], ["--cosine-span", "0.5"],
                ["--skip-seg", "--skip-det"], ["--det-cfg-options", "no_equals_sign"], ["--seeds", "0"]):
        r = subprocess.run([sys.executable, DEMO, *bad],
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
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(f"tools/demo.py CPU time: {cpu:.1f} s")
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    # progress with an ETA from the frameworks' loggers, then the summary with the file paths
    assert "Iter(train) [2/2]" in log and "eta:" in log
    assert str(out / "detections.png") in r.stdout and str(out / "segmentation.png") in r.stdout
    s = strict_load(out / "summary.json")
    det, seg = s["detection"]["metrics"], s["segmentation"]
    # printed as the frameworks print them: percent, one decimal
    assert re.search(r"bbox AP (\d+\.\d|n/a)  AP50 (\d+\.\d|n/a)  mask AP", r.stdout), r.stdout[-2000:]
    assert re.search(r"mIoU \d+\.\d  aAcc \d+\.\d  ", r.stdout), r.stdout[-2000:]
    assert set(s["detection"]["AP"]) >= {"bbox AP", "bbox AP50", "mask AP", "mask AP50", "bbox AP circle"}
    assert set(seg["IoU"]) == {"sky", "ground", "circle", "square", "triangle"}
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


def _tiny_args(tmp_path):
    return ["--out", str(tmp_path / "out"), "--data", str(tmp_path / "data"), "--n-train", "4",
            "--n-val", "2", "--size", "96", "--iters", "2", "--seg-iters", "2", "--batch-size", "2",
            "--device", "cpu"]


@needs_mm
@pytest.mark.slow
def test_demo_seeds_runs_and_aggregates(tmp_path):
    """--seeds 2 (segmentation only, tiny): two runs with seeds 0 and 1, and a table whose mean /
    min / max are those of the two runs' summary.json files."""
    r = subprocess.run([sys.executable, DEMO, *_tiny_args(tmp_path), "--skip-det", "--seeds", "2",
                        "--seg-cfg-options", "model.decode_head.channels=24"],
                       capture_output=True, text=True, timeout=900, cwd=str(tmp_path))
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    out = tmp_path / "out"
    runs = [strict_load(out / f"seed_{sd}" / "summary.json") for sd in (0, 1)]
    assert [s["seed"] for s in runs] == [0, 1] and all(s["data_seed"] == 0 for s in runs)
    rep = strict_load(out / "repeat.json")
    assert rep["seeds"] == [0, 1] and len(rep["runs"]) == 2
    miou = [s["segmentation"]["mIoU"] for s in runs]
    agg = rep["aggregate"]["mIoU"]
    assert agg["n"] == 2 and agg["min"] == min(miou) and agg["max"] == max(miou)
    assert agg["mean"] == pytest.approx(sum(miou) / 2)
    # the printed table: a row per seed, then mean and min-max
    rows = [line.split() for line in r.stdout.splitlines()
            if line.strip().split(" ")[0] in ("0", "1", "mean", "min-max")]
    assert [row[0] for row in rows[-4:]] == ["0", "1", "mean", "min-max"]
    assert rows[-4][1] == f"{miou[0]:.1f}" and rows[-3][1] == f"{miou[1]:.1f}"
    assert rows[-2][1] == f"{sum(miou) / 2:.1f}"


@pytest.mark.slow
def test_demo_detectron2_path_end_to_end_tiny(tmp_path):
    """--framework detectron2 (tiny, detection only): says what differs, trains with the demo's
    schedule (the learning rate detectron2 logged at the last iteration is the cosine-span
    schedule's), evaluates with COCOEvaluator, draws detections.png, writes strict JSON."""
    pytest.importorskip("detectron2", reason="needs detectron2 (README: detectron2 install notes)")
    from PIL import Image

    iters, span = 4, 2.0
    args = _tiny_args(tmp_path)
    args[args.index("--iters") + 1] = str(iters)
    r = subprocess.run([sys.executable, DEMO, *args, "--framework", "detectron2", "--skip-seg",
                        "--cosine-span", str(span), "--det-cfg-options", "MODEL.ROI_BOX_HEAD.FC_DIM=48"],
                       capture_output=True, text=True, timeout=900, cwd=str(tmp_path))
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert "The detectron2 path differs" in r.stdout and "WarmupCosineLR has no span" in r.stdout
    out = tmp_path / "out"
    s = strict_load(out / "summary.json")
    assert s["framework"] == "detectron2"
    ap = s["detection"]["AP"]
    for k in ("bbox AP", "bbox AP50", "mask AP"):
        assert ap[k] is None or 0.0 <= ap[k] <= 100.0, ap  # COCOEvaluator: percent (NaN -> null)
    assert re.search(r"bbox AP (\d+\.\d|n/a)  AP50 (\d+\.\d|n/a)  mask AP", r.stdout)
    with Image.open(out / "detections.png") as im:
        assert im.size[1] == 2 * 96 and im.size[0] > 2 * 96
    demo = _demo_module()
    with open(out / "detector_d2" / "metrics.json") as f:
        last = [rec for rec in map(json.loads, f) if "lr" in rec][-1]
    assert last["iteration"] == iters - 1
    assert s["detection"]["history"][-1][0] == iters  # the evaluation after the last iteration
    from dinat_backbone import derive_dilations

    assert s["detection"]["dilations"] == derive_dilations(96)
    peak = demo.parse_args([]).lr  # the detector's default peak rate
    assert last["lr"] == pytest.approx(peak * demo.cosine_lr_factor(iters - 1, iters, span), rel=1e-6)
    from dinat_backbone.weights import load_checkpoint_file

    sd = load_checkpoint_file(s["detection"]["checkpoint"])["model"]
    assert sd["roi_heads.box_head.fc1.weight"].shape[0] == 48  # --det-cfg-options reached detectron2


@needs_mm
@pytest.mark.slow
def test_demo_tta_end_to_end_tiny(tmp_path):
    """--tta (tiny, mmdet): each trained model is evaluated again by the frameworks' own TTA models
    (SegTTAModel, DetTTAModel through load_config(..., tta=True)); summary.json (strict JSON) holds
    single-scale and TTA metrics, the printed table shows both, and the segmenter's TTA mIoU (the
    average of 6 views' probabilities) differs from its single-scale mIoU."""
    r = subprocess.run([sys.executable, DEMO, *_tiny_args(tmp_path), "--framework", "mmdet", "--tta",
                        "--det-cfg-options", "model.roi_head.bbox_head.fc_out_channels=48",
                        "--seg-cfg-options", "model.decode_head.channels=24"],
                       capture_output=True, text=True, timeout=900, cwd=str(tmp_path))
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    s = strict_load(tmp_path / "out" / "summary.json")
    seg, det = s["segmentation"], s["detection"]
    print("seg mIoU single / TTA:", seg["mIoU"], seg["tta"]["mIoU"],
          "det bbox AP single / TTA:", det["AP"]["bbox AP"], det["tta"]["AP"]["bbox AP"])
    # the TTA views: --size 96 x 0.75, 1.0, 1.25, each flipped
    assert seg["tta"]["scales"] == [[72, 72], [96, 96], [120, 120]] and seg["tta"]["flip"] is True
    assert seg["tta"]["model"] == "SegTTAModel" and det["tta"]["model"] == "DetTTAModel"
    for v in (seg["mIoU"], seg["tta"]["mIoU"], seg["aAcc"], seg["tta"]["aAcc"]):
        assert 0.0 <= v <= 100.0
    assert seg["tta"]["mIoU"] != seg["mIoU"]
    # CocoMetric ran on the TTA boxes (fractions in [0, 1]); no segm: DetTTAModel merges boxes only
    tta_m = det["tta"]["metrics"]
    assert 0.0 <= tta_m["coco/bbox_mAP"] <= 1.0 and "coco/segm_mAP" not in tta_m
    assert "coco/segm_mAP" in det["metrics"]
    # the printed table: "metric | single scale | TTA", percent with one decimal
    rows = {line.split("|")[0].strip(): [c.strip() for c in line.split("|")[1:]]
            for line in r.stdout.splitlines() if line.count("|") == 2}
    assert rows["metric"] == ["single scale", "TTA"]
    assert rows["mIoU"] == [f"{seg['mIoU']:.1f}", f"{seg['tta']['mIoU']:.1f}"]
    assert set(rows) >= {"aAcc", "bbox AP", "bbox AP50", "mask AP"}
    assert rows["mask AP"][1] == "n/a"


@pytest.mark.slow
def test_demo_tta_detectron2_end_to_end_tiny(tmp_path):
    """--framework detectron2 --tta (tiny, detection only): after training, the detector is
    evaluated again with detectron2's GeneralizedRCNNWithTTA (--size 96 x 0.75, 1.0, 1.25 + flip,
    the mmdet path's views) and COCOEvaluator. The TTA bbox / mask AP stored in summary.json are
    those pycocotools' COCOeval computes here from the TTA predictions the run saved
    (inference_TTA/coco_instances_results.json), which are not the single-scale ones; the printed
    table shows both."""
    pytest.importorskip("detectron2", reason="needs detectron2 (README: detectron2 install notes)")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    args = _tiny_args(tmp_path)
    args[args.index("--iters") + 1] = "30"  # a few boxes above AP 0, so the check below has values
    r = subprocess.run([sys.executable, DEMO, *args, "--framework", "detectron2", "--skip-seg", "--tta",
                        "--det-cfg-options", "MODEL.ROI_BOX_HEAD.FC_DIM=48",
                        "MODEL.ROI_HEADS.SCORE_THRESH_TEST=0.0"],
                       capture_output=True, text=True, timeout=900, cwd=str(tmp_path))
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert "Running inference with test-time augmentation" in log
    s = strict_load(tmp_path / "out" / "summary.json")
    det = s["detection"]
    tta = det["tta"]
    print("det single / TTA: bbox AP", det["AP"]["bbox AP"], tta["AP"]["bbox AP"],
          "bbox AP50", det["AP"]["bbox AP50"], tta["AP"]["bbox AP50"],
          "mask AP", det["AP"]["mask AP"], tta["AP"]["mask AP"])
    assert tta["model"] == "GeneralizedRCNNWithTTA" and tta["flip"] is True
    assert tta["scales"] == [[72, 72], [96, 96], [120, 120]]
    if _mm_available():  # the same views as the mmdet path
        from mmengine.config import Config

        assert tta["ratios"] == list(Config.fromfile(
            os.path.join(DEMO_DIR, "mask-rcnn_dinat-mini_demo.py")).tta_ratios)
    work = tmp_path / "out" / "detector_d2"
    with open(work / "inference_TTA" / "coco_instances_results.json") as f:
        tta_preds = json.load(f)
    with open(work / "inference" / "coco_instances_results.json") as f:
        single_preds = json.load(f)
    assert tta_preds and tta_preds != single_preds
    gt = COCO(str(tmp_path / "data" / "coco" / "annotations" / "instances_val.json"))
    for task, name in (("bbox", "bbox AP"), ("segm", "mask AP")):
        ev = COCOeval(gt, gt.loadRes(tta_preds), task)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        assert tta["AP"][name] == pytest.approx(100 * ev.stats[0], abs=1e-4), task
    rows = {line.split("|")[0].strip(): [c.strip() for c in line.split("|")[1:]]
            for line in r.stdout.splitlines() if line.count("|") == 2}
    assert rows["metric"] == ["single scale", "TTA"]
    for name in ("bbox AP", "bbox AP50", "mask AP"):  # mask AP too: detectron2 merges masks
        assert rows[name] == [f"{det['AP'][name]:.1f}", f"{tta['AP'][name]:.1f}"], name


def test_inverse_frequency_weights_by_hand():
    demo = _demo_module()
    # 100 pixels, 3 classes: weight = 100 / (3 x count), so weight x share = 1/3 for each class
    assert demo.inverse_frequency_weights([50, 30, 20]) == [0.667, 1.111, 1.667]
    # a class without pixels (tiny data) gets 1.0, which no pixel's loss uses; the other two
    # share the loss equally: 15 / (2 x 10), 15 / (2 x 5)
    assert demo.inverse_frequency_weights([10, 0, 5]) == [0.75, 1.0, 1.5]
    for bad in ([], [0, 0, 0], [10, -1, 5]):
        with pytest.raises(ValueError, match="at least one class"):
            demo.inverse_frequency_weights(bad)


@needs_mm
@pytest.mark.slow
def test_demo_class_colours_and_weighted_segmenter_tiny(tmp_path):
    """--colours class --seg-class-weights inverse (tiny, segmentation only): the data manifest
    records the colours, and the segmenter that was trained used the inverse pixel frequencies of
    the training labels, counted here from the PNGs, on both of its heads with reduction 'none'."""
    from mmengine.config import Config

    r = subprocess.run([sys.executable, DEMO, *_tiny_args(tmp_path), "--skip-det", "--colours", "class",
                        "--seg-class-weights", "inverse", "--seg-cfg-options",
                        "model.decode_head.channels=24"],
                       capture_output=True, text=True, timeout=900, cwd=str(tmp_path))
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    with open(tmp_path / "data" / "ade" / "demo_data.json") as f:
        assert json.load(f)["colours"] == "class"
    with open(tmp_path / "data" / "coco" / "demo_data.json") as f:
        assert json.load(f)["colours"] == "class"
    ann = tmp_path / "data" / "ade" / "annotations" / "training"
    counts = np.zeros(5, dtype=np.int64)
    for name in os.listdir(ann):
        lab = np.asarray(Image.open(ann / name), dtype=np.int64)
        counts += np.bincount(lab.ravel(), minlength=6)[1:6]  # 0 = unlabelled
    want = [round(counts.sum() / (5 * c), 3) for c in counts]
    cfg = Config.fromfile(str(tmp_path / "out" / "segmenter" / "upernet_dinat-mini_demo.py"))
    for head in ("decode_head", "auxiliary_head"):
        assert list(cfg.model[head].loss_decode.class_weight) == pytest.approx(want, abs=1e-3)
        assert cfg.model[head].loss_decode.reduction == "none"
    s = strict_load(tmp_path / "out" / "summary.json")
    assert s["colours"] == "class" and s["seg_class_weights"] == "inverse"
    assert "segmenter class weights (inverse pixel frequency)" in r.stdout
