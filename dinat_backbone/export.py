"""Graph export of DiNAT models: ``torch.export`` and ONNX with dynamic height and width.

>>> from dinat_backbone.export import export_program, export_onnx
>>> ep = export_program(backbone)                       # torch.export.ExportedProgram
>>> export_onnx(backbone, "dinat.onnx")                 # opset 18, dynamic batch / H / W

The eager model computes its attention index plans in Python from the concrete sizes and pads
feature maps smaller than kernel x dilation behind a Python ``if``; neither survives symbolic
sizes. Export therefore runs on a copy of the model whose attention layers use
:mod:`dinat_backbone.ops.export_friendly`: the same weights and the same numbers (windows, RPB and
the zero padding of small maps are reproduced exactly), with all index math written in tensor ops
on the symbolic sizes and no shape-dependent branch.

Supported dynamic range: ``height, width >= 33`` (torch.export specialises dimensions of size 0
and 1, and the last stage is ``ceil(H / 32)`` on a side, so one graph covers every size whose
stage-4 map is at least 2 x 2). For smaller inputs export a static graph
(``dynamic=False`` with an example of that size). The batch dimension is dynamic too (>= 1).
"""
from __future__ import annotations

import copy
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .modeling import NeighborhoodAttention2D
from .ops.export_friendly import na2d_export, pad_for_export

__all__ = [
    "ExportNeighborhoodAttention2D",
    "export_friendly",
    "export_program",
    "export_onnx",
    "MIN_DYNAMIC_SIZE",
]

MIN_DYNAMIC_SIZE = 33


class ExportNeighborhoodAttention2D(NeighborhoodAttention2D):
    """NeighborhoodAttention2D with graph-export-friendly arithmetic (same parameters, same output).

    The map is always extended by kernel*dilation - 1 zero tokens at the bottom / right (a
    static amount) before the qkv projection; windows are laid out on max(L, kernel*dilation),
    which is exactly the map the eager module pads to, so the padded zero tokens enter as keys
    and values exactly as they do there.
    """

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        if return_attn:
            raise ValueError("return_attn is not supported by the export path; run the eager "
                             "model (without dinat_backbone.export.export_friendly) to get "
                             "attention weights")
        B, H, W, C = x.shape
        nh, hd = self.num_heads, self.head_dim
        ks, dil = (self.kernel_size, self.kernel_size), (self.dilation, self.dilation)
        xp = pad_for_export(x, ks, dil, dims=(1, 2))
        qkv = self.qkv(xp)                                    # [B, Hp, Wp, 3C]
        qkv = qkv.unflatten(-1, (3, nh, hd)).permute(3, 0, 4, 1, 2, 5)   # [3, B, nh, Hp, Wp, hd]
        q = qkv[0][:, :, :H, :W]
        out = na2d_export(q, qkv[1], qkv[2], ks, dil, self.rpb, self.scale)   # [B, nh, H, W, hd]
        out = out.permute(0, 2, 3, 1, 4).flatten(-2)
        return self.proj_drop(self.proj(out)), None


def export_friendly(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode whose NA layers use the export-friendly path.

    Works for DinatBackbone, DinatModel and DinatForImageClassification (any module holding
    NeighborhoodAttention2D layers). The original model is not modified.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"export_friendly needs a torch.nn.Module, got {type(model).__name__}")
    m = copy.deepcopy(model).eval()
    n = 0
    for mod in m.modules():
        if isinstance(mod, NeighborhoodAttention2D):
            mod.__class__ = ExportNeighborhoodAttention2D
            n += 1
    if n == 0:
        raise ValueError(f"{type(model).__name__} has no NeighborhoodAttention2D layers: "
                         "export_friendly is for DiNAT models (DinatBackbone, DinatModel, ...)")
    return m


def _example(model: nn.Module, example: Optional[torch.Tensor], size: Tuple[int, int]):
    if example is not None:
        return example
    cfg = getattr(model, "config", None)
    c = getattr(cfg, "num_channels", 3)
    p = next(model.parameters())
    return torch.randn(2, c, size[0], size[1], dtype=p.dtype, device=p.device)


def _dynamic_shapes(dynamic: bool, min_size: int, max_size: int):
    if not dynamic:
        return None
    if min_size < MIN_DYNAMIC_SIZE:
        raise ValueError(f"min_size={min_size}: a dynamic graph covers heights and widths >= "
                         f"{MIN_DYNAMIC_SIZE} (stage 4 at least 2 x 2); export a static graph "
                         "(dynamic=False) for smaller inputs")
    if max_size < min_size:
        raise ValueError(f"max_size={max_size} is smaller than min_size={min_size}")
    b = torch.export.Dim("batch", min=1, max=4096)
    h = torch.export.Dim("height", min=min_size, max=max_size)
    w = torch.export.Dim("width", min=min_size, max=max_size)
    return {"pixel_values": {0: b, 2: h, 3: w}}


def export_program(model: nn.Module, example: Optional[torch.Tensor] = None, *,
                   dynamic: bool = True, min_size: int = MIN_DYNAMIC_SIZE,
                   max_size: int = 8192) -> "torch.export.ExportedProgram":
    """``torch.export`` of a DiNAT model with dynamic batch, height and width.

    ``example`` is an input used for tracing (default: random 2 x C x 96 x 128); with
    ``dynamic=False`` the program is specialised to its size.
    """
    m = export_friendly(model)
    x = _example(m, example, (96, 128))
    if dynamic and (x.shape[2] < min_size or x.shape[3] < min_size):
        raise ValueError(f"example has size {tuple(x.shape[2:])}, below min_size={min_size}: "
                         "trace with a larger example, or pass dynamic=False")
    if dynamic and x.shape[0] == 1:
        # torch.export specialises a dimension traced at size 1; trace the batch at size 2.
        x = x.expand(2, -1, -1, -1).contiguous()
    with torch.no_grad():
        return torch.export.export(m, (x,), dynamic_shapes=_dynamic_shapes(dynamic, min_size,
                                                                           max_size))


def export_onnx(model, path: str, example: Optional[torch.Tensor] = None, *,
                opset: int = 18, dynamic: bool = True, min_size: int = MIN_DYNAMIC_SIZE,
                max_size: int = 8192, output_names: Optional[Sequence[str]] = None,
                optimize: bool = True):
    """Write a DiNAT model to ONNX (opset >= 17) with dynamic batch / height / width.

    ``model`` is a DiNAT module (exported here with :func:`export_program`) or an
    ``ExportedProgram`` made by :func:`export_program`. Uses the torch.export-based exporter
    (``torch.onnx.export(..., dynamo=True)``; needs the ``onnx`` and ``onnxscript`` packages).
    The input is named ``pixel_values``; the outputs are the backbone's ``out_features``
    (``stage1`` .. ``stage4``) or ``output_names``. Returns the torch.onnx ONNXProgram.
    """
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 17:
        raise ValueError(f"opset={opset!r}: ONNX export needs opset >= 17 (LayerNormalization)")
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("ONNX export needs the onnx and onnxscript packages: "
                          "pip install onnx onnxscript (or pip install dinat-backbone[test])") from e
    if output_names is None and isinstance(model, nn.Module):
        output_names = list(getattr(model, "out_features", [])) or None
    if isinstance(model, torch.export.ExportedProgram):
        prog_in = model
    else:
        prog_in = export_program(model, example, dynamic=dynamic, min_size=min_size,
                                 max_size=max_size)
    if output_names is None:
        spec = prog_in.call_spec.out_spec
        ctx = getattr(spec, "context", None)
        output_names = [str(c) for c in ctx] if isinstance(ctx, (list, tuple)) else None
    prog = torch.onnx.export(prog_in, (), None, dynamo=True, opset_version=opset,
                             input_names=["pixel_values"], output_names=output_names,
                             external_data=False, optimize=optimize)
    prog.save(str(path))
    return prog
