"""Every shipped mmdet / mmseg config loads with Config.fromfile, inherits the frameworks' packaged
bases, builds its model, and carries the authors' settings (their published tables, written out
independently below: parameter counts, drop path, dilations, optimiser). The optimiser is checked
on the param groups mmengine builds from the config: no weight decay exactly on the backbone's
LayerNorm parameters and RPB tables (found here by module type, not by name), the backbone
learning-rate multiplier where the recipe has one.

The DiNAT-mini models are built on the CPU with random weights (and checked finite); the
others on the meta device, which builds the same module tree without allocating or
initialising 50-260M parameters (random init of DiNAT-tiny alone takes seconds on 2 cores). The
forward / backward and training tests in test_mmengine.py run these configs on real data.
"""
import copy
import glob
import importlib
import os

import pytest

mmengine = pytest.importorskip("mmengine", reason="OpenMMLab not installed (bash tools/install.sh)")
pytest.importorskip("mmcv._ext", reason="mmcv with compiled ops not installed (tools/install.sh)")
pytest.importorskip("mmdet.models", reason="mmdet not installed (tools/install.sh)")
pytest.importorskip("mmseg.models", reason="mmseg not installed (tools/install.sh)")

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "mmdet", "*.py"))
                 + glob.glob(os.path.join(ROOT, "configs", "mmseg", "*.py")))
NAMES = [os.path.relpath(p, os.path.join(ROOT, "configs")) for p in CONFIGS]

# Parameter counts (millions) of the authors' models, and their downstream drop path.
REF_PARAMS = {
    "mmseg/upernet_dinat-mini_8xb2-160k_ade20k-512x512.py": 50,
    "mmseg/upernet_dinat-tiny_8xb2-160k_ade20k-512x512.py": 58,
    "mmseg/upernet_dinat-small_8xb2-160k_ade20k-512x512.py": 82,
    "mmseg/upernet_dinat-base_8xb2-160k_ade20k-512x512.py": 123,
    "mmseg/upernet_dinat-large_8xb2-160k_ade20k-640x640.py": 238,
    "mmdet/mask-rcnn_dinat-mini_fpn_ms-crop-3x_coco.py": 40,
    "mmdet/mask-rcnn_dinat-tiny_fpn_ms-crop-3x_coco.py": 48,
    "mmdet/mask-rcnn_dinat-small_fpn_ms-crop-3x_coco.py": 70,
    "mmdet/cascade-mask-rcnn_dinat-large_fpn_4conv1fc-giou_ms-crop-3x_coco.py": 258,
}
SEG_DROP_PATH = {"mini": 0.2, "tiny": 0.3, "small": 0.5, "base": 0.5, "large": 0.3}
MRCNN_DROP_PATH = {"mini": 0.2, "tiny": 0.2, "small": 0.35}
CASCADE_DROP_PATH = {"mini": 0.2, "tiny": 0.3, "small": 0.5, "base": 0.6, "large": 0.6}
VARIANT = {  # embed_dim, depths, num_heads, kernel
    "mini": (64, [3, 4, 6, 5], [2, 4, 8, 16], 7),
    "tiny": (64, [3, 4, 18, 5], [2, 4, 8, 16], 7),
    "small": (96, [3, 4, 18, 5], [3, 6, 12, 24], 7),
    "base": (128, [3, 4, 18, 5], [4, 8, 16, 32], 7),
    "large": (192, [3, 4, 18, 5], [6, 12, 24, 48], 7),
    "large-k11": (192, [3, 4, 18, 5], [6, 12, 24, 48], 11),
}
# First layers of each stage of the authors' dilation lists.
DILATIONS = {
    "coco": [[1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 7], [1, 3, 1, 3, 1]],
    "ade512": [[1, 16, 1], [1, 4, 1, 8], [1, 2, 1, 3, 1, 4], [1, 2, 1, 2, 1]],
    "ade640": [[1, 20, 1], [1, 5, 1, 10], [1, 2, 1, 3, 1, 4, 1, 5], [1, 2, 1, 2, 1]],
    "m2f": [[1, 14, 1], [1, 4, 1, 7], [1, 2, 1, 3], [1, 1, 1, 1, 1]],
}


def _variant(name):
    for v in ("large-k11", "mini", "tiny", "small", "base", "large"):
        if f"dinat-{v}_" in name:
            return v
    raise AssertionError(f"no variant in {name}")


def test_every_family_is_shipped():
    expected = (
        [f"mmseg/upernet_dinat-{v}_8xb2-160k_ade20k-512x512.py"
         for v in ("mini", "tiny", "small", "base")]
        + ["mmseg/upernet_dinat-large_8xb2-160k_ade20k-640x640.py"]
        + [f"mmdet/mask-rcnn_dinat-{v}_fpn_ms-crop-3x_coco.py" for v in ("mini", "tiny", "small")]
        + [f"mmdet/cascade-mask-rcnn_dinat-{v}_fpn_4conv1fc-giou_ms-crop-3x_coco.py"
           for v in ("mini", "tiny", "small", "base", "large")]
        + [f"mmdet/mask2former_dinat-{v}_{s}_coco{t}.py"
           for v, s in (("tiny", "8xb2-lsj-50e"), ("large-k11", "16xb1-lsj-100e"))
           for t in ("", "-panoptic")]
        + ["mmseg/mask2former_dinat-tiny_8xb2-160k_ade20k-512x512.py",
           "mmseg/mask2former_dinat-large-k11_8xb2-160k_ade20k-640x640.py"])
    assert sorted(expected) == sorted(NAMES)


@pytest.mark.parametrize("path", CONFIGS, ids=NAMES)
def test_config_loads_builds_and_matches_the_recipe(path):
    name = os.path.relpath(path, os.path.join(ROOT, "configs"))
    with open(path) as f:
        text = f.read()
    # Inherits the frameworks' packaged bases (directly or through a sibling config).
    assert "_base_ = [" in text and ("mmdet::" in text or "mmseg::" in text or "'./" in text)
    cfg = Config.fromfile(path)
    assert "_delete_" not in str(cfg.model)  # every _delete_ was consumed by a merge
    assert "dinat_backbone.mmengine" in cfg.custom_imports["imports"]
    assert cfg.default_scope == name.split("/")[0]
    assert cfg.default_hooks.checkpoint.type == "AtomicCheckpointHook"
    bb = cfg.model.backbone
    assert bb.type == "DiNAT" and tuple(bb.out_indices) == (0, 1, 2, 3)
    assert bb.init_cfg.type == "Pretrained" and bb.init_cfg.checkpoint.endswith(".pth")
    v = _variant(name)

    init_default_scope(cfg.default_scope)
    registry = importlib.import_module(cfg.default_scope + ".registry").MODELS
    if v != "mini":
        with torch.device("meta"):
            model = registry.build(cfg.model)
    else:
        model = registry.build(cfg.model)
        assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in model.parameters())
    backbone = model.backbone
    c = backbone.config
    embed, depths, heads, kernel = VARIANT[v]
    assert (c.embed_dim, c.depths, c.num_heads, c.kernel_size) == (embed, depths, heads, kernel)
    assert backbone.channels == [embed, 2 * embed, 4 * embed, 8 * embed]
    assert c.layer_scale_init_value == (1e-5 if v == "base" else 0.0)
    # neck / decode head widths agree with the backbone's channels
    if "neck" in cfg.model:
        assert list(cfg.model.neck.in_channels) == backbone.channels
    head = cfg.model.get("decode_head") or cfg.model.get("panoptic_head")
    if head is not None:
        assert list(head.in_channels) == backbone.channels
    if "auxiliary_head" in cfg.model:
        assert cfg.model.auxiliary_head.in_channels == backbone.channels[2]

    n = sum(p.numel() for p in model.parameters()) / 1e6
    if name in REF_PARAMS:
        assert round(n) == REF_PARAMS[name], f"{name}: {n:.1f}M parameters"

    # The authors' dilations and drop path for the task.
    if "upernet" in name:
        dil = DILATIONS["ade640" if v == "large" else "ade512"]
        assert c.drop_path_rate == SEG_DROP_PATH[v]
    elif "mask2former" in name:
        dil = DILATIONS["m2f"] if v == "large-k11" else (
            DILATIONS["ade512"] if "ade20k" in name else DILATIONS["coco"])
        assert c.drop_path_rate == 0.3
    else:
        dil = DILATIONS["coco"]
        table = CASCADE_DROP_PATH if "cascade" in name else MRCNN_DROP_PATH
        assert c.drop_path_rate == table[v]
    for stage, want in zip(c.dilations, dil):
        assert stage[:len(want)] == want

    # Test-time augmentation (tools/mm_test.py --tta)
    if "ade20k" in name:  # the authors' recipe: 0.5 ... 1.75 x the test size, and flipped
        assert cfg.tta_model.type == "SegTTAModel"
        side = 640 if name.endswith("640x640.py") else 512
        test_resize = [t for t in cfg.test_dataloader.dataset.pipeline if t.type == "Resize"]
        assert tuple(test_resize[0].scale) == (4 * side, side)
        resizes, flips = cfg.tta_pipeline[1].transforms[:2]
        assert [tuple(t.scale) for t in resizes] == [
            (4 * side * r, side * r) for r in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)]
        assert sorted((t.prob, t.direction) for t in flips) == [(0.0, "horizontal"),
                                                                 (1.0, "horizontal")]
    elif "rcnn" in name:
        assert cfg.tta_model.type == "DetTTAModel"
        resizes, flips = cfg.tta_pipeline[1].transforms[:2]
        assert (1333, 800) in [tuple(t.scale) for t in resizes] and len(resizes) == 3
        assert sorted(t.prob for t in flips) == [0.0, 1.0]

    # Optimiser: AdamW; no decay on the backbone's norms / RPB tables, in the groups mmengine builds.
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == "AdamW"
    assert cfg.optim_wrapper.constructor == "DinatOptimWrapperConstructor"
    _check_param_groups(model, cfg.optim_wrapper, 0.1 if "mask2former" in name else 1.0)
    if "upernet" in name:
        assert (opt.lr, opt.weight_decay) == (6e-5, 0.01)
        sched = cfg.param_scheduler
        assert sched[0].type == "LinearLR" and sched[0].end == 1500
        assert sched[1].type == "PolyLR" and sched[1].power == 1.0 and sched[1].end == 160000
        assert cfg.train_cfg.max_iters == 160000 and cfg.train_dataloader.batch_size == 2
        crop = 640 if v == "large" else 512
        assert tuple(cfg.model.data_preprocessor.size) == (crop, crop)
        assert cfg.val_dataloader.batch_size == 1
    elif "mask2former" in name:
        assert opt.lr == 1e-4 and cfg.optim_wrapper.clip_grad.max_norm == 0.01
        if v == "large-k11" and "coco" in name:  # 100 epochs of 16 images, 200 queries
            assert (cfg.train_cfg.max_iters, cfg.train_dataloader.batch_size) == (737500, 1)
            assert cfg.param_scheduler.milestones == [655556, 710184]
            assert head.num_queries == 200
        elif v == "large-k11":
            assert head.num_queries == 100 and cfg.train_cfg.max_iters == 160000
    else:
        want_lr = 7.5e-5 if ("cascade" in name and v in ("base", "large")) else 1e-4
        assert (opt.lr, opt.weight_decay) == (want_lr, 0.05)
        assert cfg.train_cfg.max_epochs == 36
        milestones = [s for s in cfg.param_scheduler if s.type == "MultiStepLR"][0].milestones
        assert milestones == [27, 33]
        # multi-scale training 480..800 (shorter side), DETR-style crop branch
        scales = [t for t in cfg.train_dataloader.dataset.pipeline
                  if t.type == "RandomChoice"][0].transforms[0][0].scales
        assert min(s[0] for s in scales) == 480 and max(s[0] for s in scales) == 800


def _check_param_groups(model, optim_cfg, lr_mult):
    from mmengine.optim import build_optim_wrapper

    wrapper = build_optim_wrapper(model, copy.deepcopy(optim_cfg))
    lr, wd = optim_cfg.optimizer.lr, optim_cfg.optimizer.weight_decay
    group = {id(p): (g["lr"], g["weight_decay"]) for g in wrapper.optimizer.param_groups
             for p in g["params"]}
    bb = model.backbone
    no_decay = {id(p) for m in bb.modules() if isinstance(m, torch.nn.LayerNorm)
                for p in m.parameters(recurse=False)}
    no_decay |= {id(m.rpb) for m in bb.modules() if isinstance(getattr(m, "rpb", None),
                                                                torch.nn.Parameter)}
    assert len(no_decay) > 30
    for n, p in bb.named_parameters():
        want = (lr * lr_mult, 0.0 if id(p) in no_decay else wd)
        assert group[id(p)] == pytest.approx(want), n
