"""Neighborhood-attention semantics: the one place that says which keys a query sees.

Per axis of length L, odd kernel k and dilation d (NATTEN's definition):

* a query at index i belongs to residue class r = i mod d, at group index j = i div d;
* that class is a sub-grid of length L_r = ceil((L - r) / d);
* its window in group coordinates is [s, s + k) with s = clamp(j - k div 2, 0, L_r - k): shifted
  inward at the borders, never zero-padded;
* keys are r + d * (s + t) for t = 0..k-1, and the relative-position-bias index of key t is
  (s + t) - j + (k - 1), in [0, 2k - 2].

It needs L >= k * d (every residue class then holds at least k positions); NATTEN raises
otherwise, and so does :func:`check_window_fits`. The 2D window is the product of the two axes'
windows, row-major: window position (a, c) is flat index a * k_w + c.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch

IntOrPair = Union[int, Sequence[int]]


def pair(value: IntOrPair, name: str) -> Tuple[int, int]:
    """Normalise an int or a 2-sequence of ints into a pair, or raise ValueError naming ``name``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return int(value), int(value)
    if isinstance(value, (tuple, list, torch.Size)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return int(value[0]), int(value[1])
    raise ValueError(f"{name} must be an int or a pair of ints (one per axis), got {value!r}")


def check_kernel_dilation(kernel_size: Tuple[int, int], dilation: Tuple[int, int]) -> None:
    for k in kernel_size:
        if k < 1 or k % 2 == 0:
            raise ValueError(
                f"kernel_size={kernel_size}: neighborhood attention needs odd kernel sizes "
                "(3, 5, 7, ...), so that every query has a centred window"
            )
    for d in dilation:
        if d < 1:
            raise ValueError(f"dilation={dilation}: dilations must be >= 1")


def check_window_fits(size: Tuple[int, int], kernel_size: Tuple[int, int],
                      dilation: Tuple[int, int]) -> None:
    for axis, L, k, d in zip(("height", "width"), size, kernel_size, dilation):
        if L < k * d:
            raise ValueError(
                f"feature map {axis} {L} is smaller than kernel_size * dilation = {k} * {d} = "
                f"{k * d}: neighborhood attention needs every window inside the map. Pad the "
                f"input to at least {k * d} (DinatModel does this per layer), or use a smaller "
                "dilation."
            )


def window_start(L: int, k: int, d: int, device=None) -> Tuple[torch.Tensor, torch.Tensor,
                                                                 torch.Tensor]:
    """For every index i of an axis: (residue r, group index j, window start s), each [L]."""
    i = torch.arange(L, device=device)
    r = i % d
    j = torch.div(i, d, rounding_mode="floor")
    lr = torch.div(L - r + d - 1, d, rounding_mode="floor")
    s = torch.minimum(torch.clamp(j - k // 2, min=0), lr - k)
    return r, j, s


def axis_neighborhood(L: int, k: int, d: int, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Key indices [L, k] and RPB indices [L, k] of every query on an axis."""
    r, j, s = window_start(L, k, d, device)
    t = torch.arange(k, device=device)
    pos = s[:, None] + t[None, :]
    keys = r[:, None] + d * pos
    bias = pos - j[:, None] + (k - 1)
    return keys, bias


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the window; half precision is accumulated in float32."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        return torch.softmax(logits, dim=-1, dtype=torch.float32).to(logits.dtype)
    return torch.softmax(logits, dim=-1)
