"""FLOP counting with fvcore, including the neighborhood-attention op.

fvcore traces the model with ``torch.jit`` and counts each traced operator with a handle. Our
attention op is a Python function made of gathers, matmuls and masks; counting those would
charge the tiling overhead to the model. While :func:`flop_tracing` is active, ``na2d`` instead
runs as one ``torch.autograd.Function`` (:class:`NeighborhoodAttention2DFunction`, switched on
through a context variable that ``na2d`` reads, so other threads are unaffected), which fvcore sees
as a single ``prim::PythonOp.NeighborhoodAttention2DFunction`` node (fvcore names a PythonOp
node ``"prim::PythonOp." + node.pyname()``, and ``pyname()`` is the Function's class name).
:func:`na_flop_jit` counts that node the way NATTEN's own fvcore handles counted ``na2d_qk`` +
``na2d_av``: one multiply-add per (query, window position, channel) for q.k and again for a.v,
i.e. ``B * heads * H * W * kh*kw * (D + Dv)``. Like fvcore's matmul / linear / conv handles, the
unit is the multiply-add ("FLOPs" as the DiNAT / Swin / ConvNeXt papers report them); softmax,
scaling, the RPB addition, activations and residual additions are not counted, as in the
authors' numbers.

>>> from dinat_backbone.flops import count_flops
>>> report = count_flops(model, image_size=224)       # model: DinatModel / ...Classification /
>>> report.total / 1e9                                 #        DinatBackbone
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .ops import _FLOP_TRACE
from .ops.tiled import na2d_tiled

__all__ = [
    "NA_OP_NAME",
    "NeighborhoodAttention2DFunction",
    "na_flop_jit",
    "add_na_flop_handle",
    "flop_tracing",
    "flop_count_analysis",
    "count_flops",
    "count_parameters",
    "FlopReport",
]

NA_OP_NAME = "prim::PythonOp.NeighborhoodAttention2DFunction"


def _fvcore():
    try:
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.jit_handles import get_shape
    except ImportError as e:  # pragma: no cover - fvcore is a core dependency
        raise ImportError("FLOP counting needs fvcore: pip install fvcore") from e
    return FlopCountAnalysis, get_shape


def na_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """fvcore handle for ``NeighborhoodAttention2DFunction``: multiply-adds of q.k and a.v.

    inputs are the traced tensors (query [B, heads, H, W, D], key, value [..., Dv], rpb);
    outputs are (out [B, heads, H, W, Dv], attn [B, heads, H, W, kh*kw]).
    """
    _, get_shape = _fvcore()
    if len(outputs) == 1 and outputs[0].type().kind() == "TupleType":
        # The Function returns (out, attn): the trace has one tuple output, unpacked by a
        # prim::TupleUnpack node whose outputs carry the shapes.
        unpack = [u.user for u in outputs[0].uses() if u.user.kind() == "prim::TupleUnpack"]
        outputs = list(unpack[0].outputs()) if unpack else outputs
    q = get_shape(inputs[0])
    out = get_shape(outputs[0]) if len(outputs) > 0 else None
    attn = get_shape(outputs[1]) if len(outputs) > 1 else None
    if q is None or attn is None or out is None or len(q) != 5 or len(attn) != 5:
        raise ValueError(f"{NA_OP_NAME}: expected 5-D query and attention weights, got shapes "
                         f"{q} and {attn}")
    B, heads, H, W, D = q
    window = attn[-1]
    Dv = out[-1]
    return int(B * heads * H * W * window * (D + Dv))


def add_na_flop_handle(counter):
    """Register :func:`na_flop_jit` on an fvcore ``FlopCountAnalysis``; returns it (chainable).

    The model must be traced inside :func:`flop_tracing` for the op to appear as that node.
    """
    return counter.set_op_handle(NA_OP_NAME, na_flop_jit)


class NeighborhoodAttention2DFunction(torch.autograd.Function):
    """``na2d`` as one forward-only autograd.Function, so that a jit trace shows one node.

    Used only inside :func:`flop_tracing`; computes exactly what ``na2d`` computes (the tiled
    backend), returning (out, attention weights).
    """

    @staticmethod
    def forward(ctx, query, key, value, rpb, kh, kw, dh, dw, scale):
        return na2d_tiled(query, key, value, (kh, kw), (dh, dw), rpb, scale, True)

    @staticmethod
    def backward(ctx, *grads):  # pragma: no cover - tracing only
        raise RuntimeError("NeighborhoodAttention2DFunction is for FLOP counting only")


@contextlib.contextmanager
def flop_tracing() -> Iterator[None]:
    """While active (in this thread / task only), ``na2d`` traces as one
    ``NeighborhoodAttention2DFunction`` node."""
    token = _FLOP_TRACE.set(NeighborhoodAttention2DFunction)
    try:
        yield
    finally:
        _FLOP_TRACE.reset(token)


class _TupleOutputs(nn.Module):
    """Wraps a model so that tracing sees plain tensors (fvcore cannot trace dataclass outputs)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs):
        out = self.model(*inputs)
        if isinstance(out, torch.Tensor):
            return out
        if isinstance(out, dict):
            return tuple(out.values())
        if hasattr(out, "to_tuple"):
            return tuple(t for t in out.to_tuple() if isinstance(t, torch.Tensor))
        return tuple(out)


def _inputs(model: nn.Module, inputs, image_size, batch_size) -> Tuple[torch.Tensor, ...]:
    if inputs is not None:
        return (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(f"image_size must be an int or (height, width) >= 1, got {image_size!r}")
    p = next(model.parameters())
    chans = getattr(getattr(model, "config", None), "num_channels", 3)
    return (torch.zeros(batch_size, chans, *image_size, dtype=p.dtype, device=p.device),)


def flop_count_analysis(model: nn.Module, inputs=None, image_size: Union[int, Sequence[int]] = 224,
                        batch_size: int = 1, warn: bool = False):
    """An fvcore ``FlopCountAnalysis`` of ``model`` with the NA handle, already traced.

    Module names in ``by_module()`` are prefixed with ``"model."`` (the tracing wrapper).
    """
    FlopCountAnalysis, _ = _fvcore()
    x = _inputs(model, inputs, image_size, batch_size)
    counter = FlopCountAnalysis(_TupleOutputs(model), x)
    add_na_flop_handle(counter)
    counter.unsupported_ops_warnings(warn).uncalled_modules_warnings(warn)
    with flop_tracing(), torch.no_grad(), warnings.catch_warnings():
        if not warn:
            warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python ints
        counter.total()  # fvcore traces on the first query and caches the statistics
    return counter


@dataclass
class FlopReport:
    total: int
    by_operator: Dict[str, int] = field(default_factory=dict)
    by_module: Dict[str, int] = field(default_factory=dict)
    unsupported: Dict[str, int] = field(default_factory=dict)
    params: int = 0

    @property
    def gflops(self) -> float:
        return self.total / 1e9

    @property
    def mparams(self) -> float:
        return self.params / 1e6


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (works on models built under ``torch.device("meta")``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, inputs=None, image_size: Union[int, Sequence[int]] = 224,
                batch_size: int = 1) -> FlopReport:
    """FLOPs (multiply-adds, fvcore's convention) of one forward pass, and the parameters.

    The model is counted in eval mode (no drop path / dropout) and restored to its mode.
    """
    was_training = model.training
    model.eval()
    try:
        counter = flop_count_analysis(model, inputs, image_size, batch_size)
        by_module = {k[len("model."):] if k.startswith("model.") else k: int(v)
                     for k, v in counter.by_module().items()}
        return FlopReport(total=int(counter.total()),
                          by_operator={k: int(v) for k, v in counter.by_operator().items()},
                          by_module=by_module,
                          unsupported=dict(counter.unsupported_ops()),
                          params=count_parameters(model))
    finally:
        model.train(was_training)
