"""Tiled neighborhood attention: exact, pure PyTorch, built from batched matmuls.

Dilation splits each axis into d residue-class sub-grids; inside a sub-grid, DiNA is plain NA
(dilation 1). Each sub-grid is cut into tiles of T queries per axis; every window of a tile's
queries lies inside one region of R = T + k - 1 keys per axis (windows shift inward at borders
but never leave the sub-grid), so a tile's logits are one small dense matmul against its region,
after which an additive table (-inf outside each query's window, the RPB inside) restores the
exact neighborhood. Nothing holds k*k copies of the keys or values: the region gather copies each
key about (T + k - 1) / T times per axis.

Two implementations share these semantics:

* the fast path (``na2d_tiled`` without attention weights or attention dropout) is a custom op
  (``torch.ops.dinat_backbone.na2d_tiled_fwd`` / ``_bwd``) with a hand-written backward. Tiles
  are grouped by their *pattern* (which queries sit where relative to their region: first,
  interior, last tiles per axis), so the bias/mask is a small per-call table
  [heads, patterns, T*T, R*R] added in place by broadcasting, never a map-sized tensor. Tiles
  are processed in cache-sized chunks, and the backward recomputes each chunk's probabilities
  (flash-attention style) instead of saving them, so neither pass keeps a map-sized logit
  tensor: peak extra memory is the region copies of k and v plus one chunk. As a custom op it is
  one opaque node for ``torch.compile`` (no graph breaks) and computes the same numbers in eager
  and compiled code.
* the composed path (autograd through plain tensor ops) serves ``return_attn=True`` and
  attention dropout, which need the full attention weights anyway.

All index bookkeeping depends only on the shape (and, for the flat indices, batch * heads) and is
cached.
"""
from __future__ import annotations

import functools
from typing import Dict, List, Optional, Tuple

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


# ------------------------------------------------------------------- composed path
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


def _na2d_tiled_composed(query, key, value, kernel_size, dilation, rpb, scale, return_attn,
                         dropout_p=0.0, training=False, tile: Optional[int] = None):
    """Autograd through tensor ops; used for attention weights and attention dropout."""
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


# ------------------------------------------------------------------------------ fast path
# Elements of the logit tensor processed per chunk (float32: 1 MiB; measured best of 2^16..2^20).
CHUNK_ELEMS = 1 << 18


def fast_tile(L: int, k: int, d: int) -> int:
    """Queries per tile on an axis for the fast path (measured on CPU; see tools/benchmark.py).

    Larger tiles waste more logits ((T + k - 1)^2 per query instead of k^2), smaller ones copy
    the keys and values more often ((T + k - 1)^2 / T^2 times) and run more, smaller matmuls;
    about 6 queries per axis was best for k = 7 (4-6 within noise), and a sub-grid barely
    larger than the kernel is one tile.
    """
    G = _cdiv(L, d)
    if G <= k + 3:          # one tile covers the whole sub-grid
        return G
    t0 = max(4, min(6, k - 1))
    nT = _cdiv(G, t0)
    return _cdiv(G, nT)


def _axis_tiles(L: int, k: int, d: int, T: int):
    """Tiles of one axis: (R, tiles, patterns).

    tiles: list of (pattern id, query positions [T], valid [T], region positions [R]);
    patterns: list of (window offsets in the region [T], query offsets in the region [T]).
    Padding queries (past the end of a short sub-grid) repeat the last query of their sub-grid
    and are flagged invalid; region keys past the end repeat the last key and are masked.
    """
    G = _cdiv(L, d)
    R = min(T + k - 1, G)
    tiles, patterns = [], {}
    for r in range(d):
        lr = _cdiv(L - r, d)
        for t in range(_cdiv(lr, T)):
            r0 = max(0, min(t * T - k // 2, lr - R))
            js = [t * T + u for u in range(T)]
            jc = [min(j, lr - 1) for j in js]
            s = [min(max(j - k // 2, 0), lr - k) for j in jc]
            sig = (tuple(x - r0 for x in s), tuple(j - r0 for j in jc))
            pid = patterns.setdefault(sig, len(patterns))
            tiles.append((pid, [r + d * j for j in jc], [j < lr for j in js],
                          [r + d * min(r0 + x, lr - 1) for x in range(R)]))
    return R, tiles, list(patterns)


def _axis_pattern_tables(patterns, k: int, R: int):
    """inside [P, T, R] (bool) and bias index [P, T, R] (0 .. 2k-2) of every axis pattern."""
    win = torch.tensor([p[0] for p in patterns])[:, :, None]      # [P, T, 1]
    rel = torch.tensor([p[1] for p in patterns])[:, :, None]
    x = torch.arange(R)[None, None, :]
    inside = (x >= win) & (x < win + k)
    pb = (x - rel + (k - 1)).clamp(0, 2 * k - 2)
    return inside, pb


@functools.lru_cache(maxsize=64)
def _plan(H: int, W: int, kh: int, kw: int, dh: int, dw: int, Th: int, Tw: int):
    Rh, tiles_h, pats_h = _axis_tiles(H, kh, dh, Th)
    Rw, tiles_w, pats_w = _axis_tiles(W, kw, dw, Tw)
    pairs = sorted(((a[0], b[0], i, j) for i, a in enumerate(tiles_h)
                    for j, b in enumerate(tiles_w)))
    ih = torch.tensor([p[2] for p in pairs])
    iw = torch.tensor([p[3] for p in pairs])
    qh = torch.tensor([t[1] for t in tiles_h])[ih]                 # [Nt, Th]
    qw = torch.tensor([t[1] for t in tiles_w])[iw]                 # [Nt, Tw]
    vh = torch.tensor([t[2] for t in tiles_h])[ih]
    vw = torch.tensor([t[2] for t in tiles_w])[iw]
    rh = torch.tensor([t[3] for t in tiles_h])[ih]                 # [Nt, Rh]
    rw = torch.tensor([t[3] for t in tiles_w])[iw]
    Nt = len(pairs)
    qpos = (qh[:, :, None] * W + qw[:, None, :]).reshape(Nt, Th * Tw)
    valid = (vh[:, :, None] & vw[:, None, :]).reshape(Nt, Th * Tw)
    rpos = (rh[:, :, None] * W + rw[:, None, :]).reshape(Nt, Rh * Rw)
    # Groups of consecutive tiles sharing a 2D pattern.
    groups: List[Tuple[int, int, int]] = []
    gpat: List[Tuple[int, int]] = []
    for n, p in enumerate(pairs):
        if not gpat or gpat[-1] != (p[0], p[1]):
            gpat.append((p[0], p[1]))
            groups.append([n, n + 1, len(gpat) - 1])
        else:
            groups[-1][1] = n + 1
    in_h, pb_h = _axis_pattern_tables(pats_h, kh, Rh)
    in_w, pb_w = _axis_pattern_tables(pats_w, kw, Rw)
    gh = torch.tensor([g[0] for g in gpat])
    gw = torch.tensor([g[1] for g in gpat])
    inside = in_h[gh][:, :, None, :, None] & in_w[gw][:, None, :, None, :]   # [G,Th,Tw,Rh,Rw]
    cidx = pb_h[gh][:, :, None, :, None] * (2 * kw - 1) + pb_w[gw][:, None, :, None, :]
    n_bias = (2 * kh - 1) * (2 * kw - 1)
    cidx = torch.where(inside, cidx, torch.full_like(cidx, n_bias))
    cidx = cidx.reshape(len(gpat), Th * Tw, Rh * Rw)
    # Each real query is exactly one valid tile query.
    inv = torch.empty(H * W, dtype=torch.long)
    flat = torch.arange(Nt * Th * Tw).reshape(Nt, Th * Tw)
    inv[qpos[valid]] = flat[valid]
    return dict(Nt=Nt, T2=Th * Tw, R2=Rh * Rw, qpos=qpos, valid=valid, rpos=rpos,
                groups=[tuple(g) for g in groups], cidx=cidx, n_bias=n_bias, inv=inv,
                HW=H * W, W=W)


_index_cache: Dict[tuple, torch.Tensor] = {}


def _row_base(x: torch.Tensor):
    """x [B, heads, H, W, D] as rows of D: (a [M, D] view of its storage, row strides [4]).

    No copy when the last dim is contiguous and the other strides are multiples of D (q, k and
    v as views of the qkv projection, or permuted channels-last maps, are).
    """
    D = x.shape[-1]
    st = x.stride()
    if D == 0 or st[-1] != 1 or any(s % D for s in st[:-1]):
        x = x.contiguous()
        st = x.stride()
    rs = tuple(s // D for s in st[:-1])
    M = 1 + sum((n - 1) * r for n, r in zip(x.shape[:-1], rs))
    return x.as_strided((M, D), (D, 1)), rs


def _canonical_strides(B: int, nh: int, H: int, W: int) -> tuple:
    """Row strides of the layout [B, H, W, heads] (how outputs and gradients are written)."""
    return (H * W * nh, 1, W * nh, nh)


def _index(plan_key: tuple, plan: dict, B: int, nh: int, rs: tuple, kind: str,
           device: torch.device) -> torch.Tensor:
    """Rows (for row strides ``rs``) of the tile layout [Nt, B*heads, T*T or R*R].

    kind "q": tile queries; "r": tile regions; "qdst": tile queries, with padding queries sent
    to a spare row (index M, one past the last row) so that they can be written and dropped.
    """
    key = (plan_key, B, nh, rs, kind, str(device))
    hit = _index_cache.get(key)
    if hit is not None:
        return hit
    W = plan["W"]
    b = torch.arange(B)[:, None]
    h = torch.arange(nh)[None, :]
    pos = plan["rpos"] if kind == "r" else plan["qpos"]      # [Nt, X]
    sB, sh, sH, sW = rs
    off = (b * sB + h * sh).reshape(1, B * nh, 1)
    idx = off + ((pos // W) * sH + (pos % W) * sW)[:, None, :]
    if kind == "qdst":
        spare = B * nh * plan["HW"]
        idx = torch.where(plan["valid"][:, None, :], idx, torch.full_like(idx, spare))
    hit = idx.reshape(-1).to(device)
    if len(_index_cache) > 256:
        _index_cache.clear()
    _index_cache[key] = hit
    return hit


_misc_cache: Dict[tuple, dict] = {}


def _misc(plan_key: tuple, plan: dict, device: torch.device) -> dict:
    key = (plan_key, str(device))
    hit = _misc_cache.get(key)
    if hit is None:
        hit = dict(valid=plan["valid"].reshape(plan["Nt"], 1, plan["T2"], 1).to(device),
                   cidx=plan["cidx"].to(device), all_valid=bool(plan["valid"].all()))
        if len(_misc_cache) > 64:
            _misc_cache.clear()
        _misc_cache[key] = hit
    return hit


class _Ctx:
    """Shape bookkeeping of one call: the plan, gathers of tile chunks, scatters back."""

    def __init__(self, q, kh, kw, dh, dw, th, tw):
        self.B, self.nh, self.H, self.W, self.D = q.shape
        self.key = (self.H, self.W, kh, kw, dh, dw, th, tw)
        self.plan = _plan(*self.key)
        self.misc = _misc(self.key, self.plan, q.device)
        self.device = q.device
        self.Nt, self.T2, self.R2 = self.plan["Nt"], self.plan["T2"], self.plan["R2"]
        self.BH = self.B * self.nh
        self.rows = self.BH * self.H * self.W
        self.canon = _canonical_strides(self.B, self.nh, self.H, self.W)

    def index(self, rs, kind):
        return _index(self.key, self.plan, self.B, self.nh, rs, kind, self.device)

    def source(self, x: torch.Tensor, kind: str):
        """(rows of x, their index for the tile layout): gather a chunk with ``take``."""
        base, rs = _row_base(x)
        return base, self.index(rs, kind), (self.T2 if kind == "q" else self.R2)

    def take(self, src, a: int, b: int) -> torch.Tensor:
        base, idx, n = src
        m = self.BH * n
        return base.index_select(0, idx[a * m:b * m]).view(b - a, self.BH, n, base.shape[-1])

    def canonical(self, C: int, dtype, spare: bool = False) -> torch.Tensor:
        """A zeroed buffer of rows in the layout [B, H, W, heads] (+ one spare row)."""
        return torch.zeros(self.rows + int(spare), C, dtype=dtype, device=self.device)

    def view(self, buf: torch.Tensor) -> torch.Tensor:
        """Canonical rows -> [B, heads, H, W, C] (a permuted view)."""
        C = buf.shape[-1]
        return buf[:self.rows].view(self.B, self.H, self.W, self.nh, C).permute(0, 3, 1, 2, 4)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _bias_table(rpb: Optional[torch.Tensor], cidx: torch.Tensor, n_bias: int, nh: int,
                cdt: torch.dtype) -> torch.Tensor:
    """[heads or 1, groups, T*T, R*R]: the RPB inside each window, -inf outside."""
    if rpb is None:
        ext = torch.zeros(1, n_bias + 1, dtype=cdt, device=cidx.device)
    else:
        ext = torch.cat([rpb.detach().reshape(nh, n_bias).to(cdt),
                         torch.zeros(nh, 1, dtype=cdt, device=cidx.device)], 1)
    ext[:, n_bias] = float("-inf")
    return ext[:, cidx]


def _chunks(groups, per_tile: int):
    n = max(1, CHUNK_ELEMS // max(1, per_tile))
    for a, b, g in groups:
        for s in range(a, b, n):
            yield s, min(b, s + n), g


def _probs(qc, kc, tab, nh, T2, R2, cdt):
    """Attention probabilities [n*B*nh, T2, R2] of a chunk of tiles.

    torch.softmax, not exp(logits - lse): the vectorised exp of torch's CPU kernels is about 20x
    slower on -inf inputs (the masked entries) than softmax's, so the backward recomputes the
    probabilities with the same softmax call instead of saving a log-sum-exp.
    """
    D = qc.shape[-1]
    logits = torch.bmm(qc.reshape(-1, T2, D), kc.reshape(-1, R2, D).transpose(1, 2))
    if logits.dtype != cdt:
        logits = logits.to(cdt)
    logits.view(-1, nh, T2, R2).add_(tab)
    return torch.softmax(logits, -1)


def _accumulate(dst: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> None:
    """dst[index] += src (rows; repeated indices add up).

    index_add_ is the faster of the two on one thread; with several threads on a busy CPU its
    parallel kernel was measured 500x slower (135 ms against 0.27 ms per call), while
    index_put_(accumulate=True) runs serially and stays at a few ms.
    """
    if dst.device.type == "cpu" and torch.get_num_threads() > 1:
        dst.index_put_((index,), src, accumulate=True)
    else:
        dst.index_add_(0, index, src)


def _fwd_impl(q, k, v, rpb, kh, kw, dh, dw, scale, th, tw):
    with torch.autocast(q.device.type, enabled=False):
        c = _Ctx(q, kh, kw, dh, dw, th, tw)
        nh, T2, R2, BH = c.nh, c.T2, c.R2, c.BH
        Dv = v.shape[-1]
        cdt = _compute_dtype(q.dtype)
        sq, sk, sv = c.source(q, "q"), c.source(k, "r"), c.source(v, "r")
        qdst = c.index(c.canon, "qdst")
        table = _bias_table(rpb, c.misc["cidx"], c.plan["n_bias"], nh, cdt)
        out = c.canonical(Dv, v.dtype, spare=True)
        for a, b, g in _chunks(c.plan["groups"], BH * T2 * R2):
            p = _probs(c.take(sq, a, b).mul_(scale), c.take(sk, a, b), table[:, g], nh, T2, R2,
                       cdt)
            o = torch.bmm(p.to(v.dtype), c.take(sv, a, b).view(-1, R2, Dv))
            out.index_copy_(0, qdst[a * BH * T2:b * BH * T2], o.view(-1, Dv))
        return c.view(out)


def _bwd_impl(dout, q, k, v, rpb, out, kh, kw, dh, dw, scale, th, tw, rpb_grad):
    with torch.autocast(q.device.type, enabled=False):
        c = _Ctx(q, kh, kw, dh, dw, th, tw)
        nh, T2, R2, BH, D = c.nh, c.T2, c.R2, c.BH, c.D
        Dv = v.shape[-1]
        cdt = _compute_dtype(q.dtype)
        sq, sk, sv = c.source(q, "q"), c.source(k, "r"), c.source(v, "r")
        sdo, sout = c.source(dout.to(v.dtype), "q"), c.source(out, "q")
        qdst, rdst = c.index(c.canon, "qdst"), c.index(c.canon, "r")
        valid = None if c.misc["all_valid"] else c.misc["valid"]
        table = _bias_table(rpb, c.misc["cidx"], c.plan["n_bias"], nh, cdt)
        dq = c.canonical(D, q.dtype, spare=True)
        dk = c.canonical(D, k.dtype)
        dv = c.canonical(Dv, v.dtype)
        gtab = (torch.zeros(nh, c.misc["cidx"].shape[0], T2, R2, dtype=cdt, device=q.device)
                if rpb_grad else None)
        for a, b, g in _chunks(c.plan["groups"], BH * T2 * R2):
            n = b - a
            qc, kc, vc = c.take(sq, a, b).mul_(scale), c.take(sk, a, b), c.take(sv, a, b)
            doc = c.take(sdo, a, b)
            di = (doc.to(cdt) * c.take(sout, a, b).to(cdt)).sum(-1, keepdim=True)
            if valid is not None:     # padding queries must contribute nothing
                doc.mul_(valid[a:b].to(doc.dtype))
                di.mul_(valid[a:b].to(cdt))
            p = _probs(qc, kc, table[:, g], nh, T2, R2, cdt)
            doc = doc.view(-1, T2, Dv)
            dp = torch.bmm(doc, vc.view(-1, R2, Dv).transpose(1, 2))
            if dp.dtype != cdt:
                dp = dp.to(cdt)
            ds = dp.sub_(di.view(-1, T2, 1)).mul_(p)
            if gtab is not None:
                gtab[:, g] += ds.view(n * c.B, nh, T2, R2).sum(0)
            ds = ds.to(q.dtype)
            qrows = slice(a * BH * T2, b * BH * T2)
            rrows = slice(a * BH * R2, b * BH * R2)
            dq.index_copy_(0, qdst[qrows], torch.bmm(ds, kc.view(-1, R2, D)).view(-1, D))
            _accumulate(dk, rdst[rrows],
                        torch.bmm(ds.transpose(1, 2), qc.view(-1, T2, D)).view(-1, D))
            _accumulate(dv, rdst[rrows],
                        torch.bmm(p.to(v.dtype).transpose(1, 2), doc).view(-1, Dv))
        dq = c.view(dq).mul_(scale)
        if gtab is not None:
            nb = c.plan["n_bias"]
            drpb = torch.zeros(nh, nb + 1, dtype=cdt, device=q.device)
            drpb.scatter_add_(1, c.misc["cidx"].reshape(1, -1).expand(nh, -1),
                              gtab.reshape(nh, -1))
            drpb = drpb[:, :nb].reshape(rpb.shape).to(rpb.dtype).contiguous()
        else:
            drpb = q.new_zeros(0)
    return dq, c.view(dk), c.view(dv), drpb


def _like_canonical(x: torch.Tensor, C: int, dtype=None) -> torch.Tensor:
    B, nh, H, W, _ = x.shape
    return x.new_empty(B, H, W, nh, C, dtype=dtype).permute(0, 3, 1, 2, 4)


@torch.library.custom_op("dinat_backbone::na2d_tiled_fwd", mutates_args=(),
                         schema="(Tensor q, Tensor k, Tensor v, Tensor? rpb, int kh, int kw, "
                                "int dh, int dw, float scale, int th, int tw) -> Tensor")
def _na2d_tiled_fwd(q, k, v, rpb, kh, kw, dh, dw, scale, th, tw):
    return _fwd_impl(q, k, v, rpb, kh, kw, dh, dw, scale, th, tw)


@_na2d_tiled_fwd.register_fake
def _(q, k, v, rpb, kh, kw, dh, dw, scale, th, tw):
    return _like_canonical(q, v.shape[-1], v.dtype)


@torch.library.custom_op("dinat_backbone::na2d_tiled_bwd", mutates_args=(),
                         schema="(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor? rpb, "
                                "Tensor out, int kh, int kw, int dh, int dw, "
                                "float scale, int th, int tw, bool rpb_grad) "
                                "-> (Tensor, Tensor, Tensor, Tensor)")
def _na2d_tiled_bwd(dout, q, k, v, rpb, out, kh, kw, dh, dw, scale, th, tw, rpb_grad):
    return _bwd_impl(dout, q, k, v, rpb, out, kh, kw, dh, dw, scale, th, tw, rpb_grad)


@_na2d_tiled_bwd.register_fake
def _(dout, q, k, v, rpb, out, kh, kw, dh, dw, scale, th, tw, rpb_grad):
    drpb = rpb.new_empty(rpb.shape) if (rpb_grad and rpb is not None) else q.new_empty(0)
    return (_like_canonical(q, q.shape[-1]), _like_canonical(k, k.shape[-1]),
            _like_canonical(v, v.shape[-1]), drpb)


def _setup_context(ctx, inputs, output):
    q, k, v, rpb, kh, kw, dh, dw, scale, th, tw = inputs
    ctx.params = (kh, kw, dh, dw, scale, th, tw)
    ctx.has_rpb = rpb is not None
    ctx.save_for_backward(q, k, v, rpb, output)


def _backward(ctx, dout):
    q, k, v, rpb, out = ctx.saved_tensors
    kh, kw, dh, dw, scale, th, tw = ctx.params
    rpb_grad = ctx.has_rpb and ctx.needs_input_grad[3]
    dq, dk, dv, drpb = _na2d_tiled_bwd(dout, q, k, v, rpb, out, kh, kw, dh,
                                       dw, scale, th, tw, rpb_grad)
    return dq, dk, dv, (drpb if rpb_grad else None), None, None, None, None, None, None, None


_na2d_tiled_fwd.register_autograd(_backward, setup_context=_setup_context)


def na2d_tiled_fast(query, key, value, kernel_size, dilation, rpb, scale, tile=None):
    """The fast path: output only (no attention weights, no attention dropout)."""
    B, nh, H, W, D = query.shape
    (kh, kw), (dh, dw) = kernel_size, dilation
    if tile is None:
        th, tw = fast_tile(H, kh, dh), fast_tile(W, kw, dw)
    else:
        th, tw = (tile, tile) if isinstance(tile, int) else tile
        th, tw = min(th, _cdiv(H, dh)), min(tw, _cdiv(W, dw))
    return torch.ops.dinat_backbone.na2d_tiled_fwd(query, key, value, rpb, kh, kw, dh, dw,
                                                   float(scale), th, tw)



def na2d_tiled(query, key, value, kernel_size, dilation, rpb, scale, return_attn,
               dropout_p=0.0, training=False, tile: Optional[int] = None):
    """Exact tiled NA: (out, attn or None). The fast custom op unless weights / dropout are asked."""
    if return_attn or (dropout_p and training):
        return _na2d_tiled_composed(query, key, value, kernel_size, dilation, rpb, scale,
                                    return_attn, dropout_p, training, tile)
    return na2d_tiled_fast(query, key, value, kernel_size, dilation, rpb, scale, tile), None
