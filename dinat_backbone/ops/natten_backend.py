"""Optional NATTEN backend, used only where NATTEN computes exactly what ``na2d`` defines.

* NATTEN <= 0.17 (``natten.functional.na2d_qk`` / ``na2d_av``, layout [B, heads, H, W, D]):
  relative positional bias and attention weights are supported.
* NATTEN >= 0.20 (fused ``natten.na2d``, layout [B, H, W, heads, D]): no RPB, no attention
  weights, no attention dropout; only those calls go there.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch


@functools.lru_cache(maxsize=1)
def natten_info() -> Optional[dict]:
    """{'version': (major, minor, patch), 'legacy': bool}; None when NATTEN is not installed;
    {'error': message} when it is installed but fails to import (a broken build)."""
    try:
        import natten  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name == "natten":
            return None
        return {"error": f"{type(e).__name__}: {e}"}
    except Exception as e:  # a broken build raising at import: say so instead of hiding it
        return {"error": f"{type(e).__name__}: {e}"}
    ver = getattr(natten, "__version__", "0.0.0")
    parts = []
    for p in str(ver).split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    while len(parts) < 3:
        parts.append(0)
    return {"version": tuple(parts), "legacy": tuple(parts) < (0, 20, 0)}


def natten_supports(query, rpb, return_attn, dropout_p) -> Optional[str]:
    """None if NATTEN can compute this call exactly, else the reason it cannot."""
    info = natten_info()
    if info is None:
        return "NATTEN is not installed (pip install --no-build-isolation natten)"
    if "error" in info:
        return (f"NATTEN is installed but fails to import ({info['error']}); reinstall it for "
                f"this torch (pip install --no-build-isolation --force-reinstall natten)")
    if query.dtype not in (torch.float32, torch.float16, torch.bfloat16) and not info["legacy"]:
        return f"NATTEN >= 0.20 does not support {query.dtype}"
    if not info["legacy"]:
        if rpb is not None:
            return "NATTEN >= 0.20 has no relative positional bias (every DiNAT checkpoint has one)"
        if return_attn:
            return "NATTEN >= 0.20 does not return attention weights"
        if dropout_p:
            return "NATTEN >= 0.20 has no attention dropout"
        if query.device.type == "cpu":
            D = query.shape[-1]
            if D < 8 or D > 512 or D & (D - 1):
                return (f"NATTEN >= 0.20 on CPU (flex attention) needs a head dim that is a "
                        f"power of two in [8, 512], got {D}")
            if torch.is_grad_enabled() and query.requires_grad:
                return "NATTEN >= 0.20 has no backward on CPU (run under torch.no_grad())"
    return None


def na2d_natten(query, key, value, kernel_size, dilation, rpb, scale, return_attn,
                dropout_p=0.0, training=False):
    info = natten_info()
    reason = natten_supports(query, rpb, return_attn, dropout_p)
    if reason:
        raise RuntimeError(f"backend='natten' cannot run this call: {reason}. Use backend='auto'.")
    ks = kernel_size if kernel_size[0] != kernel_size[1] else kernel_size[0]
    dil = dilation if dilation[0] != dilation[1] else dilation[0]
    if info["legacy"]:
        from natten.functional import na2d_av, na2d_qk

        attn = na2d_qk(query * scale, key, ks, dil, rpb=rpb)
        attn = torch.softmax(attn, dim=-1)
        attn_used = torch.nn.functional.dropout(attn, dropout_p, training) if dropout_p else attn
        out = na2d_av(attn_used, value, ks, dil)
        return out, (attn if return_attn else None)
    import natten

    q, k, v = (t.permute(0, 2, 3, 1, 4) for t in (query, key, value))
    out = natten.na2d(q, k, v, kernel_size=ks, dilation=dil, scale=scale)
    return out.permute(0, 3, 1, 2, 4), None
