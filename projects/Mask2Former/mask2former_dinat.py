"""Glue between dinat-backbone and a Mask2Former checkout (facebookresearch/Mask2Former).

Mask2Former is a project folder, not a package: its ``mask2former`` package and ``train_net.py``
sit at the root of a git checkout. This module finds that checkout, makes ``mask2former``
importable, registers DiNAT (``import dinat_backbone.detectron2`` registers ``D2DiNAT`` in
detectron2's BACKBONE_REGISTRY, which Mask2Former's ``build_backbone`` reads) and loads
Mask2Former's own ``train_net.py`` with three changes:

* its config gets ``MODEL.DINAT.*`` (``add_dinat_config``) next to ``add_maskformer2_config``;
* checkpoints load through ``DinatCheckpointer``, so ``MODEL.WEIGHTS`` may be a released DiNAT
  ImageNet checkpoint (``.pth``, transformers, converted) as well as a Mask2Former checkpoint;
* the relative position bias tables (``*.rpb``) get ``SOLVER.WEIGHT_DECAY_RPB`` (0.0) as the
  authors' recipe (Mask2Former only exempts Swin's ``relative_position_bias_table``);
* datasets named ``dinat_demo_coco_{train,val}`` (the synthetic demo data) are generated and
  registered when a config names them.

Where the checkout is, in this order: the ``root`` argument (``--mask2former-root``), the
environment variable ``MASK2FORMER_ROOT``, an entry of ``sys.path`` / ``PYTHONPATH`` holding
``mask2former/__init__.py``.

Mask2Former's pixel decoder imports its compiled CUDA op ``MultiScaleDeformableAttention`` at
import time and raises when it is missing, although its forward falls back to a pure-PyTorch
implementation when the op fails (its "CPU" path). Without the compiled op (a CPU machine),
``use_msda_fallback=True`` registers a placeholder module of that name whose functions raise, so
that Mask2Former imports and runs its own PyTorch fallback. With the op compiled, nothing changes.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import types
from typing import Optional

ENV_VAR = "MASK2FORMER_ROOT"
_MSDA = "MultiScaleDeformableAttention"
logger = logging.getLogger(__name__)


def _is_checkout(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "mask2former", "__init__.py"))


def find_mask2former_root(root: Optional[str] = None) -> str:
    """The Mask2Former checkout to use (see the module docstring); raises with instructions."""
    tried = []
    for where, path in (("--mask2former-root", root), (ENV_VAR, os.environ.get(ENV_VAR))):
        if path:
            path = os.path.abspath(os.path.expanduser(path))
            if _is_checkout(path):
                return path
            tried.append(f"{where}={path!r} (no mask2former/__init__.py there)")
    for path in sys.path:
        if path and _is_checkout(os.path.abspath(path)):
            return os.path.abspath(path)
    raise FileNotFoundError(
        "Mask2Former checkout not found"
        + (f": {'; '.join(tried)}" if tried else "")
        + ". Clone it (git clone https://github.com/facebookresearch/Mask2Former.git) and point "
        f"at it with --mask2former-root PATH, the environment variable {ENV_VAR}=PATH, or "
        "PYTHONPATH=PATH.")


def msda_compiled() -> bool:
    """True when Mask2Former's compiled MultiScaleDeformableAttention op imports."""
    mod = sys.modules.get(_MSDA)
    if mod is not None:
        return not getattr(mod, "_dinat_placeholder", False)
    try:
        importlib.import_module(_MSDA)
        return True
    except ImportError:
        return False


def _install_msda_placeholder() -> None:
    mod = types.ModuleType(_MSDA)
    mod._dinat_placeholder = True  # type: ignore[attr-defined]

    def _unavailable(*args, **kwargs):
        raise RuntimeError(
            f"{_MSDA} (Mask2Former's compiled CUDA op) is not built; Mask2Former falls back to "
            "its PyTorch implementation. Build the op for speed: cd mask2former/modeling/"
            "pixel_decoder/ops && sh make.sh")

    mod.ms_deform_attn_forward = _unavailable  # type: ignore[attr-defined]
    mod.ms_deform_attn_backward = _unavailable  # type: ignore[attr-defined]
    sys.modules[_MSDA] = mod


def import_mask2former(root: Optional[str] = None, use_msda_fallback: bool = True):
    """Make the checkout importable, register D2DiNAT and return the ``mask2former`` package."""
    import dinat_backbone.detectron2  # noqa: F401  (registers D2DiNAT; raises if no detectron2)

    dinat_backbone.detectron2._require_detectron2()
    root = find_mask2former_root(root)
    if root not in sys.path:
        sys.path.insert(0, root)
    if getattr(sys.modules.get(_MSDA), "_dinat_placeholder", False):
        pass  # fallback already in place
    elif not msda_compiled():
        if not use_msda_fallback:
            raise ImportError(f"Mask2Former's {_MSDA} op is not compiled (cd {root}/mask2former/"
                              "modeling/pixel_decoder/ops && sh make.sh), and the PyTorch "
                              "fallback was not allowed")
        logger.warning(f"{_MSDA} is not compiled: Mask2Former will use its PyTorch fallback "
                       "(slow; fine on a CPU)")
        _install_msda_placeholder()
    return importlib.import_module("mask2former")


def get_cfg(root: Optional[str] = None):
    """detectron2 config with Mask2Former's keys (and DeepLab's) and ``MODEL.DINAT.*``."""
    m2f = import_mask2former(root)
    from detectron2.config import get_cfg as d2_get_cfg
    from detectron2.projects.deeplab import add_deeplab_config

    from dinat_backbone.detectron2 import add_dinat_config

    cfg = d2_get_cfg()
    add_deeplab_config(cfg)
    m2f.add_maskformer2_config(cfg)
    add_dinat_config(cfg)
    return cfg


def load_train_net(root: Optional[str] = None):
    """Mask2Former's ``train_net.py`` as a module, with the changes of the module docstring."""
    import weakref

    from dinat_backbone.detectron2 import DinatCheckpointer, add_dinat_config

    import_mask2former(root)
    root = find_mask2former_root(root)
    path = os.path.join(root, "train_net.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {root} a Mask2Former checkout?")
    spec = importlib.util.spec_from_file_location("mask2former_train_net", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    original_add = mod.add_maskformer2_config

    def add_maskformer2_and_dinat_config(cfg):
        original_add(cfg)
        add_dinat_config(cfg)

    mod.add_maskformer2_config = add_maskformer2_and_dinat_config
    original_setup = mod.setup

    def setup(args):  # + the synthetic demo datasets (dinat_demo_coco_*), when a config names them
        from dinat_backbone.detectron2 import register_demo_datasets_for

        cfg = original_setup(args)
        register_demo_datasets_for(cfg)
        return cfg

    mod.setup = setup
    mod.DetectionCheckpointer = DinatCheckpointer
    base = mod.Trainer

    class Trainer(base):
        """Mask2Former's Trainer + DinatCheckpointer + no weight decay on the RPB tables."""

        def __init__(self, cfg):
            super().__init__(cfg)
            from detectron2.engine import hooks

            ck = DinatCheckpointer(self._trainer.model, cfg.OUTPUT_DIR,
                                   trainer=weakref.proxy(self))
            for h in self._hooks:
                if isinstance(h, hooks.PeriodicCheckpointer):
                    h.checkpointer = ck
            self.checkpointer = ck

        @classmethod
        def build_optimizer(cls, cfg, model):
            optimizer = super().build_optimizer(cfg, model)
            rpb = {id(p) for n, p in model.named_parameters() if n.endswith(".rpb")}
            wd = cfg.SOLVER.get("WEIGHT_DECAY_RPB", 0.0)
            for group in optimizer.param_groups:
                if group["params"] and all(id(p) in rpb for p in group["params"]):
                    group["weight_decay"] = wd
            return optimizer

    mod.Trainer = Trainer
    return mod
