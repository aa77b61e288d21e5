"""A slow, obviously-correct definition of 2D (dilated) neighborhood attention.

Written from the semantics in ../shared/REFERENCE.md, independently of dinat_backbone.ops: a
Python loop over every query and every window position. Used only as the tests' oracle.
"""
import math

import torch


def _window(i, L, k, d):
    """Key indices and RPB indices of query i on an axis of length L."""
    r, j = i % d, i // d
    lr = math.ceil((L - r) / d)
    s = min(max(j - k // 2, 0), lr - k)
    keys = [r + d * (s + t) for t in range(k)]
    bias = [(s + t) - j + (k - 1) for t in range(k)]
    return keys, bias


def na2d_slow(q, k, v, kernel_size, dilation=1, rpb=None, scale=None):
    """q, k, v [B, heads, H, W, D] -> (out [B, heads, H, W, D], attn [B, heads, H, W, kh*kw])."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    B, nh, H, W, D = q.shape
    assert H >= kh * dh and W >= kw * dw
    scale = D ** -0.5 if scale is None else scale
    rows_out, rows_attn = [], []
    for y in range(H):
        ky, by = _window(y, H, kh, dh)
        cols_out, cols_attn = [], []
        for x in range(W):
            kx, bx = _window(x, W, kw, dw)
            logits = []
            values = []
            for a in range(kh):
                for c in range(kw):
                    key = k[:, :, ky[a], kx[c], :]                      # [B, nh, D]
                    s = (q[:, :, y, x, :] * scale * key).sum(-1)        # [B, nh]
                    if rpb is not None:
                        s = s + rpb[:, by[a], bx[c]]
                    logits.append(s)
                    values.append(v[:, :, ky[a], kx[c], :])
            logits = torch.stack(logits, -1)                            # [B, nh, kh*kw]
            attn = torch.softmax(logits, -1)
            out = (attn.unsqueeze(-1) * torch.stack(values, -2)).sum(-2)  # [B, nh, D]
            cols_out.append(out)
            cols_attn.append(attn)
        rows_out.append(torch.stack(cols_out, 2))
        rows_attn.append(torch.stack(cols_attn, 2))
    return torch.stack(rows_out, 2), torch.stack(rows_attn, 2)
