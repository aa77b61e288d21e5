"""Recognising a checkpoint's layout and converting it to and from this project's names.

=================  ==========================================================================
format             example key
=================  ==========================================================================
``dinat``          ``levels.0.blocks.0.attn.qkv.weight``: the authors' classification
                   checkpoints (SHI-Labs/Neighborhood-Attention-Transformer,
                   classification/nat.py + dinat.py), and this project's own names (they are
                   the same, plus the backbone's per-output ``norm0..3`` / ``norm_stem``).
                   Possibly wrapped in ``model`` / ``state_dict`` / ``model_ema`` /
                   ``state_dict_ema`` (timm's training checkpoints) or prefixed ``module.``.
``transformers``   ``dinat.encoder.levels.0.layers.0.attention.self.query.weight``: Hugging
                   Face transformers' ``DinatForImageClassification`` (``dinat.`` prefix,
                   ``classifier``), ``DinatModel`` (no prefix), ``DinatBackbone``
                   (``hidden_states_norms.stage1``), and a ``DinatBackbone`` inside a composite
                   model (UperNet: ``backbone.``; Mask2Former / OneFormer:
                   ``model.pixel_level_module.encoder.``).
``mmengine``       ``backbone.levels.0.blocks.0.attn.qkv.weight``: the authors' mmdet / mmseg
                   checkpoints (``backbone.norm0..3``, no final ``norm``, no ``head``) and their
                   Mask2Former checkpoints (``D2DiNAT`` built as ``backbone``: same keys).
``detectron2``     ``backbone.bottom_up.levels.0.blocks.0.attn.qkv.weight``: a detectron2
                   model whose FPN wraps the DiNAT backbone as ``bottom_up``.
=================  ==========================================================================

The backbone is found by its patch embedding wherever it sits (any prefix); keys outside it
(necks, heads, optimiser state) are ignored and counted. The transformers renaming is one
two-way table (:data:`.keytable.TRANSFORMERS`); the other formats differ by a prefix only.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from ..config import DinatConfig
from .keytable import TRANSFORMERS, TRANSFORMERS_KINDS
from .safe_io import load_checkpoint_file
from .shapes import ANCHOR, check_fit, expected_shapes, infer_from_weights, short_list

__all__ = [
    "FORMATS", "FORMAT_PREFIXES", "DEFAULT_DETECTRON2_PREFIX", "extract_state_dict",
    "find_backbone", "detect_format", "split_checkpoint", "infer_config", "convert_state_dict",
    "to_authors", "to_transformers", "transformers_config_dict", "to_mmengine", "to_detectron2",
]

logger = logging.getLogger(__name__)

FORMATS = ("dinat", "transformers", "mmengine", "detectron2")
#: Where each framework's checkpoints put the backbone (the default written by to_*).
FORMAT_PREFIXES = {"mmengine": "backbone.", "detectron2": "backbone.bottom_up."}
DEFAULT_DETECTRON2_PREFIX = FORMAT_PREFIXES["detectron2"]

ANCHOR_TRANSFORMERS = "embeddings.patch_embeddings.projection.0.weight"
_ANCHORS = (("transformers", ANCHOR_TRANSFORMERS), ("dinat", ANCHOR))

# Wrappers around a state dict, in the order they are tried.
_MODEL_KEYS = ("model", "state_dict", "module", "net", "network", "weights")
_EMA_KEYS = ("model_ema", "state_dict_ema", "ema_state_dict", "ema", "model_ema_state_dict")


# ================================================================================== unwrapping
def _is_array(v) -> bool:
    if torch.is_tensor(v):
        return True
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return False
    return isinstance(v, np.ndarray)


def _looks_like_state_dict(obj) -> bool:
    if not isinstance(obj, Mapping) or not obj:
        return False
    vals = list(obj.values())
    return not any(isinstance(v, Mapping) for v in vals) and any(_is_array(v) for v in vals)


def _wrapper_note(k: str, obj: Mapping, use_ema: bool) -> Optional[str]:
    others = [e for e in (_EMA_KEYS if k in _MODEL_KEYS else _MODEL_KEYS)
              if isinstance(obj.get(e), Mapping) and obj[e]]
    if k in _EMA_KEYS and not use_ema:
        return f"only EMA weights found: loaded '{k}'"
    if k in _MODEL_KEYS and use_ema:
        return f"use_ema=True but the checkpoint has no EMA weights: loaded '{k}'"
    if others and not use_ema:
        return (f"checkpoint also holds {others[0]!r} (EMA weights): pass use_ema=True to load "
                "those instead")
    return None


def _unwrap_once(obj: Any, use_ema: bool) -> Tuple[str, Any, Optional[str]]:
    if not isinstance(obj, Mapping):
        raise TypeError(f"checkpoint holds a {type(obj).__name__}, not a dict of tensors; "
                        "give a state dict or a checkpoint file")
    for k in (_EMA_KEYS + _MODEL_KEYS) if use_ema else (_MODEL_KEYS + _EMA_KEYS):
        if isinstance(obj.get(k), Mapping) and obj[k]:
            return k, obj[k], _wrapper_note(k, obj, use_ema)
    raise ValueError(
        f"checkpoint holds no weights: top-level keys {short_list([str(k) for k in obj], 10)}; "
        "expected a state dict (names -> tensors) or one wrapped in one of "
        f"{list(_MODEL_KEYS + _EMA_KEYS)}")


def extract_state_dict(obj: Any, use_ema: bool = False
                       ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Unwrap ``model`` / ``state_dict`` / EMA wrappers; numpy arrays become tensors.

    Returns (state dict, notes). With ``use_ema`` the EMA weights are preferred when present.
    """
    notes: List[str] = []
    path: List[str] = []
    for _ in range(4):
        if _looks_like_state_dict(obj):
            break
        k, obj, note = _unwrap_once(obj, use_ema)
        path.append(k)
        notes += [note] if note else []
    else:
        raise ValueError("checkpoint is nested too deeply to find its weights")
    if path:
        notes.insert(0, "weights taken from " + "".join(f"[{p!r}]" for p in path))
    sd = {str(k): v if torch.is_tensor(v) else torch.tensor(v)
          for k, v in obj.items() if _is_array(v)}
    return sd, notes


# ================================================================================== recognising
def _anchors_in(state_dict: Mapping[str, Any]) -> List[Tuple[str, str]]:
    found = []
    for k in state_dict:
        for naming, anchor in _ANCHORS:
            p = k[: -len(anchor)]
            if k.endswith(anchor) and (p == "" or p.endswith(".")):
                found.append((naming, p))
    return found


def find_backbone(state_dict: Mapping[str, Any], prefix: Optional[str] = None) -> Tuple[str, str]:
    """(naming, prefix) of the DiNAT backbone in ``state_dict``; naming "dinat" or "transformers".

    The backbone is located by its first patch-embedding tensor, under any prefix (so also
    inside a detector, a segmentor or a transformers composite model). Give ``prefix`` when a
    checkpoint holds more than one backbone.
    """
    found = _anchors_in(state_dict)
    if prefix is not None:
        hits = [f for f in found if f[1] == prefix]
        if not hits:
            raise ValueError(f"no DiNAT backbone under prefix {prefix!r}; backbones found under "
                             f"{[f[1] for f in found] or 'no prefix at all'}")
        return hits[0]
    if not found:
        raise ValueError(
            f"no DiNAT weights recognised: found neither the authors' / this project's '{ANCHOR}' "
            f"nor transformers' '{ANCHOR_TRANSFORMERS}' under any prefix. First keys: "
            f"{short_list(list(state_dict), 6)}. Is this a DiNAT / NAT checkpoint?")
    if len(found) > 1:
        raise ValueError(f"several DiNAT backbones in one checkpoint, under the prefixes "
                         f"{[f[1] for f in found]}; pass prefix= to choose one")
    return found[0]


def _format_name(naming: str, prefix: str) -> str:
    if naming == "transformers":
        return "transformers"
    if "bottom_up" in prefix:
        return "detectron2"
    if prefix.startswith(FORMAT_PREFIXES["mmengine"]):
        return "mmengine"
    return "dinat"


def detect_format(state_dict: Any, prefix: Optional[str] = None) -> str:
    """One of :data:`FORMATS` for a state dict (or a checkpoint dict wrapping one)."""
    sd = state_dict if _looks_like_state_dict(state_dict) else extract_state_dict(state_dict)[0]
    return _format_name(*find_backbone(sd, prefix))


# ================================================================================== renaming
def _from_transformers(sd: Mapping[str, torch.Tensor], pre: str) -> Tuple[Dict, int]:
    """(our names, number of keys used) for the transformers backbone under ``pre``."""
    sub = {k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)}
    outer = pre[: -len("dinat.")] if pre.endswith("dinat.") else None
    head = {} if outer is None else {k[len(outer):]: v for k, v in sd.items()
                                     if k.startswith(outer + "classifier.")}
    ours, unknown = TRANSFORMERS.convert({**sub, **head}, to_theirs=False)
    ours.update((k, sub[k]) for k in unknown)  # kept: reported as unexpected by the loader
    return ours, len(sub) + len(head)


def split_checkpoint(obj: Any, prefix: Optional[str] = None, use_ema: bool = False
                     ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(the DiNAT backbone's tensors in this project's names, info): ``obj`` is a path, a
    checkpoint dict or a state dict in any supported format. ``info``: format, prefix, notes,
    ignored (number of keys outside the backbone)."""
    if isinstance(obj, (str, os.PathLike)):
        obj = load_checkpoint_file(obj)
    sd, notes = extract_state_dict(obj, use_ema=use_ema)
    naming, pre = find_backbone(sd, prefix)
    if naming == "transformers":
        ours, used = _from_transformers(sd, pre)
    else:
        ours = {k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)}
        used = len(ours)
    ignored = len(sd) - used
    if ignored:
        notes.append(f"ignored {ignored} keys outside the backbone (prefix {pre!r}): necks, "
                     "heads or other modules")
    return ours, dict(format=_format_name(naming, pre), prefix=pre, notes=notes, ignored=ignored)


def to_transformers(state_dict: Mapping[str, torch.Tensor], kind: str = "classification"
                    ) -> Dict[str, torch.Tensor]:
    """This project's names -> transformers' (``kind``: "classification" for
    ``DinatForImageClassification``, "model" for ``DinatModel``, "backbone" for
    ``DinatBackbone``). Keys that model does not have (e.g. the head for "model") are left out."""
    if kind not in TRANSFORMERS_KINDS:
        raise ValueError(f"kind must be 'classification', 'model' or 'backbone', got {kind!r}")
    out, unknown = TRANSFORMERS.convert(state_dict, to_theirs=True, kind=kind,
                                        prefix="dinat." if kind == "classification" else "")
    if unknown:
        raise ValueError(f"to_transformers: no transformers name for {short_list(unknown, 5)}")
    return out


_OUT_NORM = re.compile(r"^norm(_stem|\d+)\.")


def to_authors(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """This project's names -> the authors' classification checkpoint layout.

    The names are the same (modeling.py follows the authors' module tree), so this keeps every
    key the authors' classification ``DiNAT`` has and drops the backbone-only per-output norms.
    """
    return {k: v for k, v in state_dict.items() if not _OUT_NORM.match(k)}


def _backbone_only(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v for k, v in state_dict.items() if not re.match(r"^(head|norm)\.", k)}


def to_mmengine(state_dict: Mapping[str, torch.Tensor],
                prefix: str = FORMAT_PREFIXES["mmengine"]) -> Dict[str, Any]:
    """This project's names -> ``{"state_dict": {"backbone.<key>": ...}}`` (mmdet / mmseg)."""
    return {"state_dict": {prefix + k: v for k, v in _backbone_only(state_dict).items()},
            "meta": {"converted_by": "dinat_backbone.weights.to_mmengine"}}


def to_detectron2(state_dict: Mapping[str, torch.Tensor],
                  prefix: str = DEFAULT_DETECTRON2_PREFIX) -> Dict[str, Any]:
    """This project's names -> ``{"model": {prefix + key: ...}}`` as detectron2 checkpoints are.

    ``prefix`` is where the backbone sits in the detectron2 model: ``backbone.bottom_up.`` under
    an FPN (the default), ``backbone.`` for Mask2Former-style models without one.
    """
    return {"model": {prefix + k: v for k, v in _backbone_only(state_dict).items()},
            "__author__": "dinat-backbone", "matching_heuristics": False}


def transformers_config_dict(config: DinatConfig, kind: str = "classification") -> Dict[str, Any]:
    """A ``config.json`` dict that transformers' ``DinatConfig`` reads."""
    arch = {"classification": "DinatForImageClassification", "model": "DinatModel",
            "backbone": "DinatBackbone"}[kind]
    d = {k: v for k, v in config.to_dict().items()
         if k not in ("frozen_stages", "attention_backend", "gradient_checkpointing",
                      "use_return_dict")}
    d.update(model_type="dinat", architectures=[arch], path_norm=True)
    return d


# ================================================================================== config
def infer_config(state_dict: Any, dilations=None, **overrides) -> DinatConfig:
    """A DinatConfig read from the weights' shapes (any supported format).

    embed_dim, depths, heads, kernel size (from the RPB table), mlp_ratio, qkv_bias, layer
    scale and the number of classes come from the weights. Dilations cannot: ``dilations`` if
    given, else the classification preset (``[1,8,1], [1,4,1,4], [1,2,...], [1,1,...]``).
    """
    sd, _ = split_checkpoint(state_dict)
    cfg, notes = infer_from_weights(sd, dilations, **overrides)
    for n in notes:
        logger.info(n)
    return cfg


def convert_state_dict(state_dict: Any, config: Optional[DinatConfig] = None,
                       prefix: Optional[str] = None, use_ema: bool = False
                       ) -> Tuple[Dict[str, torch.Tensor], DinatConfig]:
    """Any supported checkpoint (state dict, wrapped dict or path) -> (this project's names,
    config).

    Without ``config`` the config is inferred from the shapes (see :func:`infer_config`). With
    one, the tensors go through the same check as loading into a model of that config
    (:func:`.shapes.check_fit`): RPB tables of another kernel size are resized (warning); any
    other difference, or trunk weights the config lacks / has in addition, raise one ValueError
    naming the first offending keys and shapes.
    """
    sd, _ = split_checkpoint(state_dict, prefix, use_ema)
    if config is None:
        config, notes = infer_from_weights(sd)
        for n in notes:
            logger.info(n)
        return sd, config
    if not isinstance(config, DinatConfig):
        raise TypeError(f"config must be a DinatConfig, got {type(config).__name__}")
    for n in check_fit(sd, expected_shapes(config), "the config", config).notes:
        logger.info(n)
    return sd, config
