"""A slow, obviously-correct definition of 2D (dilated) neighborhood attention.

Written from NATTEN's documented semantics, independently of dinat_backbone.ops (it imports
nothing from the package). Used only as the tests' oracle.

Per axis of length L, odd kernel k, dilation d: query i is in residue class r = i mod d at group
index j = i div d; the class has L_r = ceil((L - r) / d) positions; the window in group
coordinates starts at s = clamp(j - k div 2, 0, L_r - k); keys are r + d * (s + t), t < k, and
key t reads the RPB at (s + t) - j + (k - 1). The 2D window is the product of the two axes'
windows, flattened row-major.

``na2d_loop`` is the literal definition (a Python loop over every query and every window
position). ``na2d_slow`` is the same loop over queries, but reads each query's window with one
index of the explicit key lists instead of a loop over window positions: about k*k times fewer
autograd nodes, which is what lets the test matrix check gradients on many shapes in seconds.
tests/test_ops.py checks that the two agree.
"""
import math

import torch


def _window(i, L, k, d):
    """Key indices and RPB indices of query i on an axis of length L (kernel k, dilation d)."""
    r, j = i % d, i // d
    lr = math.ceil((L - r) / d)
    s = min(max(j - k // 2, 0), lr - k)
    keys = [r + d * (s + t) for t in range(k)]
    bias = [(s + t) - j + (k - 1) for t in range(k)]
    return keys, bias


def _args(q, kernel_size, dilation, scale):
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    H, W, D = q.shape[2], q.shape[3], q.shape[4]
    assert H >= kh * dh and W >= kw * dw, "the oracle needs every window inside the map"
    return kh, kw, dh, dw, (D ** -0.5 if scale is None else scale)


def na2d_slow(q, k, v, kernel_size, dilation=1, rpb=None, scale=None):
    """q, k, v [B, heads, H, W, D] -> (out [B, heads, H, W, Dv], attn [B, heads, H, W, kh*kw])."""
    kh, kw, dh, dw, scale = _args(q, kernel_size, dilation, scale)
    B, nh, H, W, _ = q.shape
    rows_out, rows_attn = [], []
    for y in range(H):
        ky, by = _window(y, H, kh, dh)
        cols_out, cols_attn = [], []
        for x in range(W):
            kx, bx = _window(x, W, kw, dw)
            keys = k[:, :, ky][:, :, :, kx]                               # [B, nh, kh, kw, D]
            vals = v[:, :, ky][:, :, :, kx]                               # [B, nh, kh, kw, Dv]
            logits = (q[:, :, y, x, None, None, :] * scale * keys).sum(-1)  # [B, nh, kh, kw]
            if rpb is not None:
                logits = logits + rpb[:, by][:, :, bx]                    # [nh, kh, kw]
            attn = torch.softmax(logits.reshape(B, nh, kh * kw), -1)
            out = (attn.unsqueeze(-1) * vals.reshape(B, nh, kh * kw, -1)).sum(-2)
            cols_out.append(out)
            cols_attn.append(attn)
        rows_out.append(torch.stack(cols_out, 2))
        rows_attn.append(torch.stack(cols_attn, 2))
    return torch.stack(rows_out, 2), torch.stack(rows_attn, 2)


def na2d_loop(q, k, v, kernel_size, dilation=1, rpb=None, scale=None):
    """The literal definition: a loop over every query and every window position."""
    kh, kw, dh, dw, scale = _args(q, kernel_size, dilation, scale)
    B, nh, H, W, _ = q.shape
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
            out = (attn.unsqueeze(-1) * torch.stack(values, -2)).sum(-2)  # [B, nh, Dv]
            cols_out.append(out)
            cols_attn.append(attn)
        rows_out.append(torch.stack(cols_out, 2))
        rows_attn.append(torch.stack(cols_attn, 2))
    return torch.stack(rows_out, 2), torch.stack(rows_attn, 2)
