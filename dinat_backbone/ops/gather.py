"""The direct form of neighborhood attention: gather every query's k*k keys and values.

Simple and exact, and the baseline the fast backends are measured against; it materialises
k_h * k_w copies of the keys and of the values, so it is memory-hungry on large maps.
``na2d_qk`` / ``na2d_av`` split it the way NATTEN <= 0.17 did (``natten2dqkrpb`` / ``natten2dav``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .windows import axis_neighborhood, softmax


def _gather_windows(x: torch.Tensor, kernel_size: Tuple[int, int], dilation: Tuple[int, int]):
    """x [B, heads, H, W, D] -> [B, heads, H, W, kh, kw, D]."""
    H, W = x.shape[2], x.shape[3]
    kh_idx, _ = axis_neighborhood(H, kernel_size[0], dilation[0], x.device)
    kw_idx, _ = axis_neighborhood(W, kernel_size[1], dilation[1], x.device)
    return x[:, :, kh_idx[:, None, :, None], kw_idx[None, :, None, :]]


def rpb_bias(rpb: torch.Tensor, size: Tuple[int, int], kernel_size: Tuple[int, int],
             dilation: Tuple[int, int]) -> torch.Tensor:
    """The bias of every (query, window position): [heads, H, W, kh * kw]."""
    H, W = size
    _, ph = axis_neighborhood(H, kernel_size[0], dilation[0], rpb.device)
    _, pw = axis_neighborhood(W, kernel_size[1], dilation[1], rpb.device)
    b = rpb[:, ph[:, None, :, None], pw[None, :, None, :]]  # [heads, H, W, kh, kw]
    return b.reshape(rpb.shape[0], H, W, kernel_size[0] * kernel_size[1])


def na2d_qk(query: torch.Tensor, key: torch.Tensor, kernel_size: Tuple[int, int],
            dilation: Tuple[int, int], rpb: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Attention logits q.k (+ rpb) of every query and its window: [B, heads, H, W, kh*kw].

    No scaling is applied (scale the query first), as in NATTEN's ``na2d_qk``.
    """
    B, nh, H, W, D = query.shape
    kg = _gather_windows(key, kernel_size, dilation)  # [B, nh, H, W, kh, kw, D]
    logits = torch.einsum("bnhwd,bnhwxyd->bnhwxy", query, kg)
    logits = logits.reshape(B, nh, H, W, kernel_size[0] * kernel_size[1])
    if rpb is not None:
        logits = logits + rpb_bias(rpb, (H, W), kernel_size, dilation).to(logits.dtype)
    return logits


def na2d_av(attn: torch.Tensor, value: torch.Tensor, kernel_size: Tuple[int, int],
            dilation: Tuple[int, int]) -> torch.Tensor:
    """Weighted sum of every query's window of values: attn [B, heads, H, W, kh*kw] -> out."""
    B, nh, H, W, D = value.shape
    vg = _gather_windows(value, kernel_size, dilation)
    a = attn.reshape(B, nh, H, W, kernel_size[0], kernel_size[1]).to(value.dtype)
    return torch.einsum("bnhwxy,bnhwxyd->bnhwd", a, vg)


def na2d_gather(query, key, value, kernel_size, dilation, rpb, scale, return_attn,
                dropout_p=0.0, training=False):
    logits = na2d_qk(query * scale, key, kernel_size, dilation, rpb)
    attn = softmax(logits)
    attn_used = torch.nn.functional.dropout(attn, dropout_p, training) if dropout_p else attn
    out = na2d_av(attn_used, value, kernel_size, dilation)
    return (out, attn) if return_attn else (out, None)
