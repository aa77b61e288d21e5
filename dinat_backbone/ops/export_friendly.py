"""Neighborhood attention written for graph export (torch.export, ONNX) with dynamic H and W.

The other backends compute index plans in Python from the concrete sizes (tiled) or branch on
them (the model's "pad the map if it is smaller than kernel x dilation" step), which a graph with
symbolic sizes cannot hold. Here every index is computed with tensor ops from the symbolic size,
and the model's padding is expressed without any shape-dependent branch:

* the key/value map is always extended by ``kernel * dilation - 1`` zero rows / columns at the
  bottom / right (a static amount);
* windows are laid out on an axis of effective length ``L_e = max(L, kernel * dilation)``, which
  is exactly the length of the map the eager model pads to (or the map itself when it is large
  enough), so every key a window touches lies inside the extended map, and positions in
  ``[L, L_e)`` are the same zero tokens the eager model pads with;
* only the ``L`` real queries are computed, so nothing is cropped.

The window semantics are NATTEN's (see :mod:`dinat_backbone.ops.windows`); the arithmetic is the
gather form (each query's kh*kw keys are gathered), so it is exact and simple but holds kh*kw
copies of the keys and values of a layer at once.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


__all__ = ["axis_tables", "na2d_export", "pad_for_export"]


def axis_tables(L, k: int, d: int, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Key indices [L, k] and RPB indices [L, k] for the L queries of an axis.

    ``L`` may be a symbolic size. Windows live on the effective length max(L, k * d).
    """
    i = torch.arange(L, device=device)
    le = torch.clamp(torch.full_like(i[:1], 0) + L, min=k * d)          # [1], max(L, k*d)
    r = torch.remainder(i, d)
    j = torch.div(i, d, rounding_mode="floor")
    lr = torch.div(le - r + (d - 1), d, rounding_mode="floor")           # sub-grid lengths
    s = torch.minimum(torch.clamp(j - k // 2, min=0), lr - k)
    pos = s[:, None] + torch.arange(k, device=device)[None, :]
    return r[:, None] + d * pos, pos - j[:, None] + (k - 1)


def pad_for_export(x: torch.Tensor, kernel_size: Tuple[int, int], dilation: Tuple[int, int],
                   dims: Tuple[int, int] = (1, 2)) -> torch.Tensor:
    """Zero-extend the two spatial dims of ``x`` by kernel*dilation - 1 (a static amount)."""
    for dim, k, d in zip(dims, kernel_size, dilation):
        extra = k * d - 1
        if extra > 0:
            shape = list(x.shape)
            shape[dim] = extra
            x = torch.cat([x, x.new_zeros(shape)], dim=dim)
    return x


def na2d_export(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                kernel_size: Tuple[int, int], dilation: Tuple[int, int],
                rpb: Optional[torch.Tensor], scale: float) -> torch.Tensor:
    """query [B, heads, H, W, D]; key / value [B, heads, >= H + kh*dh - 1, >= W + kw*dw - 1, D]
    (extended with :func:`pad_for_export`). Returns [B, heads, H, W, D]."""
    B, nh, H, W, D = query.shape
    (kh, kw), (dh, dw) = kernel_size, dilation
    ih, bh = axis_tables(H, kh, dh, query.device)
    iw, bw = axis_tables(W, kw, dw, query.device)

    def windows(x):  # [B, nh, H, kh, W, kw, C]: advanced indexing, no reshape of symbolic dims
        return x[:, :, ih][:, :, :, :, iw]

    # Everything below is elementwise or a reduction over static dims: no einsum / reshape, whose
    # view and stride logic would put guards on the symbolic sizes.
    logits = ((query * scale)[:, :, :, None, :, None, :] * windows(key)).sum(-1)
    if rpb is not None:
        logits = logits + rpb[:, bh][:, :, :, bw].to(logits.dtype)   # [nh, H, kh, W, kw]
    work = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    work = torch.exp(work - work.amax(dim=(3, 5), keepdim=True))
    attn = (work / work.sum(dim=(3, 5), keepdim=True)).to(value.dtype)  # softmax over the window
    return (attn[..., None] * windows(value)).sum(dim=(3, 5))
