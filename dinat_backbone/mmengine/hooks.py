"""Checkpoint hooks: atomic saves, and torch's RNG state for exact resumes.

Both are registered in mmengine's ``HOOKS`` (and the atomic file backend in mmengine's file
backends) when :mod:`dinat_backbone.mmengine` is imported; nothing else happens at import.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import List, Optional

import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS

__all__ = ["AtomicLocalBackend", "AtomicCheckpointHook", "TorchRNGStateHook", "ATOMIC_BACKEND"]

ATOMIC_BACKEND = "dinat_atomic_local"


@register_backend(ATOMIC_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose ``put`` never leaves a torn file under its name.

    The bytes go to ``.<name>.tmp`` beside the target, are flushed to disk, and the temporary file
    is renamed onto the target (``os.replace`` is atomic on one file system).
    """

    def put(self, obj: bytes, filepath) -> None:
        filepath = os.fspath(filepath)
        tmp = osp.join(osp.dirname(filepath), f".{osp.basename(filepath)}.tmp")
        super().put(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, filepath)


class _DeferredRemoval:
    """The hook's file backend, except that ``remove`` waits until the new checkpoint exists."""

    def __init__(self, backend):
        self._backend = backend
        self.pending: List[str] = []

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def remove(self, filepath) -> None:
        self.pending.append(os.fspath(filepath))


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` after which a kill at any moment leaves the latest checkpoint complete.

    On a local work dir each checkpoint is written through :class:`AtomicLocalBackend` (temporary
    name, fsync, rename), and checkpoints beyond ``max_keep_ckpts`` (or a superseded best one)
    are removed only after the new file is in place: mmengine's own hook removes the old one
    first, so a kill while saving with ``max_keep_ckpts=1`` loses both. ``last_checkpoint`` is
    written by mmengine after the checkpoint is complete. Other storage backends (or explicit
    ``backend_args``) behave as mmengine's ``CheckpointHook``.
    """

    def before_train(self, runner) -> None:
        out_dir = self.out_dir if self.out_dir is not None else runner.work_dir
        if (self.backend_args is None and self.file_client_args is None
                and "://" not in str(out_dir)):
            self.backend_args = dict(backend=ATOMIC_BACKEND)
        super().before_train(runner)
        if isinstance(self.file_backend, AtomicLocalBackend):
            self.file_backend = _DeferredRemoval(self.file_backend)

    def _remove_superseded(self) -> None:
        backend = self.file_backend
        if not isinstance(backend, _DeferredRemoval):
            return
        keep = {os.fspath(p) for p in (getattr(self, "last_ckpt", None),
                                       getattr(self, "best_ckpt_path", None)) if p}
        keep |= {os.fspath(p) for p in (getattr(self, "best_ckpt_path_dict", None) or {}).values()
                 if p}
        pending, backend.pending = backend.pending, []
        for path in pending:
            if path not in keep and osp.isfile(path):
                os.remove(path)

    # mmengine saves (and asks for removals) inside these; the removals run once they return.
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        super().after_train_iter(runner, batch_idx, data_batch, outputs)
        self._remove_superseded()

    def after_train_epoch(self, runner) -> None:
        super().after_train_epoch(runner)
        self._remove_superseded()

    def after_val_epoch(self, runner, metrics) -> None:
        super().after_val_epoch(runner, metrics)
        self._remove_superseded()

    def after_train(self, runner) -> None:
        super().after_train(runner)
        self._remove_superseded()


_KEY = "torch_rng_state"


@HOOKS.register_module()
class TorchRNGStateHook(Hook):
    """Save torch's RNG state in checkpoints; restore it when training resumes.

    mmengine's ``--resume`` restores weights, optimizer, schedulers and the iteration count and
    replays the data loader, but only re-seeds torch: dropout and stochastic depth would draw
    different masks than the uninterrupted run. With this hook (added by ``load_config``, so by
    tools/mm_train.py) a run killed with SIGKILL and resumed reaches bit-identical weights on the
    CPU with ``randomness=dict(seed=..., deterministic=True)`` (tests/test_resume.py). In a
    config of your own: ``custom_hooks = [dict(type='TorchRNGStateHook')]``.
    """

    priority = "VERY_LOW"

    def __init__(self) -> None:
        self._pending: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint[_KEY] = state

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Applied at the next training iteration: the runner still builds and replays the data
        # loader between loading and training, and must not disturb the restored state.
        self._pending = checkpoint.get(_KEY)

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
