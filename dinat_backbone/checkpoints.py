"""Released DiNAT checkpoints: read, recognise, convert and load them.

Supported layouts (the key names were read from each project's own source; tests/data/ records
them with their origin):

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
                   ``classifier``), ``DinatModel`` (no prefix) and ``DinatBackbone``
                   (``hidden_states_norms.stage1``); ``.safetensors`` or ``.bin``.
``mmengine``       ``backbone.levels.0.blocks.0.attn.qkv.weight``: the authors' mmdet / mmseg
                   checkpoints (detection/nat.py, segmentation/nat.py: ``backbone.norm0..3``,
                   no final ``norm``, no ``head``) and their Mask2Former checkpoints
                   (mask2former/dinat.py, ``D2DiNAT`` built as ``backbone``: same keys).
``detectron2``     ``backbone.bottom_up.levels.0.blocks.0.attn.qkv.weight``: a detectron2
                   model whose FPN wraps the DiNAT backbone as ``bottom_up``; ``.pth`` or
                   ``.pkl`` (pickled numpy arrays or tensors, read without running code).
=================  ==========================================================================

The backbone is found by its patch embedding wherever it sits (any prefix); keys outside it
(necks, heads, optimiser state) are ignored and counted. Dilations are not stored in weights:
they come from ``config.json`` when there is one, otherwise from the classification preset
(``[1,8,1], [1,4,1,4], [1,2,...], [1,1,...]``) and the loading report says so.

Neighborhood attention has no absolute position embedding, so a change of input resolution
needs no interpolation. A change of kernel size does: the RPB tables [heads, 2k-1, 2k-1] are
resized bicubically (as the authors made their 11x11 checkpoints from the 7x7 ones), with a
warning.

Loading is ``torch.load(weights_only=True)`` (or safetensors); a pickle that would need to run
code is refused with an explanation.
"""
from __future__ import annotations

import codecs
import collections
import copy
import io
import json
import logging
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .config import VARIANTS, DinatConfig, dilation_preset

__all__ = [
    "FORMATS",
    "LoadReport",
    "load_checkpoint_file",
    "extract_state_dict",
    "detect_format",
    "find_backbone",
    "infer_config",
    "convert_state_dict",
    "expected_shapes",
    "resize_rpb",
    "load_pretrained",
    "from_pretrained",
    "to_authors",
    "to_transformers",
    "transformers_config_dict",
    "to_mmengine",
    "to_detectron2",
    "save_state_dict",
    "DEFAULT_DETECTRON2_PREFIX",
]

logger = logging.getLogger(__name__)

FORMATS = ("dinat", "transformers", "mmengine", "detectron2")
DEFAULT_DETECTRON2_PREFIX = "backbone.bottom_up."

# The key that marks a backbone in each naming (the first tensor of the patch embedding).
_ANCHOR_DINAT = "patch_embed.proj.0.weight"
_ANCHOR_HF = "embeddings.patch_embeddings.projection.0.weight"

# Wrappers around a state dict, in the order they are tried.
_MODEL_KEYS = ("model", "state_dict", "module", "net", "network", "weights")
_EMA_KEYS = ("model_ema", "state_dict_ema", "ema_state_dict", "ema", "model_ema_state_dict")

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "pytorch_model.pth",
                 "model.pt", "model_final.pth", "model_final.pkl")
_WEIGHT_EXTS = (".safetensors", ".bin", ".pth", ".pt", ".pkl", ".pickle", ".ckpt")

# Keys of the model outside the trunk (patch_embed + levels): loading may leave them
# initialised (e.g. the per-output norms when a classification checkpoint feeds a backbone)
# or drop them (the head when a classification checkpoint feeds a backbone).
_OPTIONAL = re.compile(r"^(head|norm|norm_stem|norm\d+)\.")


# ================================================================================== reading
def _is_array(v) -> bool:
    if torch.is_tensor(v):
        return True
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return False
    return isinstance(v, np.ndarray)


def _safe_load_storage_bytes(b: bytes):
    """Stand-in for torch.storage._load_from_bytes (plain-pickled tensors) without running code."""
    return torch.load(io.BytesIO(b), weights_only=True)


def _pickle_allowlist() -> Dict[Tuple[str, str], Any]:
    import numpy as np

    try:
        from numpy._core import multiarray as ma, numeric as nm
    except ImportError:  # numpy < 2
        from numpy.core import multiarray as ma, numeric as nm  # type: ignore
    allowed = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
        ("torch.storage", "_load_from_bytes"): _safe_load_storage_bytes,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch", "Size"): torch.Size,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = ma._reconstruct
        allowed[(mod, "scalar")] = ma.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        if hasattr(nm, "_frombuffer"):
            allowed[(mod, "_frombuffer")] = nm._frombuffer
    for name in dir(getattr(np, "dtypes", None) or object()):
        if name.endswith("DType"):
            allowed[("numpy.dtypes", name)] = getattr(np.dtypes, name)
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Reconstructs dicts, lists, numbers, strings, numpy arrays and tensors; nothing else."""

    def __init__(self, f, allowed):
        super().__init__(f, encoding="latin1")
        self._allowed = allowed

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed") from None


def _refuse(path: str, err: Exception) -> ValueError:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    m = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"global '([\w.]+)'", text)
    what = f" (it asks for '{m.group(1)}')" if m else ""
    return ValueError(
        f"{path}: refused to load. This file is a pickle that needs to run code to load"
        f"{what}, and running code from a checkpoint can do anything a program can "
        "(delete or send files). Only tensors, numpy arrays and plain containers are read. If "
        "you trust the file's origin, extract its weights yourself once: "
        "sd = torch.load(path, weights_only=False); torch.save(<the weights dict>, 'clean.pth') "
        "and load clean.pth instead.")


def _torch_safe_globals() -> list:
    import argparse

    import numpy as np

    out: list = [argparse.Namespace]  # timm writes its training arguments into checkpoints
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore
    out += [_reconstruct, scalar, np.ndarray, np.dtype]
    out += [getattr(np.dtypes, n) for n in dir(getattr(np, "dtypes", object())) if n.endswith("DType")]
    return out


def load_checkpoint_file(path: Union[str, os.PathLike]) -> Any:
    """Read a checkpoint file (or the weights file of a directory) without running its code.

    ``.safetensors`` through safetensors; ``.pkl`` / ``.pickle`` (detectron2's format: numpy
    arrays) through an unpickler that only rebuilds arrays, tensors and plain containers;
    everything else through ``torch.load(weights_only=True)``. Returns what the file holds
    (a state dict or a dict wrapping one); see :func:`extract_state_dict`.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = _weights_file_in(path)
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path!r}: no such file")
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(f"checkpoint {path!r} is empty (0 bytes); download it again")
    lower = path.lower()
    if lower.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ValueError(f"{path}: reading .safetensors needs the safetensors package; "
                             "install it with: pip install safetensors") from None
        try:
            return load_file(path, device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{path}: not a readable safetensors file ({size} bytes; "
                             f"{type(e).__name__}: {e}); it may be truncated: download it again"
                             ) from None
    if lower.endswith((".pkl", ".pickle")) and not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            try:
                return _RestrictedUnpickler(f, _pickle_allowlist()).load()
            except pickle.UnpicklingError as e:
                if "is not allowed" in str(e):
                    raise _refuse(path, e) from None
                raise _corrupt(path, size, e) from None
            except (EOFError, ValueError, TypeError, IndexError, KeyError,
                    AttributeError, RuntimeError) as e:
                raise _corrupt(path, size, e) from None
    try:
        with torch.serialization.safe_globals(_torch_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        # "Unsupported global: GLOBAL os.system" = a pickle that needs code; "Unsupported
        # operand 60" and other opcode errors = not a pickle at all (an HTML page, garbage).
        if "Unsupported global" in msg or ("Weights only load failed" in msg
                                           and "Unsupported operand" not in msg):
            raise _refuse(path, e) from None
        raise _corrupt(path, size, e) from None
    except (EOFError, RuntimeError, ValueError, zipfile.BadZipFile, OSError) as e:
        raise _corrupt(path, size, e) from None


def _corrupt(path: str, size: int, err: Exception) -> ValueError:
    first = str(err).splitlines()[0] if str(err) else ""
    return ValueError(f"{path}: cannot be read as a checkpoint ({size} bytes; "
                      f"{type(err).__name__}: {first}). The file is truncated or not a "
                      "checkpoint: download it again, or check that it is a .pth / .bin / "
                      ".safetensors / .pkl weights file")


def _weights_file_in(directory: str) -> str:
    for name in _WEIGHT_FILES:
        p = os.path.join(directory, name)
        if os.path.isfile(p):
            return p
    cands = sorted(f for f in os.listdir(directory) if f.lower().endswith(_WEIGHT_EXTS))
    if len(cands) == 1:
        return os.path.join(directory, cands[0])
    if not cands:
        raise ValueError(f"{directory}: no weights file found (looked for {list(_WEIGHT_FILES)} "
                         f"and any *{'/*'.join(_WEIGHT_EXTS)})")
    raise ValueError(f"{directory}: several weights files {cands}; pass the one to load")


def extract_state_dict(obj: Any, use_ema: bool = False) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Unwrap ``model`` / ``state_dict`` / EMA wrappers; numpy arrays become tensors.

    Returns (state dict, notes). With ``use_ema`` the EMA weights are preferred when present.
    """
    notes: List[str] = []
    path: List[str] = []
    for _ in range(4):
        if _looks_like_state_dict(obj):
            break
        if not isinstance(obj, Mapping):
            raise TypeError(f"checkpoint holds a {type(obj).__name__}, not a dict of tensors; "
                            "give a state dict or a checkpoint file")
        order = (_EMA_KEYS + _MODEL_KEYS) if use_ema else (_MODEL_KEYS + _EMA_KEYS)
        for k in order:
            if isinstance(obj.get(k), Mapping) and obj[k]:
                others = [e for e in (_EMA_KEYS if k in _MODEL_KEYS else _MODEL_KEYS)
                          if isinstance(obj.get(e), Mapping) and obj[e]]
                if k in _EMA_KEYS and not use_ema:
                    notes.append(f"only EMA weights found: loaded '{k}'")
                elif k in _MODEL_KEYS and use_ema:
                    notes.append(f"use_ema=True but the checkpoint has no EMA weights: "
                                 f"loaded '{k}'")
                elif others and not use_ema:
                    notes.append(f"checkpoint also holds {others[0]!r} (EMA weights): pass "
                                 "use_ema=True to load those instead")
                path.append(k)
                obj = obj[k]
                break
        else:
            raise ValueError(
                "checkpoint holds no weights: top-level keys "
                f"{_short([str(k) for k in obj.keys()], 10)}; expected a state dict (names -> "
                f"tensors) or one wrapped in one of {list(_MODEL_KEYS + _EMA_KEYS)}")
    else:
        raise ValueError("checkpoint is nested too deeply to find its weights")
    if path:
        notes.insert(0, "weights taken from " + "".join(f"[{p!r}]" for p in path))
    sd: Dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if torch.is_tensor(v):
            sd[str(k)] = v
        elif _is_array(v):
            sd[str(k)] = torch.tensor(v)
    return sd, notes


def _looks_like_state_dict(obj) -> bool:
    if not isinstance(obj, Mapping) or not obj:
        return False
    vals = list(obj.values())
    return not any(isinstance(v, Mapping) for v in vals) and any(_is_array(v) for v in vals)


# ================================================================================== recognising
def find_backbone(state_dict: Mapping[str, Any], prefix: Optional[str] = None) -> Tuple[str, str]:
    """(naming, prefix) of the DiNAT backbone in ``state_dict``; naming "dinat" or "transformers".

    The backbone is located by its first patch-embedding tensor, under any prefix. Give
    ``prefix`` when a checkpoint holds more than one backbone.
    """
    found = []
    for k in state_dict:
        for naming, anchor in (("transformers", _ANCHOR_HF), ("dinat", _ANCHOR_DINAT)):
            if k.endswith(anchor):
                p = k[: -len(anchor)]
                if p == "" or p.endswith("."):
                    found.append((naming, p))
    if prefix is not None:
        hits = [f for f in found if f[1] == prefix]
        if not hits:
            raise ValueError(
                f"no DiNAT backbone under prefix {prefix!r}; backbones found under "
                f"{[f[1] for f in found] or 'no prefix at all'}")
        return hits[0]
    if not found:
        raise ValueError(
            "no DiNAT weights recognised: found neither the authors' / this project's "
            f"'{_ANCHOR_DINAT}' nor transformers' '{_ANCHOR_HF}' under any prefix. First keys: "
            f"{_short(list(state_dict), 6)}. Is this a DiNAT / NAT checkpoint?")
    if len(found) > 1:
        raise ValueError(f"several DiNAT backbones in one checkpoint, under the prefixes "
                         f"{[f[1] for f in found]}; pass prefix= to choose one")
    return found[0]


def _format_name(naming: str, prefix: str) -> str:
    if naming == "transformers":
        return "transformers"
    if "bottom_up" in prefix:
        return "detectron2"
    if prefix.startswith("backbone."):
        return "mmengine"
    return "dinat"


def detect_format(state_dict: Any, prefix: Optional[str] = None) -> str:
    """One of :data:`FORMATS` for a state dict (or a checkpoint dict wrapping one)."""
    sd = state_dict if _looks_like_state_dict(state_dict) else extract_state_dict(state_dict)[0]
    return _format_name(*find_backbone(sd, prefix))


# ================================================================================== renaming
_HF_LAYER = {
    "layernorm_before": "norm1",
    "attention.self.rpb": "attn.rpb",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_HF_LAYER_INV = {v: k for k, v in _HF_LAYER.items()}


def _from_transformers(sub: Dict[str, torch.Tensor], head: Dict[str, torch.Tensor]
                       ) -> Dict[str, torch.Tensor]:
    out: Dict[str, torch.Tensor] = {}
    qkv: Dict[str, Dict[str, torch.Tensor]] = {}
    for k, v in sub.items():
        m = re.match(r"^encoder\.levels\.(\d+)\.layers\.(\d+)\.(.+)$", k)
        if m:
            base = f"levels.{m.group(1)}.blocks.{m.group(2)}."
            rest = m.group(3)
            q = re.match(r"^attention\.self\.(query|key|value)\.(weight|bias)$", rest)
            if q:
                qkv.setdefault(base + "attn.qkv." + q.group(2), {})[q.group(1)] = v
                continue
            if rest == "layer_scale_parameters":
                out[base + "gamma1"], out[base + "gamma2"] = v[0].clone(), v[1].clone()
                continue
            for src, dst in _HF_LAYER.items():
                if rest == src or rest.startswith(src + "."):
                    out[base + dst + rest[len(src):]] = v
                    break
            else:
                out[k] = v  # unknown: reported as unexpected
            continue
        m = re.match(r"^encoder\.levels\.(\d+)\.downsample\.(.+)$", k)
        if m:
            out[f"levels.{m.group(1)}.downsample.{m.group(2)}"] = v
            continue
        m = re.match(r"^embeddings\.patch_embeddings\.projection\.(.+)$", k)
        if m:
            out["patch_embed.proj." + m.group(1)] = v
            continue
        m = re.match(r"^embeddings\.norm\.(.+)$", k)
        if m:
            out["patch_embed.norm." + m.group(1)] = v
            continue
        m = re.match(r"^layernorm\.(.+)$", k)
        if m:
            out["norm." + m.group(1)] = v
            continue
        m = re.match(r"^hidden_states_norms\.(stem|stage(\d+))\.(.+)$", k)
        if m:
            name = "norm_stem" if m.group(1) == "stem" else f"norm{int(m.group(2)) - 1}"
            out[f"{name}.{m.group(3)}"] = v
            continue
        out[k] = v
    for k, parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise ValueError(f"transformers checkpoint: {k} has only {sorted(parts)} of "
                             "query/key/value; the file is incomplete")
        out[k] = torch.cat([parts["query"], parts["key"], parts["value"]], 0)
    for k, v in head.items():
        out["head." + k] = v
    return out


def to_transformers(state_dict: Mapping[str, torch.Tensor], kind: str = "classification"
                    ) -> Dict[str, torch.Tensor]:
    """This project's names -> transformers' (``kind``: "classification" for
    ``DinatForImageClassification``, "model" for ``DinatModel``, "backbone" for
    ``DinatBackbone``)."""
    if kind not in ("classification", "model", "backbone"):
        raise ValueError(f"kind must be 'classification', 'model' or 'backbone', got {kind!r}")
    pre = "dinat." if kind == "classification" else ""
    out: Dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        m = re.match(r"^levels\.(\d+)\.blocks\.(\d+)\.(.+)$", k)
        if m:
            base = f"{pre}encoder.levels.{m.group(1)}.layers.{m.group(2)}."
            rest = m.group(3)
            q = re.match(r"^attn\.qkv\.(weight|bias)$", rest)
            if q:
                for name, part in zip(("query", "key", "value"), v.chunk(3, 0)):
                    out[f"{base}attention.self.{name}.{q.group(1)}"] = part.clone()
                continue
            if rest == "gamma1":
                g2 = state_dict[k[: -len("gamma1")] + "gamma2"]
                out[base + "layer_scale_parameters"] = torch.stack([v, g2], 0)
                continue
            if rest == "gamma2":
                continue
            for src, dst in _HF_LAYER_INV.items():
                if rest == src or rest.startswith(src + "."):
                    out[base + dst + rest[len(src):]] = v
                    break
            else:
                raise ValueError(f"to_transformers: no transformers name for {k!r}")
            continue
        m = re.match(r"^levels\.(\d+)\.downsample\.(.+)$", k)
        if m:
            out[f"{pre}encoder.levels.{m.group(1)}.downsample.{m.group(2)}"] = v
        elif k.startswith("patch_embed.proj."):
            out[pre + "embeddings.patch_embeddings.projection." + k[len("patch_embed.proj."):]] = v
        elif k.startswith("patch_embed.norm."):
            out[pre + "embeddings.norm." + k[len("patch_embed.norm."):]] = v
        elif k.startswith("norm.") and kind != "backbone":
            out[pre + "layernorm." + k[len("norm."):]] = v
        elif k.startswith("head.") and kind == "classification":
            out["classifier." + k[len("head."):]] = v
        elif re.match(r"^norm(_stem|\d+)\.", k) and kind == "backbone":
            name, rest = k.split(".", 1)
            stage = "stem" if name == "norm_stem" else f"stage{int(name[4:]) + 1}"
            out[f"hidden_states_norms.{stage}.{rest}"] = v
        # otherwise: not part of that transformers model (e.g. the head for "model")
    return out


def to_authors(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """This project's names -> the authors' classification checkpoint layout.

    The names are the same (modeling.py follows the authors' module tree), so this keeps every
    key the authors' classification ``DiNAT`` has and drops the backbone-only per-output norms.
    """
    return {k: v for k, v in state_dict.items() if not re.match(r"^norm(_stem|\d+)\.", k)}


def _backbone_only(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v for k, v in state_dict.items() if not re.match(r"^(head|norm)\.", k)}


def to_mmengine(state_dict: Mapping[str, torch.Tensor], prefix: str = "backbone."
                ) -> Dict[str, Any]:
    """This project's names -> ``{"state_dict": {"backbone.<key>": ...}}`` (mmdet / mmseg)."""
    return {"state_dict": {prefix + k: v for k, v in _backbone_only(state_dict).items()},
            "meta": {"converted_by": "dinat_backbone.checkpoints.to_mmengine"}}


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


# ================================================================================== shapes
def expected_shapes(config: DinatConfig, head: bool = True, out_norms: bool = True
                    ) -> Dict[str, Tuple[int, ...]]:
    """Every parameter name of the DiNAT described by ``config`` and its shape (by formula)."""
    E, k = config.embed_dim, config.kernel_size
    s: Dict[str, Tuple[int, ...]] = {
        "patch_embed.proj.0.weight": (E // 2, config.num_channels, 3, 3),
        "patch_embed.proj.0.bias": (E // 2,),
        "patch_embed.proj.1.weight": (E, E // 2, 3, 3),
        "patch_embed.proj.1.bias": (E,),
        "patch_embed.norm.weight": (E,),
        "patch_embed.norm.bias": (E,),
    }
    L = len(config.depths)
    for i, (depth, heads) in enumerate(zip(config.depths, config.num_heads)):
        dim = E * 2 ** i
        hid = int(dim * config.mlp_ratio)
        for j in range(depth):
            b = f"levels.{i}.blocks.{j}."
            s.update({
                b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
                b + "attn.qkv.weight": (3 * dim, dim),
                b + "attn.rpb": (heads, 2 * k - 1, 2 * k - 1),
                b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
                b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
                b + "mlp.fc1.weight": (hid, dim), b + "mlp.fc1.bias": (hid,),
                b + "mlp.fc2.weight": (dim, hid), b + "mlp.fc2.bias": (dim,),
            })
            if config.qkv_bias:
                s[b + "attn.qkv.bias"] = (3 * dim,)
            if config.layer_scale_init_value > 0:
                s[b + "gamma1"] = (dim,)
                s[b + "gamma2"] = (dim,)
        if i < L - 1:
            s[f"levels.{i}.downsample.reduction.weight"] = (2 * dim, dim, 3, 3)
            s[f"levels.{i}.downsample.norm.weight"] = (2 * dim,)
            s[f"levels.{i}.downsample.norm.bias"] = (2 * dim,)
    C = E * 2 ** (L - 1)
    s["norm.weight"] = s["norm.bias"] = (C,)
    if head and config.num_labels > 0:
        s["head.weight"] = (config.num_labels, C)
        s["head.bias"] = (config.num_labels,)
    if out_norms:
        s["norm_stem.weight"] = s["norm_stem.bias"] = (E,)
        for i in range(L):
            s[f"norm{i}.weight"] = s[f"norm{i}.bias"] = (E * 2 ** i,)
    return s


def _structure(sd: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """What the weights say about the architecture (dilations excepted)."""
    if _ANCHOR_DINAT not in sd or "patch_embed.proj.1.weight" not in sd:
        raise ValueError("cannot infer the architecture: the patch embedding "
                         f"('{_ANCHOR_DINAT}') is missing")
    E = int(sd["patch_embed.proj.1.weight"].shape[0])
    blocks: Dict[int, set] = {}
    for k in sd:
        m = re.match(r"^levels\.(\d+)\.blocks\.(\d+)\.", k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not blocks:
        raise ValueError("cannot infer the architecture: no 'levels.<i>.blocks.<j>.' weights")
    L = max(blocks) + 1
    depths, heads, ratios, kernels = [], [], [], set()
    for i in range(L):
        idx = blocks.get(i, set())
        depths.append(max(idx) + 1 if idx else 0)
        rpb = next((sd[f"levels.{i}.blocks.{j}.attn.rpb"] for j in sorted(idx)
                    if f"levels.{i}.blocks.{j}.attn.rpb" in sd), None)
        fc1 = next((sd[f"levels.{i}.blocks.{j}.mlp.fc1.weight"] for j in sorted(idx)
                    if f"levels.{i}.blocks.{j}.mlp.fc1.weight" in sd), None)
        if rpb is None or fc1 is None:
            raise ValueError(f"cannot infer the architecture: no attn.rpb or mlp.fc1.weight "
                             f"in levels.{i}; pass a config")
        heads.append(int(rpb.shape[0]))
        kernels.add((int(rpb.shape[-2]) + 1) // 2)
        ratios.append(fc1.shape[0] / (E * 2 ** i))
    if len(kernels) != 1:
        raise ValueError(f"RPB tables of several kernel sizes {sorted(kernels)} in one checkpoint")
    out = dict(embed_dim=E, depths=depths, num_heads=heads, kernel_size=kernels.pop(),
               mlp_ratio=float(ratios[0]),
               num_channels=int(sd[_ANCHOR_DINAT].shape[1]),
               qkv_bias=any(k.endswith("attn.qkv.bias") for k in sd),
               layer_scale=any(k.endswith((".gamma1", ".gamma2")) for k in sd))
    if "head.weight" in sd:
        out["num_labels"] = int(sd["head.weight"].shape[0])
    return out


def _variant_of(st: Mapping[str, Any]) -> Optional[str]:
    for name, v in VARIANTS.items():
        if (v["embed_dim"] == st["embed_dim"] and list(v["depths"]) == st["depths"]
                and list(v["num_heads"]) == st["num_heads"]
                and v.get("kernel_size", 7) == st["kernel_size"]
                and float(v["mlp_ratio"]) == st["mlp_ratio"]):
            return name
    return None


def _describe(st: Mapping[str, Any]) -> str:
    v = _variant_of(st)
    return (f"embed_dim={st['embed_dim']}, depths={st['depths']}, num_heads={st['num_heads']}, "
            f"kernel_size={st['kernel_size']}, mlp_ratio={st['mlp_ratio']:g}"
            + (f" (variant '{v}')" if v else ""))


def _infer(sd: Mapping[str, torch.Tensor], dilations=None, **overrides) -> Tuple[DinatConfig, List[str]]:
    st = _structure(sd)
    notes = []
    kw: Dict[str, Any] = dict(
        embed_dim=st["embed_dim"], depths=st["depths"], num_heads=st["num_heads"],
        kernel_size=st["kernel_size"], mlp_ratio=st["mlp_ratio"], qkv_bias=st["qkv_bias"],
        num_channels=st["num_channels"],
        layer_scale_init_value=1e-5 if st["layer_scale"] else 0.0)
    if "num_labels" in st:
        kw["num_labels"] = st["num_labels"]
    if dilations is None:
        dilations = dilation_preset("imagenet224", st["depths"])
        notes.append("dilations are not stored in weights and no config.json was given: used "
                     f"the classification preset {dilations} (right for every released "
                     "224-px classification model and the 384-px 11x11 one; pass "
                     "dilations='imagenet384' for the 384-px 7x7 one, or the preset of the "
                     "detection / segmentation recipe, e.g. dilations='coco')")
    kw["dilations"] = dilations
    kw.update(overrides)
    cfg = DinatConfig(**kw)
    v = _variant_of(st)
    if v:
        cfg.variant = v
    return cfg, notes


def infer_config(state_dict: Any, dilations=None, **overrides) -> DinatConfig:
    """A DinatConfig read from the weights' shapes (any supported format).

    embed_dim, depths, heads, kernel size (from the RPB table), mlp_ratio, qkv_bias, layer
    scale and the number of classes come from the weights. Dilations cannot: ``dilations`` if
    given, else the classification preset (see the module doc).
    """
    sd, _ = _to_ours(state_dict)
    cfg, notes = _infer(sd, dilations, **overrides)
    for n in notes:
        logger.info(n)
    return cfg


# ================================================================================== converting
def resize_rpb(rpb: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Resize an RPB table [heads, 2k-1, 2k-1] to ``kernel_size`` by bicubic interpolation."""
    n = 2 * int(kernel_size) - 1
    if tuple(rpb.shape[-2:]) == (n, n):
        return rpb
    out = F.interpolate(rpb.detach().float().unsqueeze(0), size=(n, n), mode="bicubic",
                        align_corners=False)
    return out.squeeze(0).to(rpb.dtype)


def _to_ours(obj: Any, prefix: Optional[str] = None, use_ema: bool = False):
    """(state dict in this project's names, info dict)."""
    if isinstance(obj, (str, os.PathLike)):
        obj = load_checkpoint_file(obj)
    sd, notes = extract_state_dict(obj, use_ema=use_ema)
    naming, pre = find_backbone(sd, prefix)
    sub = {k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)}
    head: Dict[str, torch.Tensor] = {}
    if naming == "transformers":
        if pre.endswith("dinat."):
            outer = pre[: -len("dinat.")]
            head = {k[len(outer) + len("classifier."):]: v for k, v in sd.items()
                    if k.startswith(outer + "classifier.")}
        ours = _from_transformers(sub, head)
    else:
        ours = dict(sub)
    used = len(sub) + len(head)
    info = dict(format=_format_name(naming, pre), prefix=pre, notes=notes,
                ignored=len(sd) - used)
    if info["ignored"]:
        notes.append(f"ignored {info['ignored']} keys outside the backbone (prefix {pre!r}): "
                     "necks, heads or other modules")
    return ours, info


def _check_shapes(sd: Dict[str, torch.Tensor], want: Mapping[str, Tuple[int, ...]],
                  target: str, resized: List[str]) -> None:
    """Resize RPBs of another kernel size (warning); raise one error for other mismatches."""
    bad = []
    kernel_to = None
    for k, v in list(sd.items()):
        if k not in want or tuple(v.shape) == tuple(want[k]):
            continue
        w = tuple(want[k])
        if k.endswith("attn.rpb") and v.dim() == 3 and len(w) == 3 and v.shape[0] == w[0] \
                and w[1] == w[2] and v.shape[1] == v.shape[2]:
            kernel_to = (w[1] + 1) // 2
            kernel_from = (v.shape[1] + 1) // 2
            sd[k] = resize_rpb(v, kernel_to)
            resized.append(k)
            continue
        if k.startswith("head."):
            continue  # decided by the loader (a new head for another number of classes)
        bad.append((k, tuple(v.shape), w))
    if resized:
        warnings.warn(
            f"kernel size changed from {kernel_from} to {kernel_to}: resized {len(resized)} RPB "
            f"tables from {2 * kernel_from - 1}x{2 * kernel_from - 1} to "
            f"{2 * kernel_to - 1}x{2 * kernel_to - 1} by bicubic interpolation (as the authors "
            "made their 11x11 checkpoints); accuracy may change until fine-tuned",
            UserWarning, stacklevel=3)
    if bad:
        st = None
        try:
            st = _describe(_structure(sd))
        except ValueError:
            pass
        lines = "; ".join(f"{k}: checkpoint {list(a)} vs {target} {list(b)}" for k, a, b in bad[:5])
        raise ValueError(
            f"checkpoint does not fit {target}: {len(bad)} tensors differ in shape, first: "
            f"{lines}."
            + (f" The checkpoint is {st}." if st else "")
            + " Build the model from the checkpoint instead (from_pretrained(path) infers it, or "
            "DinatConfig.from_variant(<that variant>)).")


def convert_state_dict(state_dict: Any, config: Optional[DinatConfig] = None,
                       prefix: Optional[str] = None, use_ema: bool = False
                       ) -> Tuple[Dict[str, torch.Tensor], DinatConfig]:
    """Any supported checkpoint (state dict, wrapped dict or path) -> (this project's names,
    config).

    Without ``config`` the config is inferred from the shapes (see :func:`infer_config`). With
    one, every tensor is checked against it: RPB tables of another kernel size are resized
    (warning); any other difference, or trunk weights the config lacks / has in addition,
    raise one ValueError naming the first offending keys and shapes.
    """
    sd, info = _to_ours(state_dict, prefix, use_ema)
    if config is None:
        config, notes = _infer(sd)
        for n in notes:
            logger.info(n)
        return sd, config
    if not isinstance(config, DinatConfig):
        raise TypeError(f"config must be a DinatConfig, got {type(config).__name__}")
    want = expected_shapes(config)
    _check_shapes(sd, want, "the config", [])
    trunk = re.compile(r"^(patch_embed|levels)\.")
    extra = [k for k in sd if trunk.match(k) and k not in want]
    lacking = [k for k in want if trunk.match(k) and k not in sd]
    if extra or lacking:
        msg = [f"checkpoint does not fit the config ({_describe(_structure(sd))} in the "
               f"checkpoint; the config has embed_dim={config.embed_dim}, "
               f"depths={config.depths}, num_heads={config.num_heads}):"]
        if extra:
            msg.append(f"{len(extra)} weights the config has no place for, first: "
                       + ", ".join(f"{k} {list(sd[k].shape)}" for k in extra[:5]))
        if lacking:
            msg.append(f"{len(lacking)} weights the config needs are absent, first: "
                       + ", ".join(f"{k} {list(want[k])}" for k in lacking[:5]))
        raise ValueError(" ".join(msg))
    return sd, config


# ================================================================================== loading
@dataclass
class LoadReport:
    """What :func:`load_pretrained` did. ``missing_keys`` / ``unexpected_keys`` follow
    ``torch.nn.Module.load_state_dict``; ``newly_initialized`` is the part of ``missing_keys``
    that may legitimately be absent (head, final / per-output norms), ``dropped_keys`` the part
    of ``unexpected_keys`` that the model has no use for (e.g. the head, for a backbone)."""

    source: str = ""
    format: str = ""
    prefix: str = ""
    missing_keys: List[str] = field(default_factory=list)
    unexpected_keys: List[str] = field(default_factory=list)
    newly_initialized: List[str] = field(default_factory=list)
    dropped_keys: List[str] = field(default_factory=list)
    resized_keys: List[str] = field(default_factory=list)
    ignored_keys: int = 0
    loaded_keys: int = 0
    notes: List[str] = field(default_factory=list)

    @property
    def missing_backbone_keys(self) -> List[str]:
        """Missing keys of the trunk (patch_embed + levels): a strict load refuses these."""
        s = set(self.newly_initialized)
        return [k for k in self.missing_keys if k not in s]

    @property
    def unexpected_backbone_keys(self) -> List[str]:
        s = set(self.dropped_keys)
        return [k for k in self.unexpected_keys if k not in s]

    def __str__(self) -> str:
        parts = [f"loaded {self.loaded_keys} tensors from {self.source or 'a state dict'} "
                 f"(format {self.format}, prefix {self.prefix!r})"]
        if self.missing_backbone_keys:
            parts.append(f"missing {len(self.missing_backbone_keys)}: "
                         f"{_short(self.missing_backbone_keys)}")
        if self.unexpected_backbone_keys:
            parts.append(f"unexpected {len(self.unexpected_backbone_keys)}: "
                         f"{_short(self.unexpected_backbone_keys)}")
        if self.newly_initialized:
            parts.append(f"newly initialised (not in the checkpoint): "
                         f"{_short(self.newly_initialized)}")
        if self.dropped_keys:
            parts.append(f"not used by this model: {_short(self.dropped_keys)}")
        if self.resized_keys:
            parts.append(f"RPB resized for a new kernel size: {len(self.resized_keys)} tables")
        parts += self.notes
        return "; ".join(parts)


def _short(keys: Sequence[str], n: int = 8) -> str:
    keys = list(keys)
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def load_pretrained(model: torch.nn.Module, source: Any, strict: bool = True,
                    prefix: Optional[str] = None, use_ema: bool = False) -> LoadReport:
    """Load a checkpoint in any supported format into a DinatModel /
    DinatForImageClassification / DinatBackbone (or a subclass, e.g. an adapter's backbone).

    ``source``: a path (file or directory) or a dict. The trunk (patch_embed, levels) must
    match (``strict``, the default): one ValueError lists missing and unexpected keys. The head
    and the final / per-output norms are optional: absent ones stay initialised, superfluous
    ones are dropped, a head for another number of classes is replaced by a new one; all of
    it is in the returned :class:`LoadReport`. RPB tables of another kernel size are resized.
    """
    from .modeling import DinatPreTrainedModel

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a DiNAT torch module, got {type(model).__name__}")
    name = source if isinstance(source, (str, os.PathLike)) else ""
    sd, info = _to_ours(source, prefix, use_ema)
    own = model.state_dict()
    report = LoadReport(source=os.fspath(name) if name else "", format=info["format"],
                        prefix=info["prefix"], ignored_keys=info["ignored"],
                        notes=list(info["notes"]))
    want = {k: tuple(v.shape) for k, v in own.items()}
    target = f"this {type(model).__name__}"
    _check_shapes(sd, want, target, report.resized_keys)
    for k in [k for k in sd if k.startswith("head.") and k in want
              and tuple(sd[k].shape) != want[k]]:
        report.notes.append(f"{k}: checkpoint {list(sd[k].shape)} vs model {list(want[k])} "
                            "(another number of classes): kept the model's new head")
        report.dropped_keys.append(k)
        report.unexpected_keys.append(k)
        del sd[k]
    report.missing_keys = [k for k in own if k not in sd]
    report.unexpected_keys += [k for k in sd if k not in own]
    report.newly_initialized = [k for k in report.missing_keys if _OPTIONAL.match(k)]
    report.dropped_keys += [k for k in sd if k not in own and _OPTIONAL.match(k)]
    bad_missing, bad_unexpected = report.missing_backbone_keys, report.unexpected_backbone_keys
    if strict and (bad_missing or bad_unexpected):
        hint = ""
        cfg = getattr(model, "config", None)
        if isinstance(cfg, DinatConfig):
            try:
                hint = (f" The checkpoint is {_describe(_structure(sd))}; the model is "
                        f"embed_dim={cfg.embed_dim}, depths={cfg.depths}, "
                        f"num_heads={cfg.num_heads}, kernel_size={cfg.kernel_size}.")
            except ValueError:
                pass
        parts = []
        if bad_missing:
            parts.append(f"{len(bad_missing)} missing keys: {_short(bad_missing)}")
        if bad_unexpected:
            parts.append(f"{len(bad_unexpected)} unexpected keys: {_short(bad_unexpected)}")
        raise ValueError(
            f"checkpoint {name or '(state dict)'} (format {info['format']}, prefix "
            f"{info['prefix']!r}) does not match {target}: " + "; ".join(parts) + "." + hint
            + " Build the model from the checkpoint (from_pretrained infers the variant), or "
            "pass strict=False to load the matching tensors only.")
    loadable = {k: v for k, v in sd.items() if k in own}
    model.load_state_dict(loadable, strict=False)
    report.loaded_keys = len(loadable)
    if isinstance(model, DinatPreTrainedModel):
        model.loading_report = report
    logger.info("%s", report)
    return report


# ================================================================================== from_pretrained
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def _hub_files(repo_id: str, revision: Optional[str], cache_dir: Optional[str]
               ) -> Tuple[str, Optional[str]]:
    try:
        import huggingface_hub
    except ImportError:
        raise ValueError(
            f"{repo_id!r} is not a local file or directory, and downloading it from the Hugging "
            "Face Hub needs huggingface_hub: pip install huggingface_hub (or the 'hub' extra). "
            f"Or download 'config.json' and 'pytorch_model.bin' (or 'model.safetensors') from "
            f"the Hub repository {repo_id} into one folder and pass that folder") from None
    errors = []
    weights = None
    for fname in _HUB_WEIGHTS:
        try:
            weights = huggingface_hub.hf_hub_download(repo_id, fname, revision=revision,
                                                      cache_dir=cache_dir)
            break
        except Exception as e:  # EntryNotFound for one name, network errors for all
            errors.append(f"{fname}: {type(e).__name__}")
            if type(e).__name__ not in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
                break
    if weights is None:
        raise ValueError(
            f"could not fetch the weights of {repo_id!r} from the Hugging Face Hub "
            f"({'; '.join(errors)}). Without a network: download 'config.json' and "
            f"'pytorch_model.bin' (or 'model.safetensors') from the Hub repository {repo_id} "
            "on a machine that has one, put both in one folder and pass that folder to "
            "from_pretrained")
    try:
        cfg = huggingface_hub.hf_hub_download(repo_id, "config.json", revision=revision,
                                              cache_dir=cache_dir)
    except Exception:
        cfg = None
    return weights, cfg


_CONFIG_FIELDS = set(DinatConfig().to_dict()) | {"out_features", "out_indices", "num_labels",
                                                  "id2label", "label2id"}


def from_pretrained(cls, path_or_hub_id: Union[str, os.PathLike],
                    config: Optional[DinatConfig] = None, strict: bool = True,
                    use_ema: bool = False, prefix: Optional[str] = None,
                    output_loading_info: bool = False, revision: Optional[str] = None,
                    cache_dir: Optional[str] = None, **config_overrides: Any):
    """Build ``cls`` (DinatModel, DinatForImageClassification, DinatBackbone) and load weights.

    ``path_or_hub_id``: a checkpoint file in any supported format, a directory holding one
    (and optionally ``config.json``, e.g. a transformers download), or a Hub id such as
    ``shi-labs/dinat-mini-in1k-224`` (needs huggingface_hub and a network).
    The config is, in order: ``config``; the directory's ``config.json``; inferred from the
    weights (dilations from the classification preset, see :func:`infer_config`).
    ``config_overrides`` (e.g. ``out_features=["stage3"]``, ``dilations="coco"``,
    ``num_labels=10``) apply on top. A head for another number of classes starts new.
    Returns the model (and the :class:`LoadReport` with ``output_loading_info=True``); the
    report is also kept as ``model.loading_report``.
    """
    src = os.fspath(path_or_hub_id)
    cfg_file = None
    if os.path.isdir(src):
        weights = _weights_file_in(src)
        c = os.path.join(src, "config.json")
        cfg_file = c if os.path.isfile(c) else None
    elif os.path.isfile(src):
        weights = src
    elif _HUB_ID.match(src) and not src.lower().endswith(_WEIGHT_EXTS + (".json",)):
        weights, cfg_file = _hub_files(src, revision, cache_dir)
    else:
        raise ValueError(f"from_pretrained: {src!r} is neither a file, a directory nor a Hub "
                         "id (owner/name)")
    unknown = set(config_overrides) - _CONFIG_FIELDS
    if unknown:
        raise TypeError(f"from_pretrained: unknown arguments {sorted(unknown)}; config fields "
                        f"are {sorted(_CONFIG_FIELDS)}")
    sd, info = _to_ours(load_checkpoint_file(weights), prefix, use_ema)
    notes: List[str] = []
    if config is None and cfg_file is not None:
        with open(cfg_file, encoding="utf-8") as f:
            d = json.load(f)
        for k in ("architectures", "transformers_version", "torch_dtype", "_name_or_path",
                  "stage_names", "num_layers", "hidden_size", "path_norm", "model_type"):
            d.pop(k, None)
        config = DinatConfig.from_dict({k: v for k, v in d.items() if k in _CONFIG_FIELDS})
        notes.append(f"config from {cfg_file}")
        has_scale = any(k.endswith((".gamma1", ".gamma2")) for k in sd)
        if has_scale != (config.layer_scale_init_value > 0):
            config = config.copy(layer_scale_init_value=1e-5 if has_scale else 0.0)
            notes.append(f"layer scale {'on' if has_scale else 'off'} as in the weights "
                         f"({cfg_file} said otherwise)")
    if config is None:
        overrides = dict(config_overrides)
        dil = overrides.pop("dilations", None)
        config, inf_notes = _infer(sd, dil, **overrides)
        notes += inf_notes
    elif config_overrides:
        config = config.copy(**config_overrides)
    with _deferred_init():  # every tensor the checkpoint holds is overwritten anyway
        model = cls(config)
    report = load_pretrained(model, {**sd}, strict=strict)
    _init_missing(model, report.missing_keys)
    report.source = os.fspath(weights)
    report.format, report.prefix = info["format"], info["prefix"]
    report.notes = info["notes"] + notes + report.notes
    report.ignored_keys = info["ignored"]
    for n in notes:
        if n.startswith("dilations are not stored"):
            warnings.warn(n, UserWarning, stacklevel=3)
    model.loading_report = report
    return (model, report) if output_loading_info else model


def _deferred_init():
    """Build a model without its (slow, truncated-normal) initialisation pass; the caller
    initialises whatever the checkpoint does not provide (see _init_missing). Thread-safe: a
    context variable, not a patched method."""
    from .modeling import skip_init

    return skip_init()


def _init_missing(model: torch.nn.Module, missing: Iterable[str]) -> None:
    """Give exactly the ``missing`` tensors the model's own initialisation."""
    init = getattr(model, "_init_weights", None)
    if init is None:
        return
    owners: Dict[str, List[str]] = {}
    for k in missing:
        owner, _, name = k.rpartition(".")
        owners.setdefault(owner, []).append(name)
    with torch.no_grad():
        for owner, names in owners.items():
            module = model.get_submodule(owner) if owner else model
            fresh = copy.deepcopy(module)
            init(fresh)  # this module's own tensors only (not recursive)
            for n in names:
                t = getattr(module, n, None)
                if not torch.is_tensor(t):
                    continue
                if n in ("gamma1", "gamma2"):
                    t.fill_(model.config.layer_scale_init_value)
                else:
                    t.copy_(getattr(fresh, n))


# ================================================================================== saving
def save_state_dict(obj: Mapping[str, Any], path: Union[str, os.PathLike]) -> str:
    """Write a state dict (``.safetensors``) or checkpoint dict (``.pth`` / ``.bin`` / ``.pt``
    via torch.save; ``.pkl`` as detectron2's pickle of numpy arrays)."""
    path = os.fspath(path)
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    lower = path.lower()
    if lower.endswith(".safetensors"):
        try:
            from safetensors.torch import save_file
        except ImportError:
            raise ValueError("writing .safetensors needs: pip install safetensors") from None
        if not all(torch.is_tensor(v) for v in obj.values()):
            raise ValueError(".safetensors holds a flat dict of tensors; write this checkpoint "
                             "(which wraps its weights) as .pth instead")
        save_file({k: v.contiguous() for k, v in obj.items()}, path)
    elif lower.endswith((".pkl", ".pickle")):
        def np_tree(x):
            if torch.is_tensor(x):
                return x.detach().cpu().numpy()
            if isinstance(x, Mapping):
                return {k: np_tree(v) for k, v in x.items()}
            return x
        with open(path, "wb") as f:
            pickle.dump(np_tree(dict(obj)), f, protocol=2)
    elif lower.endswith((".pth", ".pt", ".bin", ".ckpt")):
        torch.save(dict(obj), path)
    else:
        raise ValueError(f"{path}: unknown extension; use .pth, .bin, .pt, .safetensors or .pkl")
    return path
