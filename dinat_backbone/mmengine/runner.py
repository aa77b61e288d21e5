"""What tools/mm_train.py and tools/mm_test.py do with a config before mmengine's Runner runs it."""
from __future__ import annotations

import logging
import os
import os.path as osp
from typing import Optional, Union

from mmengine.logging import print_log

from .checkpoint import patch_checkpoint_loader
from .dist import init_distributed

__all__ = ["load_config", "build_runner"]

_LAUNCHERS = ("none", "pytorch", "slurm", "mpi")


def load_config(config, work_dir: Optional[str] = None, cfg_options: Optional[dict] = None,
                launcher: str = "none", resume: Union[bool, str, None] = None, amp: bool = False,
                load_from: Optional[str] = None, tta: bool = False):
    """Read an mmdet / mmseg config and apply the command-line choices of tools/mm_train.py.

    Also calls :func:`~dinat_backbone.mmengine.patch_checkpoint_loader`, so ``load_from`` and
    ``resume`` read checkpoints without running code from them.

    Args:
        config: path of a Python config, or an mmengine ``Config``.
        work_dir: where logs and checkpoints go (default: the config's ``work_dir``, else
            ``./work_dirs/<config name>``).
        cfg_options: dotted-key overrides (``--cfg-options``).
        launcher: 'none', or 'pytorch' under torchrun (mmengine's DDP; on the CPU over gloo
            with :class:`~dinat_backbone.mmengine.DinatDistributedDataParallel`).
        resume: True / 'auto' resumes from ``work_dir``'s ``last_checkpoint``; a path resumes
            from that checkpoint (model, optimiser, scheduler, iteration count, RNG state).
        amp: train with mmengine's ``AmpOptimWrapper`` (GPU).
        load_from: weights to start from (not resuming the schedule); for tools/mm_test.py the
            checkpoint to evaluate.
        tta: test with the config's ``tta_model`` / ``tta_pipeline`` (multi-scale + flip).
    """
    from mmengine.config import Config

    if launcher not in _LAUNCHERS:
        raise ValueError(f"launcher={launcher!r}: unknown. Fix: use one of {list(_LAUNCHERS)} "
                         "('pytorch' under torchrun)")
    patch_checkpoint_loader()
    cfg = config.copy() if isinstance(config, Config) else Config.fromfile(os.fspath(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = launcher
    if launcher != "none" and cfg.get("model_wrapper_cfg") is None:
        cfg.model_wrapper_cfg = dict(type="DinatDistributedDataParallel",
                                     broadcast_buffers=False,
                                     find_unused_parameters=cfg.get("find_unused_parameters",
                                                                    False))
    if work_dir is not None:
        cfg.work_dir = os.fspath(work_dir)
    elif cfg.get("work_dir") is None:
        name = osp.splitext(osp.basename(cfg.filename or "dinat"))[0]
        cfg.work_dir = osp.join("./work_dirs", name)
    if amp:
        if cfg.optim_wrapper.get("type", "OptimWrapper") == "AmpOptimWrapper":
            print_log("AMP is already enabled in the config", logger="current")
        else:
            cfg.optim_wrapper.type = "AmpOptimWrapper"
            cfg.optim_wrapper.loss_scale = "dynamic"
    if load_from is not None:
        cfg.load_from = os.fspath(load_from)
    if resume is not None and resume is not False:
        cfg.resume = True
        if resume is not True and resume != "auto":
            cfg.load_from = os.fspath(resume)
        elif load_from is None:
            cfg.load_from = None  # the Runner then finds work_dir/last_checkpoint
    if tta:
        _use_tta(cfg)
    ck = (cfg.get("default_hooks") or {}).get("checkpoint")
    if ck is not None and ck.get("type") in ("CheckpointHook", "mmengine.CheckpointHook"):
        ck.type = "AtomicCheckpointHook"
    custom = list(cfg.get("custom_hooks") or [])
    if not any(h.get("type") == "TorchRNGStateHook" for h in custom):
        cfg.custom_hooks = custom + [dict(type="TorchRNGStateHook")]
    return cfg


def _use_tta(cfg) -> None:
    """Wrap the model in the config's ``tta_model`` and test with its ``tta_pipeline``."""
    missing = [k for k in ("tta_model", "tta_pipeline") if k not in cfg]
    if missing:
        raise ValueError(f"--tta: the config has no {' / '.join(missing)}. Fix: use a config "
                         "from configs/mmseg or configs/mmdet (they carry the multi-scale + flip "
                         "recipe), or add tta_model and tta_pipeline to yours")
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model
    if cfg.model.type == "DetTTAModel":
        _boxes_only(cfg)


def _boxes_only(cfg) -> None:
    """mmdet's DetTTAModel merges boxes and refuses predictions with masks: test a Mask R-CNN /
    Cascade without its mask branch, and evaluate bbox AP only (both said in the log)."""
    roi = cfg.model.module.get("roi_head")
    if roi is not None and roi.get("mask_head") is not None:
        roi.mask_head = roi.mask_roi_extractor = None
        print_log("--tta: mmdet's DetTTAModel merges boxes only; the mask head is left out "
                  "(its weights in the checkpoint are not used)", logger="current",
                  level=logging.WARNING)
    evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [
        cfg.test_evaluator]
    for ev in evaluators:
        metric = ev.get("metric")
        if isinstance(metric, (list, tuple)) and "segm" in metric:
            print_log("--tta: evaluating bbox AP (segm dropped from the metric)",
                      logger="current", level=logging.WARNING)
            ev.metric = [m for m in metric if m != "segm"]


def build_runner(cfg):
    """An mmengine Runner for ``cfg`` (the config's ``runner_type`` if it names one).

    Under ``--launcher pytorch`` without CUDA this first starts torch.distributed over gloo
    (:func:`~dinat_backbone.mmengine.dist.init_distributed`).
    """
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    init_distributed(cfg.get("launcher", "none"))
    if "runner_type" in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
