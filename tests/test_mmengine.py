"""The OpenMMLab adapter against the real frameworks (mmengine, mmdet 3.3, mmseg 1.2, compiled mmcv).

* ``DiNAT`` sits in mmengine's root registry: mmdet and mmseg both build it; it equals the core
  ``DinatBackbone`` (same parameter names, same outputs); its config fields map onto
  ``DinatConfig``; invalid values raise naming the field.
* ``init_cfg=dict(type='Pretrained')`` loads checkpoints written in the released formats.
* Every loading path (``init_cfg``, ``load_from``, ``--resume``, tools/mm_test.py's checkpoint)
  refuses a pickle that would run code, and the code does not run (no marker file appears);
  mmengine's own checkpoints (HistoryBuffer, numpy scalars) still load.
* Forward / backward on a tiny batch for UPerNet, Mask R-CNN and Mask2Former (instance,
  panoptic, semantic): the shipped configs with a tiny DiNAT and small inputs.
* mmengine's Runner, through tools/mm_train.py and tools/mm_test.py, trains UPerNet-DiNAT-mini
  on a generated ADE20K-layout dataset (IoUMetric's mIoU checked against a confusion matrix
  computed here) and Mask R-CNN-DiNAT-mini on a generated COCO-format dataset (CocoMetric's bbox /
  segm AP); resuming continues the iteration count; a crash while saving leaves the last
  checkpoint intact.

The Runner tests use the shipped mini configs with 64 / 96 px images, narrowed heads and
dilations derived for that resolution: the ADE20K / COCO dilations need 112 / 196 px stage-1 maps,
so a tiny image would be padded up to that size in every layer (about 50x the work).
"""
import json
import os
import pickle
import sys

import numpy as np
import pytest

mmengine = pytest.importorskip("mmengine", reason="OpenMMLab not installed (bash tools/install.sh)")
pytest.importorskip("mmcv._ext", reason="mmcv with compiled ops not installed (tools/install.sh)")
pytest.importorskip("mmdet.models", reason="mmdet not installed (tools/install.sh)")
pytest.importorskip("mmseg.models", reason="mmseg not installed (tools/install.sh)")

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.model import BaseModule, revert_sync_batchnorm  # noqa: E402
from mmengine.registry import DefaultScope, init_default_scope  # noqa: E402

from dinat_backbone import DinatBackbone, DinatConfig, derive_dilations  # noqa: E402
from dinat_backbone import demo_data  # noqa: E402
from dinat_backbone import weights as ckpt  # noqa: E402
from dinat_backbone.mmengine import DiNAT, patch_checkpoint_loader  # noqa: E402
from dinat_backbone.weights import UnsafeCheckpointError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import mm_test  # noqa: E402
import mm_train  # noqa: E402

CFG = os.path.join(ROOT, "configs")
UPERNET_MINI = os.path.join(CFG, "mmseg", "upernet_dinat-mini_8xb2-160k_ade20k-512x512.py")
MRCNN_MINI = os.path.join(CFG, "mmdet", "mask-rcnn_dinat-mini_fpn_ms-crop-3x_coco.py")
M2F_INST = os.path.join(CFG, "mmdet", "mask2former_dinat-tiny_8xb2-lsj-50e_coco.py")
M2F_PAN = os.path.join(CFG, "mmdet", "mask2former_dinat-tiny_8xb2-lsj-50e_coco-panoptic.py")
M2F_SEM = os.path.join(CFG, "mmseg", "mask2former_dinat-tiny_8xb2-160k_ade20k-512x512.py")

TINY = dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], kernel_size=3,
            dilations=[[1], [1], [1], [1]], drop_path_rate=0.0)


def _registry(scope):
    import importlib

    return importlib.import_module(scope + ".registry").MODELS


def _build(scope, cfg):
    with DefaultScope.overwrite_default_scope(scope):
        return _registry(scope).build(cfg)


# ------------------------------------------------------------------------------ the adapter
def test_registered_once_in_the_root_registry_and_found_by_mmdet_and_mmseg():
    from mmengine.registry import MODELS as ROOT_MODELS

    assert ROOT_MODELS.get("DiNAT") is DiNAT
    for scope in ("mmdet", "mmseg"):
        reg = _registry(scope)
        assert "DiNAT" not in reg.module_dict  # not a framework-local copy ...
        m = _build(scope, dict(type="DiNAT", **TINY))  # ... yet found from that scope
        assert type(m) is DiNAT and isinstance(m, BaseModule) and isinstance(m, DinatBackbone)


def test_equals_the_core_backbone_and_returns_a_tuple_of_nchw_maps():
    m = _build("mmdet", dict(type="DiNAT", **TINY)).eval()
    core_cfg = DinatConfig(**{k: v for k, v in TINY.items()})
    core = DinatBackbone(core_cfg).eval()
    # Same parameter names (the authors' detection / segmentation names) and shapes.
    assert {k: v.shape for k, v in m.state_dict().items()} == \
        {k: v.shape for k, v in core.state_dict().items()}
    assert {"norm0.weight", "norm3.bias", "levels.0.blocks.0.attn.rpb"} <= set(m.state_dict())
    core.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 50, 70)
    with torch.no_grad():
        outs = m(x)
        ref = core(x)
    assert isinstance(outs, tuple) and len(outs) == 4
    for i, (o, (name, r)) in enumerate(zip(outs, ref.items())):
        h, w = DinatBackbone.output_size(50, 70, name)
        assert o.shape == (2, 16 * 2 ** i, h, w) == r.shape
        assert torch.equal(o, r)
    # out_indices picks stages (0 = stage 1) and creates only their norms
    m2 = _build("mmseg", dict(type="DiNAT", out_indices=(1, 3), **TINY))
    assert [o.shape[1] for o in m2(x)] == [32, 128] and m2.channels == [32, 128]
    norms = {k.split(".")[0] for k in m2.state_dict() if k.startswith("norm")}
    assert norms == {"norm1", "norm3"}


def test_fields_map_onto_dinat_config():
    with torch.device("meta"):  # full-size variants: the module tree, no weights allocated
        _check_fields()


def _check_fields():
    m = DiNAT(variant="small", dilations="coco", drop_rate=0.1, attn_drop_rate=0.05,
              drop_path_rate=0.35, with_cp=True, attention_backend="gather", frozen_stages=1)
    c = m.config
    ref = DinatConfig.from_variant("small", dilations="coco")
    assert (c.embed_dim, c.depths, c.num_heads, c.mlp_ratio, c.kernel_size) == \
        (96, [3, 4, 18, 5], [3, 6, 12, 24], 2.0, 7)
    assert c.dilations == ref.dilations and c.dilations[0] == [1, 28, 1]
    assert (c.hidden_dropout_prob, c.attention_probs_dropout_prob, c.drop_path_rate) == \
        (0.1, 0.05, 0.35)
    assert c.gradient_checkpointing and c.attention_backend == "gather" and c.frozen_stages == 1
    assert DiNAT(variant="base").config.layer_scale_init_value == 1e-5
    assert DiNAT().config.embed_dim == 64  # default: mini
    # the authors' spellings port unchanged
    a = DiNAT(embed_dim=64, mlp_ratio=3.0, depths=[3, 4, 6, 5], num_heads=[2, 4, 8, 16],
              kernel_size=7, dilations=[[1, 16, 1], [1, 4, 1, 8], [1, 2, 1, 3, 1, 4],
                                        [1, 2, 1, 2, 1]], in_chans=3, qk_scale=None,
              layer_scale=None)
    assert a.config.dilations == DinatConfig.from_variant("mini", dilations="ade20k512").dilations


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    a = DiNAT(**TINY)
    b = DiNAT(with_cp=True, **TINY)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 40, 40)
    for m in (a, b):
        sum(o.square().sum() for o in m(x)).backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=n)


def test_frozen_stages_stay_frozen_and_in_eval_mode():
    m = _build("mmdet", dict(type="DiNAT", frozen_stages=2, drop_rate=0.5, **{
        k: v for k, v in TINY.items()}))
    m.train()
    frozen = [n for n, p in m.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("patch_embed.", "levels.0.", "levels.1.", "norm0.",
                                        "norm1.")) for n in frozen)
    assert not any(n.startswith(("levels.2.", "norm2.", "norm3.")) for n in frozen)
    assert not m.patch_embed.training and not m.levels[1].training and m.levels[2].training
    sum(o.sum() for o in m(torch.randn(1, 3, 32, 32))).backward()
    assert all(p.grad is None for n, p in m.named_parameters() if n in frozen)
    assert m.levels[2].blocks[0].attn.qkv.weight.grad is not None


BAD = [
    (dict(kernel_size=6), ValueError, "kernel_size"),
    (dict(kernel_size=7, dilations="nope"), ValueError, "dilations"),
    (dict(dilations=[[1, 2], [1], [1], [1]]), ValueError, "dilations"),
    (dict(depths=[1, 1, 1], dilations=[[1]] * 3, out_indices=(0, 1, 2)), ValueError,
     "num_heads"),
    (dict(num_heads=[1, 1, 3, 2]), ValueError, "num_heads"),
    (dict(embed_dim=15), ValueError, "embed_dim"),
    (dict(mlp_ratio=0), ValueError, "mlp_ratio"),
    (dict(drop_rate=1.5), ValueError, "drop_rate"),
    (dict(attn_drop_rate=-0.1), ValueError, "attn_drop_rate"),
    (dict(drop_path_rate=1.0), ValueError, "drop_path_rate"),
    (dict(layer_scale=-1.0), ValueError, "layer_scale"),
    (dict(out_indices=(0, 4)), ValueError, "out_indices"),
    (dict(out_indices=(2, 1)), ValueError, "out_indices"),
    (dict(out_indices=()), ValueError, "out_indices"),
    (dict(frozen_stages=5), ValueError, "frozen_stages"),
    (dict(attention_backend="cuda"), ValueError, "attention_backend"),
    (dict(with_cp="yes"), ValueError, "with_cp"),
    (dict(qk_scale=0.1), ValueError, "qk_scale"),
    (dict(init_cfg=dict(type="Pretrained")), ValueError, "init_cfg.checkpoint"),
    (dict(init_cfg="weights.pth"), ValueError, "init_cfg"),
    (dict(pretrained=3), ValueError, "pretrained"),
    (dict(depth=[1, 1, 1, 1]), TypeError, "depths"),  # misspelt field: suggests the right one
]


@pytest.mark.parametrize("scope", ["mmdet", "mmseg"])
@pytest.mark.parametrize("bad,exc,field", BAD, ids=[f for _, _, f in BAD])
def test_invalid_values_fail_at_build_time_naming_the_field(scope, bad, exc, field):
    cfg = dict(TINY)
    cfg.update(bad)
    if "depth" in bad:
        cfg.pop("depths")
    with pytest.raises(exc) as err:
        _build(scope, dict(type="DiNAT", **cfg))
    assert field in str(err.value)


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="variant"):
        _build("mmdet", dict(type="DiNAT", variant="huge"))


# ------------------------------------------------------------------------------ checkpoints
def _source_model(tmp_path):
    torch.manual_seed(1)
    cfg = DinatConfig(**TINY, num_labels=10)
    return cfg, DinatModelWithHead(cfg)


def DinatModelWithHead(cfg):
    from dinat_backbone import DinatForImageClassification

    return DinatForImageClassification(cfg)


def _write_release(fmt, model, cfg, tmp_path):
    sd = model.state_dict()
    if fmt == "authors_pth":  # the authors' classification .pth: {"model": state_dict}
        path = tmp_path / "dinat_tiny_in1k.pth"
        torch.save({"model": ckpt.to_authors(sd)}, path)
    elif fmt == "transformers":  # a transformers model directory (safetensors + config.json)
        path = tmp_path / "hf"
        ckpt.save_state_dict(ckpt.to_transformers(sd), path / "model.safetensors")
        with open(path / "config.json", "w") as f:
            json.dump(ckpt.transformers_config_dict(cfg), f)
    elif fmt == "detectron2_pkl":
        path = tmp_path / "dinat_tiny.pkl"
        ckpt.save_state_dict(ckpt.to_detectron2(sd), path)
    elif fmt == "mmdet_full":  # a whole detector checkpoint: the backbone under "backbone."
        path = tmp_path / "mask_rcnn_dinat.pth"
        full = ckpt.to_mmengine(sd)
        full["state_dict"]["neck.lateral_convs.0.conv.weight"] = torch.zeros(1)
        torch.save(full, path)
    return str(path)


@pytest.mark.parametrize("fmt", ["authors_pth", "transformers", "detectron2_pkl", "mmdet_full"])
def test_init_cfg_pretrained_loads_released_formats(fmt, tmp_path):
    cfg, src = _source_model(tmp_path)
    path = _write_release(fmt, src, cfg, tmp_path)
    m = _build("mmdet", dict(type="DiNAT", **TINY,
                             init_cfg=dict(type="Pretrained", checkpoint=path)))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.init_weights()
    assert m.is_init
    src_sd = src.state_dict()
    trunk = [k for k in m.state_dict() if k.startswith(("patch_embed.", "levels."))]
    assert trunk
    for k in trunk:
        assert torch.equal(m.state_dict()[k], src_sd[k]), k
    # the per-output norms are not in a classification checkpoint: they keep their init
    assert torch.equal(m.state_dict()["norm0.weight"], before["norm0.weight"])


def test_pretrained_through_a_detector_init_weights_and_mismatch_errors(tmp_path):
    cfg, src = _source_model(tmp_path)
    path = _write_release("authors_pth", src, cfg, tmp_path)
    c = Config.fromfile(MRCNN_MINI)
    c.model.backbone = dict(type="DiNAT", **TINY, init_cfg=dict(type="Pretrained",
                                                               checkpoint=path))
    c.model.neck.in_channels = [16, 32, 64, 128]
    det = _build("mmdet", c.model)
    det.init_weights()  # what the Runner calls
    w = "levels.1.blocks.0.attn.qkv.weight"
    assert torch.equal(det.backbone.state_dict()[w], src.state_dict()[w])

    wrong = _build("mmdet", dict(type="DiNAT", **dict(TINY, embed_dim=32),
                                 init_cfg=dict(type="Pretrained", checkpoint=path)))
    with pytest.raises(ValueError, match="init_cfg.checkpoint"):
        wrong.init_weights()
    missing = _build("mmdet", dict(type="DiNAT", **TINY, init_cfg=dict(
        type="Pretrained", checkpoint=str(tmp_path / "absent.pth"))))
    with pytest.raises(FileNotFoundError, match="init_cfg.checkpoint"):
        missing.init_weights()


# (the optimiser groups of every shipped config are checked in test_mm_configs.py)


# ------------------------------------------------------------------------------ forward / backward
def _tiny_model(config_path, extra=None):
    cfg = Config.fromfile(config_path)
    cfg.model.backbone = dict(type="DiNAT", **TINY)
    chans = [16, 32, 64, 128]
    if "neck" in cfg.model:
        cfg.model.neck.in_channels = chans
    for head in ("decode_head", "panoptic_head"):
        if head in cfg.model:
            cfg.model[head].in_channels = chans
    if "auxiliary_head" in cfg.model:
        cfg.model.auxiliary_head.in_channels = chans[2]
    if "batch_augments" in cfg.model.data_preprocessor:
        cfg.model.data_preprocessor.batch_augments = None  # LSJ pads to 1024x1024
    if cfg.default_scope == "mmseg":
        cfg.model.data_preprocessor.size = (64, 64)
    if extra:
        cfg.merge_from_dict(extra)
    init_default_scope(cfg.default_scope)
    model = revert_sync_batchnorm(_registry(cfg.default_scope).build(cfg.model))
    model.init_weights()
    return model


def _shapes_scene(seed, size=64):
    """An image with two filled shapes, their masks and classes (a hand-made sample)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (size, size, 3)).astype(np.float32)
    masks = np.zeros((2, size, size), dtype=np.uint8)
    masks[0, 8:30, 10:40] = 1
    yy, xx = np.mgrid[:size, :size]
    masks[1][(yy - 44) ** 2 + (xx - 40) ** 2 < 12 ** 2] = 1
    masks[0][masks[1] > 0] = 0
    img[masks[0] > 0] = (220, 40, 40)
    img[masks[1] > 0] = (40, 220, 40)
    return torch.from_numpy(img).permute(2, 0, 1).contiguous(), masks


def _det_batch(panoptic=False, size=64):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData, PixelData

    inputs, samples = [], []
    for seed in range(2):
        img, masks = _shapes_scene(seed, size)
        ds = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                         pad_shape=(size, size), batch_input_shape=(size, size),
                                         scale_factor=(1.0, 1.0), img_id=seed))
        boxes = []
        for m in masks:
            ys, xs = np.nonzero(m)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        gt = InstanceData()
        gt.bboxes = torch.tensor(boxes, dtype=torch.float32)
        gt.labels = torch.tensor([0, 1])
        gt.masks = BitmapMasks(masks, size, size)
        ds.gt_instances = gt
        if panoptic:
            sem = np.full((1, size, size), 80, dtype=np.int64)  # first stuff class everywhere
            sem[0][masks[0] > 0] = 0
            sem[0][masks[1] > 0] = 1
            ds.gt_sem_seg = PixelData(sem_seg=torch.from_numpy(sem))
        inputs.append(img)
        samples.append(ds)
    return dict(inputs=inputs, data_samples=samples)


def _seg_batch(size=64):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    inputs, samples = [], []
    for seed in range(2):
        img, masks = _shapes_scene(seed, size)
        label = np.zeros((1, size, size), dtype=np.int64)
        label[0][masks[0] > 0] = 3
        label[0][masks[1] > 0] = 7
        label[0, :4] = 255  # ignored
        s = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                        pad_shape=(size, size)))
        s.gt_sem_seg = PixelData(data=torch.from_numpy(label))
        inputs.append(img)
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def _loss_backward_predict(model, batch):
    model.train()
    data = model.data_preprocessor(batch, training=True)
    losses = model(**data, mode="loss")
    loss, log_vars = model.parse_losses(losses)
    assert torch.isfinite(loss) and loss.item() > 0, log_vars
    loss.backward()
    g = model.backbone.levels[0].blocks[0].attn.qkv.weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    assert model.backbone.patch_embed.proj[0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(batch, training=False)
        return model(**data, mode="predict"), log_vars


def test_upernet_forward_backward_tiny_batch():
    model = _tiny_model(UPERNET_MINI, {"model.decode_head.num_classes": 10,
                                       "model.auxiliary_head.num_classes": 10})
    preds, log = _loss_backward_predict(model, _seg_batch())
    assert {"decode.loss_ce", "aux.loss_ce"} <= set(log)
    assert preds[0].pred_sem_seg.data.shape == (1, 64, 64)
    assert preds[0].seg_logits.data.shape == (10, 64, 64)


def test_mask_rcnn_forward_backward_tiny_batch():
    model = _tiny_model(MRCNN_MINI, {
        "model.roi_head.bbox_head.num_classes": 3, "model.roi_head.mask_head.num_classes": 3,
        "model.roi_head.bbox_roi_extractor.roi_layer.sampling_ratio": 2,
        "model.roi_head.mask_roi_extractor.roi_layer.sampling_ratio": 2,
        "model.train_cfg.rpn_proposal.nms_pre": 200, "model.train_cfg.rpn_proposal.max_per_img": 100,
        "model.train_cfg.rcnn.sampler.num": 64, "model.test_cfg.rpn.nms_pre": 200,
        "model.test_cfg.rpn.max_per_img": 100})
    preds, log = _loss_backward_predict(model, _det_batch())
    assert {"loss_rpn_cls", "loss_cls", "loss_bbox", "loss_mask"} <= set(log)
    inst = preds[0].pred_instances
    assert inst.bboxes.shape[1] == 4 and inst.masks.shape[1:] == (64, 64)


def M2F_LIGHT(head):
    """Mask2Former's head kept whole but shallower: 10 queries, 1 pixel-decoder encoder layer, 3
    transformer-decoder layers (of 6 / 9), so that a CPU step takes seconds."""
    return {f"model.{head}.num_queries": 10,
            f"model.{head}.pixel_decoder.encoder.num_layers": 1,
            f"model.{head}.transformer_decoder.num_layers": 3}


@pytest.mark.parametrize("kind", ["instance", "panoptic"])
def test_mask2former_mmdet_forward_backward_tiny_batch(kind):
    model = _tiny_model(M2F_PAN if kind == "panoptic" else M2F_INST, dict(
        M2F_LIGHT("panoptic_head"), **{"model.test_cfg.max_per_image": 10,
                                       "model.train_cfg.num_points": 256}))
    preds, log = _loss_backward_predict(model, _det_batch(panoptic=kind == "panoptic"))
    assert {"loss_cls", "loss_mask", "loss_dice"} <= set(log)
    if kind == "panoptic":
        assert preds[0].pred_panoptic_seg.sem_seg.shape == (1, 64, 64)
    else:
        assert preds[0].pred_instances.masks.shape[1:] == (64, 64)


def test_mask2former_mmseg_forward_backward_tiny_batch():
    model = _tiny_model(M2F_SEM, dict(
        M2F_LIGHT("decode_head"), **{"model.decode_head.num_classes": 10,
                                     "model.decode_head.loss_cls.class_weight": [1.0] * 10 + [0.1],
                                     "model.decode_head.train_cfg.num_points": 256}))
    preds, log = _loss_backward_predict(model, _seg_batch())
    assert any(k.endswith("loss_dice") for k in log)
    assert preds[0].pred_sem_seg.data.shape == (1, 64, 64)


# ------------------------------------------------------------------------------ Runner: mmseg
SEG_SIZE = 64


@pytest.fixture(scope="module")
def ade(tmp_path_factory):
    root = tmp_path_factory.mktemp("ade")
    return demo_data.make_ade_semantic(str(root), n_train=4, n_val=2, size=SEG_SIZE, seed=0)


def _write_child_config(path, base, body):
    text = f"_base_ = [{base!r}]\n" + "".join(f"{k} = {v!r}\n" for k, v in body.items())
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def _seg_config(tmp_path, ade):
    s = SEG_SIZE
    classes = list(demo_data.SEMANTIC_CLASSES)
    ds = dict(type="BaseSegDataset", data_root=ade["root"], img_suffix=".jpg",
              seg_map_suffix=".png", reduce_zero_label=True,
              metainfo=dict(classes=classes, palette=[[40 * i, 90, 200 - 40 * i]
                                                       for i in range(len(classes))]))
    train = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", reduce_zero_label=True),
             dict(type="RandomResize", scale=(2 * s, s), ratio_range=(1.0, 1.5), keep_ratio=True),
             dict(type="RandomCrop", crop_size=(s, s), cat_max_ratio=0.75),
             dict(type="RandomFlip", prob=0.5), dict(type="PhotoMetricDistortion"),
             dict(type="PackSegInputs")]
    test = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=(2 * s, s), keep_ratio=True),
            dict(type="LoadAnnotations", reduce_zero_label=True), dict(type="PackSegInputs")]
    loader = dict(num_workers=0, persistent_workers=False)
    body = dict(
        model=dict(
            data_preprocessor=dict(size=(s, s)),
            backbone=dict(init_cfg=None, dilations=derive_dilations(s)),
            decode_head=dict(num_classes=len(classes), channels=64,
                             norm_cfg=dict(type="BN", requires_grad=True)),
            auxiliary_head=dict(num_classes=len(classes), channels=32,
                                norm_cfg=dict(type="BN", requires_grad=True))),
        train_dataloader=dict(batch_size=2, **loader, dataset=dict(
            ds, data_prefix=dict(img_path="images/training", seg_map_path="annotations/training"),
            pipeline=train, _delete_=True)),
        val_dataloader=dict(batch_size=1, **loader, dataset=dict(
            ds, data_prefix=dict(img_path="images/validation",
                                 seg_map_path="annotations/validation"),
            pipeline=test, _delete_=True)),
        test_dataloader=dict(batch_size=1, **loader, dataset=dict(
            ds, data_prefix=dict(img_path="images/validation",
                                 seg_map_path="annotations/validation"),
            pipeline=test, _delete_=True)),
        train_cfg=dict(max_iters=2, val_interval=2),
        param_scheduler=[
            dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=1, _delete_=True),
            dict(type="PolyLR", power=1.0, eta_min=0.0, begin=1, end=2, by_epoch=False)],
        default_hooks=dict(checkpoint=dict(interval=1), logger=dict(interval=1),
                           visualization=dict(draw=False)),
        env_cfg=dict(cudnn_benchmark=False),
        randomness=dict(seed=0),
        tta_pipeline=_tta_pipeline_scaled(UPERNET_MINI, [(2 * s, s // 2), (4 * s, s)]),
    )
    body["param_scheduler"] = [dict(d) for d in body["param_scheduler"]]
    for d in body["param_scheduler"]:
        d.pop("_delete_", None)
    return _write_child_config(tmp_path / "upernet_tiny_run.py", UPERNET_MINI, body)


def _miou_from_predictions(runner, num_classes):
    """mIoU (%) of the runner's model on its val set, from a confusion matrix counted here."""
    model = runner.model.eval()
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    with torch.no_grad():
        for batch in runner.val_dataloader:
            for s in model.val_step(batch):
                pred = s.pred_sem_seg.data[0].numpy()
                gt = s.gt_sem_seg.data[0].numpy()
                keep = gt != 255
                for c in range(num_classes):
                    p, g = (pred == c) & keep, (gt == c) & keep
                    inter[c] += (p & g).sum()
                    union[c] += (p | g).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
    return 100 * np.nanmean(iou)


def test_runner_trains_upernet_mini_iou_metric_and_resume(ade, tmp_path):
    cfg_path = _seg_config(tmp_path, ade)
    wd = str(tmp_path / "work")
    runner = mm_train.main([cfg_path, "--work-dir", wd])
    assert runner.iter == 2
    assert type(runner.model.backbone).__name__ == "DiNAT"
    assert runner.model.backbone.config.depths == [3, 4, 6, 5]  # DiNAT-mini
    assert sorted(f for f in os.listdir(wd) if f.endswith(".pth")) == ["iter_1.pth", "iter_2.pth"]
    assert not [f for f in os.listdir(wd) if f.endswith(".tmp")]
    with open(os.path.join(wd, "last_checkpoint")) as f:
        assert f.read().strip() == os.path.join(wd, "iter_2.pth")
    # The val metric at the last iteration is IoUMetric's; recompute it from the model's predictions.
    scalars = runner.message_hub.log_scalars
    miou = scalars["val/mIoU"].current()
    assert 0.0 <= miou <= 100.0
    ours = _miou_from_predictions(runner, len(demo_data.SEMANTIC_CLASSES))
    assert abs(miou - ours) <= 0.01, (miou, ours)

    # tools/mm_test.py evaluates the saved checkpoint with the same metric
    out = tmp_path / "metrics.json"
    metrics = mm_test.main([cfg_path, os.path.join(wd, "iter_2.pth"), "--work-dir",
                            str(tmp_path / "test"), "--out", str(out)])
    assert metrics["mIoU"] == pytest.approx(miou, abs=0.01)
    assert json.load(open(out))["mIoU"] == pytest.approx(miou, abs=0.01)
    # ... and with --tta (SegTTAModel over the config's scales x flips; the merge itself is
    # checked against a hand computation in test_seg_tta_equals_...)
    tta = mm_test.main([cfg_path, os.path.join(wd, "iter_2.pth"), "--tta", "--work-dir",
                        str(tmp_path / "tta")])
    assert 0.0 <= tta["mIoU"] <= 100.0

    # Resume from iteration 1: the schedule continues from there and ends at 2.
    from mmengine.runner.checkpoint import _load_checkpoint  # what Runner.resume calls

    patch_checkpoint_loader()

    ck1 = os.path.join(wd, "iter_1.pth")
    with pytest.raises(pickle.UnpicklingError):  # plain weights_only load: mmengine's types
        torch.load(ck1)
    saved = _load_checkpoint(ck1, map_location="cpu")  # the safe reader, HistoryBuffer allowed
    assert saved["meta"]["iter"] == 1
    from dinat_backbone.mmengine import build_runner, load_config

    no_val = {"val_cfg": None, "val_dataloader": None, "val_evaluator": None}
    cfg = load_config(cfg_path, work_dir=str(tmp_path / "resumed"),
                      resume=ck1, cfg_options=no_val)
    r2 = build_runner(cfg)
    from mmengine.hooks import Hook

    class Record(Hook):  # runs after the Runner has resumed, before the first resumed step
        def before_train(self, runner):
            self.iter = runner.iter
            self.state = {k: v.clone() for k, v in runner.model.state_dict().items()}
            self.lr = runner.optim_wrapper.optimizer.param_groups[0]["lr"]

    rec = Record()
    r2.register_hook(rec)
    r2.train()
    assert rec.iter == 1 and r2.iter == 2
    for k, v in rec.state.items():
        assert torch.equal(v, saved["state_dict"][k]), k
    assert rec.lr == pytest.approx(saved["optimizer"]["param_groups"][0]["lr"])
    final = _load_checkpoint(os.path.join(str(tmp_path / "resumed"), "iter_2.pth"))
    assert final["meta"]["iter"] == 2

    # --resume without a value picks up the work dir's last_checkpoint (iteration 2) and, with
    # the schedule extended to 3 iterations, trains exactly one more.
    r3 = mm_train.main([cfg_path, "--work-dir", wd, "--resume",
                        "--cfg-options", "train_cfg.max_iters=3", "val_cfg=None",
                        "val_dataloader=None", "val_evaluator=None"])
    assert r3.iter == 3
    with open(os.path.join(wd, "last_checkpoint")) as f:
        assert f.read().strip().endswith("iter_3.pth")


# ------------------------------------------------------------------------------ test-time augmentation
def test_seg_tta_equals_an_average_of_flipped_and_rescaled_probabilities(ade):
    """SegTTAModel built from the UPerNet config's tta_model, fed by its tta_pipeline (the test
    size scaled to a 64 px image): its prediction is the argmax of the class probabilities of
    every (scale, flip) view, each view flipped back and resized to the image, averaged. That
    average is computed here by hand: resize, flip, normalise, model logits, flip back,
    bilinear resize, softmax."""
    import glob

    import mmcv
    import torch.nn.functional as F
    from mmengine.dataset import Compose, pseudo_collate

    from mmseg.registry import MODELS

    cfg = Config.fromfile(UPERNET_MINI)
    assert cfg.tta_model.type == "SegTTAModel"
    resizes, flips = cfg.tta_pipeline[1].transforms[:2]
    assert [t.scale for t in resizes] == [(int(2048 * r), int(512 * r))
                                          for r in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)]
    assert [(t.prob, t.direction) for t in flips] == [(0.0, "horizontal"), (1.0, "horizontal")]
    for t in resizes:  # the same ratios of a 64 px test size (4:1 box, as 2048x512)
        t.scale = (t.scale[0] // 8, t.scale[1] // 8)
    model = _tiny_model(UPERNET_MINI, {"model.decode_head.num_classes": 5,
                                       "model.auxiliary_head.num_classes": 5}).eval()
    tta = MODELS.build(dict(cfg.tta_model, module=model))
    img_path = sorted(glob.glob(os.path.join(ade["root"], "images", "validation", "*.jpg")))[0]
    seg_path = img_path.replace("images", "annotations").replace(".jpg", ".png")
    views = Compose(cfg.tta_pipeline)(dict(img_path=img_path, seg_map_path=seg_path,
                                           reduce_zero_label=True, seg_fields=[]))
    assert len(views["inputs"]) == 12
    with torch.no_grad():
        merged = tta.test_step(pseudo_collate([views]))[0].pred_sem_seg.data[0]

    img = mmcv.imread(img_path)  # BGR, as LoadImageFromFile
    h, w = img.shape[:2]
    mean = torch.tensor(cfg.model.data_preprocessor.mean).view(3, 1, 1)
    std = torch.tensor(cfg.model.data_preprocessor.std).view(3, 1, 1)
    probs = []
    with torch.no_grad():
        for t in resizes:
            sw, sh = t.scale
            f = min(max(sw, sh) / max(h, w), min(sw, sh) / min(h, w))  # keep_ratio
            size = (int(w * f + 0.5), int(h * f + 0.5))
            small = mmcv.imresize(img, size)
            for flip in (False, True):
                x = small[:, ::-1] if flip else small
                x = torch.from_numpy(x[..., ::-1].copy()).permute(2, 0, 1).float()  # to RGB
                x = ((x - mean) / std)[None]
                meta = [dict(img_shape=x.shape[2:], ori_shape=(h, w), pad_shape=x.shape[2:])]
                logits = model.encode_decode(x, meta)
                if flip:
                    logits = logits.flip(-1)
                logits = F.interpolate(logits, size=(h, w), mode="bilinear",
                                       align_corners=False)
                probs.append(logits[0].softmax(0))
    mean_prob = torch.stack(probs).mean(0)
    top2 = mean_prob.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-5  # pixels whose argmax no rounding can change
    assert clear.float().mean() > 0.95
    assert torch.equal(merged[clear], mean_prob.argmax(0)[clear])
    single = probs[4].argmax(0)  # the 1.0 scale, not flipped: TTA is not a no-op
    assert not torch.equal(single, mean_prob.argmax(0))


# ------------------------------------------------------------------------------ Runner: mmdet
DET_SIZE = 96


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    return demo_data.make_coco_instances(str(root), n_train=4, n_val=2, size=DET_SIZE, seed=0,
                                         max_objects=3)


def test_runner_trains_mask_rcnn_mini_and_coco_metric(coco, tmp_path):
    s = DET_SIZE
    classes = list(coco["classes"])
    ds = dict(type="CocoDataset", data_root="", metainfo=dict(classes=classes),
              backend_args=None)
    train = [dict(type="LoadImageFromFile"),
             dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
             dict(type="RandomChoiceResize", scales=[(s, s), (s + 16, s + 16)], keep_ratio=True),
             dict(type="RandomFlip", prob=0.5), dict(type="PackDetInputs")]
    test = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=(s, s), keep_ratio=True),
            dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
            dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape",
                                                  "img_shape", "scale_factor"))]
    loader = dict(num_workers=0, persistent_workers=False)
    val_ds = dict(ds, ann_file=coco["val"]["ann_file"],
                  data_prefix=dict(img=coco["val"]["img_dir"] + "/"), test_mode=True,
                  pipeline=test)
    evaluator = dict(type="CocoMetric", ann_file=coco["val"]["ann_file"],
                     metric=["bbox", "segm"], format_only=False, backend_args=None)
    body = dict(
        model=dict(
            backbone=dict(init_cfg=None, dilations=derive_dilations(s)),
            rpn_head=dict(anchor_generator=dict(scales=[2])),
            roi_head=dict(bbox_head=dict(num_classes=len(classes)),
                          mask_head=dict(num_classes=len(classes)),
                          bbox_roi_extractor=dict(roi_layer=dict(sampling_ratio=2)),
                          mask_roi_extractor=dict(roi_layer=dict(sampling_ratio=2))),
            train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=100),
                           rcnn=dict(sampler=dict(num=64))),
            test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100),
                          rcnn=dict(max_per_img=20, score_thr=0.0))),
        train_dataloader=dict(batch_size=2, **loader, batch_sampler=None, dataset=dict(
            ds, ann_file=coco["train"]["ann_file"],
            data_prefix=dict(img=coco["train"]["img_dir"] + "/"),
            filter_cfg=dict(filter_empty_gt=True, min_size=1), pipeline=train, _delete_=True)),
        val_dataloader=dict(batch_size=1, **loader, dataset=dict(val_ds, _delete_=True)),
        test_dataloader=dict(batch_size=1, **loader, dataset=dict(val_ds, _delete_=True)),
        val_evaluator=dict(evaluator, _delete_=True),
        test_evaluator=dict(evaluator, _delete_=True),
        train_cfg=dict(max_epochs=1, val_interval=1),
        param_scheduler=[dict(type="LinearLR", start_factor=0.5, by_epoch=False, begin=0,
                              end=2)],
        default_hooks=dict(checkpoint=dict(interval=1), logger=dict(interval=1),
                           visualization=dict(draw=False)),
        randomness=dict(seed=0),
        tta_pipeline=_tta_pipeline_scaled(MRCNN_MINI, [(s, s), (s + 32, s + 32)]),
    )
    cfg_path = _write_child_config(tmp_path / "mask_rcnn_tiny_run.py", MRCNN_MINI, body)
    wd = str(tmp_path / "work")
    runner = mm_train.main([cfg_path, "--work-dir", wd])
    assert runner.iter == 2 and runner.epoch == 1  # 4 images, batch 2, one epoch
    assert type(runner.model.backbone).__name__ == "DiNAT"
    scalars = runner.message_hub.log_scalars
    loss = scalars["train/loss"].current()
    assert np.isfinite(loss) and loss > 0
    assert os.path.isfile(os.path.join(wd, "epoch_1.pth"))
    # CocoMetric's AP equals COCOeval run here on the model's predictions, converted by hand
    # (xyxy -> xywh in image pixels, label index -> the annotation file's category id, masks ->
    # RLE): a category or scaling slip in either path would show.
    ours = _coco_ap_by_hand(runner, coco["val"]["ann_file"])
    for kind in ("bbox", "segm"):
        for key, i in ((f"coco/{kind}_mAP", 0), (f"coco/{kind}_mAP_50", 1)):
            assert scalars[f"val/{key}"].current() == pytest.approx(ours[kind][i], abs=5e-4)

    # tools/mm_test.py --tta: mmdet's DetTTAModel over two scales x flip (boxes only)
    tta = mm_test.main([cfg_path, os.path.join(wd, "epoch_1.pth"), "--tta", "--work-dir",
                        str(tmp_path / "tta")])
    assert 0.0 <= tta["coco/bbox_mAP"] <= 1.0 and not any("segm" in k for k in tta)


def _tta_pipeline_scaled(config, scales):
    """The config's DetTTAModel pipeline with its Resize scales replaced by ``scales``."""
    pipe = Config.fromfile(config).to_dict()["tta_pipeline"]
    resizes = pipe[1]["transforms"][0]
    assert [t["type"] for t in resizes] == ["Resize"] * len(resizes)
    pipe[1]["transforms"][0] = [dict(resizes[0], scale=sc) for sc in scales]
    return pipe


def _coco_ap_by_hand(runner, ann_file):
    """bbox and segm (AP, AP50) of the runner's model on its val set, through pycocotools."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(ann_file)
    cat_ids = sorted(gt.getCatIds())
    dets = []
    runner.model.eval()
    with torch.no_grad():
        for batch in runner.val_dataloader:
            for sample in runner.model.val_step(batch):
                p = sample.pred_instances
                for box, score, label, m in zip(p.bboxes.tolist(), p.scores.tolist(),
                                                p.labels.tolist(), p.masks.numpy()):
                    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                    rle["counts"] = rle["counts"].decode()
                    dets.append(dict(image_id=sample.img_id, category_id=cat_ids[label],
                                     score=score, segmentation=rle,
                                     bbox=[box[0], box[1], box[2] - box[0], box[3] - box[1]]))
    assert dets, "no predictions"
    out = {}
    for kind in ("bbox", "segm"):
        ev = COCOeval(gt, gt.loadRes(dets), kind)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        out[kind] = ev.stats[:2]
    return out


# ------------------------------------------------------------------------------ checkpoint safety
class _EvilGetattr:
    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer

        return (getattr, (HistoryBuffer, "__init__"))


class _EvilSystem:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("evil", [_EvilGetattr, _EvilSystem])
def test_mmengine_loading_still_refuses_code(evil, tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint

    patch_checkpoint_loader()
    path = str(tmp_path / "evil.pth")
    torch.save({"state_dict": {}, "x": evil()}, path)
    with pytest.raises((pickle.UnpicklingError, UnsafeCheckpointError)):
        _load_checkpoint(path, map_location="cpu")


class _EvilMarker:
    """Unpickling it calls open(path, "w"): the file ``path`` appears (a visible side effect)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _evil_checkpoint(folder, ext):
    marker = folder / "UNPICKLED_CODE_RAN"
    path = folder / f"evil{ext}"
    payload = {"state_dict": {"w": np.zeros(2)}, "meta": {"x": _EvilMarker(str(marker))}}
    if ext == ".pkl":  # detectron2-style plain pickle
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    else:
        torch.save(payload, path)
    return str(path), marker


@pytest.mark.parametrize("ext", [".pth", ".pkl"])
def test_the_evil_checkpoint_really_runs_code_when_unpickled(ext, tmp_path):
    """Negative control for the refusal tests: a plain unpickling creates the marker."""
    path, marker = _evil_checkpoint(tmp_path, ext)
    if ext == ".pkl":
        with open(path, "rb") as f:
            pickle.load(f)
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("route", ["init_cfg", "init_cfg_pkl", "load_from", "resume", "mm_test"])
def test_code_running_pickle_is_refused_on_every_loading_path(route, ade, tmp_path):
    evil, marker = _evil_checkpoint(tmp_path, ".pkl" if route == "init_cfg_pkl" else ".pth")
    wd = str(tmp_path / "work")
    if route.startswith("init_cfg"):
        m = DiNAT(**TINY, init_cfg=dict(type="Pretrained", checkpoint=evil))
        run = m.init_weights  # what the Runner calls
    elif route == "mm_test":
        cfg_path = _seg_config(tmp_path, ade)
        run = lambda: mm_test.main([cfg_path, evil, "--work-dir", wd])  # noqa: E731
    else:
        cfg_path = _seg_config(tmp_path, ade)
        flag = "--load-from" if route == "load_from" else "--resume"
        run = lambda: mm_train.main([cfg_path, "--work-dir", wd, flag, evil])  # noqa: E731
    with pytest.raises(UnsafeCheckpointError) as err:
        run()
    assert not marker.exists(), "the checkpoint's code ran"
    msg = str(err.value)
    assert evil in msg and "refused to load" in msg and "--trust-pickle" in msg
    assert "open" in msg  # names what the file asked for


def test_history_buffers_round_trip_under_weights_only(tmp_path):
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import _load_checkpoint

    patch_checkpoint_loader()
    hub = MessageHub.get_instance("dinat_test_hub")
    for v in (3.0, 1.0, 2.0):
        hub.update_scalar("train/loss", v)
    path = str(tmp_path / "hub.pth")
    torch.save({"message_hub": hub.state_dict(), "meta": {"seed": np.int64(3),
                                                          "arr": np.arange(3.0)}}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)  # torch's default (weights_only=True) alone refuses HistoryBuffer
    loaded = _load_checkpoint(path, map_location="cpu")
    b = loaded["message_hub"]["log_scalars"]["train/loss"]
    assert (b.min(), b.max(), b.current(), b.mean()) == (1.0, 3.0, 2.0, 2.0)
    assert np.array_equal(loaded["meta"]["arr"], np.arange(3.0))
    # the allow-list was scoped to that load
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


def test_a_crash_while_saving_keeps_the_last_checkpoint_intact(ade, tmp_path, monkeypatch):
    cfg_path = _seg_config(tmp_path, ade)
    from dinat_backbone.mmengine import build_runner, load_config, load_mmengine_checkpoint

    wd = str(tmp_path / "work")
    tiny = {  # the hook is under test here, not the model: a tiny DiNAT
        "model.backbone": dict(TINY, variant=None), "model.decode_head.in_channels": [16, 32, 64, 128],
        "model.auxiliary_head.in_channels": 64}
    cfg = load_config(cfg_path, work_dir=wd, cfg_options={
        **tiny, "train_cfg.max_iters": 2, "val_cfg": None, "val_dataloader": None, "val_evaluator": None,
        "default_hooks.checkpoint.interval": 1, "default_hooks.checkpoint.max_keep_ckpts": 1})
    runner = build_runner(cfg)
    from mmengine.fileio.backends import LocalBackend

    real_put = LocalBackend.put
    calls = []

    def dying_put(self, obj, filepath):  # the 2nd checkpoint: half the bytes reach disk, then die
        if str(filepath).endswith((".pth", ".tmp")):
            calls.append(str(filepath))
            if len(calls) == 2:
                real_put(self, obj[: len(obj) // 2], filepath)
                raise KeyboardInterrupt("killed while saving")
        return real_put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, "put", dying_put)
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    monkeypatch.setattr(LocalBackend, "put", real_put)
    assert len(calls) == 2 and calls[1].endswith(".tmp")
    with open(os.path.join(wd, "last_checkpoint")) as f:
        last = f.read().strip()
    # max_keep_ckpts=1 did not delete the previous checkpoint before the new one was complete,
    # and the truncated file never took a checkpoint's name.
    assert last == os.path.join(wd, "iter_1.pth")
    assert not os.path.exists(os.path.join(wd, "iter_2.pth"))
    assert load_mmengine_checkpoint(last)["meta"]["iter"] == 1
    # and the run resumes from it
    tiny_opts = ["model.backbone.variant=None", "model.backbone.embed_dim=16",
                 "model.backbone.depths=[1,1,1,1]", "model.backbone.num_heads=[1,1,2,2]",
                 "model.backbone.kernel_size=3", "model.backbone.dilations=[[1],[1],[1],[1]]",
                 "model.decode_head.in_channels=[16,32,64,128]",
                 "model.auxiliary_head.in_channels=64"]
    r2 = mm_train.main([cfg_path, "--work-dir", wd, "--resume", "--cfg-options", *tiny_opts,
                        "train_cfg.max_iters=2", "val_cfg=None", "val_dataloader=None",
                        "val_evaluator=None",
                        "default_hooks.checkpoint.interval=1",
                        "default_hooks.checkpoint.max_keep_ckpts=1"])
    assert r2.iter == 2
    assert sorted(f for f in os.listdir(wd) if f.endswith(".pth")) == ["iter_2.pth"]


def test_tool_options_are_checked(monkeypatch):
    from dinat_backbone.mmengine import init_distributed, load_config

    with pytest.raises(ValueError, match="launcher"):
        load_config(UPERNET_MINI, launcher="slurmish")
    cfg = load_config(UPERNET_MINI, launcher="pytorch")
    assert cfg.model_wrapper_cfg.type == "DinatDistributedDataParallel"
    if not torch.cuda.is_available():  # --launcher pytorch outside torchrun: says what to do
        for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            monkeypatch.delenv(k, raising=False)
        with pytest.raises(RuntimeError, match="torchrun --nproc_per_node"):
            init_distributed("pytorch")
    cfg = load_config(MRCNN_MINI, work_dir="/tmp/x", amp=True, resume=True,
                      cfg_options={"train_cfg.max_epochs": 1})
    assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.resume and cfg.load_from is None
    assert cfg.train_cfg.max_epochs == 1 and cfg.work_dir == "/tmp/x"
    cfg = load_config(MRCNN_MINI, resume="/ckpts/epoch_3.pth")
    assert cfg.resume and cfg.load_from == "/ckpts/epoch_3.pth"
    assert cfg.work_dir.endswith("mask-rcnn_dinat-mini_fpn_ms-crop-3x_coco")
