"""Speed features keep the numbers: the tiled fast path (custom op), torch.compile, autocast,
gradient checkpointing, and the flex backend, each against an independent reference.

References: the slow loop definition in tests/na_reference.py (float64), eager execution of the
same model, and checkpointing off. No timing is asserted (tools/benchmark.py measures speed);
memory assertions use the profiler's allocation events, which are deterministic.
"""
import functools

import pytest
import torch

from dinat_backbone.backbone import DinatBackbone
from dinat_backbone.config import DinatConfig
from dinat_backbone.modeling import DinatModel
from dinat_backbone.ops import flex_backend as flex  # part of the package: a failing import fails the module
from dinat_backbone.ops import na2d
from dinat_backbone.ops import tiled as tiled_mod
from na_reference import na2d_slow

TINY = dict(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 2],
            dilations=[[2], [1], [1, 2], [1]], kernel_size=3, drop_path_rate=0.0)


def peak_bytes(fn):
    """Peak tensor bytes allocated during fn() above those held before (profiler events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak


@functools.lru_cache(maxsize=None)
def _oracle(shape, ks, dil, with_rpb, seed=0):
    B, nh, H, W, D = shape
    kh, kw = (ks, ks) if isinstance(ks, int) else ks
    g = torch.Generator().manual_seed(seed)
    x = [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3)]
    rpb = (0.5 * torch.randn(nh, 2 * kh - 1, 2 * kw - 1, generator=g, dtype=torch.float64)
           if with_rpb else None)
    go = torch.randn(shape, generator=g, dtype=torch.float64)
    leaves = [t.clone().requires_grad_(True) for t in x + ([rpb] if with_rpb else [])]
    out = na2d_slow(leaves[0], leaves[1], leaves[2], ks, dil,
                    leaves[3] if with_rpb else None)[0]
    grads = torch.autograd.grad(out, leaves, go)
    return x, rpb, go, [out.detach()] + list(grads)


# ------------------------------------------------------------------ tiled fast path (custom op)
@pytest.mark.parametrize("tile", [None, 2, 3, 5])
@pytest.mark.parametrize("case", [
    ((1, 2, 17, 13, 4), 5, 1, True),         # several tiles per axis, uneven last tile
    ((1, 1, 19, 14, 4), 3, (3, 2), True),    # dilation sub-grids of unequal lengths
    ((1, 2, 15, 13, 3), (7, 3), (2, 4), False),
])
def test_fast_path_matches_definition_for_any_tile_size(case, tile):
    shape, ks, dil, with_rpb = case
    x, rpb, go, ref = _oracle(shape, ks, dil, with_rpb)
    leaves = [t.clone().requires_grad_(True) for t in x + ([rpb] if with_rpb else [])]
    kp = (ks, ks) if isinstance(ks, int) else ks
    dp = (dil, dil) if isinstance(dil, int) else dil
    out = tiled_mod.na2d_tiled_fast(leaves[0], leaves[1], leaves[2], kp, dp,
                                    leaves[3] if with_rpb else None, shape[-1] ** -0.5, tile)
    got = [out] + list(torch.autograd.grad(out, leaves, go))
    for name, a, e in zip(["out", "dq", "dk", "dv", "drpb"], got, ref):
        assert (a - e).abs().max().item() < 1e-10, name


def test_fast_path_reads_strided_qkv_views_and_writes_channels_last():
    # The model hands q/k/v as views of the qkv projection and permutes the output back.
    B, nh, H, W, D, k, d = 2, 2, 13, 11, 4, 5, 2
    g = torch.Generator().manual_seed(3)
    qkv = torch.randn(B, H, W, 3, nh, D, generator=g, dtype=torch.float64, requires_grad=True)
    rpb = torch.randn(nh, 2 * k - 1, 2 * k - 1, generator=g, dtype=torch.float64,
                      requires_grad=True)
    gout = torch.randn(B, H, W, nh * D, generator=g, dtype=torch.float64)

    def run(fn):
        q, kk, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
        o = fn(q, kk, v).permute(0, 2, 3, 1, 4).reshape(B, H, W, nh * D)
        return [o] + list(torch.autograd.grad(o, [qkv, rpb], gout))

    ref = run(lambda q, kk, v: na2d_slow(q, kk, v, k, d, rpb)[0])
    got = run(lambda q, kk, v: na2d(q, kk, v, k, d, rpb=rpb, backend="tiled"))
    for a, e in zip(got, ref):
        assert (a - e).abs().max().item() < 1e-10


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 4e-2), (torch.float16, 1e-2)])
def test_fast_path_half_precision(dtype, tol):
    x, rpb, go, ref = _oracle((1, 2, 15, 19, 8), 7, 2, True)
    leaves = [t.to(dtype).requires_grad_(True) for t in x + [rpb]]
    out = na2d(leaves[0], leaves[1], leaves[2], 7, 2, rpb=leaves[3], backend="tiled")
    got = [out] + list(torch.autograd.grad(out, leaves, go.to(dtype)))
    for a, e in zip(got, ref):
        assert a.dtype == dtype
        assert (a.double() - e).abs().max().item() <= tol * max(1.0, e.abs().max().item())


def test_custom_op_registration_passes_opcheck():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 9, 10, 4, generator=g, requires_grad=True) for _ in range(3))
    rpb = torch.randn(2, 5, 5, generator=g, requires_grad=True)
    args = (q, k, v, rpb, 3, 3, 2, 1, 0.5, 3, 4)
    torch.library.opcheck(torch.ops.dinat_backbone.na2d_tiled_fwd.default, args,
                          test_utils=("test_schema", "test_autograd_registration",
                                      "test_faketensor"))


def test_auto_on_cpu_is_bitwise_the_compiled_cpp_backend():
    # (without a C++ compiler "auto" is "tiled": tests/test_ops.py checks that fallback)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 14, 14, 8, generator=g) for _ in range(3))
    rpb = torch.randn(2, 13, 13, generator=g)
    assert torch.equal(na2d(q, k, v, 7, 2, rpb=rpb, backend="auto"),
                       na2d(q, k, v, 7, 2, rpb=rpb, backend="cpp"))


def test_tiled_holds_no_kxk_copies():
    # The gather baseline materialises k*k copies of k and v; the tiled path's training memory
    # grows with the map by a few map-sized tensors (output, gradients of q, k, v and
    # autograd's copies of them into the leaves' layout), plus a constant for one chunk.
    k = 7

    def train_peak(backend, H, W):
        shape = (1, 2, H, W, 4)
        q, key, v = (torch.randn(shape, requires_grad=True) for _ in range(3))
        rpb = torch.zeros(2, 13, 13, requires_grad=True)

        def f():
            na2d(q, key, v, k, 1, rpb=rpb, backend=backend).sum().backward()
        return peak_bytes(f), q.numel() * 4

    gather, one_map = train_peak("gather", 42, 42)
    assert gather > k * k * one_map          # the baseline does hold k*k copies
    small, small_map = train_peak("tiled", 56, 56)
    large, large_map = train_peak("tiled", 112, 112)
    slope = (large - small) / (large_map - small_map)
    assert slope < 16, slope                 # maps held per map of input, against 2 * 49


# ------------------------------------------------------------------ torch.compile
def test_model_has_no_graph_breaks_on_cpu():
    cfg = DinatConfig(**TINY)
    x = torch.randn(1, 3, 48, 40)
    for model in (DinatModel(cfg).eval(), DinatBackbone(cfg).train()):
        torch._dynamo.reset()
        ex = torch._dynamo.explain(model)(x)
        assert ex.graph_break_count == 0, [str(r.reason) for r in ex.break_reasons]
        assert ex.graph_count == 1


def test_compiled_backbone_matches_eager_forward_and_backward():
    # aot_eager: dynamo + AOTAutograd with the op's fake kernel and autograd formula (inductor's
    # code generation for the whole model takes minutes on CI's CPU; see the op test below).
    torch._dynamo.reset()
    cfg = DinatConfig(**TINY)
    model = DinatBackbone(cfg).train()
    x = torch.randn(2, 3, 48, 40)

    def step(m):
        for p in model.parameters():
            p.grad = None
        out = m(x)
        loss = sum((o * o).mean() for o in out.values())
        loss.backward()
        return {n: o.detach() for n, o in out.items()}, {
            n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    out_e, grad_e = step(model)
    out_c, grad_c = step(torch.compile(model, backend="aot_eager", fullgraph=True))
    for n in out_e:
        torch.testing.assert_close(out_c[n], out_e[n], rtol=1e-5, atol=1e-6)
    assert grad_e.keys() == grad_c.keys()
    for n in grad_e:
        torch.testing.assert_close(grad_c[n], grad_e[n], rtol=1e-4, atol=1e-6, msg=n)


def test_inductor_compiled_attention_layer_matches_eager():
    # qkv projection -> NA -> output projection, compiled by inductor with the NA custom op as an
    # opaque kernel: same outputs and gradients as eager.
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 11, 13, 8, generator=g)
    w = torch.randn(8, 24, generator=g, requires_grad=True)
    rpb = torch.randn(2, 5, 5, generator=g, requires_grad=True)

    def layer(x, w, rpb):
        B, H, W, C = x.shape
        q, k, v = (x @ w).reshape(B, H, W, 3, 2, 4).permute(3, 0, 4, 1, 2, 5).unbind(0)
        o = na2d(q, k, v, 3, 2, rpb=rpb)
        return o.permute(0, 2, 3, 1, 4).reshape(B, H, W, C).tanh()

    def run(fn):
        out = fn(x, w, rpb)
        return [out] + list(torch.autograd.grad(out.pow(2).sum(), [w, rpb]))

    ref = run(layer)
    got = run(torch.compile(layer, backend="inductor", fullgraph=True))
    for a, e in zip(got, ref):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ autocast
def test_autocast_bf16_on_cpu_tracks_fp32():
    cfg = DinatConfig(**TINY)
    model = DinatBackbone(cfg).train()
    x = torch.randn(2, 3, 48, 40)
    ref = model(x)
    loss_ref = sum(o.float().pow(2).mean() for o in ref.values())
    loss_ref.backward()
    g_ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = sum(o.float().pow(2).mean() for o in out.values())
    loss.backward()
    assert any(o.dtype == torch.bfloat16 for o in out.values())
    for n in ref:
        err = (out[n].float() - ref[n]).abs().max().item()
        assert err < 0.1 * max(1.0, ref[n].abs().max().item()), n
    # gradients: finite and pointing the same way as fp32's
    for n, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), n
    flat_ref = torch.cat([g.flatten() for g in g_ref.values()])
    flat = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.nn.functional.cosine_similarity(flat, flat_ref, dim=0) > 0.98


# ------------------------------------------------------------------ gradient checkpointing
def test_gradient_checkpointing_equal_gradients_and_less_memory():
    # drop path on: the recomputation must replay the same random draws.
    cfg = DinatConfig(embed_dim=16, depths=[2, 2, 3, 1], num_heads=[1, 2, 2, 4],
                      dilations=[[1, 4], [1, 2], [1, 2, 1], [1]], kernel_size=5,
                      drop_path_rate=0.2)
    torch.manual_seed(0)
    model = DinatBackbone(cfg).train()
    x = torch.randn(1, 3, 96, 96)

    def step():
        torch.manual_seed(1)
        for p in model.parameters():
            p.grad = None
        sum((o * o).mean() for o in model(x).values()).backward()

    model.set_gradient_checkpointing(False)
    mem_off = peak_bytes(step)
    g_off = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.set_gradient_checkpointing(True)
    assert all(lvl.gradient_checkpointing for lvl in model.levels)
    mem_on = peak_bytes(step)
    g_on = {n: p.grad.clone() for n, p in model.named_parameters()}
    for n in g_off:
        torch.testing.assert_close(g_on[n], g_off[n], rtol=1e-5, atol=1e-7, msg=n)
    assert mem_on < 0.7 * mem_off, (mem_on, mem_off)


def test_gradient_checkpointing_config_flag():
    cfg = DinatConfig(**TINY, gradient_checkpointing=True)
    model = DinatModel(cfg)
    assert all(lvl.gradient_checkpointing for lvl in model.levels)


# ------------------------------------------------------------------ flex backend
def _has_flex_attention() -> bool:
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


# Skip only when torch lacks the module; with it present, flex_available must agree (a test fails
# instead of skipping if the backend wrongly reports itself unavailable).
needs_flex = pytest.mark.skipif(not _has_flex_attention(),
                                reason="needs torch.nn.attention.flex_attention (torch >= 2.5)")


@needs_flex
def test_flex_available_on_cpu_when_torch_has_it():
    assert flex.flex_available("cpu")


@needs_flex
@pytest.mark.parametrize("case", [
    ((1, 2, 17, 13, 4), 5, 1, True),
    ((1, 2, 15, 19, 8), 7, 2, True),
    ((1, 2, 15, 13, 3), (7, 3), (2, 4), False),
])
def test_flex_forward_on_cpu_matches_definition(case):
    shape, ks, dil, with_rpb = case
    x, rpb, _, ref = _oracle(shape, ks, dil, with_rpb)
    with torch.no_grad():
        out = na2d(x[0], x[1], x[2], ks, dil, rpb=rpb, backend="flex")
    assert (out - ref[0]).abs().max().item() < 1e-10


@needs_flex
def test_flex_block_mask_covers_every_neighborhood():
    # Every (query, key) pair of the definition must lie in a listed key block; the compiled
    # kernel skips unlisted blocks (the eager reference path would not notice).
    H, W, kh, kw, dh, dw = 37, 29, 7, 5, 3, 2
    lay = flex._layout(H, W, kh, kw, dh, dw)
    from na_reference import _window

    listed = torch.zeros(len(lay["kv_num"]), len(lay["kv_num"]), dtype=torch.bool)
    for b, n in enumerate(lay["kv_num"].tolist()):
        listed[b, lay["kv_idx"][b, :n].long()] = True
    newpos = lay["inv"]
    for y in range(H):
        ky, _ = _window(y, H, kh, dh)
        for x_ in range(W):
            kx, _ = _window(x_, W, kw, dw)
            qb = newpos[y * W + x_].item() // flex.BLOCK
            for a in ky:
                for c in kx:
                    assert listed[qb, newpos[a * W + c].item() // flex.BLOCK]
    # and the structure is sparse, not a dense fallback
    assert listed.float().mean() < 0.8


@needs_flex
def test_flex_declines_what_it_cannot_do_on_cpu():
    q = torch.randn(1, 1, 8, 8, 4, requires_grad=True)
    assert "backward" in flex.flex_supports(q, None, False, 0.0)
    assert "weights" in flex.flex_supports(q.detach(), None, True, 0.0)
    assert "dropout" in flex.flex_supports(q.detach(), None, False, 0.1)
    assert flex.flex_supports(q.detach(), None, False, 0.0) is None
    with pytest.raises(RuntimeError, match="backward"):
        na2d(q, q, q, 3, 1, backend="flex")
