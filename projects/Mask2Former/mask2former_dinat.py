"""Glue between dinat-backbone and a Mask2Former checkout (facebookresearch/Mask2Former).

Mask2Former is a project folder, not a package: its ``mask2former`` package and ``train_net.py``
sit at the root of a git checkout. This module finds that checkout, makes ``mask2former``
importable, registers DiNAT (``import dinat_backbone.detectron2`` registers ``D2DiNAT`` in
detectron2's BACKBONE_REGISTRY, which Mask2Former's ``build_backbone`` reads) and loads
Mask2Former's own ``train_net.py`` with these changes:

* its config gets ``MODEL.DINAT.*`` (``add_dinat_config``) next to ``add_maskformer2_config``;
* checkpoints load through ``DinatCheckpointer``, so ``MODEL.WEIGHTS`` may be a released DiNAT
  ImageNet checkpoint (``.pth``, transformers, converted) as well as a Mask2Former checkpoint;
* DiNAT's no-weight-decay parameters (``dinat_backbone.backbone.is_no_weight_decay``: the
  relative position bias tables ``*.rpb`` and the norms) get weight decay 0, as the authors'
  recipe (Mask2Former only exempts Swin's ``relative_position_bias_table``);
* datasets named ``dinat_demo_coco_{train,val}`` (the synthetic demo data) are generated and
  registered when a config names them (``DATASETS.DINAT_DEMO.*``);
* ``--num-gpus N`` without CUDA trains N CPU processes over gloo
  (``dinat_backbone.detectron2.ddp.cpu_ddp``).

Mask2Former's own requirements (its ``requirements.txt``: timm, scipy, ...) are checked before it
is imported; a missing one raises an ImportError naming it and the command that installs them all
(``pip install -e '.[mask2former]'`` from the dinat-backbone checkout).

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
import re
import sys
import types
from typing import List, Optional

ENV_VAR = "MASK2FORMER_ROOT"
_MSDA = "MultiScaleDeformableAttention"
INSTALL_EXTRA = "pip install -e '.[mask2former]'"
# requirement name -> module name, where they differ
_MODULE_OF = {"cython": "Cython", "scikit-image": "skimage", "opencv-python": "cv2",
              "pillow": "PIL", "pyyaml": "yaml"}
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


def _requirements(root: str) -> List[str]:
    """Requirement names in ``<root>/requirements.txt`` (Mask2Former's own list)."""
    path = os.path.join(root, "requirements.txt")
    if not os.path.isfile(path):
        return []
    names = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith(("-", "git+", "http")):
                names.append(re.split(r"[<>=!~\[;@ ]", line, maxsplit=1)[0].strip())
    return names


def _importable(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_requirements(root: Optional[str] = None) -> None:
    """Raise an ImportError naming every missing requirement of Mask2Former (its
    requirements.txt) and how to install them."""
    root = find_mask2former_root(root)
    wanted = _requirements(root)
    missing = [r for r in wanted if not _importable(_MODULE_OF.get(r.lower(), r))]
    if missing:
        raise ImportError(
            f"Mask2Former ({root}) needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed (its requirements.txt: "
            f"{' '.join(wanted)}). Install them with {INSTALL_EXTRA} from the dinat-backbone "
            f"checkout, or pip install -r {os.path.join(root, 'requirements.txt')}.")


def import_mask2former(root: Optional[str] = None, use_msda_fallback: bool = True):
    """Make the checkout importable, register D2DiNAT and return the ``mask2former`` package."""
    from dinat_backbone.detectron2 import require_detectron2

    require_detectron2()  # and importing dinat_backbone.detectron2 registered D2DiNAT
    root = find_mask2former_root(root)
    check_requirements(root)
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

    cfg = d2_get_cfg()
    add_deeplab_config(cfg)
    m2f.add_maskformer2_config(cfg)
    _add_dinat_keys(cfg)
    return cfg


def _add_dinat_keys(cfg) -> None:
    """``MODEL.DINAT.*`` and the demo data's ``DATASETS.DINAT_DEMO.*``."""
    from dinat_backbone.detectron2 import add_dinat_config
    from dinat_backbone.detectron2.demo import add_demo_config

    add_dinat_config(cfg)
    add_demo_config(cfg)


def load_train_net(root: Optional[str] = None):
    """Mask2Former's ``train_net.py`` as a module, with the changes of the module docstring."""
    from dinat_backbone.detectron2 import DinatCheckpointer
    from dinat_backbone.detectron2.ddp import cpu_ddp
    from dinat_backbone.detectron2.demo import register_demo_datasets_for
    from dinat_backbone.detectron2.optim import apply_no_weight_decay

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
        _add_dinat_keys(cfg)

    mod.add_maskformer2_config = add_maskformer2_and_dinat_config
    original_setup = mod.setup

    def setup(args):  # + the synthetic demo datasets (dinat_demo_coco_*), when a config names them
        cfg = original_setup(args)
        register_demo_datasets_for(cfg)
        return cfg

    mod.setup = setup
    mod.DetectionCheckpointer = DinatCheckpointer
    base = mod.Trainer

    class Trainer(base):
        """Mask2Former's Trainer + DinatCheckpointer + DiNAT's no-weight-decay parameters."""

        def __init__(self, cfg):
            with cpu_ddp(cfg):  # several processes on CPUs: DDP without device_ids
                super().__init__(cfg)
            DinatCheckpointer.attach(self, cfg)

        @classmethod
        def build_optimizer(cls, cfg, model):
            optimizer = super().build_optimizer(cfg, model)
            apply_no_weight_decay(optimizer, model)
            return optimizer

    mod.Trainer = Trainer
    return mod
