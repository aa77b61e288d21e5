"""detectron2 adapter: DiNAT as a registered detectron2 backbone.

Importing this package (with detectron2 installed) registers in detectron2's
``BACKBONE_REGISTRY``, and does nothing else:

* ``D2DiNAT``: the bottom-up backbone, outputs ``res2..res5`` (strides 4..32) by default, any
  subset through ``MODEL.DINAT.OUT_FEATURES`` (``stem`` too). Usable from YAML
  (``MODEL.BACKBONE.NAME: "D2DiNAT"``, e.g. inside Mask2Former) and from LazyConfig
  (``L(D2DiNAT)(variant="mini", dilations="coco", drop_path_rate=0.2)``);
* ``build_dinat_fpn_backbone`` (detectron2's FPN + LastLevelMaxPool on D2DiNAT) and
  ``build_retinanet_dinat_fpn_backbone`` (FPN + LastLevelP6P7).

Modules: ``config`` (``add_dinat_config``: the ``MODEL.DINAT.*`` keys, and their translation to
a DinatConfig), ``backbone``, ``checkpoint`` (``DinatCheckpointer``: every file read without
running code; released DiNAT checkpoints load into the backbone), ``optim`` (parameter groups
with the core's no-weight-decay policy), and, imported only by whoever needs them, ``demo``
(the synthetic demo dataset) and ``ddp`` (multi-process training on CPUs).

Without detectron2 the package still imports (``BACKBONE_PREFIX``, ``add_dinat_config``,
``dinat_config_from_cfg`` need none); the detectron2-dependent names then raise an ImportError
that says how to install detectron2.
"""
from __future__ import annotations

from ._compat import INSTALL_HINT, detectron2_available, require_detectron2
from .config import (
    BACKBONE_PREFIX,
    D2_STAGE_NAMES,
    MASK2FORMER_BACKBONE_PREFIX,
    add_dinat_config,
    dinat_config_from_cfg,
)

__all__ = [
    "BACKBONE_PREFIX",
    "MASK2FORMER_BACKBONE_PREFIX",
    "D2_STAGE_NAMES",
    "INSTALL_HINT",
    "detectron2_available",
    "require_detectron2",
    "add_dinat_config",
    "dinat_config_from_cfg",
    # detectron2-dependent:
    "D2DiNAT",
    "build_dinat_fpn_backbone",
    "build_retinanet_dinat_fpn_backbone",
    "DinatCheckpointer",
    "build_dinat_optimizer_params",
    "get_dinat_optimizer_params",
]

if detectron2_available():
    from .backbone import D2DiNAT, build_dinat_fpn_backbone, build_retinanet_dinat_fpn_backbone
    from .checkpoint import DinatCheckpointer
    from .optim import build_dinat_optimizer_params, get_dinat_optimizer_params

_NEEDS_DETECTRON2 = frozenset(__all__[__all__.index("D2DiNAT"):])
# names that moved to the demo module (imported on first use, not by this package)
_DEMO_NAMES = frozenset({"register_demo_datasets", "register_demo_datasets_for", "DEMO_PREFIX"})


def __getattr__(name: str):  # PEP 562: reached only for names not defined above
    if name in _NEEDS_DETECTRON2 or name in _DEMO_NAMES:
        require_detectron2()
    if name in _DEMO_NAMES:
        from . import demo

        return getattr(demo, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
