"""Tiled neighborhood attention: exact, pure PyTorch, built from batched matmuls.

Dilation splits each axis into d residue-class sub-grids; inside a sub-grid, DiNA is plain NA
(dilation 1). Each sub-grid is cut into tiles of T queries per axis; every window of a tile's
queries lies inside one region of T + k - 1 keys per axis (windows shift inward at borders but
never leave the sub-grid), so a tile's logits are one small dense matmul against its region,
after which an additive mask (-inf outside each query's window, the RPB inside) restores the
exact neighborhood. Nothing holds k*k copies of the keys or values: the region gather copies each
key about (T + k - 1) / T times per axis.

All index bookkeeping depends only on (L, k, d, T) per axis and is cached.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .windows import softmax


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def tile_size(L: int, k: int, d: int, target: Optional[int] = None) -> Tuple[int, int, int]:
    """(T, nT, Gp): queries per tile, tiles, padded sub-grid length for an axis."""
    G = _cdiv(L, d)
    t0 = target if target is not None else max(k, 8)
    nT = _cdiv(G, min(t0, G))
    T = _cdiv(G, nT)
    return T, nT, nT * T


@functools.lru_cache(maxsize=256)
def _axis_plan_cpu(L: int, k: int, d: int, target: Optional[int]):
    T, nT, Gp = tile_size(L, k, d, target)
    R = min(T + k - 1, Gp)
    r = torch.arange(d)[:, None, None]                  # residue class
    lr = torch.div(L - r + d - 1, d, rounding_mode="floor")  # its length
    t = torch.arange(nT)[None, :, None]
    u = torch.arange(T)[None, None, :]
    j = t * T + u                                        # group index of each query [1, nT, T]
    valid_q = j < lr                                     # padding queries are dropped at the end
    jc = torch.minimum(j, lr - 1)
    s = torch.minimum(torch.clamp(jc - k // 2, min=0), lr - k)     # window starts [d, nT, T]
    r0 = torch.minimum(torch.clamp(t * T - k // 2, min=0), lr - k)
    r0 = torch.minimum(r0, torch.full_like(r0, Gp - R))  # region starts [d, nT, 1]
    keypos = r0 + torch.arange(R)[None, None, :]         # [d, nT, R] group coordinates
    rel = keypos[:, :, None, :] - s[..., None]           # [d, nT, T, R]
    inside = (rel >= 0) & (rel < k)
    pb = (keypos[:, :, None, :] - jc[..., None] + (k - 1)).clamp(0, 2 * k - 2)
    region_index = (r + d * keypos).reshape(-1)          # absolute index on the padded axis
    query_index = (r + d * (t * T + u)).reshape(-1)      # absolute index of tile queries
    win_off = (s - r0)                                   # window start inside the region
    return dict(T=T, nT=nT, Gp=Gp, R=R, d=d, inside=inside, pb=pb.reshape(-1),
                region_index=region_index, query_index=query_index, win_off=win_off,
                valid_q=valid_q.expand(d, nT, T))


_device_cache: dict = {}


def _axis_plan(L: int, k: int, d: int, target: Optional[int], device: torch.device):
    plan = _axis_plan_cpu(L, k, d, target)
    if device.type == "cpu":
        return plan
    key = (L, k, d, target, str(device))
    hit = _device_cache.get(key)
    if hit is None:
        hit = {n: (v.to(device) if torch.is_tensor(v) else v) for n, v in plan.items()}
        if len(_device_cache) > 256:
            _device_cache.clear()
        _device_cache[key] = hit
    return hit


def _bias(ph, pw, rpb: Optional[torch.Tensor], heads: int, dtype, device) -> torch.Tensor:
    """Additive mask + RPB for every (tile, query, region key): [heads or 1, N, T*T, R*R]."""
    dh, nth, Th, Rh = ph["d"], ph["nT"], ph["T"], ph["R"]
    dw, ntw, Tw, Rw = pw["d"], pw["nT"], pw["T"], pw["R"]
    inside = (ph["inside"][:, :, None, None, :, None, :, None]
              & pw["inside"][None, None, :, :, None, :, None, :])  # [dh,nth,dw,ntw,Th,Tw,Rh,Rw]
    inside = inside.reshape(1, dh * nth * dw * ntw, Th * Tw, Rh * Rw)
    if rpb is None:
        zero = torch.zeros((), dtype=dtype, device=device)
        return torch.where(inside, zero, torch.tensor(float("-inf"), dtype=dtype, device=device))
    b = rpb.index_select(1, ph["pb"]).index_select(2, pw["pb"])   # [heads, dh*nth*Th*Rh, ...]
    b = b.reshape(heads, dh, nth, Th, Rh, dw, ntw, Tw, Rw)
    b = b.permute(0, 1, 2, 5, 6, 3, 7, 4, 8).reshape(heads, dh * nth * dw * ntw, Th * Tw, Rh * Rw)
    return b.to(dtype).masked_fill(~inside, float("-inf"))


def na2d_tiled(query, key, value, kernel_size, dilation, rpb, scale, return_attn,
               dropout_p=0.0, training=False, tile: Optional[int] = None):
    B, nh, H, W, D = query.shape
    (kh, kw), (dh, dw) = kernel_size, dilation
    ph = _axis_plan(H, kh, dh, tile, query.device)
    pw = _axis_plan(W, kw, dw, tile, query.device)
    Hp, Wp = dh * ph["Gp"], dw * pw["Gp"]
    Th, Tw, Rh, Rw = ph["T"], pw["T"], ph["R"], pw["R"]
    nth, ntw = ph["nT"], pw["nT"]
    N = dh * nth * dw * ntw

    def pad(x):
        return F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H)) if (Hp, Wp) != (H, W) else x

    q = pad(query * scale)
    # Queries grouped by tile: [B, nh, N, Th*Tw, D].
    q = q.index_select(2, ph["query_index"]).index_select(3, pw["query_index"])
    q = q.reshape(B, nh, dh, nth, Th, dw, ntw, Tw, D).permute(0, 1, 2, 3, 5, 6, 4, 7, 8)
    q = q.reshape(B, nh, N, Th * Tw, D)

    def regions(x):
        x = pad(x).index_select(2, ph["region_index"]).index_select(3, pw["region_index"])
        C = x.shape[-1]                                  # value may have its own head dim
        x = x.reshape(B, nh, dh, nth, Rh, dw, ntw, Rw, C).permute(0, 1, 2, 3, 5, 6, 4, 7, 8)
        return x.reshape(B, nh, N, Rh * Rw, C)

    k = regions(key)
    v = regions(value)
    logits = torch.matmul(q, k.transpose(-1, -2))        # [B, nh, N, Th*Tw, Rh*Rw]
    logits = logits + _bias(ph, pw, rpb, nh, logits.dtype, logits.device)
    attn = softmax(logits).to(value.dtype)
    attn_used = F.dropout(attn, dropout_p, training) if dropout_p else attn
    out = torch.matmul(attn_used, v)                     # [B, nh, N, Th*Tw, D]

    def untile(x, C):
        x = x.reshape(B, nh, dh, nth, dw, ntw, Th, Tw, C).permute(0, 1, 2, 3, 6, 4, 5, 7, 8)
        # now [B, nh, dh, nth*Th (=Gp), dw, ntw*Tw, C] in (residue, group) order
        x = x.reshape(B, nh, dh, ph["Gp"], dw, pw["Gp"], C).permute(0, 1, 3, 2, 5, 4, 6)
        return x.reshape(B, nh, Hp, Wp, C)[:, :, :H, :W]

    out = untile(out, value.shape[-1])
    if not return_attn:
        return out, None
    a = attn.reshape(B, nh, dh, nth, dw, ntw, Th, Tw, Rh, Rw)
    ih = ph["win_off"][:, :, None, None, :, None, None, None] + torch.arange(
        kh, device=a.device).view(1, 1, 1, 1, 1, 1, kh, 1)   # [dh,nth,1,1,Th,1,kh,1]
    iw = pw["win_off"][None, None, :, :, None, :, None, None] + torch.arange(
        kw, device=a.device).view(1, 1, 1, 1, 1, 1, 1, kw)   # [1,1,dw,ntw,1,Tw,1,kw]
    a = torch.take_along_dim(a, ih.unsqueeze(0).unsqueeze(0), dim=8)   # [..., kh, Rw]
    a = torch.take_along_dim(a, iw.unsqueeze(0).unsqueeze(0), dim=9)   # [..., kh, kw]
    return out, untile(a.reshape(B, nh, dh, nth, dw, ntw, Th, Tw, kh * kw), kh * kw)
