"""The compiled "cpp" backend: maps tall enough that each task's rows are split into chunks, and
q, k, v packed as one [B, H, W, 3, heads, D] tensor (na2d_qkv, what the model calls).

The kernel splits every (batch, head, residue class) task's query rows into chunks of at least
max(16, 2 * kernel) rows that run in parallel; the keys two chunks both reach get their dk / dv
summed from both afterwards. The oracle matrix of tests/test_ops.py has maps too small for that,
so these shapes (each checked to give 2-4 chunks) compare forward, attention weights and every
gradient with the slow float64 definition (tests/na_reference.py) at the matrix's tolerances,
and check that the result does not depend on the thread count (the chunks depend on the shape
only).
"""
import pytest
import torch

from dinat_backbone.ops import available_backends, na2d
from na_reference import na2d_slow

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif("cpp" not in available_backends("cpu"),
                                 reason="the compiled 'cpp' kernel could not be built here")]

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
# name: (batch, heads, H, W, head_dim, kernel_size, dilation, rpb, chunks per task)
CASES = {
    "k3d1-66x9": (1, 1, 66, 9, 8, 3, 1, True, 4),
    "k5d1-50x13": (2, 1, 50, 13, 4, 5, 1, True, 3),
    "k7d2-67x15": (1, 2, 67, 15, 8, 7, 2, True, 2),
    "k7x3-d1x2-48x11": (1, 1, 48, 11, 8, (7, 3), (1, 2), False, 3),
    "k9d1-wide-36x20-D16": (1, 1, 36, 20, 16, 9, 1, True, 2),
    # sub-grids of >= 128 columns: the forward streams rows through rings (odd rows per chunk,
    # so the last row of a chunk runs alone; with dilation 2 on the rows)
    "k7d1-stream-45x140": (1, 2, 45, 140, 8, 7, 1, True, 2),
    "k5x3-d2x1-stream-70x131-D12": (1, 1, 70, 131, 12, (5, 3), (2, 1), False, 2),
}


def _pair(x):
    return (x, x) if isinstance(x, int) else tuple(x)


def _case(name, table=None):
    """Random float64 inputs of a case (of CASES, or of WIDE_CASES with chunks None)."""
    B, nh, H, W, D, ks, dil, with_rpb, *chunks = (table or CASES)[name]
    chunks = chunks[0] if chunks else None
    kh, kw = _pair(ks)
    g = torch.Generator().manual_seed(len(name))
    x = {n: torch.randn(B, nh, H, W, D, generator=g, dtype=torch.float64) for n in "qkv"}
    if with_rpb:
        x["rpb"] = 0.5 * torch.randn(nh, 2 * kh - 1, 2 * kw - 1, generator=g, dtype=torch.float64)
    go = torch.randn(B, nh, H, W, D, generator=g, dtype=torch.float64)
    ga = torch.randn(B, nh, H, W, kh * kw, generator=g, dtype=torch.float64)
    return x, go, ga, ks, dil, chunks


def _grads(fn, x, go, ga, dtype, return_attn):
    leaves = {n: t.to(dtype).requires_grad_(True) for n, t in x.items()}
    out, attn = fn(leaves)
    outs, gouts = [out], [go.to(dtype)]
    if return_attn:
        outs.append(attn)
        gouts.append(ga.to(dtype))
    grads = torch.autograd.grad(outs, list(leaves.values()), gouts)
    return out.detach(), attn.detach(), dict(zip(leaves, grads))


def test_the_cases_split_into_chunks():
    from dinat_backbone.ops.cpp_backend import load_extension

    ext = load_extension()
    for name, (B, nh, H, W, D, ks, dil, rpb, chunks) in CASES.items():
        kh, dh = _pair(ks)[0], _pair(dil)[0]
        assert ext.num_chunks(H, kh, dh) == chunks, name


def _slow(ks, dil):
    return lambda t: na2d_slow(t["q"], t["k"], t["v"], ks, dil, t.get("rpb"))


def _cpp(ks, dil, return_attn):
    def f(t):
        res = na2d(t["q"], t["k"], t["v"], ks, dil, rpb=t.get("rpb"), return_attn=return_attn,
                   backend="cpp")
        return res if return_attn else (res, torch.empty(0))
    return f


def _check_against_definition(name, x, go, ga, ks, dil, dtype):
    """Forward, attention weights and every gradient of "cpp" in dtype against the float64
    definition, with and without return_attn, at TOL[dtype]."""
    for return_attn in (True, False):
        ref_out, ref_attn, ref_grads = _grads(_slow(ks, dil), x, go, ga, torch.float64,
                                              return_attn)
        out, attn, grads = _grads(_cpp(ks, dil, return_attn), x, go, ga, dtype, return_attn)
        checks = {"out": (out, ref_out)}
        if return_attn:
            checks["attn"] = (attn, ref_attn)
        checks.update({f"grad_{n}": (g, ref_grads[n]) for n, g in grads.items()})
        for what, (a, e) in checks.items():
            assert a.dtype == dtype and a.shape == e.shape, what
            err = (a.double() - e).abs().max().item()
            assert err <= TOL[dtype], (f"{name} {dtype} return_attn={return_attn}: {what} max "
                                       f"abs error {err:.3g} > {TOL[dtype]:.3g}")


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_chunked_cpp_matches_the_definition(name, dtype):
    x, go, ga, ks, dil, _ = _case(name)
    _check_against_definition(name, x, go, ga, ks, dil, dtype)


def test_chunked_cpp_gives_the_same_bits_with_one_and_two_threads():
    x, go, ga, ks, dil, _ = _case("k7d2-67x15")
    x = {n: t.float() for n, t in x.items()}
    results = []
    saved = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(_grads(_cpp(ks, dil, True), x, go, ga, torch.float32, True))
    finally:
        torch.set_num_threads(saved)
    (o1, a1, g1), (o2, a2, g2) = results
    assert torch.equal(o1, o2) and torch.equal(a1, a2)
    for n in g1:
        assert torch.equal(g1[n], g2[n]), n


# The kernel's per-thread copies of q, k, v (and dout) are reused from call to call and clear
# their zero padding only when the layout (channels, padded row length, width) changes or the
# buffer grows. Padding is read where a window passes the map's edge, weighted by zero: stale
# values there are harmless unless they are not finite (0 * inf = nan). So one thread first
# runs a call whose last column is inf (its own result is not checked), then calls whose padding
# overlaps that column's old place (a map one column narrower, more channels, more rows), each
# against the definition: on narrow maps (whole chunks copied) and on maps of >= 128 columns
# (rows streamed through rings).
REUSE_AFTER_INF = {
    "narrow": (13, [(1, 1, 40, 12, 8, 5, 1, True),
                    (1, 1, 40, 12, 12, 5, 1, True),
                    (2, 1, 70, 11, 8, 5, 1, False)]),
    "streamed": (141, [(1, 1, 40, 140, 8, 5, 1, True)]),
}


@pytest.mark.parametrize("maps", list(REUSE_AFTER_INF))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_buffers_reused_after_an_inf_input_match_the_definition(maps, dtype):
    width, cases = REUSE_AFTER_INF[maps]
    g = torch.Generator().manual_seed(3)
    t = {n: torch.randn(1, 1, 40, width, 8, generator=g, dtype=dtype) for n in "qkv"}
    for x in t.values():
        x[..., -1, :] = float("inf")
    t = {n: x.requires_grad_(True) for n, x in t.items()}
    out = na2d(t["q"], t["k"], t["v"], 5, 1, backend="cpp")
    out.backward(torch.ones_like(out))
    for i, case in enumerate(cases):
        name = f"after-inf-{maps}-{i}"
        x, go, ga, ks, dil, _ = _case(name, {name: case})
        _check_against_definition(name, x, go, ga, ks, dil, dtype)


# ------------------------------------------------- the 16-lane kernel (CPUs with AVX-512)
# Where the compiler targets AVX-512, the kernel is built in two vector widths and a call whose
# sub-grids are at least 48 columns wide takes 16 queries per vector (the cases above, all
# narrower, take 8). These maps are wide enough: 70 columns (4 full blocks and a ragged one of
# 6), 100 columns at dilation 2 (sub-grids of 50), 97 at (1, 2) with two row chunks, and a
# 13-wide kernel, with borders and RPB.
WIDE_CASES = {
    "k7d1-20x70": (1, 2, 20, 70, 8, 7, 1, True),
    "k5d2-36x100": (1, 1, 36, 100, 16, 5, 2, True),
    "k3x7-d1x2-34x97-D12": (1, 1, 34, 97, 12, (3, 7), (1, 2), False),
    "k13d1-30x60": (1, 1, 30, 60, 8, 13, 1, True),  # 25 entries per block row at the borders
}


def _wide_lanes():
    from dinat_backbone.ops.cpp_backend import load_extension

    ext = load_extension()
    q = torch.empty(1, 1, 1, 100, 1)
    return ext.lanes_for(q, 1)


@pytest.mark.parametrize("name", list(WIDE_CASES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_wide_maps_take_16_lanes_and_match_the_definition(name, dtype):
    if _wide_lanes() != 16:
        pytest.skip("this CPU (or DINAT_NA_LANES) gives the kernel only its 8-lane width")
    from dinat_backbone.ops.cpp_backend import load_extension

    x, go, ga, ks, dil, _ = _case(name, WIDE_CASES)
    assert load_extension().lanes_for(x["q"], _pair(dil)[1]) == 16
    _check_against_definition(name, x, go, ga, ks, dil, dtype)


# ------------------------------------------- q, k, v packed as [B, H, W, 3, heads, D]: na2d_qkv
@pytest.mark.parametrize("name", ["k5d1-50x13", "k7d2-67x15"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_packed_qkv_matches_the_definition(name, dtype):
    # the model's path (na2d_qkv, gradient written straight into the packed layout) against
    # the float64 definition on the unpacked q, k, v, every gradient included
    from dinat_backbone.ops import na2d_qkv

    x, go, _, ks, dil, _ = _case(name)
    packed = torch.stack([x["q"], x["k"], x["v"]]).permute(1, 3, 4, 0, 2, 5).contiguous()
    leaves = [packed.to(dtype).requires_grad_(True), x["rpb"].to(dtype).requires_grad_(True)]
    out = na2d_qkv(leaves[0], ks, dil, rpb=leaves[1], backend="cpp")
    got = [out] + list(torch.autograd.grad(out, leaves, go.to(dtype)))
    ref_leaves = [packed.clone().requires_grad_(True), x["rpb"].clone().requires_grad_(True)]
    q, k, v = ref_leaves[0].permute(3, 0, 4, 1, 2, 5).unbind(0)
    ref_out = na2d_slow(q, k, v, ks, dil, ref_leaves[1])[0]
    ref = [ref_out] + list(torch.autograd.grad(ref_out, ref_leaves, go))
    assert got[1].shape == packed.shape and got[1].is_contiguous()
    for what, a, e in zip(["out", "grad_qkv", "grad_rpb"], got, ref):
        err = (a.double() - e).abs().max().item()
        assert a.dtype == dtype and err <= TOL[dtype], f"{name} {dtype}: {what} {err:.3g}"


def test_packed_qkv_custom_ops_pass_opcheck():
    import dinat_backbone.ops.cpp_backend  # noqa: F401  (registers the ops)

    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(1, 9, 11, 3, 2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    rpb = torch.randn(2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.dinat_backbone.na2d_cpp_qkv_fwd.default,
                          (qkv, rpb, 3, 3, 2, 2, 0.5))


def test_packed_qkv_refuses_a_wrong_layout_and_other_backends_unpack():
    from dinat_backbone.ops import na2d_qkv

    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(1, 9, 11, 3, 2, 4, generator=g)
    with pytest.raises(ValueError, match=r"\[batch, height, width, 3, heads, head_dim\]"):
        na2d_qkv(qkv.permute(3, 0, 1, 2, 4, 5), 3)
    q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
    assert torch.equal(na2d_qkv(qkv, 3, 2, backend="tiled"), na2d(q, k, v, 3, 2, backend="tiled"))
