"""Evaluation with exact expected values: COCO AP and mIoU through the frameworks' own evaluators.

The demo and the framework tests report AP / mIoU from pycocotools (directly, through mmdet's
CocoMetric and through detectron2's COCOEvaluator) and from mmseg's IoUMetric / detectron2's
SemSegEvaluator. Here each of them reads real files (a COCO json, a label PNG written to tmp) and
is fed a prediction set built so that the answer can be computed by hand:

* predictions equal to the ground truth give AP 1.0 (bbox and segm);
* a set with known misses, false positives and one box at IoU 2/3 gives the AP computed below
  from the definition (101-point interpolated precision, averaged over the IoU thresholds
  0.50:0.05:0.95 and over the categories), with non-contiguous category ids (3 and 7) so that a
  label -> category-id mapping bug changes the number;
* a constructed confusion matrix gives the per-class IoU and mean written out below (including
  the one place where mmseg and detectron2 define mIoU differently: a class that is predicted but
  absent from the ground truth).

A category-id, box-format or scaling bug in any of these paths changes the values.
"""
from __future__ import annotations

import copy
import json
import math
from fractions import Fraction

import numpy as np
import pytest

# --------------------------------------------------------------------------- the hand oracle
RECALL_THRESHOLDS = [i / 100 for i in range(101)]
IOU_THRESHOLDS = [0.5 + 0.05 * i for i in range(10)]


def interpolated_ap(tp_by_score, n_gt):
    """COCO's 101-point interpolated AP of one category at one IoU threshold, from the definition.

    ``tp_by_score``: for each detection, best score first, whether it matched a ground truth.
    Precision at recall level r is the best precision reached at any recall >= r (0 if recall r is
    never reached); AP is its mean over r = 0, 0.01, ..., 1.
    """
    tp = fp = 0
    points = []  # (recall, precision) after each detection
    for hit in tp_by_score:
        tp, fp = tp + bool(hit), fp + (not hit)
        points.append((tp / n_gt, tp / (tp + fp)))
    total = 0.0
    for r in RECALL_THRESHOLDS:
        total += max((p for rec, p in points if rec >= r), default=0.0)
    return total / len(RECALL_THRESHOLDS)


def box_iou_xywh(a, b):
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


# ------------------------------------------------------------------------------ the data set
# Three 160 x 120 images, two categories with non-contiguous ids (label 0 -> id 3, 1 -> id 7).
W, H = 160, 120
CATEGORIES = [{"id": 3, "name": "circle"}, {"id": 7, "name": "square"}]
CLASSES = ("circle", "square")
GT = [  # (image_id, category_id, [x, y, w, h]); all 40 x 40 = 1600 px: COCO's "medium" range
    (1, 3, [10, 10, 40, 40]),    # circle A1
    (2, 3, [60, 20, 40, 40]),    # circle A2 (missed)
    (3, 3, [100, 60, 40, 40]),   # circle A3
    (1, 7, [70, 10, 40, 40]),    # square B1
    (2, 7, [10, 60, 40, 40]),    # square B2 (found at IoU 2/3)
    (3, 7, [10, 10, 40, 40]),    # square B3 (missed)
]
# (image_id, category_id, [x, y, w, h], score)
PREDICTIONS = [
    (1, 3, [10, 10, 40, 40], 0.9),    # circle: A1 exactly                        -> TP
    (1, 3, [100, 70, 30, 30], 0.8),   #         touches no circle                 -> FP
    (3, 3, [100, 60, 40, 40], 0.7),   #         A3 exactly                        -> TP
    (2, 3, [0, 70, 30, 30], 0.6),     #         touches no circle                 -> FP
    (1, 7, [70, 10, 40, 40], 0.95),   # square: B1 exactly                        -> TP
    (2, 7, [18, 60, 40, 40], 0.5),    #         B2 moved 8 px: IoU 1280/1920 = 2/3 -> TP at IoU <= 0.65
]

# Hand computation (3 ground truths per category, so recall steps by 1/3 and never equals a
# recall threshold k/100):
#   circle, at every IoU threshold (exact boxes, FPs touch nothing): TP FP TP FP
#       recall 1/3 1/3 2/3 2/3, precision 1 1/2 2/3 1/2 -> interpolated 1 for r <= 1/3 (34 of the
#       101 levels: 0.00..0.33), 2/3 for 1/3 < r <= 2/3 (33 levels: 0.34..0.66), 0 above:
#       AP = (34 + 33 * 2/3) / 101 = 56/101
#   square, IoU thresholds 0.50..0.65 (4 of 10): TP TP -> precision 1 up to recall 2/3:
#       67/101 (levels 0.00..0.66); thresholds 0.70..0.95 (6 of 10): TP FP -> 34/101
#       AP = (4 * 67 + 6 * 34) / (10 * 101) = 472/1010
AP_CIRCLE = Fraction(56, 101)
AP_SQUARE = Fraction(4 * 67 + 6 * 34, 1010)
AP50_SQUARE, AP75_SQUARE = Fraction(67, 101), Fraction(34, 101)
EXPECTED = {
    "AP": (AP_CIRCLE + AP_SQUARE) / 2,           # 516/1010 = 0.510891
    "AP50": (AP_CIRCLE + AP50_SQUARE) / 2,       # 123/202  = 0.608911
    "AP75": (AP_CIRCLE + AP75_SQUARE) / 2,       # 90/202   = 0.445545
    "AP-circle": AP_CIRCLE,                      # 0.554455
    "AP-square": AP_SQUARE,                      # 0.467327
}


def test_hand_oracle_matches_the_written_out_values():
    """The definition above, run on the prediction set, gives the fractions written out by hand."""
    def ap_at(cat, t):
        gts = [(i, b) for i, c, b in GT if c == cat]
        taken, hits = set(), []
        for img, c, box, _ in sorted((p for p in PREDICTIONS if p[1] == cat), key=lambda p: -p[3]):
            best = max(((box_iou_xywh(box, g), k) for k, (i, g) in enumerate(gts)
                        if i == img and k not in taken), default=(0.0, None))
            hit = best[0] >= t
            if hit:
                taken.add(best[1])
            hits.append(hit)
        return interpolated_ap(hits, len(gts))

    assert box_iou_xywh([10, 60, 40, 40], [18, 60, 40, 40]) == pytest.approx(2 / 3)
    per_cat = {c: [ap_at(c, t) for t in IOU_THRESHOLDS] for c in (3, 7)}
    assert per_cat[3] == pytest.approx([56 / 101] * 10, abs=1e-12)
    assert per_cat[7] == pytest.approx([67 / 101] * 4 + [34 / 101] * 6, abs=1e-12)
    ap = {c: sum(v) / 10 for c, v in per_cat.items()}
    assert ap[3] == pytest.approx(float(EXPECTED["AP-circle"]), abs=1e-12)
    assert ap[7] == pytest.approx(float(EXPECTED["AP-square"]), abs=1e-12)
    assert (ap[3] + ap[7]) / 2 == pytest.approx(float(EXPECTED["AP"]), abs=1e-12)
    assert (per_cat[3][0] + per_cat[7][0]) / 2 == pytest.approx(float(EXPECTED["AP50"]), abs=1e-12)
    assert (per_cat[3][5] + per_cat[7][5]) / 2 == pytest.approx(float(EXPECTED["AP75"]), abs=1e-12)


def _polygon(box):
    x, y, w, h = box
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


@pytest.fixture
def coco_files(tmp_path):
    """The ground truth as a COCO json file, plus an (empty) image folder."""
    images = [{"id": i, "file_name": f"{i:06d}.jpg", "height": H, "width": W} for i in (1, 2, 3)]
    anns = [{"id": k + 1, "image_id": img, "category_id": cat, "bbox": list(map(float, box)),
             "area": float(box[2] * box[3]), "segmentation": _polygon(box), "iscrowd": 0}
            for k, (img, cat, box) in enumerate(GT)]
    path = tmp_path / "instances_val.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    (tmp_path / "val").mkdir()
    return dict(ann_file=str(path), img_dir=str(tmp_path / "val"))


def _gt_as_predictions(ann_file):
    """Every ground truth as a prediction (score 0.9 - 0.1 k) with its mask as an RLE."""
    _need_pycocotools()
    from pycocotools.coco import COCO

    coco = COCO(ann_file)
    preds = []
    for k, a in enumerate(coco.loadAnns(coco.getAnnIds())):
        preds.append(dict(image_id=a["image_id"], category_id=a["category_id"], bbox=a["bbox"],
                          score=0.9 - 0.1 * k, segmentation=coco.annToRLE(a)))
    return preds


def _label(cat_id):
    return [c["id"] for c in CATEGORIES].index(cat_id)


def _xyxy(box):
    return [box[0], box[1], box[0] + box[2], box[1] + box[3]]


# ------------------------------------------------------------------------------ pycocotools
def _need_pycocotools():
    pytest.importorskip("pycocotools", reason="needs pycocotools (pip install pycocotools)")


def _cocoeval(ann_file, dets, iou_type):
    _need_pycocotools()
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(ann_file)
    dt = gt.loadRes(copy.deepcopy(dets))
    ev = COCOeval(gt, dt, iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_pycocotools_ground_truth_as_predictions_gives_ap_1(coco_files, iou_type):
    ev = _cocoeval(coco_files["ann_file"], _gt_as_predictions(coco_files["ann_file"]), iou_type)
    ap, ap50, ap75 = ev.stats[:3]
    assert (ap, ap50, ap75) == (1.0, 1.0, 1.0)
    assert ev.stats[4] == 1.0 and ev.stats[3] == -1.0 and ev.stats[5] == -1.0  # medium only


def test_pycocotools_hand_computed_ap(coco_files):
    dets = [dict(image_id=i, category_id=c, bbox=b, score=s) for i, c, b, s in PREDICTIONS]
    ev = _cocoeval(coco_files["ann_file"], dets, "bbox")
    assert ev.stats[0] == pytest.approx(float(EXPECTED["AP"]), abs=1e-9)
    assert ev.stats[1] == pytest.approx(float(EXPECTED["AP50"]), abs=1e-9)
    assert ev.stats[2] == pytest.approx(float(EXPECTED["AP75"]), abs=1e-9)
    # per category: precision [T, R, K, A, M]; K in the order of the sorted category ids (3, 7)
    prec = ev.eval["precision"][:, :, :, 0, -1]
    assert prec[:, :, 0].mean() == pytest.approx(float(AP_CIRCLE), abs=1e-9)
    assert prec[:, :, 1].mean() == pytest.approx(float(AP_SQUARE), abs=1e-9)


# ------------------------------------------------------------------------ mmdet's CocoMetric
def _mmdet_metric(ann_file):
    pytest.importorskip("mmdet", reason="needs mmdet (bash tools/install.sh)")
    from mmdet.evaluation import CocoMetric

    metric = CocoMetric(ann_file=ann_file, metric=["bbox", "segm"], classwise=True)
    metric.dataset_meta = dict(classes=CLASSES)
    return metric


def _mmdet_sample(img_id, preds, with_masks):
    import torch

    from pycocotools import mask as mask_util

    inst = dict(bboxes=torch.tensor([_xyxy(p["bbox"]) for p in preds], dtype=torch.float32).reshape(-1, 4),
                scores=torch.tensor([p["score"] for p in preds], dtype=torch.float32),
                labels=torch.tensor([_label(p["category_id"]) for p in preds], dtype=torch.int64))
    if with_masks:
        inst["masks"] = torch.from_numpy(np.stack(
            [mask_util.decode(p["segmentation"]).astype(bool) for p in preds]) if preds
            else np.zeros((0, H, W), bool))
    return dict(img_id=img_id, ori_shape=(H, W), pred_instances=inst)


def _run_mmdet(metric, preds, with_masks):
    metric.process({}, [_mmdet_sample(i, [p for p in preds if p["image_id"] == i], with_masks)
                        for i in (1, 2, 3)])
    return metric.evaluate(size=3)


def test_mmdet_cocometric_ground_truth_as_predictions_gives_ap_1(coco_files):
    metric = _mmdet_metric(coco_files["ann_file"])
    res = _run_mmdet(metric, _gt_as_predictions(coco_files["ann_file"]), with_masks=True)
    for task in ("bbox", "segm"):
        assert res[f"coco/{task}_mAP"] == 1.0 and res[f"coco/{task}_mAP_50"] == 1.0, res
        assert res[f"coco/{task}_mAP_m"] == 1.0, res
        for name in CLASSES:
            assert res[f"coco/{name}_precision"] == 1.0, res


def test_mmdet_cocometric_hand_computed_ap(coco_files):
    metric = _mmdet_metric(coco_files["ann_file"])
    metric.metrics = ["bbox"]
    preds = [dict(image_id=i, category_id=c, bbox=b, score=s) for i, c, b, s in PREDICTIONS]
    res = _run_mmdet(metric, preds, with_masks=False)
    # CocoMetric rounds to 3 decimals
    assert res["coco/bbox_mAP"] == pytest.approx(float(EXPECTED["AP"]), abs=5e-4)       # 0.511
    assert res["coco/bbox_mAP_50"] == pytest.approx(float(EXPECTED["AP50"]), abs=5e-4)  # 0.609
    assert res["coco/bbox_mAP_75"] == pytest.approx(float(EXPECTED["AP75"]), abs=5e-4)  # 0.446
    assert res["coco/circle_precision"] == pytest.approx(float(AP_CIRCLE), abs=5e-4)  # 0.554
    assert res["coco/square_precision"] == pytest.approx(float(AP_SQUARE), abs=5e-4)  # 0.467


def test_mmdet_cocometric_per_class_ap_is_the_last_metrics(coco_files):
    """CocoMetric(classwise=True) writes per-class AP under "<class>_precision" for every metric in
    turn, so the last one listed wins: tools/demo.py lists ["segm", "bbox"] to get the boxes'.
    Here the masks are empty (segm AP 0) and the boxes give the hand-computed values."""
    metric = _mmdet_metric(coco_files["ann_file"])
    metric.metrics = ["segm", "bbox"]
    import torch

    preds = [dict(image_id=i, category_id=c, bbox=b, score=s) for i, c, b, s in PREDICTIONS]

    samples = []
    for i in (1, 2, 3):
        sample = _mmdet_sample(i, [p for p in preds if p["image_id"] == i], with_masks=False)
        sample["pred_instances"]["masks"] = torch.zeros(len(sample["pred_instances"]["scores"]), H, W,
                                                        dtype=torch.bool)
        samples.append(sample)
    metric.process({}, samples)
    res = metric.evaluate(size=3)
    assert res["coco/segm_mAP"] == 0.0
    assert res["coco/bbox_mAP"] == pytest.approx(float(EXPECTED["AP"]), abs=5e-4)
    assert res["coco/circle_precision"] == pytest.approx(float(AP_CIRCLE), abs=5e-4)
    assert res["coco/square_precision"] == pytest.approx(float(AP_SQUARE), abs=5e-4)


# ------------------------------------------------------------------ detectron2's COCOEvaluator
def _d2_register(name, files):
    pytest.importorskip("detectron2", reason="needs detectron2 (README: detectron2 install notes)")
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, files["ann_file"], files["img_dir"])
    # what the trainer's test loader does first: load the dataset, which records the
    # category id <-> contiguous label mapping in the metadata
    DatasetCatalog.get(name)
    return name


def _d2_outputs(preds, with_masks):
    import torch
    from detectron2.structures import Boxes, Instances

    from pycocotools import mask as mask_util

    inputs, outputs = [], []
    for img in (1, 2, 3):
        ps = [p for p in preds if p["image_id"] == img]
        inst = Instances((H, W))
        boxes = torch.tensor([_xyxy(p["bbox"]) for p in ps], dtype=torch.float32)
        inst.pred_boxes = Boxes(boxes.reshape(-1, 4))
        inst.scores = torch.tensor([p["score"] for p in ps], dtype=torch.float32)
        inst.pred_classes = torch.tensor([_label(p["category_id"]) for p in ps], dtype=torch.int64)
        if with_masks:
            inst.pred_masks = torch.from_numpy(np.stack(
                [mask_util.decode(p["segmentation"]).astype(bool) for p in ps]))
        inputs.append({"image_id": img, "height": H, "width": W})
        outputs.append({"instances": inst})
    return inputs, outputs


@pytest.mark.parametrize("fast", [True, False], ids=["fast-cocoeval", "pycocotools"])
def test_detectron2_cocoevaluator_ground_truth_as_predictions_gives_ap_100(coco_files, fast, tmp_path):
    name = _d2_register("dinat_test_eval_gt", coco_files)
    from detectron2.evaluation import COCOEvaluator

    ev = COCOEvaluator(name, tasks=("bbox", "segm"), distributed=False, output_dir=str(tmp_path / "out"),
                       use_fast_impl=fast)
    ev.reset()
    ev.process(*_d2_outputs(_gt_as_predictions(coco_files["ann_file"]), with_masks=True))
    res = ev.evaluate()
    for task in ("bbox", "segm"):  # detectron2 reports percent
        assert res[task]["AP"] == pytest.approx(100.0) and res[task]["AP50"] == pytest.approx(100.0)
        assert res[task]["AP-circle"] == pytest.approx(100.0)
        assert res[task]["AP-square"] == pytest.approx(100.0)
        assert math.isnan(res[task]["APs"])  # no small objects: NaN, as detectron2 reports it


@pytest.mark.parametrize("fast", [True, False], ids=["fast-cocoeval", "pycocotools"])
def test_detectron2_cocoevaluator_hand_computed_ap(coco_files, fast, tmp_path):
    name = _d2_register("dinat_test_eval_hand", coco_files)
    from detectron2.evaluation import COCOEvaluator

    ev = COCOEvaluator(name, tasks=("bbox",), distributed=False, output_dir=str(tmp_path / "out"),
                       use_fast_impl=fast)
    ev.reset()
    preds = [dict(image_id=i, category_id=c, bbox=b, score=s) for i, c, b, s in PREDICTIONS]
    ev.process(*_d2_outputs(preds, with_masks=False))
    res = ev.evaluate()["bbox"]
    for key, want in EXPECTED.items():  # 51.0891, 60.8911, 44.5545, 55.4455, 46.7327
        assert res[key] == pytest.approx(100 * float(want), abs=1e-6), (key, res)


# ---------------------------------------------------------------------------------- mIoU
# Confusion matrix (rows: ground truth, columns: prediction) over 5 classes; 20 more pixels are
# labelled "ignore" (255) and predicted as various classes, which must not count.
#            pred:  c0  c1  c2  c3  c4
CONFUSION = [[40, 8, 2, 0, 0],    # c0: 50 pixels
             [4, 30, 4, 2, 0],    # c1: 40 pixels (2 predicted as c3)
             [0, 6, 4, 0, 0],     # c2: 10 pixels
             [0, 0, 0, 0, 0],     # c3: absent from the ground truth, predicted on 2 pixels
             [0, 0, 0, 0, 0]]     # c4: absent from both
# IoU_c = tp / (gt_c + pred_c - tp):
#   c0 = 40 / (50 + 44 - 40) = 40/54, c1 = 30 / (40 + 44 - 30) = 30/54, c2 = 4 / (10 + 10 - 4) = 1/4
#   c3 = 0 / (0 + 2 - 0) = 0 for mmseg; detectron2 leaves classes without ground-truth pixels out
#   c4: no pixel either way -> NaN, left out of the mean by both
IOU = [Fraction(40, 54), Fraction(30, 54), Fraction(1, 4)]
MIOU_MMSEG = (sum(IOU) + 0) / 4          # 0.386574 -> 38.66 %
MIOU_D2 = sum(IOU) / 3                   # 0.515432 -> 51.54 %
PIXEL_ACC = Fraction(74, 100)            # 74 %
SEG_CLASSES = ("c0", "c1", "c2", "c3", "c4")
IGNORE = 255


def _label_maps():
    """(gt, pred) 10 x 12 label maps holding exactly CONFUSION plus 20 ignored pixels."""
    gt, pred = [], []
    for g, row in enumerate(CONFUSION):
        for p, n in enumerate(row):
            gt += [g] * n
            pred += [p] * n
    ignored_pred = [0] * 5 + [1] * 5 + [3] * 6 + [4] * 4
    gt += [IGNORE] * len(ignored_pred)
    pred += ignored_pred
    order = np.random.default_rng(0).permutation(len(gt))
    return (np.array(gt, np.uint8)[order].reshape(10, 12),
            np.array(pred, np.int64)[order].reshape(10, 12))


def test_label_maps_hold_the_confusion_matrix():
    gt, pred = _label_maps()
    keep = gt != IGNORE
    counts = np.zeros((5, 5), int)
    np.add.at(counts, (gt[keep].astype(int), pred[keep]), 1)
    assert counts.tolist() == CONFUSION and (~keep).sum() == 20


def test_mmseg_iou_metric_constructed_confusion_matrix():
    pytest.importorskip("mmseg", reason="needs mmseg (bash tools/install.sh)")
    import torch
    from mmseg.evaluation import IoUMetric

    gt, pred = _label_maps()
    metric = IoUMetric(iou_metrics=["mIoU"], ignore_index=IGNORE)
    metric.dataset_meta = dict(classes=SEG_CLASSES)
    # two images (the map split in halves): the metric sums areas over images
    samples = [dict(pred_sem_seg=dict(data=torch.from_numpy(pred[s])[None]),
                    gt_sem_seg=dict(data=torch.from_numpy(gt[s].astype(np.int64))[None]))
               for s in (slice(0, 5), slice(5, 10))]
    metric.process({}, samples)
    res = metric.evaluate(size=2)
    # IoUMetric reports percent, rounded to 2 decimals
    assert res["mIoU"] == pytest.approx(100 * float(MIOU_MMSEG), abs=5e-3)   # 38.66
    assert res["aAcc"] == pytest.approx(100 * float(PIXEL_ACC), abs=5e-3)    # 74.0
    # per class (the same computation, class by class)
    from mmseg.evaluation.metrics.iou_metric import IoUMetric as _M

    areas = _M.intersect_and_union(torch.from_numpy(pred), torch.from_numpy(gt.astype(np.int64)), 5, IGNORE)
    got = _M.total_area_to_metrics(*[a.double() for a in areas], ["mIoU"])["IoU"]
    assert got[:3] == pytest.approx([float(v) for v in IOU], abs=1e-12)
    assert got[3] == 0.0 and math.isnan(got[4])


def test_detectron2_sem_seg_evaluator_constructed_confusion_matrix(tmp_path):
    pytest.importorskip("detectron2", reason="needs detectron2 (README: detectron2 install notes)")
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import SemSegEvaluator
    from PIL import Image

    gt, pred = _label_maps()
    records = []
    for k, s in enumerate((slice(0, 5), slice(5, 10))):  # two images, as above
        gt_file = tmp_path / f"gt_{k}.png"
        Image.fromarray(gt[s]).save(gt_file)  # 8-bit PNG, read back by the evaluator
        records.append({"file_name": str(tmp_path / f"img_{k}.jpg"), "sem_seg_file_name": str(gt_file),
                        "height": 5, "width": 12})
    name = "dinat_test_sem_seg"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(stuff_classes=list(SEG_CLASSES), ignore_label=IGNORE,
                                  evaluator_type="sem_seg")
    ev = SemSegEvaluator(name, distributed=False, output_dir=None)
    ev.reset()
    inputs = [{"file_name": r["file_name"]} for r in records]
    # logits whose argmax is the prediction
    outputs = [{"sem_seg": torch.nn.functional.one_hot(torch.from_numpy(pred[s]), 5).permute(2, 0, 1).float()}
               for s in (slice(0, 5), slice(5, 10))]
    ev.process(inputs, outputs)
    res = ev.evaluate()["sem_seg"]
    assert res["mIoU"] == pytest.approx(100 * float(MIOU_D2), abs=1e-9)      # 51.5432
    assert res["pACC"] == pytest.approx(100 * float(PIXEL_ACC), abs=1e-9)    # 74.0
    for c, v in zip(SEG_CLASSES, IOU):
        assert res[f"IoU-{c}"] == pytest.approx(100 * float(v), abs=1e-9)
    assert math.isnan(res["IoU-c3"]) and math.isnan(res["IoU-c4"])
