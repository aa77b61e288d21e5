"""``DinatCheckpointer``: detectron2's ``DetectionCheckpointer`` with three changes.

1. Every file it reads goes through the project's safe reader
   (:func:`dinat_backbone.weights.load_checkpoint_file`): detectron2 itself reads ``.pkl`` with
   ``pickle.load``, which runs whatever code the file asks for. Here a file that would need code
   to load is refused with an error that says how to convert a trusted file; detectron2-format
   ``.pkl`` (numpy arrays, ``__author__``, ``matching_heuristics``), Caffe2 / Detectron1 ``.pkl``,
   pycls ``.pyth`` and detectron2's own training checkpoints (``--resume``: model, optimizer,
   scheduler, iteration) hold only data and load as before.
2. ``MODEL.WEIGHTS`` may also be a released DiNAT checkpoint (the authors' ImageNet ``.pth``,
   transformers ``.bin`` / ``.safetensors``, mmdet / mmseg, a converted file): its keys are
   converted and loaded under the backbone's prefix.
3. Saving is atomic: the checkpoint, then ``last_checkpoint``, each go to a temporary file beside
   the target that is flushed and renamed onto it. detectron2 writes both in place, so a run
   killed while saving could leave a torn checkpoint or an empty ``last_checkpoint`` (then
   ``--resume`` fails); here the previous pair stays intact until the new one is complete.
"""
from __future__ import annotations

import os
import weakref
from typing import Any, Dict, Optional

import torch

from detectron2.checkpoint import DetectionCheckpointer

from .. import weights as _weights
from ..backbone import DinatBackbone
from ..weights.safe_io import replace_atomically

__all__ = ["DinatCheckpointer", "read_checkpoint"]


def read_checkpoint(path: str) -> Any:
    """What the file holds, read without running code (raises UnsafeCheckpointError on a
    pickle that needs code, ValueError on an unreadable file)."""
    return _weights.load_checkpoint_file(path)


def _dinat_prefix(model) -> Optional[str]:
    """Key prefix of the (first) DinatBackbone inside ``model``, e.g. 'backbone.bottom_up.'."""
    model = getattr(model, "module", model)  # DDP
    for name, module in model.named_modules():
        if isinstance(module, DinatBackbone):
            return f"{name}." if name else ""
    return None


def _from_pickle_format(data: Any, filename: str) -> Dict[str, Any]:
    """detectron2's reading of a ``.pkl``: its own model-zoo format (``model`` + ``__author__``)
    as is; anything else is a Caffe2 / Detectron1 blob dict, matched by name heuristics."""
    if not isinstance(data, dict):
        raise ValueError(f"{filename}: a .pkl checkpoint must hold a dict, found "
                         f"{type(data).__name__}; convert it with tools/convert_weights.py")
    if "model" in data and "__author__" in data:
        return data
    blobs = data.get("blobs", data)
    blobs = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
    return {"model": blobs, "__author__": "Caffe2", "matching_heuristics": True}


def _from_pycls(data: Any, filename: str) -> Dict[str, Any]:
    if not isinstance(data, dict) or "model_state" not in data:
        raise ValueError(f"{filename}: a .pyth (pycls) checkpoint must contain 'model_state'")
    state = {k: v for k, v in data["model_state"].items()
             if not k.endswith("num_batches_tracked")}
    return {"model": state, "__author__": "pycls", "matching_heuristics": True}


class DinatCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that reads every file safely and also loads released DiNAT
    checkpoints into the backbone (see the module docstring).

    A file whose keys already belong to the model (a detectron2 training checkpoint, the authors'
    Mask2Former checkpoints) loads as usual. A DiNAT checkpoint in another layout is converted
    and loaded under the backbone's prefix (``BACKBONE_PREFIX`` for FPN models). Shape mismatches
    between the checkpoint and ``MODEL.DINAT`` raise a ValueError naming both.
    """

    @classmethod
    def attach(cls, trainer, cfg) -> "DinatCheckpointer":
        """Puts a DinatCheckpointer in the place of the ``DetectionCheckpointer`` that a
        detectron2 ``DefaultTrainer`` (or a subclass, e.g. Mask2Former's) built in its
        ``__init__``: as ``trainer.checkpointer`` (``resume_or_load``) and in its
        ``PeriodicCheckpointer`` hook (the saves). Call it at the end of the trainer's
        ``__init__``; returns the new checkpointer."""
        from detectron2.engine import hooks

        ck = cls(trainer._trainer.model, cfg.OUTPUT_DIR, trainer=weakref.proxy(trainer))
        for h in trainer._hooks:
            if isinstance(h, hooks.PeriodicCheckpointer):
                h.checkpointer = ck
        trainer.checkpointer = ck
        return ck

    def save(self, name: str, **kwargs: Any) -> None:
        """detectron2's ``save`` (model, checkpointables, ``kwargs``), written atomically."""
        if not self.save_dir or not self.save_to_disk:
            return
        if not os.path.isdir(self.save_dir):  # not a local folder: detectron2's path manager
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        replace_atomically(save_file, lambda tmp: torch.save(data, tmp))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not os.path.isdir(self.save_dir):
            return super().tag_last_checkpoint(last_filename_basename)
        def write(tmp: str) -> None:
            with open(tmp, "w") as f:
                f.write(last_filename_basename)

        replace_atomically(os.path.join(self.save_dir, "last_checkpoint"), write)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        lower = filename.lower()
        if lower.endswith(".pkl"):  # detectron2: pickle.load
            loaded = _from_pickle_format(read_checkpoint(filename), filename)
        elif lower.endswith(".pyth"):  # detectron2: torch.load
            loaded = _from_pycls(read_checkpoint(filename), filename)
        else:  # detectron2's own handling (URL queries, wrapping), reading via _torch_load
            loaded = super()._load_file(filename)
        return self._maybe_convert(loaded, filename)

    def _torch_load(self, f: str) -> Any:
        return read_checkpoint(f)

    def _maybe_convert(self, loaded: Dict[str, Any], filename: str = "") -> Dict[str, Any]:
        state = loaded.get("model", loaded)
        prefix = _dinat_prefix(self.model)
        if prefix is None or not isinstance(state, dict) or not state:
            return loaded
        root = getattr(self.model, "module", self.model)
        model_keys = set(root.state_dict())
        if prefix and any(k.startswith(prefix) and k in model_keys for k in state):
            return loaded  # already this model's naming (a training checkpoint)
        if not prefix and sum(k in model_keys for k in state) >= 0.5 * len(state):
            return loaded
        try:
            fmt = _weights.detect_format(state)
        except (ValueError, KeyError, TypeError):
            return loaded  # not a DiNAT checkpoint: detectron2's own handling
        backbone = root.get_submodule(prefix[:-1]) if prefix else root
        try:
            converted, _ = _weights.convert_state_dict(state, config=backbone.config)
        except ValueError as e:
            raise ValueError(
                f"{filename or 'MODEL.WEIGHTS'} is a DiNAT checkpoint ({fmt}) that does not fit "
                f"the backbone MODEL.DINAT describes: {e} Set MODEL.DINAT.VARIANT (or EMBED_DIM / "
                "DEPTHS / NUM_HEADS / KERNEL_SIZE) to the checkpoint's.") from None
        own = backbone.state_dict()
        dropped = sorted(k for k in converted if k not in own)
        kept = {prefix + k: v for k, v in converted.items() if k in own}
        self.logger.info(
            f"[DinatCheckpointer] {filename}: DiNAT checkpoint in {fmt!r} format; {len(kept)} "
            f"tensors go to {prefix!r}"
            + (f", {len(dropped)} unused by a backbone dropped ({', '.join(dropped[:4])}"
               f"{', ...' if len(dropped) > 4 else ''})" if dropped else ""))
        return {"model": kept, "__author__": f"dinat_backbone ({fmt})",
                "matching_heuristics": False}
