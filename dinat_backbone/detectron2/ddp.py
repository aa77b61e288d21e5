"""Multi-process training on CPUs with detectron2's own engine.

detectron2's ``launch`` starts one process per "GPU" and, without CUDA, joins them over gloo;
its ``DefaultTrainer`` then wraps the model as ``DistributedDataParallel(model,
device_ids=[local rank])`` (``detectron2.engine.defaults.create_ddp_model``), which DDP refuses
for a model on the CPU. :func:`cpu_ddp` is the one change needed: while it is open and the model
lives on the CPU, that wrapping passes ``device_ids=None`` (DDP's setting for CPU modules).
tools/train_net.py and the Mask2Former glue build their Trainers inside it.
"""
from __future__ import annotations

import contextlib
import functools

import detectron2.engine.defaults as _defaults
import detectron2.utils.comm as comm

__all__ = ["cpu_ddp"]


@contextlib.contextmanager
def cpu_ddp(cfg):
    """Within this context, detectron2's DDP wrapping works for a CPU model (see module doc).
    Does nothing for one process or a CUDA device."""
    if comm.get_world_size() == 1 or not str(cfg.MODEL.DEVICE).startswith("cpu"):
        yield
        return
    original = _defaults.create_ddp_model
    _defaults.create_ddp_model = functools.partial(original, device_ids=None)
    try:
        yield
    finally:
        _defaults.create_ddp_model = original
