"""dinat_backbone.ops.na2d against the slow loop definition in tests/na_reference.py.

The matrix (CASES) covers kernels 3..13, dilations 1..8, per-axis kernel / dilation pairs, odd
and non-square maps, sizes not divisible by the dilation and sizes exactly kernel * dilation,
with and without the relative positional bias. The oracle runs once per case in float64 (its
outputs, attention weights, and the gradients of q, k, v and rpb for two upstream gradients) and
is cached; every backend and dtype is compared with that one result:

* float64: max abs error <= 1e-10;  float32: max abs error <= 1e-5 (outputs, attention weights
  and every gradient);
* float16 / bfloat16: max abs error <= tol * max(1, max |reference|) with tol = 1e-2 for float16
  and 4e-2 for bfloat16 (about 4 and 2 significant bits over their unit roundoff of 4.9e-4 and
  3.9e-3: inputs, the logit matmul and the weighted sum are rounded in the half type).

The ``cpp`` backend (the compiled CPU kernel of dinat_backbone/ops/csrc, built on first use) is
in the matrix with the others; it needs a C++ compiler and ninja, and fails (with the build
error) rather than skipping without them. Its cases add maps wide enough for several vectors of
queries per row (interior, border and mixed blocks) and head dims that are not multiples of 8.

The ``flex`` backend (torch's flex_attention) is compared on the same matrix, forward only on
the CPU (PyTorch has no flex_attention backward there). With ``DINAT_TEST_DEVICE=cuda`` (what
``tools/gpu_check.py`` sets) every backend runs on the GPU against the same float64 CPU oracle,
flex with its backward, in float32 / float16 / bfloat16 (flex_attention has no float64 kernel).
"""
import functools
import os
import subprocess
import sys
import warnings

import pytest
import torch

from dinat_backbone.ops import na2d
from na_reference import _window, na2d_loop, na2d_slow

# name: (batch, heads, H, W, head_dim, kernel_size, dilation, rpb)
CASES = {
    "k3d1-odd-9x11": (2, 2, 9, 11, 8, 3, 1, True),
    "k3d8-exact-24x24": (1, 2, 24, 24, 8, 3, 8, True),
    "k3d8-nondiv-27x30": (1, 2, 27, 30, 8, 3, 8, False),
    "k3d57-17x23": (1, 2, 17, 23, 4, 3, (5, 7), True),
    "k5d3-nondiv-17x16": (2, 1, 17, 16, 8, 5, 3, True),
    "k5d1-tiles-31x29": (1, 2, 31, 29, 4, 5, 1, True),
    "k7d1-exact-7x7": (2, 2, 7, 7, 8, 7, 1, True),
    "k7d2-odd-15x19": (1, 2, 15, 19, 8, 7, 2, True),
    "k7d4-30x28": (1, 2, 30, 28, 8, 7, 4, False),
    "k9d1-20x9": (1, 2, 20, 9, 8, 9, 1, True),
    "k9d2-18x21": (1, 1, 18, 21, 8, 9, 2, False),
    "k11d1-11x23": (1, 2, 11, 23, 4, 11, 1, True),
    "k11d2-23x22": (1, 1, 23, 22, 4, 11, 2, True),
    "k13d1-exact-13x13": (1, 1, 13, 13, 4, 13, 1, True),
    "k13d1-tiles-26x17": (1, 2, 26, 17, 4, 13, 1, False),
    "k3x13-d8x1-25x15": (1, 2, 25, 15, 4, (3, 13), (8, 1), True),
    "k13x5-d1x6-14x31": (1, 1, 14, 31, 4, (13, 5), (1, 6), True),
    "k7x3-d2x5-16x17": (2, 2, 16, 17, 8, (7, 3), (2, 5), True),
    "k7d1-wide-19x41-D13": (1, 2, 19, 41, 13, 7, 1, True),
    "k5d2-wide-23x45-D16": (1, 1, 23, 45, 16, 5, 2, False),
}
HALF_CASES = ["k3d1-odd-9x11", "k3d57-17x23", "k7d2-odd-15x19", "k7d4-30x28", "k13d1-exact-13x13",
              "k7x3-d2x5-16x17"]
DEVICE = torch.device(os.environ.get("DINAT_TEST_DEVICE", "cpu"))
if DEVICE.type == "cuda" and not torch.cuda.is_available():
    raise RuntimeError("DINAT_TEST_DEVICE=cuda but torch.cuda.is_available() is False: run "
                       "tools/gpu_check.py on a machine with a CUDA GPU, or unset the variable")
ON_CUDA = DEVICE.type == "cuda"
if ON_CUDA:   # every matrix case is a new shape for the compiled flex kernel: allow recompiles
    import torch._dynamo

    for _name in ("cache_size_limit", "recompile_limit"):
        if hasattr(torch._dynamo.config, _name):
            setattr(torch._dynamo.config, _name, 512)
BACKENDS = ["tiled", "gather", "auto"] + (["cpp"] if DEVICE.type == "cpu" else [])
FLEX_TRAIN = ON_CUDA            # flex_attention has a backward on CUDA only
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
HALF_TOL = {torch.float16: 1e-2, torch.bfloat16: 4e-2}


def _pair(x):
    return (x, x) if isinstance(x, int) else tuple(x)


pytestmark = pytest.mark.usefixtures("one_thread")


@functools.lru_cache(maxsize=None)
def oracle(name):
    """Inputs, upstream gradients and the float64 oracle's outputs and gradients for a case."""
    B, nh, H, W, D, ks, dil, with_rpb = CASES[name]
    kh, kw = _pair(ks)
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    x = {n: torch.randn(B, nh, H, W, D, generator=g, dtype=torch.float64) for n in "qkv"}
    if with_rpb:
        x["rpb"] = 0.5 * torch.randn(nh, 2 * kh - 1, 2 * kw - 1, generator=g, dtype=torch.float64)
    go = torch.randn(B, nh, H, W, D, generator=g, dtype=torch.float64)
    ga = torch.randn(B, nh, H, W, kh * kw, generator=g, dtype=torch.float64)
    leaves = {n: t.clone().requires_grad_(True) for n, t in x.items()}
    out, attn = na2d_slow(leaves["q"], leaves["k"], leaves["v"], ks, dil, leaves.get("rpb"))
    names = list(leaves)
    g_out = torch.autograd.grad(out, [leaves[n] for n in names], go, retain_graph=True)
    g_attn = torch.autograd.grad(attn, [leaves[n] for n in names], ga, allow_unused=True)
    grads_out = dict(zip(names, g_out))
    grads_both = {n: grads_out[n] + (ga_ if ga_ is not None else 0) for n, ga_ in
                  zip(names, g_attn)}
    return dict(x=x, go=go, ga=ga, out=out.detach(), attn=attn.detach(), grads_out=grads_out,
                grads_both=grads_both, ks=ks, dil=dil)


def run(name, backend, dtype, return_attn):
    """The backend's outputs and gradients for a case, in ``dtype``."""
    o = oracle(name)
    leaves = {n: t.to(DEVICE, dtype, copy=True).requires_grad_(True) for n, t in o["x"].items()}
    res = na2d(leaves["q"], leaves["k"], leaves["v"], o["ks"], o["dil"], rpb=leaves.get("rpb"),
               return_attn=return_attn, backend=backend)
    names = list(leaves)
    if return_attn:
        out, attn = res
        grads = torch.autograd.grad([out, attn], [leaves[n] for n in names],
                                    [o["go"].to(DEVICE, dtype), o["ga"].to(DEVICE, dtype)])
    else:
        out, attn = res, None
        grads = torch.autograd.grad(out, [leaves[n] for n in names], o["go"].to(DEVICE, dtype))
    cpu = {n: g.cpu() for n, g in zip(names, grads)}
    return out.detach().cpu(), (attn.detach().cpu() if attn is not None else None), cpu


def max_err(actual, expected):
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return (actual.double() - expected).abs().max().item()


def compare(name, backend, dtype, return_attn, tol_for):
    """Max abs error of every compared tensor, asserted against ``tol_for(reference)``."""
    o = oracle(name)
    out, attn, grads = run(name, backend, dtype, return_attn)
    assert out.dtype == dtype and out.shape == o["out"].shape
    checks = {"out": (out, o["out"])}
    if return_attn:
        assert attn.dtype == dtype
        checks["attn"] = (attn, o["attn"])
    ref_grads = o["grads_both"] if return_attn else o["grads_out"]
    for n, gr in grads.items():
        checks[f"grad_{n}"] = (gr, ref_grads[n])
    errs = {}
    for what, (a, e) in checks.items():
        err = max_err(a, e)
        errs[what] = err
        assert err <= tol_for(e), (f"{name} backend={backend} {dtype} return_attn={return_attn}: "
                                   f"{what} max abs error {err:.3g} > {tol_for(e):.3g}")
    return errs


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_matrix_exact(name, dtype, backend):
    for return_attn in (True, False):
        compare(name, backend, dtype, return_attn, lambda ref: TOL[dtype])


@pytest.mark.parametrize("name", HALF_CASES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_matrix_half(name, dtype, backend):
    tol = HALF_TOL[dtype]
    compare(name, backend, dtype, True,
            lambda ref: tol * max(1.0, ref.abs().max().item()))


# ----------------------------------------------------------------- flex_attention backend
def _flex_forward(name, dtype):
    o = oracle(name)
    x = {n: t.to(DEVICE, dtype) for n, t in o["x"].items()}
    with torch.no_grad():
        out = na2d(x["q"], x["k"], x["v"], o["ks"], o["dil"], rpb=x.get("rpb"), backend="flex")
    assert out.dtype == dtype and out.shape == o["out"].shape
    return out.cpu()


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float32] if ON_CUDA else [torch.float64, torch.float32],
                         ids=(lambda d: str(d).replace("torch.", "")))
def test_flex_matrix(name, dtype):
    if FLEX_TRAIN:     # CUDA: outputs and every gradient
        compare(name, "flex", dtype, False, lambda ref: TOL[dtype])
    else:              # CPU: forward only
        err = max_err(_flex_forward(name, dtype), oracle(name)["out"])
        assert err <= TOL[dtype], f"{name} flex {dtype}: max abs error {err:.3g}"


@pytest.mark.parametrize("name", HALF_CASES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_flex_matrix_half(name, dtype):
    tol = HALF_TOL[dtype]
    if FLEX_TRAIN:
        compare(name, "flex", dtype, False, lambda ref: tol * max(1.0, ref.abs().max().item()))
    else:
        ref = oracle(name)["out"]
        err = max_err(_flex_forward(name, dtype), ref)
        assert err <= tol * max(1.0, ref.abs().max().item()), f"{name} flex {dtype}: {err:.3g}"


def test_flex_refuses_what_it_cannot_compute_with_a_reason():
    o = oracle("k3d1-odd-9x11")
    q, k, v = (o["x"][n].to(DEVICE) for n in "qkv")
    if ON_CUDA:         # no float64 kernel
        with pytest.raises(RuntimeError, match="supports fp16/bf16/fp32"):
            na2d(q, k, v, o["ks"], o["dil"], backend="flex")
    else:               # no backward on the CPU
        with pytest.raises(RuntimeError, match="no backward on the CPU; use backend='tiled'"):
            na2d(q.clone().requires_grad_(True), k, v, o["ks"], o["dil"], backend="flex")
    with pytest.raises(RuntimeError, match="does not return the attention weights"):
        na2d(q.float(), k.float(), v.float(), o["ks"], o["dil"], return_attn=True,
             backend="flex")


def test_matrix_covers_the_brief():
    ks = {k for c in CASES.values() for k in _pair(c[5])}
    ds = {d for c in CASES.values() for d in _pair(c[6])}
    assert ks == {3, 5, 7, 9, 11, 13}
    assert ds == set(range(1, 9))
    sizes = [(c[2], c[3], _pair(c[5]), _pair(c[6])) for c in CASES.values()]
    assert any(H == kh * dh or W == kw * dw for H, W, (kh, kw), (dh, dw) in sizes)
    assert any(H % dh or W % dw for H, W, _, (dh, dw) in sizes)
    assert any(H != W and H % 2 and W % 2 for H, W, _, _ in sizes)
    assert any(c[7] for c in CASES.values()) and not all(c[7] for c in CASES.values())
    assert any(not isinstance(c[5], int) and c[5][0] != c[5][1] for c in CASES.values())


# ----------------------------------------------------------------- the oracle against itself
def test_oracle_windows_by_hand():
    # L=7, k=3, d=2: residue 0 = {0,2,4,6}, residue 1 = {1,3,5}; windows shift inward.
    assert _window(0, 7, 3, 2) == ([0, 2, 4], [2, 3, 4])
    assert _window(2, 7, 3, 2) == ([0, 2, 4], [1, 2, 3])
    assert _window(6, 7, 3, 2) == ([2, 4, 6], [0, 1, 2])
    assert _window(5, 7, 3, 2) == ([1, 3, 5], [0, 1, 2])
    assert _window(1, 7, 3, 2) == ([1, 3, 5], [2, 3, 4])
    # L=9, k=5, d=1: centred in the middle, clamped at the ends.
    assert _window(4, 9, 5, 1) == ([2, 3, 4, 5, 6], [2, 3, 4, 5, 6])
    assert _window(0, 9, 5, 1) == ([0, 1, 2, 3, 4], [4, 5, 6, 7, 8])
    assert _window(8, 9, 5, 1) == ([4, 5, 6, 7, 8], [0, 1, 2, 3, 4])


def test_oracle_matches_the_literal_loop():
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 2, 9, 8, 3, dtype=torch.float64) for _ in range(3))
    rpb = torch.randn(2, 5, 5, dtype=torch.float64)
    a = na2d_slow(q, k, v, (3, 3), (3, 2), rpb)
    b = na2d_loop(q, k, v, (3, 3), (3, 2), rpb)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=1e-12)


# ----------------------------------------------------------------- hand-computed special cases
def _dense_attention(q, k, v, bias, mask=None, scale=None):
    """Plain softmax attention over all positions: q/k/v [B, h, H, W, D], bias [h, HW, HW]."""
    B, nh, H, W, D = q.shape
    scale = D ** -0.5 if scale is None else scale
    qf, kf, vf = (t.reshape(B, nh, H * W, t.shape[-1]) for t in (q, k, v))
    logits = scale * qf @ kf.transpose(-1, -2) + bias
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return (torch.softmax(logits, -1) @ vf).reshape(B, nh, H, W, v.shape[-1])


@pytest.mark.parametrize("backend", ["tiled", "gather", "cpp"])
def test_full_window_is_global_attention_with_relative_bias(backend):
    # kernel = map size, dilation 1: every window is the whole map, and the RPB entry of key
    # (ky, kx) for query (y, x) is rpb[ky - y + k - 1, kx - x + k - 1].
    torch.manual_seed(2)
    B, nh, H, W, D = 2, 3, 7, 5, 4
    q, k, v = (torch.randn(B, nh, H, W, D, dtype=torch.float64) for _ in range(3))
    rpb = torch.randn(nh, 2 * H - 1, 2 * W - 1, dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    bias = rpb[:, ys[None, :] - ys[:, None] + H - 1, xs[None, :] - xs[:, None] + W - 1]
    want = _dense_attention(q, k, v, bias, scale=0.3)
    got = na2d(q, k, v, (H, W), 1, rpb=rpb, scale=0.3, backend=backend)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", ["tiled", "gather", "cpp"])
def test_exact_kernel_times_dilation_is_attention_within_residue_classes(backend):
    # H = kh*dh and W = kw*dw: each residue class holds exactly k positions per axis, so a query
    # attends to every position of its own (y mod dh, x mod dw) class and nothing else.
    torch.manual_seed(3)
    (kh, kw), (dh, dw) = (3, 5), (4, 2)
    H, W = kh * dh, kw * dw
    q, k, v = (torch.randn(1, 2, H, W, 6, dtype=torch.float64) for _ in range(3))
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    mask = ((ys[:, None] % dh) == (ys[None, :] % dh)) & ((xs[:, None] % dw) == (xs[None, :] % dw))
    want = _dense_attention(q, k, v, 0.0, mask)
    got = na2d(q, k, v, (kh, kw), (dh, dw), backend=backend)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


# ----------------------------------------------------------------- other arguments
@pytest.mark.parametrize("backend", BACKENDS)
def test_scale_value_dim_and_non_contiguous_inputs(backend):
    torch.manual_seed(4)
    # Channels-last projections permuted the way the model does: non-contiguous q / k / v.
    qkv = torch.randn(2, 11, 10, 3, 2, 5, dtype=torch.float64)
    q, k, _ = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
    v = torch.randn(2, 2, 11, 10, 7, dtype=torch.float64)           # its own head dim
    rpb = torch.randn(2, 5, 9, dtype=torch.float64)
    assert not q.is_contiguous()
    want_out, want_attn = na2d_slow(q, k, v, (3, 5), (3, 2), rpb, scale=0.7)
    out, attn = na2d(q, k, v, (3, 5), (3, 2), rpb=rpb, scale=0.7, return_attn=True,
                     backend=backend)
    torch.testing.assert_close(out, want_out, rtol=0, atol=1e-10)
    torch.testing.assert_close(attn, want_attn, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", ["tiled", "gather", "cpp"])
def test_attention_dropout_only_in_training(backend):
    torch.manual_seed(5)
    q, k, v = (torch.randn(1, 2, 9, 9, 4) for _ in range(3))
    ref = na2d(q, k, v, 3, 2, backend=backend)
    same = na2d(q, k, v, 3, 2, backend=backend, dropout_p=0.5, training=False)
    torch.testing.assert_close(same, ref, rtol=0, atol=0)
    dropped = na2d(q, k, v, 3, 2, backend=backend, dropout_p=0.5, training=True)
    assert not torch.allclose(dropped, ref)


# ----------------------------------------------------------------- bad input
def _qkv(shape=(1, 2, 9, 9, 4)):
    return tuple(torch.randn(*shape) for _ in range(3))


def test_mismatched_qkv_raise():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="query .* and key .* must have the same shape"):
        na2d(q, k[:, :, :8], v, 3)
    with pytest.raises(ValueError, match="value .* must match query"):
        na2d(q, k, v[:, :1], 3)
    with pytest.raises(ValueError, match="5-D"):
        na2d(q[0], k[0], v[0], 3)
    with pytest.raises(TypeError, match="share a dtype"):
        na2d(q, k.double(), v, 3)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        na2d(q.tolist(), k, v, 3)


def test_wrong_rpb_size_raises():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"rpb must have shape \[heads, 2\*kh-1, 2\*kw-1\] = "
                                         r"\(2, 5, 5\)"):
        na2d(q, k, v, 3, rpb=torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="rpb must have shape"):
        na2d(q, k, v, 3, rpb=torch.zeros(1, 5, 5))          # wrong number of heads
    with pytest.raises(ValueError, match=r"= \(2, 5, 9\)"):
        na2d(q, k, v, (3, 5), rpb=torch.zeros(2, 5, 5))     # per-axis kernel


def test_window_larger_than_map_raises():
    q, k, v = _qkv((1, 2, 9, 20, 4))
    with pytest.raises(ValueError, match=r"height 9 is smaller than kernel_size \* dilation = "
                                         r"5 \* 2 = 10.*Pad the input"):
        na2d(q, k, v, 5, 2)
    with pytest.raises(ValueError, match="width 20 is smaller than .* 7 \\* 3 = 21"):
        na2d(q, k, v, (3, 7), (1, 3))


def test_even_or_bad_kernel_and_dilation_raise():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="odd kernel sizes"):
        na2d(q, k, v, 4)
    with pytest.raises(ValueError, match="odd kernel sizes"):
        na2d(q, k, v, (3, 2))
    with pytest.raises(ValueError, match="dilations must be >= 1"):
        na2d(q, k, v, 3, 0)
    with pytest.raises(ValueError, match="pair of ints"):
        na2d(q, k, v, (3, 3, 3))
    with pytest.raises(ValueError, match="unknown backend"):
        na2d(q, k, v, 3, backend="cuda")


# ----------------------------------------------------------------- NATTEN (optional)
NATTEN_CASES = ["k3d8-nondiv-27x30", "k7d4-30x28", "k9d2-18x21"]


def _natten_or_skip():
    """NATTEN, or a skip when it is not installed. Any other import error (a broken build, an
    ABI mismatch with this torch) fails the test instead of hiding behind a skip."""
    try:
        import natten  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name != "natten":      # natten is there but one of its own imports is missing
            raise
        pytest.skip("natten is not installed (ModuleNotFoundError: No module named 'natten'); "
                    "install it with pip install --no-build-isolation natten==0.21.7")
    return natten


@pytest.mark.parametrize("name", NATTEN_CASES)
def test_natten_backend_matches_oracle(name):
    _natten_or_skip()
    o = oracle(name)
    assert "rpb" not in o["x"]
    q, k, v = (o["x"][n].to(DEVICE, torch.float32) for n in "qkv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = na2d(q, k, v, o["ks"], o["dil"], backend="natten")
    err = max_err(out.cpu(), o["out"])
    assert err <= 1e-5, f"natten {name}: max abs error {err:.3g}"


def test_natten_backend_refuses_what_it_cannot_compute():
    natten = _natten_or_skip()
    if tuple(int(p) for p in natten.__version__.split(".")[:2]) < (0, 20):
        pytest.skip("NATTEN <= 0.17 supports RPB and attention weights")
    q, k, v = _qkv()
    with pytest.raises(RuntimeError, match="relative positional bias"):
        na2d(q, k, v, 3, rpb=torch.zeros(2, 5, 5), backend="natten")
    with pytest.raises(RuntimeError, match="attention weights"):
        na2d(q, k, v, 3, return_attn=True, backend="natten")
    # "auto" falls back to an exact backend instead.
    rpb = torch.randn(2, 5, 5)
    out = na2d(q, k, v, 3, rpb=rpb, backend="auto")
    torch.testing.assert_close(out, na2d_slow(q, k, v, 3, 1, rpb)[0], rtol=0, atol=1e-5)


# ----------------------------------------------------------------- the compiled "cpp" backend
def test_cpp_custom_op_registration_passes_opcheck():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 9, 10, 4, generator=g, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    rpb = torch.randn(2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    for return_attn in (False, True):
        torch.library.opcheck(torch.ops.dinat_backbone.na2d_cpp_fwd.default,
                              (q, k, v, rpb, 3, 3, 2, 1, 0.5, return_attn),
                              test_utils=("test_schema", "test_autograd_registration",
                                          "test_faketensor"))


def test_cpp_backend_missing_is_a_clear_error_and_auto_falls_back_to_tiled():
    # DINAT_DISABLE_CPP=1 stands in for a machine without a C++ compiler: the package imports,
    # "cpp" is not listed, asking for it names the reason and the fix, and "auto" runs "tiled"
    # (bitwise) with a warning that names the reason.
    code = (
        "import torch\n"
        "from dinat_backbone.ops import na2d, available_backends\n"
        "assert 'cpp' not in available_backends('cpu'), available_backends('cpu')\n"
        "q = k = v = torch.randn(1, 1, 9, 9, 4)\n"
        "try:\n"
        "    na2d(q, k, v, 3, backend='cpp')\n"
        "except RuntimeError as e:\n"
        "    assert 'DINAT_DISABLE_CPP' in str(e) and \"backend='tiled'\" in str(e), str(e)\n"
        "else:\n"
        "    raise AssertionError('backend=cpp did not raise')\n"
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    out = na2d(q, k, v, 3, backend='auto')\n"
        "assert any('DINAT_DISABLE_CPP' in str(x.message) for x in w), [str(x.message) for x in w]\n"
        "assert torch.equal(out, na2d(q, k, v, 3, backend='tiled'))\n"
        "print('ok', tuple(out.shape))\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, DINAT_DISABLE_CPP="1", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "ok (1, 1, 9, 9, 4)" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_cpp_backend_kernels_above_its_limit_match_the_definition(dtype):
    # kernel 17 (> the compiled kernel's 15): computed by "tiled" under backend="cpp"
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(1, 2, 18, 17, 4, generator=g, dtype=torch.float64) for _ in range(3))
    rpb = torch.randn(2, 33, 33, generator=g, dtype=torch.float64)
    want, want_attn = na2d_slow(q, k, v, 17, 1, rpb)
    out, attn = na2d(q.to(dtype), k.to(dtype), v.to(dtype), 17, 1, rpb=rpb.to(dtype),
                     return_attn=True, backend="cpp")
    assert max_err(out, want) <= TOL[dtype] and max_err(attn, want_attn) <= TOL[dtype]
