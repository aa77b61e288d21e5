"""2D (dilated) neighborhood attention: one public function, several exact backends.

>>> out = na2d(q, k, v, kernel_size=7, dilation=2, rpb=rpb)          # q/k/v [B, heads, H, W, D]
>>> out, attn = na2d(q, k, v, 7, 2, rpb=rpb, return_attn=True)        # attn [B, heads, H, W, 49]

Semantics (NATTEN's, see :mod:`dinat_backbone.ops.windows`): windows shift inward at the
borders, dilation works on residue-class sub-grids, and the RPB table [heads, 2kh-1, 2kw-1] is
indexed by the key's offset from the query. Every backend computes the same numbers:

* ``"tiled"``  pure PyTorch, batched matmuls over tiles (default on every device);
* ``"gather"`` pure PyTorch, gathers each query's k*k keys (simple, memory-hungry baseline);
* ``"natten"`` NATTEN, only where it computes the same thing (see natten_backend);
* ``"flex"``   torch's flex_attention (see flex_backend), where available;
* ``"cpp"``    a compiled CPU kernel (see cpp_backend), built on first use where a C++ compiler
  and ninja are available;
* ``"auto"``   "cpp" on the CPU (or "tiled" where it cannot be built), "tiled" on GPUs, or NATTEN on
  CUDA where it computes the same thing (never one that changes results; "flex" only when
  asked for: it is unverified on GPUs).
"""
from __future__ import annotations

import contextvars
from typing import Optional, Sequence, Union

import torch

from .._constants import ATTENTION_BACKENDS
from .cpp_backend import (cpp_available, cpp_loaded, cpp_takes_packed, na2d_cpp, na2d_cpp_qkv,
                          warn_fallback_once)
from .gather import na2d_av, na2d_gather, na2d_qk
from .natten_backend import na2d_natten, natten_info, natten_supports
from .tiled import na2d_tiled
from .windows import axis_neighborhood, check_kernel_dilation, check_window_fits, pair

__all__ = ["na2d", "na2d_qkv", "na2d_qk", "na2d_av", "available_backends", "BACKENDS",
           "axis_neighborhood"]

BACKENDS = ATTENTION_BACKENDS

_IMPLS = {"tiled": na2d_tiled, "gather": na2d_gather, "natten": na2d_natten, "cpp": na2d_cpp}

# Set (per thread / task) by dinat_backbone.flops.flop_tracing() to the autograd.Function that
# na2d runs as while fvcore traces a model: the op then shows up in the trace as one node that a
# FLOP handle can count. None otherwise.
_FLOP_TRACE: "contextvars.ContextVar[Optional[type]]" = contextvars.ContextVar(
    "dinat_flop_trace", default=None)


def _flex_impl():
    from .flex_backend import na2d_flex

    return na2d_flex


def available_backends(device: Union[str, torch.device] = "cpu") -> list:
    """The backends that can run on ``device`` in this environment."""
    dev = torch.device(device)
    out = ["tiled", "gather"]
    info = natten_info()
    if info is not None and "error" not in info:
        out.append("natten")
    try:
        from .flex_backend import flex_available

        if flex_available(dev):
            out.append("flex")
    except ImportError:
        pass
    if dev.type == "cpu" and cpp_available():   # builds the kernel on the first call
        out.append("cpp")
    return out


def _validate(query, key, value, kernel_size, dilation, rpb, scale, backend):
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not torch.is_tensor(t):
            raise TypeError(f"na2d: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 5:
            raise ValueError(
                f"na2d: {name} must be 5-D [batch, heads, height, width, head_dim], got shape "
                f"{tuple(t.shape)}; reshape channels-last maps with "
                "x.view(B, H, W, heads, D).permute(0, 3, 1, 2, 4)"
            )
        if not t.is_floating_point():
            raise TypeError(f"na2d: {name} must be a floating-point tensor, got {t.dtype}")
    if query.shape != key.shape:
        raise ValueError(f"na2d: query {tuple(query.shape)} and key {tuple(key.shape)} must have "
                         "the same shape")
    if value.shape[:4] != query.shape[:4]:
        raise ValueError(f"na2d: value {tuple(value.shape)} must match query "
                         f"{tuple(query.shape)} in batch, heads, height and width")
    if not (query.dtype == key.dtype == value.dtype):
        raise TypeError(f"na2d: query, key and value must share a dtype, got {query.dtype}, "
                        f"{key.dtype}, {value.dtype}")
    if not (query.device == key.device == value.device):
        raise ValueError(f"na2d: query, key and value must be on one device, got {query.device}, "
                         f"{key.device}, {value.device}")
    ks = pair(kernel_size, "kernel_size")
    dil = pair(dilation, "dilation")
    check_kernel_dilation(ks, dil)
    check_window_fits((query.shape[2], query.shape[3]), ks, dil)
    if rpb is not None:
        want = (query.shape[1], 2 * ks[0] - 1, 2 * ks[1] - 1)
        if not torch.is_tensor(rpb) or tuple(rpb.shape) != want:
            got = tuple(rpb.shape) if torch.is_tensor(rpb) else type(rpb).__name__
            raise ValueError(f"na2d: rpb must have shape [heads, 2*kh-1, 2*kw-1] = {want} for "
                             f"kernel_size {ks} and {query.shape[1]} heads, got {got}")
        if rpb.device != query.device:
            raise ValueError(f"na2d: rpb is on {rpb.device} but query is on {query.device}")
    if scale is None:
        scale = query.shape[-1] ** -0.5
    if backend not in BACKENDS:
        raise ValueError(f"na2d: unknown backend {backend!r}; use one of {list(BACKENDS)}")
    return ks, dil, float(scale)


def _auto_backend(query, rpb, return_attn, dropout_p) -> str:
    # "flex" is left out of "auto" on purpose: it has only been checked against the definition
    # on the CPU (forward), never on a GPU. Ask for backend="flex" explicitly to use it.
    if query.is_cuda and natten_supports(query, rpb, return_attn, dropout_p) is None:
        return "natten"
    if query.device.type == "cpu":
        # the compiled kernel: same results as "tiled" (tests/test_ops.py), faster on every
        # layer shape measured (docs/benchmarks.md); "tiled" where it cannot be built
        if torch.compiler.is_compiling():      # no build inside a graph trace
            return "cpp" if cpp_loaded() else "tiled"
        if cpp_available():
            return "cpp"
        warn_fallback_once()
    return "tiled"


def na2d(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    kernel_size: Union[int, Sequence[int]],
    dilation: Union[int, Sequence[int]] = 1,
    rpb: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    return_attn: bool = False,
    backend: str = "auto",
    *,
    dropout_p: float = 0.0,
    training: bool = False,
):
    """2D neighborhood attention.

    Args:
        query, key, value: [B, heads, H, W, D] (value may have its own D).
        kernel_size: odd int or (kh, kw).  dilation: int or (dh, dw); needs H >= kh*dh and
            W >= kw*dw (pad the map otherwise; DinatModel does).
        rpb: optional relative positional bias [heads, 2*kh-1, 2*kw-1].
        scale: multiplies q.k; default head_dim ** -0.5.
        return_attn: also return the softmax weights [B, heads, H, W, kh*kw] (row-major window).
        backend: "auto", "tiled", "gather", "natten", "flex" or "cpp".
        dropout_p / training: dropout on the attention weights (training only).
    Returns:
        out [B, heads, H, W, D], or (out, attn) when ``return_attn``.
    """
    ks, dil, scale = _validate(query, key, value, kernel_size, dilation, rpb, scale, backend)
    if query.numel() == 0 or value.numel() == 0:
        # Empty batch (or zero heads / head_dim): nothing to attend; answer here, for every
        # backend, with empty results still connected to the inputs for autograd.
        link = query.sum() + key.sum() + (rpb.sum() if rpb is not None else 0)
        out = value * 0 + (link * 0).to(value.dtype)
        if not return_attn:
            return out
        attn = query.new_zeros(query.shape[:4] + (ks[0] * ks[1],)) + (link * 0).to(query.dtype)
        return out, attn
    flop_function = _FLOP_TRACE.get()
    if flop_function is not None and torch.jit.is_tracing():
        out, attn = flop_function.apply(query, key, value, rpb, ks[0], ks[1], dil[0], dil[1], scale)
        return (out, attn) if return_attn else out
    p = float(dropout_p) if training else 0.0
    if backend == "auto":
        backend = _auto_backend(query, rpb, return_attn, p)
    impl = _flex_impl() if backend == "flex" else _IMPLS[backend]
    out, attn = impl(query, key, value, ks, dil, rpb, scale, return_attn, p, training)
    return (out, attn) if return_attn else out


def na2d_qkv(
    qkv: torch.Tensor,
    kernel_size: Union[int, Sequence[int]],
    dilation: Union[int, Sequence[int]] = 1,
    rpb: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    backend: str = "auto",
    *,
    dropout_p: float = 0.0,
    training: bool = False,
):
    """:func:`na2d` of q, k, v packed as ``qkv`` [B, H, W, 3, heads, D] (a qkv linear's output,
    reshaped): the same as ``na2d(*qkv.permute(3, 0, 4, 1, 2, 5).unbind(0), ...)``, and computed
    that way, except by the compiled "cpp" backend, which reads q, k, v from qkv and writes the
    gradient of qkv in qkv's own layout (no stacking of dq, dk, dv and no copy into the linear's
    layout in the backward). Returns out [B, heads, H, W, D]."""
    if not torch.is_tensor(qkv) or qkv.dim() != 6 or qkv.shape[3] != 3:
        got = tuple(qkv.shape) if torch.is_tensor(qkv) else type(qkv).__name__
        raise ValueError(f"na2d_qkv: qkv must be [batch, height, width, 3, heads, head_dim], got "
                         f"{got}; use na2d with separate query, key and value otherwise")
    query, key, value = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
    ks, dil, sc = _validate(query, key, value, kernel_size, dilation, rpb, scale, backend)
    p = float(dropout_p) if training else 0.0
    tracing = _FLOP_TRACE.get() is not None and torch.jit.is_tracing()
    chosen = backend
    if backend == "auto" and not tracing and query.numel() > 0:
        chosen = _auto_backend(query, rpb, False, p)
    if chosen == "cpp" and not tracing and not torch.jit.is_tracing() and \
            cpp_takes_packed(qkv, ks, dropout_p, training):
        return na2d_cpp_qkv(qkv, ks, dil, rpb, sc)
    return na2d(query, key, value, kernel_size, dilation, rpb, scale, False, chosen,
                dropout_p=dropout_p, training=training)
