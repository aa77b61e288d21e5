"""Mask2Former's own semantic test-time augmentation with the DiNAT backbone.

projects/Mask2Former/train_net.py runs Mask2Former's own ``main``: with ``--eval-only`` and
``TEST.AUG.ENABLED True`` it evaluates once plainly, then again through Mask2Former's
``SemanticSegmentorWithTTA`` (``TEST.AUG.MIN_SIZES`` short edges up to ``TEST.AUG.MAX_SIZE``, each
also flipped with ``TEST.AUG.FLIP``), results keyed "sem_seg_TTA". Nothing of it is copied here:
these tests check that the official class is what runs, against a merge computed in the test.

They need detectron2 and a Mask2Former checkout (MASK2FORMER_ROOT), and skip naming the missing
one otherwise (helpers shared with tests/test_detectron2.py).
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from test_detectron2 import ROOT, TINY, _env, _m2f_glue, _m2f_root, needs_d2, needs_m2f

SEM_YAML = os.path.join(ROOT, "projects/Mask2Former/configs/ade20k/semantic-segmentation/"
                              "maskformer2_dinat_tiny_bs16_160k.yaml")
# a smoke-size head: narrow, 1 encoder layer, 2 decoder layers, 10 queries, 5 classes
SMALL_HEAD = {"MODEL.SEM_SEG_HEAD.NUM_CLASSES": 5, "MODEL.SEM_SEG_HEAD.CONVS_DIM": 32,
              "MODEL.SEM_SEG_HEAD.MASK_DIM": 32, "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": 1,
              "MODEL.MASK_FORMER.HIDDEN_DIM": 32, "MODEL.MASK_FORMER.DIM_FEEDFORWARD": 64,
              "MODEL.MASK_FORMER.DEC_LAYERS": 2, "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 10}


def _resized(image: torch.Tensor, short: int, max_size: int) -> torch.Tensor:
    """``image`` (uint8 CHW) with its short edge resized to ``short`` (the long edge capped at
    ``max_size``), bilinear, by PIL, the way detectron2's ResizeShortestEdge resizes uint8 images."""
    from PIL import Image

    h, w = image.shape[1:]
    scale = short / min(h, w)
    if max(h, w) * scale > max_size:
        scale = max_size / max(h, w)
    new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
    pil = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((new_w, new_h), Image.BILINEAR)
    return torch.from_numpy(np.ascontiguousarray(np.asarray(pil).transpose(2, 0, 1)))


@needs_d2
@needs_m2f
def test_semantic_tta_equals_an_independent_average_over_scales_and_flips(one_thread):
    """Mask2Former's SemanticSegmentorWithTTA (as its train_net builds it: ``(cfg, model)``) on one
    64 x 96 image equals what this test computes itself with the same DiNAT Mask2Former (random
    weights, eval mode): the model's per-class semantic scores ("sem_seg", returned at the input's
    64 x 96 by the model's own postprocessing) for the image resized to each TEST.AUG.MIN_SIZES
    short edge and for its mirror image (scores flipped back), averaged over the 6 views."""
    from detectron2.modeling import build_model

    glue = _m2f_glue()
    m2f = glue.import_mask2former(_m2f_root())
    cfg = glue.get_cfg(_m2f_root())
    cfg.merge_from_file(SEM_YAML)
    cfg.MODEL.WEIGHTS, cfg.MODEL.DEVICE = "", "cpu"
    for k, v in TINY.items():
        cfg.MODEL.DINAT[k] = v
    cfg.merge_from_list([str(x) for kv in SMALL_HEAD.items() for x in kv])
    cfg.TEST.AUG.ENABLED, cfg.TEST.AUG.FLIP = True, True
    cfg.TEST.AUG.MIN_SIZES, cfg.TEST.AUG.MAX_SIZE = (48, 64, 80), 200
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert type(model.backbone).__name__ == "D2DiNAT"
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
    h, w = image.shape[1:]
    with torch.no_grad():
        got = m2f.SemanticSegmentorWithTTA(cfg, model)([{"image": image, "height": h,
                                                          "width": w}])[0]["sem_seg"]
        views = []
        for short in cfg.TEST.AUG.MIN_SIZES:
            x = _resized(image, short, cfg.TEST.AUG.MAX_SIZE)
            assert x.shape[1] == short  # 48 x 72, 64 x 96, 80 x 120
            for flip in (False, True):
                inp = x.flip(dims=[2]) if flip else x
                s = model([{"image": inp, "height": h, "width": w}])[0]["sem_seg"]
                views.append(s.flip(dims=[2]) if flip else s)
        want = torch.stack(views).mean(0)
    assert got.shape == want.shape == (5, h, w)
    # the views do differ (else the average would be trivially any one of them)
    assert (views[0] - views[1]).abs().max() > 1e-3 and (views[0] - views[4]).abs().max() > 1e-3
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


_REGISTER_AND_RUN = r"""
import os, runpy, sys
import numpy as np
import torch
from PIL import Image
torch.set_num_threads(1)
from dinat_backbone.demo_data import SEMANTIC_CLASSES, make_ade_semantic
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg

# the ADE20K-layout demo data (labels 0 = unlabelled, 1.. = classes), converted as Mask2Former's
# datasets/prepare_ade20k_sem_seg.py converts ADE20K: train id = label - 1, unlabelled -> 255
ade = make_ade_semantic(os.path.join(TMP, "ade"), n_train=2, n_val=2, size=64, seed=0)
for split in ("training", "validation"):
    img_dir = ade[split]["img_dir"]
    gt_dir = os.path.join(TMP, "ade", "annotations_detectron2", split)
    os.makedirs(gt_dir, exist_ok=True)
    for name in sorted(os.listdir(ade[split]["ann_dir"])):
        lab = np.asarray(Image.open(os.path.join(ade[split]["ann_dir"], name))).astype(np.int64)
        Image.fromarray(np.where(lab == 0, 255, lab - 1).astype(np.uint8)).save(
            os.path.join(gt_dir, name))
    name = "dinat_test_sem_" + split
    DatasetCatalog.register(name, lambda g=gt_dir, i=img_dir: load_sem_seg(g, i, gt_ext="png",
                                                                           image_ext="jpg"))
    MetadataCatalog.get(name).set(stuff_classes=list(SEMANTIC_CLASSES), image_root=img_dir,
                                  sem_seg_root=gt_dir, evaluator_type="sem_seg", ignore_label=255)
sys.argv = ["projects/Mask2Former/train_net.py"] + ARGS
runpy.run_path("projects/Mask2Former/train_net.py", run_name="__main__")
"""


def _run_train_net(tmp_path, args):
    code = f"TMP = {str(tmp_path)!r}\nARGS = {args!r}\n" + _REGISTER_AND_RUN
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=900)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    return log


def _copypaste(log: str, task: str):
    """Every ``copypaste: Task: <task>`` block of detectron2's print_csv_format in ``log``:
    [{metric: value}, ...] in the order logged."""
    blocks = []
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if line.endswith(f"copypaste: Task: {task}"):
            keys = lines[i + 1].split("copypaste: ", 1)[1].split(",")
            vals = lines[i + 2].split("copypaste: ", 1)[1].split(",")
            blocks.append(dict(zip(keys, map(float, vals))))
    return blocks


def _miou_of_saved_predictions(pred_json, gt_dir, num_classes):
    """mIoU (percent) of SemSegEvaluator's saved predictions (one RLE per predicted class per
    image), computed here: per class, intersection / union summed over the images (pixels labelled
    255 left out), averaged over the classes whose union is not empty."""
    import json

    from PIL import Image
    from pycocotools import mask as mask_util

    with open(pred_json) as f:
        preds = json.load(f)
    by_image = {}
    for p in preds:
        by_image.setdefault(os.path.basename(p["file_name"]), []).append(p)
    inter, union = np.zeros(num_classes), np.zeros(num_classes)
    for name, ps in sorted(by_image.items()):
        gt = np.asarray(Image.open(os.path.join(gt_dir, name[:-4] + ".png"))).astype(np.int64)
        pred = np.full(gt.shape, -1)
        for p in ps:
            pred[mask_util.decode(p["segmentation"]).astype(bool)] = p["category_id"]
        assert (pred >= 0).all()
        valid = gt != 255
        for c in range(num_classes):
            g, q = (gt == c) & valid, (pred == c) & valid
            inter[c] += (g & q).sum()
            union[c] += (g | q).sum()
    keep = union > 0
    return 100.0 * float(np.mean(inter[keep] / union[keep])), by_image


@needs_d2
@needs_m2f
@pytest.mark.slow
def test_mask2former_train_net_eval_only_with_semantic_tta(tmp_path):
    """projects/Mask2Former/train_net.py on a tiny semantic dataset (2 + 2 generated 64 x 64
    images, ADE20K's label convention, a DiNAT-mini Mask2Former with a small head): 20 training
    iterations from random weights (so that the predictions are not one class everywhere), then
    ``--eval-only TEST.AUG.ENABLED True`` on the checkpoint: Mask2Former's main evaluates plainly,
    then through its SemanticSegmentorWithTTA (short edges 48, 64, 80, each flipped) into
    inference_TTA, and detectron2's SemSegEvaluator reports mIoU both times. The TTA mIoU is the
    one this test computes from the TTA predictions the run saved, which are not the plain ones."""
    out_dir = tmp_path / "out"
    flags = ["--mask2former-root", _m2f_root(), "--config-file", SEM_YAML]
    common = ["MODEL.DEVICE", "cpu", "SEED", "0", "DATALOADER.NUM_WORKERS", "0",
              "DATASETS.TRAIN", "('dinat_test_sem_training',)",
              "DATASETS.TEST", "('dinat_test_sem_validation',)",
              "MODEL.DINAT.VARIANT", "mini", "MODEL.DINAT.DILATIONS", "'64'",
              "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "256"]
    common += [str(x) for kv in SMALL_HEAD.items() for x in kv]
    _run_train_net(tmp_path, flags + common + [
        "MODEL.WEIGHTS", "", "OUTPUT_DIR", str(tmp_path / "train"), "SOLVER.AMP.ENABLED", "False",
        "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", "20", "SOLVER.BASE_LR", "0.001", "SOLVER.CHECKPOINT_PERIOD", "1000",
        "TEST.EVAL_PERIOD", "0", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "256",
        "INPUT.CROP.SIZE", "(64, 64)", "INPUT.SIZE_DIVISIBILITY", "64",
        "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "1024"])
    log = _run_train_net(tmp_path, flags + ["--eval-only"] + common + [
        "MODEL.WEIGHTS", str(tmp_path / "train" / "model_final.pth"),
        "OUTPUT_DIR", str(out_dir), "TEST.AUG.ENABLED", "True",
        "TEST.AUG.MIN_SIZES", "(48, 64, 80)", "TEST.AUG.MAX_SIZE", "256", "TEST.AUG.FLIP", "True"])
    assert "D2DiNAT" in log
    assert "Running inference with test-time augmentation" in log  # Mask2Former's test_with_TTA
    plain, tta = _copypaste(log, "sem_seg")  # once plain, once with TTA
    print("Mask2Former semantic mIoU single / TTA:", plain["mIoU"], tta["mIoU"])
    for res in (plain, tta):
        assert 0.0 <= res["mIoU"] <= 100.0 and 0.0 <= res["pACC"] <= 100.0, res
    gt_dir = os.path.join(tmp_path, "ade", "annotations_detectron2", "validation")
    miou, tta_preds = _miou_of_saved_predictions(out_dir / "inference_TTA" / "sem_seg_predictions.json",
                                                 gt_dir, 5)
    plain_miou, plain_preds = _miou_of_saved_predictions(
        out_dir / "inference" / "sem_seg_predictions.json", gt_dir, 5)
    print("recomputed from the saved predictions:", plain_miou, miou)
    assert len(tta_preds) == 2 and tta_preds != plain_preds
    assert tta["mIoU"] == pytest.approx(miou, abs=1e-4)  # copypaste prints 4 decimals
    assert plain["mIoU"] == pytest.approx(plain_miou, abs=1e-4)
