"""Shapes: what a config implies, what weights say, and the one "does it fit?" check.

All in this project's key names (convert other namings first, see :mod:`.convert`).
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..config import VARIANTS, DinatConfig, dilation_preset

__all__ = ["expected_shapes", "resize_rpb", "infer_from_weights", "describe_weights",
           "check_fit", "Fit", "short_list", "OPTIONAL", "ANCHOR"]

#: The first tensor of the patch embedding: marks a DiNAT in this project's / the authors' names.
ANCHOR = "patch_embed.proj.0.weight"

#: Keys outside the trunk (patch_embed + levels) that a load may leave initialised (e.g. the
#: per-output norms for a classification checkpoint) or drop (a head, for a backbone).
OPTIONAL = re.compile(r"^(head|norm|norm_stem|norm\d+)\.")

Shape = Tuple[int, ...]


def short_list(keys: Sequence[str], n: int = 8) -> str:
    keys = list(keys)
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


# ================================================================================== expected
def _block_shapes(config: DinatConfig, b: str, dim: int, heads: int) -> Dict[str, Shape]:
    k, hid = config.kernel_size, int(dim * config.mlp_ratio)
    s: Dict[str, Shape] = {
        b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
        b + "attn.qkv.weight": (3 * dim, dim),
        b + "attn.rpb": (heads, 2 * k - 1, 2 * k - 1),
        b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
        b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
        b + "mlp.fc1.weight": (hid, dim), b + "mlp.fc1.bias": (hid,),
        b + "mlp.fc2.weight": (dim, hid), b + "mlp.fc2.bias": (dim,),
    }
    if config.qkv_bias:
        s[b + "attn.qkv.bias"] = (3 * dim,)
    if config.layer_scale_init_value > 0:
        s[b + "gamma1"] = s[b + "gamma2"] = (dim,)
    return s


def _level_shapes(config: DinatConfig, i: int) -> Dict[str, Shape]:
    dim = config.embed_dim * 2 ** i
    s: Dict[str, Shape] = {}
    for j in range(config.depths[i]):
        s.update(_block_shapes(config, f"levels.{i}.blocks.{j}.", dim, config.num_heads[i]))
    if i < len(config.depths) - 1:
        s[f"levels.{i}.downsample.reduction.weight"] = (2 * dim, dim, 3, 3)
        s[f"levels.{i}.downsample.norm.weight"] = s[f"levels.{i}.downsample.norm.bias"] = (2 * dim,)
    return s


def expected_shapes(config: DinatConfig, head: bool = True, out_norms: bool = True
                    ) -> Dict[str, Shape]:
    """Every parameter name of the DiNAT described by ``config`` and its shape (by formula)."""
    E, L = config.embed_dim, len(config.depths)
    s: Dict[str, Shape] = {
        "patch_embed.proj.0.weight": (E // 2, config.num_channels, 3, 3),
        "patch_embed.proj.0.bias": (E // 2,),
        "patch_embed.proj.1.weight": (E, E // 2, 3, 3),
        "patch_embed.proj.1.bias": (E,),
        "patch_embed.norm.weight": (E,),
        "patch_embed.norm.bias": (E,),
    }
    for i in range(L):
        s.update(_level_shapes(config, i))
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


# ================================================================================== inferred
def _blocks_per_level(sd: Mapping[str, torch.Tensor]) -> Dict[int, List[int]]:
    blocks: Dict[int, set] = {}
    for k in sd:
        m = re.match(r"^levels\.(\d+)\.blocks\.(\d+)\.", k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not blocks:
        raise ValueError("cannot infer the architecture: no 'levels.<i>.blocks.<j>.' weights")
    return {i: sorted(v) for i, v in blocks.items()}


def _first(sd: Mapping[str, torch.Tensor], i: int, blocks: Sequence[int], name: str):
    return next((sd[f"levels.{i}.blocks.{j}.{name}"] for j in blocks
                 if f"levels.{i}.blocks.{j}.{name}" in sd), None)


def _level_structure(sd, i: int, blocks: Sequence[int], E: int) -> Tuple[int, int, int, float]:
    """(depth, heads, kernel size, mlp ratio) of level ``i``."""
    rpb, fc1 = _first(sd, i, blocks, "attn.rpb"), _first(sd, i, blocks, "mlp.fc1.weight")
    if rpb is None or fc1 is None:
        raise ValueError(f"cannot infer the architecture: no attn.rpb or mlp.fc1.weight "
                         f"in levels.{i}; pass a config")
    depth = max(blocks) + 1 if blocks else 0
    return depth, int(rpb.shape[0]), (int(rpb.shape[-2]) + 1) // 2, fc1.shape[0] / (E * 2 ** i)


def _structure(sd: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """What the weights say about the architecture (dilations excepted)."""
    if ANCHOR not in sd or "patch_embed.proj.1.weight" not in sd:
        raise ValueError(f"cannot infer the architecture: the patch embedding ('{ANCHOR}') "
                         "is missing")
    E = int(sd["patch_embed.proj.1.weight"].shape[0])
    blocks = _blocks_per_level(sd)
    levels = [_level_structure(sd, i, blocks.get(i, []), E) for i in range(max(blocks) + 1)]
    kernels = sorted({lv[2] for lv in levels})
    if len(kernels) != 1:
        raise ValueError(f"RPB tables of several kernel sizes {kernels} in one checkpoint")
    out = dict(embed_dim=E, depths=[lv[0] for lv in levels], num_heads=[lv[1] for lv in levels],
               kernel_size=kernels[0], mlp_ratio=float(levels[0][3]),
               num_channels=int(sd[ANCHOR].shape[1]),
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


def describe_weights(sd: Mapping[str, torch.Tensor]) -> Optional[str]:
    """"embed_dim=..., depths=..., ... (variant 'x')" for weights, or None if they do not say."""
    try:
        return _describe(_structure(sd))
    except ValueError:
        return None


def infer_from_weights(sd: Mapping[str, torch.Tensor], dilations=None,
                       why_no_dilations: str = "no config.json was given", **overrides
                       ) -> Tuple[DinatConfig, List[str]]:
    """(config read from the shapes, notes). Without ``dilations`` the classification preset
    is used and a note says so, with ``why_no_dilations`` as the reason."""
    st = _structure(sd)
    notes = []
    kw: Dict[str, Any] = {k: st[k] for k in ("embed_dim", "depths", "num_heads", "kernel_size",
                                             "mlp_ratio", "qkv_bias", "num_channels")}
    kw["layer_scale_init_value"] = 1e-5 if st["layer_scale"] else 0.0
    if "num_labels" in st:
        kw["num_labels"] = st["num_labels"]
    if dilations is None:
        dilations = dilation_preset("imagenet224", st["depths"])
        notes.append(f"dilations are not stored in weights and {why_no_dilations}: used "
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


# ================================================================================== resizing
def resize_rpb(rpb: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Resize an RPB table [heads, 2k-1, 2k-1] to ``kernel_size`` by bicubic interpolation."""
    n = 2 * int(kernel_size) - 1
    if tuple(rpb.shape[-2:]) == (n, n):
        return rpb
    out = F.interpolate(rpb.detach().float().unsqueeze(0), size=(n, n), mode="bicubic",
                        align_corners=False)
    return out.squeeze(0).to(rpb.dtype)


def _resizable(k: str, v: torch.Tensor, w: Shape) -> bool:
    return (k.endswith("attn.rpb") and v.dim() == 3 and len(w) == 3 and v.shape[0] == w[0]
            and w[1] == w[2] and v.shape[1] == v.shape[2])


def _warn_resized(n: int, k_from: int, k_to: int) -> None:
    warnings.warn(
        f"kernel size changed from {k_from} to {k_to}: resized {n} RPB tables from "
        f"{2 * k_from - 1}x{2 * k_from - 1} to {2 * k_to - 1}x{2 * k_to - 1} by bicubic "
        "interpolation (as the authors made their 11x11 checkpoints); accuracy may change "
        "until fine-tuned", UserWarning, stacklevel=4)


# ================================================================================== fitting
@dataclass
class Fit:
    """What :func:`check_fit` found (key lists as in ``torch.nn.Module.load_state_dict``)."""

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    newly_initialized: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)
    resized: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Shape, Shape]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def bad_missing(self) -> List[str]:
        return [k for k in self.missing if k not in set(self.newly_initialized)]

    @property
    def bad_unexpected(self) -> List[str]:
        return [k for k in self.unexpected if k not in set(self.dropped)]


def _fit_shapes(sd: Dict[str, torch.Tensor], want: Mapping[str, Shape], fit: Fit) -> None:
    """Resize RPBs of another kernel size, drop a head of another size, record the rest."""
    for k, v in list(sd.items()):
        w = tuple(want.get(k, v.shape))
        if tuple(v.shape) == w:
            continue
        if _resizable(k, v, w):
            sd[k] = resize_rpb(v, (w[1] + 1) // 2)
            fit.resized.append(k)
            k_from, k_to = (v.shape[1] + 1) // 2, (w[1] + 1) // 2
        elif k.startswith("head."):
            fit.notes.append(f"{k}: checkpoint {list(v.shape)} vs model {list(w)} (another "
                             "number of classes): kept the model's new head")
            fit.dropped.append(k)
            fit.unexpected.append(k)
            del sd[k]
        else:
            fit.mismatched.append((k, tuple(v.shape), w))
    if fit.resized:
        _warn_resized(len(fit.resized), k_from, k_to)


def _fit_hint(sd, target: str, config: Optional[DinatConfig]) -> str:
    ckpt = describe_weights(sd)
    hint = f" The checkpoint is {ckpt}" if ckpt else ""
    if ckpt and isinstance(config, DinatConfig):
        hint += (f"; {target} is embed_dim={config.embed_dim}, depths={config.depths}, "
                 f"num_heads={config.num_heads}, kernel_size={config.kernel_size}")
    return hint + "." if hint else ""


def _fit_error(fit: Fit, sd, want, target: str, source: str, config) -> ValueError:
    parts = []
    if fit.mismatched:
        parts.append(f"{len(fit.mismatched)} tensors differ in shape, first: " + "; ".join(
            f"{k}: checkpoint {list(a)} vs {target} {list(b)}" for k, a, b in fit.mismatched[:5]))
    if fit.bad_missing:
        parts.append(f"{len(fit.bad_missing)} missing keys (in {target}, not in the "
                     f"checkpoint): " + short_list([f"{k} {list(want[k])}" for k in fit.bad_missing], 5))
    if fit.bad_unexpected:
        parts.append(f"{len(fit.bad_unexpected)} unexpected keys (in the checkpoint, not in "
                     f"{target}): " + short_list([f"{k} {list(sd[k].shape)}" for k in fit.bad_unexpected], 5))
    fix = (" Build the model from the checkpoint instead (from_pretrained(path) infers it, or "
           "DinatConfig.from_variant(<that variant>))")
    fix += "." if fit.mismatched else ", or pass strict=False to load the matching tensors only."
    return ValueError(f"checkpoint {source or '(state dict)'} does not fit {target}: "
                      + "; ".join(parts) + "." + _fit_hint(sd, target, config) + fix)


def check_fit(sd: Dict[str, torch.Tensor], want: Mapping[str, Shape], target: str,
              config: Optional[DinatConfig] = None, strict: bool = True, source: str = ""
              ) -> Fit:
    """The one check of a converted state dict ``sd`` against the names and shapes ``want``.

    Edits ``sd`` in place: RPB tables of another kernel size are resized (a warning), a head of
    another size is dropped (a note). Head and final / per-output norms may be absent or
    superfluous (:data:`OPTIONAL`). Raises one ValueError, with a hint comparing the
    checkpoint's architecture with ``config``, when shapes differ, or (``strict``) when trunk
    keys are missing or unexpected. ``target`` names what is loaded into ("this DinatBackbone").
    """
    fit = Fit()
    _fit_shapes(sd, want, fit)
    fit.missing = [k for k in want if k not in sd]
    fit.unexpected += [k for k in sd if k not in want]
    fit.newly_initialized = [k for k in fit.missing if OPTIONAL.match(k)]
    fit.dropped += [k for k in sd if k not in want and OPTIONAL.match(k)]
    if fit.mismatched or (strict and (fit.bad_missing or fit.bad_unexpected)):
        raise _fit_error(fit, sd, want, target, source, config)
    return fit
