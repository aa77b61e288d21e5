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
  (``torch.ops.dinat_backbone.na2d_tiled_fwd`` / ``_bwd``) with a hand-written backward. Each
  axis is tiled on its own (``_fast_plan`` picks, per shape, the cheapest of: one tile per
  sub-grid, two tiles with regions clamped to the sub-grid, or regular tiles of T queries whose
  regions of T + k - 1 keys start every T positions of a sub-grid padded by k // 2). Tiles and
  regions are then *strided views* of a residue-class layout of the map, which is the map itself
  (a permuted view, no copy) whenever H and W are multiples of the dilation and no front padding
  is needed; gathering a chunk of regions is one strided copy and adding region gradients back is
  a few strided adds (no index gathers or scatter-adds). The RPB depends only on the key's
  offset from the query, so it is one [heads, T*T, R*R] table for all tiles of a kind; the window
  masks are per-axis tables, so the whole additive bias is a sum of broadcast tables. Tiles are
  processed in cache-sized chunks, and the backward recomputes each chunk's probabilities
  (flash-attention style, with softmax's fused backward) instead of saving them, so neither pass
  keeps a map-sized logit tensor. As a custom op it is one opaque node for ``torch.compile`` (no
  graph breaks) and computes the same numbers in eager and compiled code.
* the composed path (autograd through plain tensor ops) serves ``return_attn=True`` and
  attention dropout, which need the full attention weights anyway.

All index bookkeeping depends only on the shape (and, for the flat indices, batch * heads) and is
cached.
"""
from __future__ import annotations

import functools
from typing import Dict, List, NamedTuple, Optional, Tuple

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
# Logits (query x region key) per chunk; float32: 1 MiB, stays in a core's L2 cache.
CHUNK_ELEMS = 1 << 18
# Bias tables (RPB + window masks of every tile) up to this many elements are built whole, so
# that each chunk gets one broadcast add; larger maps add the row and column parts separately.
FULL_TABLE_ELEMS = 1 << 21


class _AxisPlan(NamedTuple):
    """Tiling of one axis (length L, kernel k, dilation d) on its residue-class sub-grids.

    Every residue class is a sub-grid of at most G positions, stored at padded positions
    P .. P+G-1 of a zero-padded line of ``alloc`` positions. Tile t holds the T queries
    t*T .. t*T+T-1 (sub-grid index) and reads the R keys at padded positions t*S .. t*S+R-1
    (its *region*): tiles and regions are both regular strided views of the padded line, so
    gathering them and adding region gradients back are strided copies and adds, not index
    scatters. Queries past the end of a sub-grid (j >= its length) are padding.
    """
    kind: str
    G: int
    T: int
    nT: int
    P: int
    S: int
    R: int
    alloc: int
    parts: int                 # the region splits into this many stride-S parts (overlap-add)
    variants: tuple            # ((t0, t1, c), ...): tiles t0..t1-1 have RPB index x - u + c
    mask: torch.Tensor         # [d, nT, T, R] bool: region key x in the window of query u


def _window_starts(L: int, k: int, d: int):
    """Per residue class r: (its length lr, window start of each group index j < lr)."""
    out = []
    for r in range(d):
        lr = _cdiv(L - r, d)
        out.append((lr, [min(max(j - k // 2, 0), lr - k) for j in range(lr)]))
    return out


def _axis_candidate(L: int, k: int, d: int, kind: str, T: int = 0) -> Optional[_AxisPlan]:
    G = _cdiv(L, d)
    wins = _window_starts(L, k, d)
    if kind == "single":
        T, nT, P, R, S = G, 1, 0, G, G
    elif kind == "two":                       # two tiles, regions clamped to the sub-grid
        T, nT, P = _cdiv(G, 2), 2, 0
        if T >= G:
            return None
        end0 = max(s[min(T, lr) - 1] + k for lr, s in wins)
        start1 = min((s[T] for lr, s in wins if lr > T), default=G - k)
        R = max(end0, G - start1)
        S = G - R
        if R >= G or S <= 0:
            return None
    else:                                     # regular: S = T, the line padded by k // 2
        nT, P, S, R = _cdiv(G, T), k // 2, T, T + k - 1
        if nT < 2 or T < 1:
            return None
    mask = torch.zeros(d, nT, T, R, dtype=torch.bool)
    for r, (lr, s) in enumerate(wins):
        for t in range(nT):
            for u in range(T):
                j = t * T + u
                if j >= lr:                   # padding query: any finite row will do
                    mask[r, t, u] = True
                    continue
                lo = s[j] + P - t * S         # window in region coordinates
                if lo < 0 or lo + k > R:
                    return None               # this tiling cannot hold the window
                mask[r, t, u, lo:lo + k] = True
    parts = 1 if nT == 1 else _cdiv(R, S)
    alloc = max(P + nT * T, (nT - 1) * S + R, (nT - 1 + parts) * S if nT > 1 else 0, P + G)
    cs = [t * (S - T) - P + k - 1 for t in range(nT)]
    variants, t0 = [], 0
    for t in range(1, nT + 1):
        if t == nT or cs[t] != cs[t0]:
            variants.append((t0, t, cs[t0]))
            t0 = t
    return _AxisPlan(kind, G, T, nT, P, S, R, alloc, parts, tuple(variants), mask)


def _axis_candidates(L: int, k: int, d: int, tile: int = 0) -> List[_AxisPlan]:
    """Valid tilings of an axis; with ``tile`` > 0, only the one nearest that many queries per
    tile (the smallest valid regular tiling with at least ``tile``, else two tiles, else one)."""
    G = _cdiv(L, d)
    if tile > 0:
        for T in range(tile, G):
            c = _axis_candidate(L, k, d, "regular", T)
            if c is not None:
                return [c]
        c = _axis_candidate(L, k, d, "two") if tile < G else None
        return [c if c is not None else _axis_candidate(L, k, d, "single")]
    cands = [_axis_candidate(L, k, d, "single"), _axis_candidate(L, k, d, "two")]
    cands += [_axis_candidate(L, k, d, "regular", T) for T in range(max(2, k // 2 + 1), 2 * k + 1)
              if T < G]
    return [c for c in cands if c is not None]


def _cost(ph: _AxisPlan, pw: _AxisPlan, dh: int, dw: int) -> float:
    """Relative time of one (batch, head) slice: logits computed, with small matmuls and
    small rows made dearer (fitted to batched-matmul timings on a 2-core AVX-512 CPU)."""
    tiles = dh * ph.nT * dw * pw.nT
    T2, R2 = ph.T * pw.T, ph.R * pw.R
    return tiles * T2 * R2 * (1.0 + 10.0 / T2 + 16.0 / R2) + 400.0 * tiles


@functools.lru_cache(maxsize=128)
def _fast_plan(H: int, W: int, kh: int, kw: int, dh: int, dw: int, th: int = 0, tw: int = 0):
    """The cheapest pair of axis tilings (or the one near the asked tile sizes th / tw)."""
    best = None
    for ph in _axis_candidates(H, kh, dh, th):
        for pw in _axis_candidates(W, kw, dw, tw):
            c = _cost(ph, pw, dh, dw)
            if best is None or c < best[0]:
                best = (c, ph, pw)
    return best[1], best[2]


def fast_tile(L: int, k: int, d: int) -> int:
    """Queries per tile that the fast path picks on an axis of a square map (for reports)."""
    return _fast_plan(L, L, k, k, d, d)[0].T


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


_table_cache: Dict[tuple, torch.Tensor] = {}


def _cached(key, make):
    hit = _table_cache.get(key)
    if hit is None:
        if len(_table_cache) > 256:
            _table_cache.clear()
        hit = _table_cache[key] = make()
    return hit


class _Fast:
    """One call's geometry: residue layouts, tile / region views, bias tables.

    A *layout* of a map [B, nh, H, W, C] is a 7-D tensor [B, nh, dh, A_h, dw, A_w, C] (residue
    class, position on the class's sub-grid) plus per-axis offsets (where sub-grid index 0 sits).
    When H = dh * G_h and W = dw * G_w it is a permuted *view* of the map itself (offset 0, no
    copy); otherwise, or when the key regions need the front padding of a regular tiling, it is
    a zero-padded copy.
    """

    def __init__(self, q, kh, kw, dh, dw, th, tw):
        self.B, self.nh, self.H, self.W, self.D = q.shape
        self.k, self.d = (kh, kw), (dh, dw)
        self.key = (self.H, self.W, kh, kw, dh, dw, th, tw)
        self.ph, self.pw = _fast_plan(*self.key)
        self.device = q.device
        ph, pw = self.ph, self.pw
        self.divisible = self.H == dh * ph.G and self.W == dw * pw.G
        # queries: no front padding; tiles must end inside the layout
        self.q_direct = self.divisible and ph.nT * ph.T == ph.G and pw.nT * pw.T == pw.G
        self.q_alloc = (max(ph.G, ph.nT * ph.T), max(pw.G, pw.nT * pw.T))
        # keys: regions inside [0, G) with no front padding (single or two tiles)
        self.k_direct = self.divisible and ph.P == 0 and pw.P == 0 and \
            (ph.nT - 1) * ph.S + ph.R <= ph.G and (pw.nT - 1) * pw.S + pw.R <= pw.G
        self.single = ph.nT == 1 and pw.nT == 1

    # ---------------------------------------------------------------- layouts
    def _grid(self, x: torch.Tensor) -> torch.Tensor:
        """[B, nh, H, W, C] -> its residue view [B, nh, dh, G_h, dw, G_w, C] (H = dh * G_h and
        W = dw * G_w)."""
        (dh, dw), ph, pw = self.d, self.ph, self.pw
        return x.unflatten(2, (ph.G, dh)).unflatten(4, (pw.G, dw)).permute(0, 1, 3, 2, 5, 4, 6)

    def _pieces(self, x: torch.Tensor, xl: torch.Tensor, P: Tuple[int, int]):
        """(part of the map x, the same positions in the layout xl): the full residue groups
        and, where the dilation does not divide the size, the last partial group, per axis."""
        axes = []
        for L, d in ((self.H, self.d[0]), (self.W, self.d[1])):
            full, rem = divmod(L, d)
            parts = [(0, full * d, 0, full, d)] if full else []
            if rem:
                parts.append((full * d, L, full, full + 1, rem))
            axes.append(parts)
        for h0, h1, gh0, gh1, rh in axes[0]:
            for w0, w1, gw0, gw1, rw in axes[1]:
                xs = x[:, :, h0:h1, w0:w1].unflatten(2, (gh1 - gh0, rh))
                xs = xs.unflatten(4, (gw1 - gw0, rw)).permute(0, 1, 3, 2, 5, 4, 6)
                yield xs, xl[:, :, :rh, P[0] + gh0:P[0] + gh1, :rw, P[1] + gw0:P[1] + gw1]

    def _padded(self, x: Optional[torch.Tensor], A: Tuple[int, int], P: Tuple[int, int],
                C: int = 0, dtype=None, zero: bool = True) -> torch.Tensor:
        """A zero-padded layout of x (or an empty / zero buffer when x is None)."""
        dh, dw = self.d
        C = C or x.shape[-1]
        dtype = dtype or x.dtype
        if x is None:
            alloc = torch.zeros if zero else torch.empty
            return alloc(self.B, self.nh, dh, A[0], dw, A[1], C, dtype=dtype, device=self.device)
        xp = x.new_empty(self.B, self.nh, dh, A[0], dw, A[1], C, dtype=dtype)
        # zero what the map does not fill: the margins and the last group of residue classes
        # shorter than the rest, then copy the map in (no padded copy of the map itself)
        full = (self.H // dh, self.W // dw)
        if P[0]:
            xp[:, :, :, :P[0]].zero_()
        if A[0] > P[0] + full[0]:
            xp[:, :, :, P[0] + full[0]:].zero_()
        if P[1]:
            xp[:, :, :, P[0]:P[0] + full[0], :, :P[1]].zero_()
        if A[1] > P[1] + full[1]:
            xp[:, :, :, P[0]:P[0] + full[0], :, P[1] + full[1]:].zero_()
        for xs, ls in self._pieces(x, xp, P):
            ls.copy_(xs)
        return xp

    def q_layout(self, x: torch.Tensor) -> torch.Tensor:
        """Query-side layout (q, dout, di): offset 0, at least nT * T positions per axis."""
        if self.q_direct:
            return self._grid(x)
        return self._padded(x, self.q_alloc, (0, 0))

    def k_layout(self, x: torch.Tensor) -> torch.Tensor:
        """Key-side layout (k, v): offset P, ``alloc`` positions per axis."""
        if self.k_direct:
            return self._grid(x)
        return self._padded(x, (self.ph.alloc, self.pw.alloc), (self.ph.P, self.pw.P))

    def q_out(self, C: int, dtype) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(layout to write query-side results into, the canonical tensor if it is that)."""
        if self.q_direct:
            full = torch.empty(self.B, self.H, self.W, self.nh, C, dtype=dtype,
                               device=self.device)
            return self._grid(full.permute(0, 3, 1, 2, 4)), full
        return self._padded(None, self.q_alloc, (0, 0), C, dtype, zero=False), None

    def k_grad(self, C: int, dtype) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(layout that key-side gradients accumulate into, the canonical tensor if it is that)."""
        if self.single and self.divisible:       # no overlap: regions are written once
            full = torch.empty(self.B, self.H, self.W, self.nh, C, dtype=dtype,
                               device=self.device)
            return self._grid(full.permute(0, 3, 1, 2, 4)), full
        return self._padded(None, (self.ph.alloc, self.pw.alloc), (0, 0), C, dtype), None

    def canonical(self, xp: torch.Tensor, P: Tuple[int, int], full=None) -> torch.Tensor:
        """Layout -> [B, nh, H, W, C], a permuted view of a contiguous [B, H, W, nh, C]."""
        if full is None:
            full = xp.new_empty(self.B, self.H, self.W, self.nh, xp.shape[-1])
            for xs, ls in self._pieces(full.permute(0, 3, 1, 2, 4), xp, P):
                xs.copy_(ls)
        return full.permute(0, 3, 1, 2, 4)

    def view(self, xp: torch.Tensor, kind: str, vh, vw, part=(0, 0)) -> torch.Tensor:
        """Tiles ("q": [.., Th, Tw, C], query-side layout) or regions ("r": [.., Rh, Rw, C];
        "part": one stride-S part of them; key-side layout) of the tiles in variants vh x vw:
        [B, nh, dh, nth, dw, ntw, ., ., C]."""
        ph, pw = self.ph, self.pw
        B, nh, dh, Ah, dw, Aw, C = xp.shape
        st = xp.stride()
        (t0h, t1h, _), (t0w, t1w, _) = vh, vw
        if kind == "q":
            size = (ph.T, pw.T)
            steps = (ph.T, pw.T)
            off = t0h * ph.T * st[3] + t0w * pw.T * st[5]
        else:
            steps = (ph.S, pw.S)
            off = t0h * ph.S * st[3] + t0w * pw.S * st[5]
            if kind == "r":
                size = (ph.R, pw.R)
            else:
                a, b = part
                size = (min(ph.S, ph.R - a * ph.S) if ph.nT > 1 else ph.R,
                        min(pw.S, pw.R - b * pw.S) if pw.nT > 1 else pw.R)
                off += a * ph.S * st[3] + b * pw.S * st[5]
        shape = (B, nh, dh, t1h - t0h, dw, t1w - t0w, size[0], size[1], C)
        strides = (st[0], st[1], st[2], steps[0] * st[3], st[4], steps[1] * st[5], st[3], st[5],
                   st[6])
        return xp.as_strided(shape, strides, xp.storage_offset() + off)

    # ---------------------------------------------------------------- bias tables
    def tables(self, rpb: Optional[torch.Tensor], vh, vw, cdt) -> Tuple[torch.Tensor, ...]:
        """Additive tables (broadcastable to [B, nh, dh, nth, dw, ntw, Th, Tw, Rh, Rw]):
        the RPB plus every tile's window mask, as one table or as (rows, columns) parts."""
        ph, pw = self.ph, self.pw
        (dh, dw), (kh, kw) = self.d, self.k
        (t0h, t1h, ch), (t0w, t1w, cw) = vh, vw
        nth, ntw = t1h - t0h, t1w - t0w
        dev = self.device

        def masks():
            ninf = torch.tensor(float("-inf"), dtype=cdt)
            zero = torch.zeros((), dtype=cdt)
            mh = torch.where(ph.mask[:, t0h:t1h], zero, ninf)     # [dh, nth, Th, Rh]
            mw = torch.where(pw.mask[:, t0w:t1w], zero, ninf)     # [dw, ntw, Tw, Rw]
            mh = mh.view(1, 1, dh, nth, 1, 1, ph.T, 1, ph.R, 1)
            mw = mw.view(1, 1, 1, 1, dw, ntw, 1, pw.T, 1, pw.R)
            return mh.to(dev), mw.to(dev)

        mh, mw = _cached((self.key, vh, vw, cdt, str(dev), "mask"), masks)
        if rpb is None:
            bias = None
        else:
            def index():
                uh = torch.arange(ph.T)[:, None, None, None]
                uw = torch.arange(pw.T)[None, :, None, None]
                xh = torch.arange(ph.R)[None, None, :, None]
                xw = torch.arange(pw.R)[None, None, None, :]
                ih = (xh - uh + ch).clamp(0, 2 * kh - 2)
                iw = (xw - uw + cw).clamp(0, 2 * kw - 2)
                return (ih * (2 * kw - 1) + iw).reshape(-1).to(dev)   # [Th*Tw*Rh*Rw]

            idx = _cached((self.key, vh, vw, str(dev), "rpbidx"), index)
            nh = rpb.shape[0]
            bias = rpb.detach().to(cdt).reshape(nh, -1).index_select(1, idx)
            bias = bias.view(1, nh, 1, 1, 1, 1, ph.T, pw.T, ph.R, pw.R)
        full = dh * nth * dw * ntw * ph.T * pw.T * ph.R * pw.R
        if self.B > 1 and full * (1 if rpb is None else rpb.shape[0]) <= FULL_TABLE_ELEMS:
            both = _cached((self.key, vh, vw, cdt, str(dev), "maskfull"), lambda: mh + mw)
            return (both if bias is None else both + bias,)
        return (mh, mw if bias is None else mw + bias)

    def rpb_index(self, vh, vw) -> torch.Tensor:
        return _table_cache[(self.key, vh, vw, str(self.device), "rpbidx")]

    # ---------------------------------------------------------------- chunks
    def chunks(self, nth: int, ntw: int, per_logit_rows: int):
        """(index, view shape) of chunks of tile rows: a range in one of the leading dims
        [B, nh, dh, nth] with all the dims after it, about CHUNK_ELEMS logits each."""
        budget = CHUNK_ELEMS
        sizes = (self.B, self.nh, self.d[0], nth)
        per = self.d[1] * ntw * per_logit_rows          # logits per tile row
        level, inner = 3, 1
        for lv in range(4):
            inner = 1
            for s in sizes[lv + 1:]:
                inner *= s
            if inner * per <= budget or lv == 3:
                level = lv
                break
        step = max(1, budget // (inner * per))
        prefixes = [()]
        for s in sizes[:level]:
            prefixes = [p + (i,) for p in prefixes for i in range(s)]
        for p in prefixes:
            for a in range(0, sizes[level], step):
                b = min(sizes[level], a + step)
                yield p + (slice(a, b),), (b - a,) + sizes[level + 1:]


def _sel(t: torch.Tensor, index: tuple) -> torch.Tensor:
    """Index the leading dims of a (possibly broadcast) table like a chunk of the tiles."""
    out = []
    for i, ix in enumerate(index):
        if t.shape[i] == 1:
            out.append(slice(0, 1) if isinstance(ix, slice) else 0)
        else:
            out.append(ix)
    return t[tuple(out)]


def _scaled_bmm(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * (a @ b), the scale applied inside the matmul (no extra pass)."""
    out = a.new_empty(a.shape[0], a.shape[1], b.shape[2])
    return out.baddbmm_(a, b, beta=0, alpha=scale)


def _tile_probs(qc, kc, tabs, ix, shape, scale, cdt):
    """Softmax weights of a chunk of tiles (forward, and recomputed in the backward): scale *
    q.k in ``cdt``, plus the RPB / mask tables (viewed as ``shape``), softmaxed over the keys."""
    logits = _scaled_bmm(qc, kc.transpose(1, 2), scale)
    if logits.dtype != cdt:
        logits = logits.to(cdt)
    lv = logits.view(shape)
    for t in tabs:
        lv.add_(_sel(t, ix))
    return torch.softmax(logits, -1)


def _fwd_impl(q, k, v, rpb, kh, kw, dh, dw, scale, th, tw):
    with torch.autocast(q.device.type, enabled=False):
        c = _Fast(q, kh, kw, dh, dw, th, tw)
        cdt = _compute_dtype(q.dtype)
        D, Dv = q.shape[-1], v.shape[-1]
        ph, pw = c.ph, c.pw
        qg, kg, vg = c.q_layout(q), c.k_layout(k), c.k_layout(v)
        og, full = c.q_out(Dv, v.dtype)
        T2, R2 = ph.T * pw.T, ph.R * pw.R
        for vh in ph.variants:
            for vw in pw.variants:
                tabs = c.tables(rpb, vh, vw, cdt)
                Q, K, V, Out = (c.view(qg, "q", vh, vw), c.view(kg, "r", vh, vw),
                              c.view(vg, "r", vh, vw), c.view(og, "q", vh, vw))
                nth, ntw = vh[1] - vh[0], vw[1] - vw[0]
                for ix, lead in c.chunks(nth, ntw, T2 * R2):
                    p = _tile_probs(Q[ix].reshape(-1, T2, D), K[ix].reshape(-1, R2, D), tabs,
                                    ix, lead + (dw, ntw, ph.T, pw.T, ph.R, pw.R), scale, cdt)
                    o = torch.bmm(p.to(v.dtype), V[ix].reshape(-1, R2, Dv))
                    Out[ix].copy_(o.view(lead + (dw, ntw, ph.T, pw.T, Dv)))
        return c.canonical(og, (0, 0), full)


def _bwd_impl(dout, q, k, v, rpb, out, kh, kw, dh, dw, scale, th, tw, rpb_grad):
    with torch.autocast(q.device.type, enabled=False):
        c = _Fast(q, kh, kw, dh, dw, th, tw)
        cdt = _compute_dtype(q.dtype)
        D, Dv = q.shape[-1], v.shape[-1]
        ph, pw = c.ph, c.pw
        dout = dout.to(v.dtype)
        qg, kg, vg = c.q_layout(q), c.k_layout(k), c.k_layout(v)
        dog = c.q_layout(dout)
        dqg, dq_full = c.q_out(D, q.dtype)
        dkg, dk_full = c.k_grad(D, k.dtype)
        dvg, dv_full = c.k_grad(Dv, v.dtype)
        accumulate = dk_full is None
        T2, R2 = ph.T * pw.T, ph.R * pw.R
        nh = c.nh
        drpb = None
        if rpb_grad:
            drpb = torch.zeros(nh, (2 * kh - 1) * (2 * kw - 1), dtype=cdt, device=q.device)
        for vh in ph.variants:
            for vw in pw.variants:
                tabs = c.tables(rpb, vh, vw, cdt)
                nth, ntw = vh[1] - vh[0], vw[1] - vw[0]
                Q, K, V = (c.view(qg, "q", vh, vw), c.view(kg, "r", vh, vw),
                           c.view(vg, "r", vh, vw))
                DO, DQ = c.view(dog, "q", vh, vw), c.view(dqg, "q", vh, vw)
                if accumulate:
                    parts = [(a, b) for a in range(ph.parts) for b in range(pw.parts)]
                    DK = [(a, b, c.view(dkg, "part", vh, vw, (a, b))) for a, b in parts]
                    DV = [(a, b, c.view(dvg, "part", vh, vw, (a, b))) for a, b in parts]
                else:
                    DK, DV = c.view(dkg, "r", vh, vw), c.view(dvg, "r", vh, vw)
                gtab = (torch.zeros(nh, T2 * R2, dtype=cdt, device=q.device)
                        if rpb_grad else None)
                for ix, lead in c.chunks(nth, ntw, T2 * R2):
                    qc = Q[ix].reshape(-1, T2, D)
                    kc = K[ix].reshape(-1, R2, D)
                    vc = V[ix].reshape(-1, R2, Dv)
                    doc = DO[ix].reshape(-1, T2, Dv)
                    p = _tile_probs(qc, kc, tabs, ix, lead + (dw, ntw, ph.T, pw.T, ph.R, pw.R),
                                    scale, cdt)
                    dp = torch.bmm(doc, vc.transpose(1, 2))
                    if dp.dtype != cdt:
                        dp = dp.to(cdt)
                    # p * (dp - sum(p * dp)): softmax's backward in one fused kernel (the
                    # row sums equal those of dout * out, which need not be formed)
                    ds = torch._softmax_backward_data(dp, p, -1, cdt)
                    if gtab is not None:
                        # RPB gradient: sum over everything but the head (and the table entry);
                        # adjacent dims are merged first (a sum over scattered dims is ~10x
                        # slower on the CPU)
                        if len(lead) == 4:            # [b, nh, dh, nth, ...]: all heads
                            gtab += ds.view(lead[0], nh, -1, T2 * R2).sum(2).sum(0)
                        elif len(lead) == 3:          # [heads h0:h1, dh, nth, ...]
                            gtab[ix[1]] += ds.view(lead[0], -1, T2 * R2).sum(1)
                        else:                          # one head
                            gtab[ix[1]] += ds.view(-1, T2 * R2).sum(0)
                    ds = ds.to(q.dtype)
                    DQ[ix].copy_(_scaled_bmm(ds, kc, scale).view(lead + (dw, ntw, ph.T, pw.T, D)))
                    dkr = _scaled_bmm(ds.transpose(1, 2), qc, scale).view(
                        lead + (dw, ntw, ph.R, pw.R, D))
                    dvr = torch.bmm(p.to(v.dtype).transpose(1, 2), doc).view(
                        lead + (dw, ntw, ph.R, pw.R, Dv))
                    if not accumulate:
                        DK[ix].copy_(dkr)
                        DV[ix].copy_(dvr)
                        continue
                    for dst_parts, src in ((DK, dkr), (DV, dvr)):
                        for a, b, dst in dst_parts:
                            d_ = dst[ix]
                            d_.add_(src[..., a * ph.S:a * ph.S + d_.shape[-3],
                                        b * pw.S:b * pw.S + d_.shape[-2], :])
                if gtab is not None:
                    drpb.index_add_(1, c.rpb_index(vh, vw), gtab)
        kp = (ph.P, pw.P)
        dq = c.canonical(dqg, (0, 0), dq_full)
        dk = c.canonical(dkg, kp, dk_full)
        dv = c.canonical(dvg, kp, dv_full)
        if drpb is not None:
            drpb = drpb.reshape(rpb.shape).to(rpb.dtype).contiguous()
        else:
            drpb = q.new_zeros(0)
    return dq, dk, dv, drpb


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
        th, tw = 0, 0                         # 0: the cheapest tiling (see _fast_plan)
    else:
        th, tw = (tile, tile) if isinstance(tile, int) else tile
        th, tw = max(1, min(th, _cdiv(H, dh))), max(1, min(tw, _cdiv(W, dw)))
    return torch.ops.dinat_backbone.na2d_tiled_fwd(query, key, value, rpb, kh, kw, dh, dw,
                                                   float(scale), th, tw)



def na2d_tiled(query, key, value, kernel_size, dilation, rpb, scale, return_attn,
               dropout_p=0.0, training=False, tile: Optional[int] = None):
    """Exact tiled NA: (out, attn or None). The fast custom op unless weights / dropout are asked."""
    if return_attn or (dropout_p and training):
        return _na2d_tiled_composed(query, key, value, kernel_size, dilation, rpb, scale,
                                    return_attn, dropout_p, training, tile)
    return na2d_tiled_fast(query, key, value, kernel_size, dilation, rpb, scale, tile), None
