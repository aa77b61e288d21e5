"""OpenMMLab adapter: the DiNAT backbone for mmdet 3.x and mmseg 1.x configs.

Add this package to a config and name the backbone ``DiNAT``::

    custom_imports = dict(imports=['dinat_backbone.mmengine'], allow_failed_imports=False)
    model = dict(backbone=dict(
        type='DiNAT', variant='mini', dilations='coco', drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='dinat_mini_in1k_224.pth')))
    optim_wrapper = dict(constructor='DinatOptimWrapperConstructor', ...)

Importing it only registers names in mmengine's root registries (found from the mmdet and
mmseg scopes too):

* ``MODELS``: :class:`DiNAT` (``backbone.py``);
* ``HOOKS``: :class:`AtomicCheckpointHook`, :class:`TorchRNGStateHook`; file backend
  ``dinat_atomic_local`` (``hooks.py``);
* ``OPTIM_WRAPPER_CONSTRUCTORS``: :class:`DinatOptimWrapperConstructor` (``optim.py``): no
  weight decay on the backbone's norms and RPB tables, from the core's policy;
* ``MODEL_WRAPPERS``: :class:`DinatDistributedDataParallel` (``dist.py``): DDP on the CPU.

:func:`patch_checkpoint_loader` (``checkpoint.py``) makes mmengine's ``load_from`` /
``--resume`` read through the project's safe reader; :func:`load_config` (``runner.py``, used
by tools/mm_train.py and tools/mm_test.py) calls it. Nothing in the rest of
``dinat_backbone`` imports this package: ``import dinat_backbone`` never needs OpenMMLab.
"""
try:
    import mmengine  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without mmengine
    raise ImportError(
        "dinat_backbone.mmengine needs OpenMMLab (mmengine, and mmdet or mmseg with a compiled "
        "mmcv). Install with `bash tools/install.sh` from the dinat-backbone checkout, or "
        "`pip install 'dinat-backbone[mm]'` after building mmcv 2.1 with its ops "
        f"(see README.md). Original error: {e}") from e

from .backbone import ADAPTER_FIELDS, DiNAT
from .checkpoint import load_mmengine_checkpoint, mmengine_safe_globals, patch_checkpoint_loader
from .dist import DinatDistributedDataParallel, init_distributed
from .hooks import AtomicCheckpointHook, AtomicLocalBackend, TorchRNGStateHook
from .optim import DinatOptimWrapperConstructor, no_decay_custom_keys
from .runner import build_runner, load_config

__all__ = ["DiNAT", "ADAPTER_FIELDS", "AtomicCheckpointHook", "AtomicLocalBackend",
           "TorchRNGStateHook", "DinatOptimWrapperConstructor", "no_decay_custom_keys",
           "DinatDistributedDataParallel", "init_distributed", "patch_checkpoint_loader",
           "load_mmengine_checkpoint", "mmengine_safe_globals", "load_config", "build_runner"]
