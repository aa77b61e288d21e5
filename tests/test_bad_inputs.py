"""The bad-input matrix: one table, each row an input and its expected outcome.

Every row ends in one of two outcomes, never in a cryptic error from deep inside or a silently
wrong shape:

* ``Correct(check)``: the call succeeds and ``check`` verifies the result: output names, sizes
  against both ``DinatBackbone.output_size`` and ceil(H / stride), and the numbers against an
  independent re-computation (``reference_backbone`` below: plain convolutions / LayerNorms on the
  model's own weights and a window table built from tests/na_reference.py, not
  dinat_backbone.ops), or the op against the slow loop definition ``na2d_slow``.
* ``Clear(exc, *phrases)``: a ValueError / TypeError whose message contains every phrase: the
  phrases name the problem and the fix.

Decisions recorded here (and in the rows):

* NaN / inf pixels propagate (no error): checking every input for finiteness would force a
  device->host synchronisation per forward pass. The result is never a silent wrong answer:
  every output position whose receptive field holds a non-finite pixel is NaN (inf becomes NaN
  in the LayerNorms), and every finite output value equals the one computed for the same image
  with the bad pixel replaced by a finite value. Rows ``image/nan-pixel`` and ``image/inf-pixel``.
* Any size >= 1 x 1 works: feature maps smaller than kernel x dilation are zero-padded for that
  layer's attention and cropped back (the authors' and transformers' behaviour).
* Batch 0 returns empty maps of the right shape.
* A device mismatch (input on one device, weights on another) is caught before any computation.
  There is no GPU here, so the rows use PyTorch's ``meta`` device as the second device: the
  check compares ``pixel_values.device`` with the device of the weights, which is the same code
  path a cuda:0 / cpu mismatch takes.

Checkpoint rows use dinat_backbone.checkpoints (load_checkpoint_file / load_pretrained /
from_pretrained); adapter rows skip when their framework is not installed.
"""
from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import pytest
import torch
import torch.nn.functional as F

from dinat_backbone import (DinatBackbone, DinatConfig, DinatForImageClassification,
                            derive_dilations, dilation_preset)
from dinat_backbone.modeling import NeighborhoodAttention2D
from dinat_backbone.ops import na2d
from na_reference import _window, na2d_slow


# ============================================================================ the oracle
def _axis_table(L: int, k: int, d: int):
    """Key and RPB indices [L, k] from the loop definition (tests/na_reference.py)."""
    keys, bias = zip(*(_window(i, L, k, d) for i in range(L)))
    return torch.tensor(keys), torch.tensor(bias)


def reference_na(q, k, v, kernel_size: int, dilation: int, rpb, scale: float):
    """Neighborhood attention by broadcasting over python-built window tables."""
    H, W = q.shape[2], q.shape[3]
    ih, bh = _axis_table(H, kernel_size, dilation)
    iw, bw = _axis_table(W, kernel_size, dilation)
    hh, ww = ih[:, None, :, None], iw[None, :, None, :]            # [H, W, k, k] after broadcast
    logits = (q[:, :, :, :, None, None, :] * scale * k[:, :, hh, ww]).sum(-1)
    logits = logits + rpb[:, bh[:, None, :, None], bw[None, :, None, :]]
    attn = torch.softmax(logits.flatten(-2), -1).unflatten(-1, (kernel_size, kernel_size))
    return (attn[..., None] * v[:, :, hh, ww]).sum((4, 5))


def _ln(x, norm):
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def reference_backbone(m: DinatBackbone, x: torch.Tensor) -> dict:
    """The backbone's forward pass re-done with functional ops on the model's weights.

    Small maps are zero-padded (after norm1, at the bottom / right) to kernel x dilation for the
    attention and cropped back: the semantics the authors' module and transformers implement.
    """
    cfg = m.config
    assert cfg.layer_scale_init_value == 0 and cfg.hidden_act == "gelu"
    p0, p1 = m.patch_embed.proj
    h = F.conv2d(F.conv2d(x, p0.weight, p0.bias, stride=2, padding=1), p1.weight, p1.bias,
                 stride=2, padding=1)
    h = _ln(h.permute(0, 2, 3, 1), m.patch_embed.norm)
    outs = {}
    if "stem" in m.out_features:
        outs["stem"] = _ln(h, m.norm_stem).permute(0, 3, 1, 2)
    for i, level in enumerate(m.levels):
        for blk in level.blocks:
            a = blk.attn
            y = _ln(h, blk.norm1)
            B, H, W, C = y.shape
            win = a.kernel_size * a.dilation
            yp = y.new_zeros(B, max(H, win), max(W, win), C)
            yp[:, :H, :W] = y
            qkv = F.linear(yp, a.qkv.weight, a.qkv.bias)
            qkv = qkv.view(B, yp.shape[1], yp.shape[2], 3, a.num_heads, C // a.num_heads)
            q, k, v = (qkv[:, :, :, j].permute(0, 3, 1, 2, 4) for j in range(3))
            o = reference_na(q, k, v, a.kernel_size, a.dilation, a.rpb,
                             (C // a.num_heads) ** -0.5)[:, :, :H, :W]
            h = h + F.linear(o.permute(0, 2, 3, 1, 4).reshape(B, H, W, C), a.proj.weight,
                             a.proj.bias)
            y = _ln(h, blk.norm2)
            h = h + F.linear(F.gelu(F.linear(y, blk.mlp.fc1.weight, blk.mlp.fc1.bias)),
                             blk.mlp.fc2.weight, blk.mlp.fc2.bias)
        name = f"stage{i + 1}"
        if name in m.out_features:
            outs[name] = _ln(h, getattr(m, f"norm{i}")).permute(0, 3, 1, 2)
        if level.downsample is not None and i + 1 < len(m.levels):
            ds = level.downsample
            h = F.conv2d(h.permute(0, 3, 1, 2), ds.reduction.weight, None, stride=2, padding=1)
            h = _ln(h.permute(0, 2, 3, 1), ds.norm)
    return outs


# ============================================================================ models
STRIDES = {"stem": 4, "stage1": 4, "stage2": 8, "stage3": 16, "stage4": 32}


def tiny_config(**kw) -> DinatConfig:
    # kernel 3, dilation 2 in stages 1-2: maps under 6 px (stage1/2) or 3 px are padded.
    base = dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                dilations=[[2], [2], [1], [1]], kernel_size=3, drop_path_rate=0.0)
    base.update(kw)
    return DinatConfig(**base)


_MODELS: dict = {}


def model(num_channels: int = 3, dtype=torch.float32, device: str = "cpu") -> DinatBackbone:
    key = (num_channels, dtype, device)
    if key not in _MODELS:
        g = torch.Generator().manual_seed(7)
        m = DinatBackbone(tiny_config(num_channels=num_channels))
        with torch.no_grad():  # non-trivial RPB and norms, so that mistakes show
            for name, prm in m.named_parameters():
                if name.endswith("rpb") or "norm" in name:
                    prm.add_(0.3 * torch.randn(prm.shape, generator=g))
        _MODELS[key] = m.eval().to(dtype=dtype, device=device)
    return _MODELS[key]


def image(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


# ============================================================================ outcomes
@dataclass
class Correct:
    check: Callable[[Any], None]


@dataclass
class Clear:
    exc: type
    phrases: Tuple[str, ...]

    def __init__(self, exc, *phrases):
        self.exc, self.phrases = exc, phrases


@dataclass
class Row:
    id: str
    run: Callable[..., Any]           # run() or run(tmp_path)
    expect: Any                       # Correct / Clear
    needs: Optional[str] = None       # an optional module the row needs (skips without it)
    tmp: bool = False
    known_bug: Optional[str] = None   # strict xfail: the row states the wanted behaviour


def _check_sizes(m, x, out):
    assert list(out) == list(m.out_features)
    B, _, H, W = x.shape
    for name, t in out.items():
        s = STRIDES[name]
        assert tuple(t.shape) == (B, m._out_feature_channels[name],
                                  *m.output_size(H, W, name)), (name, t.shape)
        assert tuple(t.shape[2:]) == (math.ceil(H / s), math.ceil(W / s))
        assert t.dtype == x.dtype and t.device == x.device


def matches_reference(atol=2e-5):
    """Correct output: sizes, and numbers equal to reference_backbone within atol."""
    def check(res):
        m, x, out = res
        _check_sizes(m, x, out)
        with torch.no_grad():
            ref = reference_backbone(m, x)
        for name in out:
            assert torch.isfinite(out[name]).all()
            torch.testing.assert_close(out[name], ref[name], rtol=0, atol=atol)
    return Correct(check)


def forward(m, x):
    def run():
        with torch.no_grad():
            return m, x, m(x)
    return run


def _empty_batch_check(res):
    m, x, out = res
    _check_sizes(m, x, out)
    assert all(t.numel() == 0 for t in out.values())


def _empty_batch_backward():
    m = DinatBackbone(tiny_config()).train()
    x = image(0, 3, 45, 29)
    out = m(x)
    sum(t.sum() for t in out.values()).backward()
    return m, x, out


def _zero_grads(res):
    m, x, out = res
    _check_sizes(m, x, out)
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None and not g.any() for g in grads)  # gradient of an empty loss: 0


def _bad_pixel(value, where=(0, 2, 37, 20)):
    """Run the model on an image with one non-finite pixel, and on the same image with that
    pixel set to 0."""
    def run():
        m = model()
        x = image(1, 3, 64, 80, seed=3)
        clean = x.clone()
        clean[where] = 0.0
        x[where] = value
        with torch.no_grad():
            return m, x, where, m(x), m(clean)
    return run


def _propagates_nan(res):
    m, x, where, out, clean = res
    _check_sizes(m, x, out)
    _, _, y, xx = where
    for name, t in out.items():
        s = STRIDES[name]
        assert torch.isnan(t[0, :, y // s, xx // s]).all(), name   # the pixel's own cell
        assert not torch.isinf(t).any(), name                      # inf turns into NaN
        finite = torch.isfinite(t)
        # positions the bad pixel cannot reach keep exactly the values of the clean image
        torch.testing.assert_close(t[finite], clean[name][finite], rtol=0, atol=1e-6)
    # ... and the damage is local at stride 4 (the model does not just return all-NaN)
    assert torch.isfinite(out["stage1"]).float().mean() > 0.5


# ============================================================================ op rows
def _qkv(B=1, nh=2, H=9, W=10, D=4, Dv=None, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, nh, H, W, D, generator=g).to(dtype) for _ in range(2))
    v = torch.randn(B, nh, H, W, Dv or D, generator=g).to(dtype)
    return q, k, v


def _rpb(nh=2, k=3, k2=None, seed=2):
    k2 = k if k2 is None else k2
    return torch.randn(nh, 2 * k - 1, 2 * k2 - 1, generator=torch.Generator().manual_seed(seed))


def op_matches_slow(kernel_size, dilation, **shape):
    def run():
        q, k, v = _qkv(**shape)
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        rpb = _rpb(q.shape[1], ks[0], ks[1])
        outs = {b: na2d(q, k, v, kernel_size, dilation, rpb=rpb, backend=b)
                for b in ("tiled", "gather")}
        return q, k, v, ks, dilation, rpb, outs

    def check(res):
        q, k, v, ks, dil, rpb, outs = res
        # (batch 0: nothing to compare but the shape; the loop oracle cannot reshape empties)
        want = na2d_slow(q, k, v, ks, dil, rpb)[0] if q.shape[0] else v.new_zeros(v.shape)
        for b, out in outs.items():
            assert out.shape == v.shape, b
            torch.testing.assert_close(out, want, rtol=0, atol=1e-5, msg=b)
    return run, Correct(check)


def op_call(q=None, k=None, v=None, kernel_size=3, dilation=1, rpb="default", **kw):
    def run():
        qq, kk, vv = _qkv()
        r = _rpb() if isinstance(rpb, str) else rpb
        return na2d(qq if q is None else q, kk if k is None else k, vv if v is None else v,
                    kernel_size, dilation, rpb=r, **kw)
    return run


def _padded_na_layer_matches_reference():
    """The model's NA layer on a 5 x 4 map with kernel 3 x dilation 2 (window 6 > map)."""
    def run():
        torch.manual_seed(5)
        layer = NeighborhoodAttention2D(8, 2, 3, 2).eval()
        with torch.no_grad():
            layer.rpb.normal_()
            x = torch.randn(1, 5, 4, 8)
            return layer, x, layer(x)[0]

    def check(res):
        layer, x, out = res
        assert out.shape == x.shape
        xp = F.pad(x, (0, 0, 0, 2, 0, 1))                       # to 6 x 6
        qkv = layer.qkv(xp).view(1, 6, 6, 3, 2, 4)
        q, k, v = (qkv[:, :, :, j].permute(0, 3, 1, 2, 4) for j in range(3))
        o = na2d_slow(q, k, v, 3, 2, layer.rpb, 0.5)[0][:, :, :5, :4]
        want = layer.proj(o.permute(0, 2, 3, 1, 4).reshape(1, 5, 4, 8))
        torch.testing.assert_close(out, want, rtol=0, atol=1e-5)
    return run, Correct(check)


# ============================================================================ config rows
def cfg(**kw):
    return lambda: tiny_config(**kw)


def mutated(field, value):
    """A config changed after construction, then used to build a model."""
    def run():
        c = tiny_config()
        setattr(c, field, value)
        return DinatBackbone(c)
    return run



# ============================================================================ adapter rows
def mm_backbone(**kw):
    """The mmengine adapter, built through mmengine's registry as a config file would."""
    def run():
        from mmengine.registry import MODELS

        import dinat_backbone.mmengine  # noqa: F401  (registers DiNAT)
        return MODELS.build(dict(type="DiNAT", **kw))
    return run


def d2_config(**node):
    """The detectron2 adapter's MODEL.DINAT translation (works without detectron2 installed)."""
    def run():
        from dinat_backbone.detectron2 import dinat_config_from_cfg

        return dinat_config_from_cfg(dict(node))
    return run


# ============================================================================ checkpoint rows
def _source(seed=11, **kw):
    """A DinatModel with random (non-default) weights: the checkpoint's origin and the oracle."""
    torch.manual_seed(seed)
    from dinat_backbone import DinatModel

    m = DinatModel(tiny_config(**kw)).eval()
    with torch.no_grad():
        for prm in m.parameters():
            prm.add_(0.1 * torch.randn_like(prm))
    return m


def _same_outputs_as(src_seed):
    """Correct output: the loaded DinatModel computes exactly what the source model computes."""
    def check(res):
        dst = res
        src = _source(src_seed)
        x = image(1, 3, 40, 56, seed=4)
        with torch.no_grad():
            torch.testing.assert_close(dst(x).last_hidden_state, src(x).last_hidden_state,
                                       rtol=0, atol=0)
    return Correct(check)


def ckpt_file(writer, loader="load_pretrained", model_kw=None, **load_kw):
    """Write a checkpoint with ``writer(tmp_path) -> path`` and load it into a new DinatModel."""
    def run(tmp_path):
        from dinat_backbone import DinatModel, checkpoints as ck

        path = writer(tmp_path)
        if loader == "file":
            return ck.load_checkpoint_file(path)
        dst = DinatModel(tiny_config(**(model_kw or {}))).eval()
        ck.load_pretrained(dst, path, **load_kw)
        return dst
    return run


def _write_truncated(name):
    def w(tmp_path):
        from dinat_backbone import checkpoints as ck

        path = tmp_path / name
        ck.save_state_dict(_source().state_dict(), path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path
    return w


def _write_empty(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    return tmp_path / "empty.pth"


def _write_text(tmp_path):
    (tmp_path / "weights.pth").write_text("<html>404 Not Found</html>")
    return tmp_path / "weights.pth"


def _write_state(sd_fn, name="model.pth"):
    def w(tmp_path):
        path = tmp_path / name
        torch.save(sd_fn(), path)
        return path
    return w


def _resnet_like():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 7, 2, 3), torch.nn.BatchNorm2d(8),
                              torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, 1, 1))
    return {"state_dict": {f"backbone.{k}": v for k, v in net.state_dict().items()}}


def _transformers_file(tmp_path):
    from dinat_backbone import checkpoints as ck

    sd = ck.to_transformers(_source().state_dict(), kind="model")
    assert any(k.startswith("encoder.levels.0.layers.0.attention.self.query") for k in sd)
    path = tmp_path / "hf" / "model.safetensors"
    ck.save_state_dict(sd, path)
    assert ck.detect_format(ck.load_checkpoint_file(path)) == "transformers"
    return path


class _RunsCode:
    """Unpickling this runs a shell command (the classic malicious checkpoint)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write_malicious(name):
    def w(tmp_path):
        marker = tmp_path / "pwned"
        payload = {"model": _source().state_dict(), "extra": _RunsCode(marker)}
        path = tmp_path / name
        if name.endswith(".pkl"):
            path.write_bytes(pickle.dumps(payload))
        else:
            torch.save(payload, path)
        return path
    return w


def _refused_and_not_run():
    # test_bad_input also checks that the payload's marker file was not created
    return Clear(ValueError, "refused to load", "needs to run code", "'posix.system'",
                 "weights_only=False")


def _with_extras(tmp_path):
    """A training checkpoint: model, EMA weights, optimizer state, epoch, arguments."""
    model, ema = _source(11), _source(12)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(image(1, 3, 32, 32)).last_hidden_state.sum().backward()
    opt.step()
    path = tmp_path / "train_state.pth"
    torch.save({"model": _source(11).state_dict(), "model_ema": ema.state_dict(),
                "optimizer": opt.state_dict(), "epoch": 7, "scaler": {"scale": 65536.0},
                "args": {"lr": 1e-3, "model": "dinat_mini"}}, path)
    return path


# ============================================================================ the table
_na_layer_run, _na_layer_expect = _padded_na_layer_matches_reference()

ROWS = [
    # ---------------------------------------------------------------- images: channels, layout
    Row("image/1-channel", forward(model(), image(2, 1, 32, 32)),
        Clear(ValueError, "1 channels", "configured for 3", "x.expand(-1, 3, -1, -1)",
              "num_channels=1")),
    Row("image/2-channel", forward(model(), image(2, 2, 32, 32)),
        Clear(ValueError, "2 channels", "configured for 3", "num_channels=2")),
    Row("image/4-channel-rgba", forward(model(), image(2, 4, 32, 32)),
        Clear(ValueError, "4 channels", "configured for 3", "x[:, :3]")),
    Row("image/1-channel-model-gray-input", forward(model(num_channels=1), image(2, 1, 33, 31)),
        matches_reference()),
    Row("image/4-channel-model-rgba-input", forward(model(num_channels=4), image(1, 4, 20, 36)),
        matches_reference()),
    Row("image/nhwc", forward(model(), image(2, 32, 48, 3)),
        Clear(ValueError, "channels-last (NHWC)", "NCHW", "x.permute(0, 3, 1, 2)")),
    Row("image/nhwc-grayscale", forward(model(), image(2, 32, 48, 1)),
        Clear(ValueError, "channels-last (NHWC) with 1 channels", "x.permute(0, 3, 1, 2)",
              "x.expand(-1, 3, -1, -1)")),
    Row("image/hwc-single-image", forward(model(), image(32, 48, 3)),
        Clear(ValueError, "single channels-last (HWC) image", "x.permute(2, 0, 1).unsqueeze(0)")),
    Row("image/chw-single-image", forward(model(), image(3, 32, 48)),
        Clear(ValueError, "without the batch dimension", "x.unsqueeze(0)")),
    Row("image/2d", forward(model(), image(32, 48)),
        Clear(ValueError, "must be 4-D [B, 3, H, W]", "(32, 48)")),
    Row("image/5d", forward(model(), image(1, 2, 3, 32, 48)),
        Clear(ValueError, "must be 4-D [B, 3, H, W]", "(1, 2, 3, 32, 48)")),
    Row("image/ambiguous-3x3-is-nchw", forward(model(), image(1, 3, 3, 3)), matches_reference()),
    Row("image/numpy-array", forward(model(), image(1, 3, 32, 32).numpy()),
        Clear(TypeError, "must be a torch.Tensor", "ndarray", "torch.as_tensor")),
    Row("image/python-list", forward(model(), [[[[0.0]]]]),
        Clear(TypeError, "must be a torch.Tensor", "list", "torch.as_tensor")),
    # ---------------------------------------------------------------- images: sizes
    Row("image/size-1x1", forward(model(), image(2, 3, 1, 1)), matches_reference()),
    Row("image/size-7x7", forward(model(), image(2, 3, 7, 7)), matches_reference()),
    Row("image/size-31x33", forward(model(), image(2, 3, 31, 33)), matches_reference()),
    Row("image/size-97x131", forward(model(), image(1, 3, 97, 131)), matches_reference()),
    Row("image/size-4000x64", forward(model(), image(1, 3, 4000, 64)), matches_reference()),
    Row("image/size-64x4000", forward(model(), image(1, 3, 64, 4000)), matches_reference()),
    Row("image/size-0x32", forward(model(), image(1, 3, 0, 32)),
        Clear(ValueError, "empty spatial size (0, 32)", "must be >= 1")),
    Row("image/batch-0", forward(model(), image(0, 3, 45, 29)), Correct(_empty_batch_check)),
    Row("image/batch-0-training-step", _empty_batch_backward, Correct(_zero_grads)),
    # ---------------------------------------------------------------- images: dtypes, values
    Row("image/uint8", forward(model(), torch.zeros(1, 3, 32, 32, dtype=torch.uint8)),
        Clear(TypeError, "floating point", "torch.uint8", "x.float()", "normalise")),
    Row("image/int64", forward(model(), torch.zeros(1, 3, 32, 32, dtype=torch.int64)),
        Clear(TypeError, "floating point", "torch.int64", "x.float()")),
    Row("image/bool", forward(model(), torch.zeros(1, 3, 32, 32, dtype=torch.bool)),
        Clear(TypeError, "floating point", "torch.bool", "x.float()")),
    Row("image/complex64", forward(model(), torch.zeros(1, 3, 32, 32, dtype=torch.complex64)),
        Clear(TypeError, "floating point", "torch.complex64")),
    Row("image/float64-into-float32-model", forward(model(), image(1, 3, 32, 32,
                                                                   dtype=torch.float64)),
        Clear(TypeError, "torch.float64", "weights are torch.float32", "x.to(torch.float32)",
              "torch.autocast")),
    Row("image/float16-into-float32-model", forward(model(), image(1, 3, 32, 32,
                                                                   dtype=torch.float16)),
        Clear(TypeError, "torch.float16", "x.to(torch.float32)")),
    Row("image/bfloat16-into-float32-model", forward(model(), image(1, 3, 32, 32,
                                                                    dtype=torch.bfloat16)),
        Clear(TypeError, "torch.bfloat16", "x.to(torch.float32)")),
    Row("image/float64-model-float64-input",
        forward(model(dtype=torch.float64), image(1, 3, 31, 33, dtype=torch.float64)),
        matches_reference(atol=1e-10)),
    Row("image/nan-pixel", _bad_pixel(float("nan")), Correct(_propagates_nan)),
    Row("image/inf-pixel", _bad_pixel(float("inf")), Correct(_propagates_nan)),
    Row("image/-inf-pixel", _bad_pixel(float("-inf"), where=(0, 0, 0, 0)),
        Correct(_propagates_nan)),
    # ---------------------------------------------------------------- images: devices
    Row("image/input-on-other-device", forward(model(), torch.empty(1, 3, 32, 32, device="meta")),
        Clear(ValueError, "pixel_values is on meta", "model is on cpu", "x.to(model_device)")),
    Row("image/model-on-other-device", forward(model(device="meta"), image(1, 3, 32, 32)),
        Clear(ValueError, "pixel_values is on cpu", "model is on meta", "x.to(model_device)")),
    Row("image/classifier-shares-checks",
        forward(DinatForImageClassification(tiny_config(num_labels=3)), image(1, 32, 32, 3)),
        Clear(ValueError, "channels-last (NHWC)", "x.permute(0, 3, 1, 2)")),

    # ---------------------------------------------------------------- DinatConfig fields
    Row("config/unknown-variant", lambda: DinatConfig.from_variant("huge"),
        Clear(ValueError, "unknown DiNAT variant 'huge'", "mini", "large_k11")),
    Row("config/variant-with-even-kernel", lambda: DinatConfig.from_variant("tiny", kernel_size=6),
        Clear(ValueError, "kernel_size=6", "odd integer >= 3")),
    Row("config/kernel-even", cfg(kernel_size=4),
        Clear(ValueError, "kernel_size=4", "odd integer >= 3")),
    Row("config/kernel-1", cfg(kernel_size=1), Clear(ValueError, "kernel_size=1", "odd integer")),
    Row("config/kernel-float", cfg(kernel_size=7.0), Clear(ValueError, "kernel_size=7.0",
                                                           "odd integer")),
    Row("config/dilations-fewer-stages", cfg(dilations=[[1], [1], [1]]),
        Clear(ValueError, "dilations", "one list per stage (4 stages)")),
    Row("config/dilations-wrong-length", cfg(dilations=[[1, 2], [1], [1], [1]]),
        Clear(ValueError, "stage 1 has depth 1 but 2 dilations", "dilation_preset(name, depths)")),
    Row("config/dilations-zero", cfg(dilations=[[0], [1], [1], [1]]),
        Clear(ValueError, "dilations", ">= 1")),
    Row("config/dilations-not-lists", cfg(dilations=[1, 1, 1, 1]),
        Clear(ValueError, "stage 1 entry 1 is not a list")),
    Row("config/dilations-unknown-preset", cfg(dilations="cityscapes"),
        Clear(ValueError, "unknown preset 'cityscapes'", "coco", "ade20k512")),
    Row("config/dilation_preset-stage-mismatch", lambda: dilation_preset("coco", [1, 1, 1]),
        Clear(ValueError, "preset 'coco' has 4 stages, depths has 3")),
    Row("config/derive_dilations-resolution-0", lambda: derive_dilations(0),
        Clear(ValueError, "resolution must be positive")),
    Row("config/attention-backend-unknown", cfg(attention_backend="cuda"),
        Clear(ValueError, "attention_backend='cuda'", "'tiled'", "'gather'")),
    Row("config/out_features-stage5", cfg(out_features=["stage1", "stage5"]),
        Clear(ValueError, "['stage5'] not among the stages", "stage4")),
    Row("config/out_features-detectron2-names", cfg(out_features=["res4"]),
        Clear(ValueError, "['res4'] not among the stages", "stage1")),
    Row("config/out_features-string", cfg(out_features="stage1"),
        Clear(ValueError, "out_features='stage1'", "give a list of names")),
    Row("config/out_features-empty", cfg(out_features=[]),
        Clear(ValueError, "select no output", "at least one")),
    Row("config/out_indices-out-of-range", cfg(out_indices=[1, 7]),
        Clear(ValueError, "out_indices=[1, 7]", "must be in [0, 4]")),
    Row("config/out_indices-repeated", cfg(out_indices=[2, 2]),
        Clear(ValueError, "increasing and without repeats")),
    Row("config/out_features-and-indices-disagree", cfg(out_features=["stage1"], out_indices=[2]),
        Clear(ValueError, "disagree", "give only one")),
    Row("config/backbone-out_features-override", lambda: DinatBackbone(tiny_config(),
                                                                        out_features=["stage5"]),
        Clear(ValueError, "['stage5'] not among the stages")),
    Row("config/patch_size-8", cfg(patch_size=8), Clear(ValueError, "patch_size=8",
                                                        "set patch_size=4")),
    Row("config/num_channels-0", cfg(num_channels=0), Clear(ValueError, "num_channels=0",
                                                            "positive integer")),
    Row("config/embed_dim-odd", cfg(embed_dim=15), Clear(ValueError, "embed_dim=15",
                                                         "positive even integer")),
    Row("config/depths-empty", cfg(depths=[], num_heads=[], dilations=[]),
        Clear(ValueError, "depths=[]", "non-empty list")),
    Row("config/depths-zero", cfg(depths=[1, 0, 1, 1]), Clear(ValueError, "depths=[1, 0, 1, 1]",
                                                              "positive integers")),
    Row("config/depths-string", cfg(depths="1111"), Clear(ValueError, "depths='1111'",
                                                          "list of positive integers")),
    Row("config/num_heads-wrong-count", cfg(num_heads=[1, 1, 2]),
        Clear(ValueError, "num_heads=[1, 1, 2]", "one entry per stage")),
    Row("config/num_heads-not-dividing", cfg(num_heads=[3, 1, 2, 2]),
        Clear(ValueError, "stage 1 has 16 channels, which 3 heads do not divide")),
    Row("config/mlp_ratio-0", cfg(mlp_ratio=0), Clear(ValueError, "mlp_ratio=0", "positive")),
    Row("config/mlp_ratio-nan", cfg(mlp_ratio=float("nan")), Clear(ValueError, "mlp_ratio=nan")),
    Row("config/qkv_bias-string", cfg(qkv_bias="yes"), Clear(ValueError, "qkv_bias='yes'",
                                                             "True or False")),
    Row("config/hidden_dropout-1.5", cfg(hidden_dropout_prob=1.5),
        Clear(ValueError, "hidden_dropout_prob=1.5", "probability in [0, 1)")),
    Row("config/attn_dropout-negative", cfg(attention_probs_dropout_prob=-0.1),
        Clear(ValueError, "attention_probs_dropout_prob=-0.1", "[0, 1)")),
    Row("config/drop_path-1", cfg(drop_path_rate=1.0), Clear(ValueError, "drop_path_rate=1.0",
                                                             "[0, 1)")),
    Row("config/hidden_act-unknown", cfg(hidden_act="gelu2"), Clear(ValueError,
                                                                    "hidden_act='gelu2'", "gelu")),
    Row("config/initializer_range-negative", cfg(initializer_range=-1),
        Clear(ValueError, "initializer_range=-1", ">= 0")),
    Row("config/layer_norm_eps-0", cfg(layer_norm_eps=0), Clear(ValueError, "layer_norm_eps=0",
                                                                "> 0")),
    Row("config/layer_scale-negative", cfg(layer_scale_init_value=-1e-5),
        Clear(ValueError, "layer_scale_init_value=-1e-05", ">= 0")),
    Row("config/frozen_stages-5", cfg(frozen_stages=5), Clear(ValueError, "frozen_stages=5",
                                                              "[-1, 4]")),
    Row("config/frozen_stages-minus-2", cfg(frozen_stages=-2), Clear(ValueError,
                                                                     "frozen_stages=-2")),
    Row("config/gradient_checkpointing-string", cfg(gradient_checkpointing="yes"),
        Clear(ValueError, "gradient_checkpointing='yes'", "True or False")),
    Row("config/problem_type-unknown", cfg(problem_type="classification"),
        Clear(ValueError, "problem_type='classification'", "single_label_classification")),
    Row("config/num_labels-negative", cfg(num_labels=-1), Clear(ValueError, "num_labels",
                                                                ">= 0")),
    Row("config/id2label-not-a-dict", cfg(id2label=["cat", "dog"]),
        Clear(ValueError, "id2label=['cat', 'dog']", "give a dict")),
    Row("config/id2label-non-integer-keys", cfg(id2label={"cat": "cat"}),
        Clear(ValueError, "keys must be class indices")),
    Row("config/label2id-not-a-dict", cfg(label2id="cat"),
        Clear(ValueError, "label2id='cat'", "give a dict")),
    Row("config/output_hidden_states-string", cfg(output_hidden_states="yes"),
        Clear(ValueError, "output_hidden_states='yes'", "True or False")),
    Row("config/output_attentions-int", cfg(output_attentions=1),
        Clear(ValueError, "output_attentions=1", "True or False")),
    Row("config/use_return_dict-none", cfg(use_return_dict=None),
        Clear(ValueError, "use_return_dict=None", "True or False")),
    Row("config/num_labels-vs-id2label", cfg(num_labels=3, id2label={0: "a"}),
        Clear(ValueError, "num_labels=3 disagrees with id2label")),
    Row("config/misspelt-field-dilation", cfg(dilation=[[2], [2], [1], [1]]),
        Clear(ValueError, "unknown field 'dilation'", "did you mean 'dilations'")),
    Row("config/misspelt-field-kernal_size", cfg(kernal_size=5),
        Clear(ValueError, "unknown field 'kernal_size'", "did you mean 'kernel_size'")),
    Row("config/transformers-extra-keys-accepted",
        cfg(num_layers=4, hidden_size=128, image_size=224, path_norm=True, architectures=["x"]),
        Correct(lambda c: c.to_dict()["path_norm"] is True or pytest.fail("extra key lost"))),
    Row("config/not-a-config", lambda: DinatBackbone(dict(embed_dim=16)),
        Clear(TypeError, "config must be a DinatConfig", "dict")),
    Row("config/mutated-kernel-then-model", mutated("kernel_size", 4),
        Clear(ValueError, "kernel_size=4", "odd integer")),
    Row("config/mutated-out_features-then-model", mutated("out_features", ["stage5"]),
        Clear(ValueError, "['stage5'] not among the stages")),
    Row("config/mutated-dilations-then-model", mutated("dilations", [[1], [1], [1]]),
        Clear(ValueError, "one list per stage (4 stages)")),
    Row("config/set_attention_backend-unknown",
        lambda: DinatBackbone(tiny_config()).set_attention_backend("cuda"),
        Clear(ValueError, "unknown attention backend 'cuda'", "tiled")),

    # ---------------------------------------------------------------- the NA op
    Row("op/key-shape-differs", op_call(k=torch.zeros(1, 2, 9, 11, 4)),
        Clear(ValueError, "query (1, 2, 9, 10, 4) and key (1, 2, 9, 11, 4)", "same shape")),
    Row("op/value-batch-differs", op_call(v=torch.zeros(2, 2, 9, 10, 4)),
        Clear(ValueError, "value (2, 2, 9, 10, 4) must match query", "batch, heads, height")),
    Row("op/value-heads-differ", op_call(v=torch.zeros(1, 3, 9, 10, 4)),
        Clear(ValueError, "must match query")),
    Row("op/4d-query", op_call(q=torch.zeros(1, 9, 10, 8)),
        Clear(ValueError, "query must be 5-D", "[batch, heads, height, width, head_dim]",
              "permute(0, 3, 1, 2, 4)")),
    Row("op/integer-query", op_call(q=torch.zeros(1, 2, 9, 10, 4, dtype=torch.long)),
        Clear(TypeError, "query must be a floating-point tensor", "torch.int64")),
    Row("op/mixed-dtypes", op_call(k=torch.zeros(1, 2, 9, 10, 4, dtype=torch.float64)),
        Clear(TypeError, "share a dtype", "torch.float64")),
    Row("op/mixed-devices", op_call(k=torch.empty(1, 2, 9, 10, 4, device="meta")),
        Clear(ValueError, "one device", "meta")),
    Row("op/not-a-tensor", op_call(q=[[0.0]]), Clear(TypeError, "query must be a torch.Tensor")),
    Row("op/rpb-wrong-size", op_call(rpb=torch.zeros(2, 7, 7)),
        Clear(ValueError, "rpb must have shape [heads, 2*kh-1, 2*kw-1] = (2, 5, 5)",
              "got (2, 7, 7)")),
    Row("op/rpb-wrong-heads", op_call(rpb=torch.zeros(3, 5, 5)),
        Clear(ValueError, "(2, 5, 5)", "got (3, 5, 5)")),
    Row("op/rpb-not-a-tensor", op_call(rpb=[[0.0]]), Clear(ValueError, "rpb must have shape",
                                                           "list")),
    Row("op/rpb-other-device", op_call(rpb=torch.empty(2, 5, 5, device="meta")),
        Clear(ValueError, "rpb is on meta but query is on cpu")),
    Row("op/kernel-x-dilation-larger-than-map", op_call(kernel_size=3, dilation=4),
        Clear(ValueError, "feature map height 9 is smaller than kernel_size * dilation = 3 * 4",
              "Pad the input to at least 12", "DinatModel does this")),
    Row("op/kernel-larger-than-map", op_call(kernel_size=11),
        Clear(ValueError, "smaller than kernel_size * dilation = 11 * 1")),
    Row("op/kernel-even", op_call(kernel_size=4), Clear(ValueError, "kernel_size=(4, 4)",
                                                        "odd kernel sizes")),
    Row("op/kernel-triple", op_call(kernel_size=(3, 3, 3)),
        Clear(ValueError, "kernel_size must be an int or a pair of ints")),
    Row("op/dilation-0", op_call(dilation=0), Clear(ValueError, "dilation=(0, 0)", ">= 1")),
    Row("op/unknown-backend", op_call(backend="cuda"), Clear(ValueError, "unknown backend 'cuda'",
                                                             "'tiled'")),
    Row("op/model-pads-what-the-op-refuses", _na_layer_run, _na_layer_expect),
    # ---------------------------------------------------------------- adapter configs: mmengine
    Row("mm/unknown-variant", mm_backbone(variant="huge"),
        Clear(ValueError, "unknown DiNAT variant 'huge'", "mini"), needs="mmengine"),
    Row("mm/even-kernel", mm_backbone(variant="mini", kernel_size=4),
        Clear(ValueError, "kernel_size=4", "odd integer"), needs="mmengine"),
    Row("mm/dilations-not-matching-depths", mm_backbone(variant="mini", dilations=[[1], [1], [1]]),
        Clear(ValueError, "dilations=[[1], [1], [1]]", "one list per stage"), needs="mmengine"),
    Row("mm/unknown-backend", mm_backbone(attention_backend="cuda"),
        Clear(ValueError, "attention_backend='cuda'", "'tiled'"), needs="mmengine"),
    Row("mm/out_indices-stage-5", mm_backbone(out_indices=(0, 4)),
        Clear(ValueError, "out_indices=(0, 4)", "in 0..3", "e.g. (0, 1, 2, 3)"),
        needs="mmengine"),
    Row("mm/out_indices-not-increasing", mm_backbone(out_indices=(2, 1)),
        Clear(ValueError, "increasing and without repeats"), needs="mmengine"),
    Row("mm/frozen_stages-9", mm_backbone(frozen_stages=9),
        Clear(ValueError, "frozen_stages=9", "[-1, 4]"), needs="mmengine"),
    Row("mm/misspelt-field", mm_backbone(kernal_size=5),
        Clear(TypeError, "unknown field(s) ['kernal_size']", "did you mean 'kernel_size'"),
        needs="mmengine"),
    Row("mm/with_cp-string", mm_backbone(with_cp="y"), Clear(ValueError, "with_cp='y'",
                                                             "True or False"), needs="mmengine"),
    Row("mm/qk_scale", mm_backbone(qk_scale=0.5), Clear(ValueError, "qk_scale=0.5",
                                                        "remove qk_scale"), needs="mmengine"),
    Row("mm/init_cfg-without-checkpoint", mm_backbone(init_cfg=dict(type="Pretrained")),
        Clear(ValueError, "init_cfg.checkpoint=None", "give the path"), needs="mmengine"),
    Row("mm/valid-tiny", mm_backbone(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                                     kernel_size=3, dilations=[[2], [2], [1], [1]]),
        Correct(lambda m: _check_sizes(m, image(1, 3, 37, 41), dict(zip(
            m.out_features, m.eval()(image(1, 3, 37, 41)))))), needs="mmengine"),
    # ---------------------------------------------------------------- adapter configs: detectron2
    Row("d2/unknown-variant", d2_config(VARIANT="huge"),
        Clear(ValueError, "MODEL.DINAT.VARIANT='huge'", "use one of"), needs="dinat_backbone.detectron2"),
    Row("d2/even-kernel", d2_config(KERNEL_SIZE=4),
        Clear(ValueError, "MODEL.DINAT.KERNEL_SIZE=4", "odd integer"), needs="dinat_backbone.detectron2"),
    Row("d2/dilations-not-matching-depths", d2_config(DILATIONS=[[1], [1], [1]]),
        Clear(ValueError, "MODEL.DINAT.DILATIONS=[[1], [1], [1]]", "one list per stage"),
        needs="dinat_backbone.detectron2"),
    Row("d2/dilations-unknown-preset", d2_config(DILATIONS="cityscapes"),
        Clear(ValueError, "MODEL.DINAT.DILATIONS='cityscapes'", "coco"), needs="dinat_backbone.detectron2"),
    Row("d2/dilations-tiny-resolution", d2_config(DILATIONS=5),
        Clear(ValueError, "MODEL.DINAT.DILATIONS=5", "training resolution in pixels"),
        needs="dinat_backbone.detectron2"),
    Row("d2/unknown-backend", d2_config(ATTENTION_BACKEND="cuda"),
        Clear(ValueError, "MODEL.DINAT.ATTENTION_BACKEND='cuda'", "'tiled'"),
        needs="dinat_backbone.detectron2"),
    Row("d2/out_features-res6", d2_config(OUT_FEATURES=["res2", "res6"]),
        Clear(ValueError, "MODEL.DINAT.OUT_FEATURES", "['res6'] are not outputs", "res5"),
        needs="dinat_backbone.detectron2"),
    Row("d2/out_features-core-names", d2_config(OUT_FEATURES=["stage1"]),
        Clear(ValueError, "['stage1'] are not outputs", "res2"), needs="dinat_backbone.detectron2"),
    Row("d2/freeze_at-9", d2_config(FREEZE_AT=9), Clear(ValueError, "MODEL.DINAT.FREEZE_AT=9",
                                                        "[0, 5]"), needs="dinat_backbone.detectron2"),
    Row("d2/depths-3-stages", d2_config(DEPTHS=[1, 1, 1]),
        Clear(ValueError, "MODEL.DINAT.DEPTHS=[1, 1, 1]", "give 4 integers"),
        needs="dinat_backbone.detectron2"),
    Row("d2/heads-not-dividing", d2_config(NUM_HEADS=[3, 4, 8, 16]),
        Clear(ValueError, "MODEL.DINAT.NUM_HEADS", "3 heads do not divide"),
        needs="dinat_backbone.detectron2"),
    Row("d2/use_checkpoint-string", d2_config(USE_CHECKPOINT="y"),
        Clear(ValueError, "MODEL.DINAT.USE_CHECKPOINT='y'", "true or false"),
        needs="dinat_backbone.detectron2"),
    Row("d2/D2DiNAT-lazyconfig-unknown-variant",
        lambda: __import__("dinat_backbone.detectron2", fromlist=["D2DiNAT"]).D2DiNAT(
            variant="huge"),
        Clear(ValueError, "unknown DiNAT variant 'huge'"), needs="detectron2"),
    Row("d2/D2DiNAT-lazyconfig-out_features-stage-names",
        lambda: __import__("dinat_backbone.detectron2", fromlist=["D2DiNAT"]).D2DiNAT(
            variant="mini", out_features=["stage1"]),
        Clear(ValueError, "['stage1'] are not outputs", "res2"), needs="detectron2"),
    Row("d2/valid-coco", d2_config(VARIANT="tiny", DILATIONS="coco"),
        Correct(lambda r: (r[0].dilations[0] == [1, 28, 1] and r[1] == ["res2", "res3", "res4",
                                                                       "res5"])
                or pytest.fail(f"unexpected {r}")), needs="dinat_backbone.detectron2"),

    # ---------------------------------------------------------------- checkpoints
    Row("ckpt/truncated-pth", ckpt_file(_write_truncated("half.pth")),
        Clear(ValueError, "cannot be read as a checkpoint", "truncated", "download it again"),
        needs="dinat_backbone.checkpoints", tmp=True),
    Row("ckpt/truncated-safetensors", ckpt_file(_write_truncated("half.safetensors")),
        Clear(ValueError, "not a readable safetensors file", "truncated", "download it again"),
        needs="safetensors", tmp=True),
    Row("ckpt/empty-file", ckpt_file(_write_empty), Clear(ValueError, "is empty (0 bytes)",
                                                          "download it again"),
        needs="dinat_backbone.checkpoints", tmp=True),
    Row("ckpt/html-instead-of-weights", ckpt_file(_write_text),
        Clear(ValueError, "cannot be read as a checkpoint", "not a checkpoint"),
        needs="dinat_backbone.checkpoints", tmp=True),
    Row("ckpt/wrong-variant-width", ckpt_file(_write_state(lambda: _source().state_dict()),
                                              model_kw=dict(embed_dim=32)),
        Clear(ValueError, "does not fit this DinatModel", "tensors differ in shape",
              "from_pretrained(path) infers it"),
        needs="dinat_backbone.checkpoints", tmp=True),
    Row("ckpt/wrong-variant-depth", ckpt_file(_write_state(lambda: _source().state_dict()),
                                              model_kw=dict(depths=[1, 2, 1, 1],
                                                            dilations=[[2], [2, 2], [1], [1]])),
        Clear(ValueError, "does not fit this DinatModel", "missing keys",
              "levels.1.blocks.1", "from_pretrained(path) infers it"),
        needs="dinat_backbone.checkpoints", tmp=True),
    Row("ckpt/another-models-weights", ckpt_file(_write_state(_resnet_like)),
        Clear(ValueError, "no DiNAT weights recognised", "Is this a DiNAT / NAT checkpoint?"),
        needs="dinat_backbone.checkpoints", tmp=True),
    Row("ckpt/transformers-where-authors-expected", ckpt_file(_transformers_file),
        _same_outputs_as(11), needs="safetensors", tmp=True),
    Row("ckpt/pickle-runs-code-pth", ckpt_file(_write_malicious("evil.pth")),
        _refused_and_not_run(), needs="dinat_backbone.checkpoints", tmp=True),
    Row("ckpt/pickle-runs-code-pkl", ckpt_file(_write_malicious("evil.pkl")),
        Clear(ValueError, "refused to load", "needs to run code", "'posix.system'"),
        needs="dinat_backbone.checkpoints", tmp=True),
    Row("ckpt/ema-and-optimizer-extras", ckpt_file(_with_extras), _same_outputs_as(11),
        needs="dinat_backbone.checkpoints", tmp=True),
    Row("ckpt/ema-and-optimizer-extras-use_ema", ckpt_file(_with_extras, use_ema=True),
        _same_outputs_as(12), needs="dinat_backbone.checkpoints", tmp=True),
]

_op_ok = [
    ("op/map-exactly-kernel-x-dilation", 3, 3, dict(H=9, W=9)),
    ("op/odd-map-dilation-2", 3, 2, dict(H=9, W=10)),
    ("op/non-square-kernel-and-dilation", (3, 5), (2, 1), dict(H=7, W=6)),
    ("op/value-head-dim-differs", 3, 1, dict(H=5, W=6, D=4, Dv=3)),
    ("op/batch-0", 3, 1, dict(B=0, H=5, W=6)),
]
for _id, _k, _d, _shape in _op_ok:
    _run, _expect = op_matches_slow(_k, _d, **_shape)
    ROWS.append(Row(_id, _run, _expect))


# ============================================================================ the test
def _check_row(row: Row, tmp_path) -> None:
    """Run one row and check its outcome (raises AssertionError / pytest's Failed when not met)."""
    args = (tmp_path,) if row.tmp else ()
    if isinstance(row.expect, Clear):
        with pytest.raises(row.expect.exc) as info:
            row.run(*args)
        assert type(info.value) in (ValueError, TypeError) or issubclass(
            type(info.value), (ValueError, TypeError))
        msg = str(info.value)
        missing = [p for p in row.expect.phrases if p not in msg]
        assert not missing, f"message lacks {missing}: {msg}"
        assert not (tmp_path / "pwned").exists(), "a checkpoint ran code while loading"
    else:
        row.expect.check(row.run(*args))


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row, tmp_path, request):
    if row.known_bug:
        request.node.add_marker(pytest.mark.xfail(reason=row.known_bug, strict=True))
    if row.needs:
        pytest.importorskip(row.needs, reason=f"{row.id} needs {row.needs}")
    _check_row(row, tmp_path)


def test_the_matrix_check_fails_when_an_outcome_is_not_met(tmp_path):
    """The check above is only evidence if it can fail: each way a row's outcome can be missed
    (no error, another error type, a message without a promised phrase, code run by a loader, a
    wrong output) makes it fail."""
    clear = next(r for r in ROWS if isinstance(r.expect, Clear) and not r.needs and not r.tmp)
    _check_row(clear, tmp_path)  # as written, the row passes
    with pytest.raises(AssertionError, match="message lacks"):
        _check_row(Row("x", clear.run, Clear(clear.expect.exc, *clear.expect.phrases,
                                             "a phrase no message has")), tmp_path)
    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        _check_row(Row("x", lambda: None, Clear(ValueError, "anything")), tmp_path)

    def other_error():
        raise RuntimeError("not a ValueError")

    with pytest.raises(RuntimeError):
        _check_row(Row("x", other_error, Clear(ValueError, "anything")), tmp_path)

    def ran_code(tmp):
        (tmp / "pwned").write_text("")
        raise ValueError("refused, but too late")

    with pytest.raises(AssertionError, match="ran code"):
        _check_row(Row("x", ran_code, Clear(ValueError, "refused"), tmp=True), tmp_path)
    # a Correct row: the independent re-computation notices an output that is off by 1e-3
    m, x = model(), image(1, 3, 37, 45)
    with torch.no_grad():
        good = m(x)
    matches_reference().check((m, x, good))
    bad = dict(good)
    name = next(iter(bad))
    bad[name] = bad[name].clone()
    bad[name][0, 0, 0, 0] += 1e-3
    with pytest.raises(AssertionError):
        matches_reference().check((m, x, bad))
