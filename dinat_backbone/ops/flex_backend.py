"""Neighborhood attention through ``torch.nn.attention.flex_attention``.

The map is flattened into a sequence of H*W tokens; the neighborhood of :mod:`.windows` becomes
a ``mask_mod`` (key in the query's window) and the relative positional bias a ``score_mod``
(``score + rpb[h, dy // dh + kh - 1, dx // dw + kw - 1]``). Tokens are reordered first,
residue class by residue class (dilation sub-grids) and, inside a sub-grid, tile by tile (8 x 16
= one 128-token block), so that a block of queries needs only the few key blocks around it: the
BlockMask is built directly from that block structure, never from a dense H*W x H*W mask.

Status (read before relying on it):

* CPU, forward: verified against the loop oracle (tests/test_speed_features.py) in eager mode,
  where flex_attention runs an unfused reference path that materialises the full
  [B, heads, H*W, H*W] score matrix (small maps only), and once under ``torch.compile``.
  PyTorch has no flex_attention backward on the CPU, so :func:`flex_supports` declines CPU
  calls that need gradients.
* CUDA (forward and backward, fp16 / bf16 / fp32; head dims zero-padded to a power of two
  >= 16): written for it, **not run here** (no GPU was available to this project when it was
  written); treat it as unverified until ``python tools/gpu_check.py`` (which runs the oracle
  matrix of tests/test_ops.py on CUDA with ``backend="flex"``, backward included) passes on a
  GPU. ``backend="auto"`` does not pick it until then.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch

from .windows import window_start

BLOCK = 128          # flex_attention's default sparse block size
TILE = (8, 16)       # one block of queries: 8 rows x 16 columns of a sub-grid
# On the CPU, eager flex_attention materialises [B, heads, S, S] scores; above this many tokens
# the compiled kernel is used instead (compiling takes about a minute per shape on 2 cores).
CPU_EAGER_MAX_TOKENS = 4096


@functools.lru_cache(maxsize=1)
def _flex_module():
    try:
        from torch.nn.attention import flex_attention as fa
    except Exception:  # pragma: no cover - very old torch
        return None
    return fa


def flex_available(device) -> bool:
    """True when torch's flex_attention can run on ``device`` (CPU: forward only)."""
    dev = torch.device(device)
    if _flex_module() is None:
        return False
    if dev.type == "cuda":
        return torch.cuda.is_available()
    return dev.type == "cpu"


def flex_supports(query, rpb, return_attn, dropout_p) -> Optional[str]:
    """None when ``na2d_flex`` computes this call exactly, else the reason it cannot."""
    if _flex_module() is None:
        return "this torch has no torch.nn.attention.flex_attention (needs torch >= 2.5)"
    if return_attn:
        return "flex_attention does not return the attention weights; use backend='tiled'"
    if dropout_p:
        return "flex_attention has no attention dropout; use backend='tiled'"
    if query.device.type not in ("cpu", "cuda"):
        return f"flex_attention is not wired up for {query.device.type} here"
    if query.device.type == "cpu":
        needs_grad = torch.is_grad_enabled() and (
            query.requires_grad or (rpb is not None and rpb.requires_grad))
        if needs_grad:
            return ("PyTorch's flex_attention has no backward on the CPU; use backend='tiled' "
                    "for training on the CPU")
    else:
        if query.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            return f"flex_attention on CUDA supports fp16/bf16/fp32, not {query.dtype}"
        # other head dims are zero-padded to a power of two >= 16 (see _pad_head_dim)
    return None


def _pad_head_dim(x: torch.Tensor) -> torch.Tensor:
    """Zero-pad the last dim to a power of two >= 16 (what flex_attention's GPU kernels take).

    Exact: zero channels add nothing to q.k, and zero value channels are cut off the output.
    """
    D = x.shape[-1]
    want = max(16, 1 << (D - 1).bit_length())
    return x if want == D else torch.nn.functional.pad(x, (0, want - D))


def _axis_tables(L: int, k: int, d: int):
    """Per index of an axis: window start (absolute index of its first key)."""
    r, _, s = window_start(L, k, d)
    return r + d * s


@functools.lru_cache(maxsize=32)
def _layout(H: int, W: int, kh: int, kw: int, dh: int, dw: int):
    """Token order, per-token coordinates / window starts, and the block structure (CPU)."""
    th, tw = TILE
    order = []
    for ry in range(dh):
        ys = list(range(ry, H, dh))
        for rx in range(dw):
            xs = list(range(rx, W, dw))
            for ty in range(0, len(ys), th):
                for tx in range(0, len(xs), tw):
                    for y in ys[ty:ty + th]:
                        for x in xs[tx:tx + tw]:
                            order.append(y * W + x)
    perm = torch.tensor(order, dtype=torch.long)        # new position -> original token
    S = H * W
    inv = torch.empty(S, dtype=torch.long)
    inv[perm] = torch.arange(S)
    ty_, tx_ = perm // W, perm % W                       # coordinates in the new order
    sy = _axis_tables(H, kh, dh)[ty_]
    sx = _axis_tables(W, kw, dw)[tx_]
    # Block structure: for every query block, the key blocks holding any of its window keys.
    nq = -(-S // BLOCK)
    kv_sets = []
    for b in range(nq):
        qs = slice(b * BLOCK, min(S, (b + 1) * BLOCK))
        ky = sy[qs][:, None] + dh * torch.arange(kh)[None, :]       # [n, kh]
        kx = sx[qs][:, None] + dw * torch.arange(kw)[None, :]       # [n, kw]
        keys = (ky[:, :, None] * W + kx[:, None, :]).reshape(-1)
        kv_sets.append(torch.unique(inv[keys] // BLOCK))
    # kv_indices spans every key block (flex's CPU lowering reads the KV length from it).
    width = nq
    kv_num = torch.tensor([len(s) for s in kv_sets], dtype=torch.int32)
    kv_idx = torch.zeros(nq, width, dtype=torch.int32)
    for b, s in enumerate(kv_sets):
        kv_idx[b, :len(s)] = s.to(torch.int32)
    return dict(perm=perm, inv=inv, ty=ty_, tx=tx_, sy=sy, sx=sx, kv_num=kv_num, kv_idx=kv_idx,
                S=S)


_device_layouts: dict = {}


def _device_layout(key: Tuple[int, ...], device: torch.device) -> dict:
    k = key + (str(device),)
    hit = _device_layouts.get(k)
    if hit is None:
        lay = _layout(*key)
        hit = {n: (v.to(device) if torch.is_tensor(v) else v) for n, v in lay.items()}
        if len(_device_layouts) > 32:
            _device_layouts.clear()
        _device_layouts[k] = hit
    return hit


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    # dynamic=None: the first shape compiles static; a second shape recompiles once with dynamic
    # sizes, which then serves every further map size (a backbone sees one size per stage).
    return torch.compile(_flex_module().flex_attention, dynamic=None)


def na2d_flex(query, key, value, kernel_size, dilation, rpb, scale, return_attn,
              dropout_p=0.0, training=False):
    reason = flex_supports(query, rpb, return_attn, dropout_p if training else 0.0)
    if reason:
        raise RuntimeError(f"backend='flex' cannot run this call: {reason}")
    fa = _flex_module()
    B, nh, H, W, D = query.shape
    Dv = value.shape[-1]
    (kh, kw), (dh, dw) = kernel_size, dilation
    lay = _device_layout((H, W, kh, kw, dh, dw), query.device)
    S = lay["S"]
    ty, tx, sy, sx = lay["ty"], lay["tx"], lay["sy"], lay["sx"]

    def mask_mod(b, h, q_idx, kv_idx):
        yk, xk = ty[kv_idx], tx[kv_idx]
        in_y = (yk >= sy[q_idx]) & (yk < sy[q_idx] + dh * kh) & ((yk - ty[q_idx]) % dh == 0)
        in_x = (xk >= sx[q_idx]) & (xk < sx[q_idx] + dw * kw) & ((xk - tx[q_idx]) % dw == 0)
        return in_y & in_x

    score_mod = None
    if rpb is not None:
        table = rpb

        def score_mod(score, b, h, q_idx, kv_idx):
            iy = torch.clamp((ty[kv_idx] - ty[q_idx]) // dh + (kh - 1), 0, 2 * kh - 2)
            ix = torch.clamp((tx[kv_idx] - tx[q_idx]) // dw + (kw - 1), 0, 2 * kw - 2)
            return score + table[h, iy, ix]

    block_mask = fa.BlockMask.from_kv_blocks(
        lay["kv_num"][None, None], lay["kv_idx"][None, None], BLOCK_SIZE=BLOCK,
        mask_mod=mask_mod, seq_lengths=(S, S))
    perm = lay["perm"]
    q = query.reshape(B, nh, S, D)[:, :, perm]
    k = key.reshape(B, nh, S, D)[:, :, perm]
    v = value.reshape(B, nh, S, Dv)[:, :, perm]
    if query.device.type == "cuda":
        q, k, v = _pad_head_dim(q), _pad_head_dim(k), _pad_head_dim(v)
    eager = (query.device.type == "cpu" and S <= CPU_EAGER_MAX_TOKENS) \
        or torch.compiler.is_compiling()
    fn = fa.flex_attention if eager else _compiled_flex()
    if eager and not torch.compiler.is_compiling():
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile")
            out = fn(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
    else:
        out = fn(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
    out = out[..., :Dv][:, :, lay["inv"]].reshape(B, nh, H, W, Dv)
    return out, None
