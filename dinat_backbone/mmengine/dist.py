"""Multi-process training on the CPU (gloo) with mmengine's own Runner and DDP wrapper.

mmengine 0.10's ``pytorch`` launcher calls ``torch.cuda.set_device`` and its default wrapper
passes ``device_ids=[LOCAL_RANK]``, both of which fail without CUDA. Two small pieces make
``torchrun --nproc_per_node N tools/mm_train.py CFG --launcher pytorch`` work on the CPU:

* :func:`init_distributed` starts ``torch.distributed`` (gloo on the CPU) from torchrun's
  environment before the Runner is built; the Runner then finds it initialised and skips its
  own ``init_dist``. With CUDA it does nothing: mmengine's launcher (NCCL) runs as before.
* :class:`DinatDistributedDataParallel` (in mmengine's ``MODEL_WRAPPERS``) is mmengine's
  ``MMDistributedDataParallel`` that leaves ``device_ids`` out for a CPU module, and switches
  SyncBN layers (CUDA only in torch) to BN there, saying so in the log.
"""
from __future__ import annotations

import logging
import os

import torch
import torch.distributed as torch_dist
from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
from mmengine.registry import MODEL_WRAPPERS

__all__ = ["DinatDistributedDataParallel", "init_distributed"]

_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def init_distributed(launcher: str, backend: str = "gloo", timeout_s: int = 1800) -> bool:
    """Initialise torch.distributed for a CPU run started by torchrun; True if this call did."""
    if launcher == "none" or torch.cuda.is_available() or torch_dist.is_initialized():
        return False
    if launcher != "pytorch":
        raise ValueError(f"launcher={launcher!r} without CUDA: only 'pytorch' (torchrun) is "
                         "supported on the CPU. Fix: start with torchrun --nproc_per_node N ... "
                         "--launcher pytorch")
    missing = [k for k in _TORCHRUN_ENV if k not in os.environ]
    if missing:
        raise RuntimeError(f"--launcher pytorch needs torchrun's environment; {missing} not set. "
                           "Fix: start with torchrun --nproc_per_node N tools/mm_train.py ... "
                           "--launcher pytorch (or use --launcher none)")
    from datetime import timedelta

    torch_dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return True


@MODEL_WRAPPERS.register_module()
class DinatDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that also wraps a CPU module (no ``device_ids``, BN for SyncBN).

    mmengine's Runner passes ``device_ids=[LOCAL_RANK]``; that is kept for a CUDA module.
    """

    def __init__(self, module, device_ids=None, **kwargs):
        if all(p.device.type == "cpu" for p in module.parameters()):
            device_ids = None
            if any(isinstance(m, torch.nn.SyncBatchNorm) for m in module.modules()):
                print_log("DinatDistributedDataParallel: SyncBatchNorm runs only on CUDA; on "
                          "the CPU its layers become BatchNorm (statistics per process)",
                          logger="current", level=logging.WARNING)
                module = revert_sync_batchnorm(module)
        super().__init__(module=module, device_ids=device_ids, **kwargs)
