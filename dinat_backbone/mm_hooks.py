"""mmengine hooks for exact resumption of interrupted training (needs mmengine).

``TorchRNGStateHook`` stores torch's random-number-generator state (CPU and every CUDA device)
in each checkpoint and puts it back when a run is resumed, right before the first iteration
after the resume point. mmengine's ``--resume`` restores weights, optimizer, schedulers and the
iteration count, and replays the data loader up to that iteration (so numpy / python ``random``
draws made by data augmentation are reproduced), but it only re-seeds torch: dropout and
stochastic depth would then draw different masks than the uninterrupted run. With this hook a
run killed with SIGKILL and resumed reaches bit-identical weights on the CPU with
``randomness=dict(seed=..., deterministic=True)`` (tests/test_resume.py).

Use it in a config::

    custom_imports = dict(imports=['dinat_backbone.mmengine', 'dinat_backbone.mm_hooks'],
                          allow_failed_imports=False)
    custom_hooks = [dict(type='TorchRNGStateHook')]

Checkpoints written atomically: ``dinat_backbone.mmengine.AtomicCheckpointHook``.
"""
from __future__ import annotations

from typing import Optional

import torch

try:
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("dinat_backbone.mm_hooks needs mmengine: pip install 'mmengine>=0.10.4,<0.11' "
                      "(or pip install -e .[mm])") from e

__all__ = ["TorchRNGStateHook"]

_KEY = "torch_rng_state"


@HOOKS.register_module(force=True)
class TorchRNGStateHook(Hook):
    """Save torch's RNG state in checkpoints; restore it when training resumes."""

    priority = "VERY_LOW"

    def __init__(self) -> None:
        self._pending: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint[_KEY] = state

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get(_KEY)
        if state is None:
            return
        # Applied at the next training iteration: the runner still builds and replays the
        # data loader between loading and training, and must not disturb the restored state.
        self._pending = state

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state["cpu"])
        cuda = state.get("cuda")
        if cuda is not None and torch.cuda.is_available():
            if len(cuda) != torch.cuda.device_count():
                runner.logger.warning(
                    f"TorchRNGStateHook: the checkpoint holds RNG states of {len(cuda)} CUDA "
                    f"devices, this run has {torch.cuda.device_count()}; CUDA RNG not restored "
                    "(the resumed run will not reproduce the uninterrupted one exactly)")
            else:
                torch.cuda.set_rng_state_all(cuda)
