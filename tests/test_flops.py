"""Parameters of every variant and FLOPs of mini against the authors' figures and against
hand-written formulas; the fvcore handle for the neighborhood-attention op and its switch.
"""
import math

import pytest
import torch

from dinat_backbone import DinatConfig, DinatForImageClassification
from dinat_backbone.flops import NA_OP_NAME, count_flops, count_parameters, flop_count_analysis
from dinat_backbone.ops import na2d

# The authors' table (DiNAT.md): params in M, GFLOPs at 224.
AUTHORS = {"mini": (20, 2.7), "tiny": (28, 4.3), "small": (51, 7.8), "base": (90, 13.7),
           "large": (200, 30.6)}


pytestmark = pytest.mark.usefixtures("one_thread")


def hand_params(embed_dim, depths, heads, mlp_ratio, layer_scale, kernel, classes=1000):
    """Parameters of the DiNAT architecture, counted by hand from the layer shapes."""
    C = embed_dim
    n = 3 * (C // 2) * 9 + C // 2 + (C // 2) * C * 9 + C + 2 * C        # two convs + LayerNorm
    for i, (depth, h) in enumerate(zip(depths, heads)):
        c = C * 2 ** i
        hidden = int(c * mlp_ratio)
        layer = (2 * c                                # norm1
                 + c * 3 * c + 3 * c                  # qkv
                 + h * (2 * kernel - 1) ** 2          # rpb
                 + c * c + c                          # proj
                 + 2 * c                              # norm2
                 + c * hidden + hidden + hidden * c + c  # mlp
                 + (2 * c if layer_scale else 0))     # gamma1, gamma2
        n += depth * layer
        if i < len(depths) - 1:
            n += c * 2 * c * 9 + 2 * 2 * c            # conv without bias + LayerNorm
    cf = C * 2 ** (len(depths) - 1)
    return n + 2 * cf + cf * classes + classes          # final norm + head


@pytest.mark.parametrize("variant", list(AUTHORS))
def test_params_of_every_variant(variant):
    cfg = DinatConfig.from_variant(variant)
    with torch.device("meta"):                          # no memory, no init
        model = DinatForImageClassification(cfg)
    n = count_parameters(model)
    assert n == hand_params(cfg.embed_dim, cfg.depths, cfg.num_heads, cfg.mlp_ratio,
                            cfg.layer_scale_init_value, cfg.kernel_size)
    authors = AUTHORS[variant][0]
    m = n / 1e6
    # The authors print whole millions: rounded for mini..base (19.98 -> 20, 50.72 -> 51), but
    # truncated for large (200.94 -> 200; without the head it is 199.41, see count_flops.py).
    if variant == "large":
        assert math.floor(m) == authors, m
    else:
        assert round(m) == authors, m


def test_params_of_large_k11():
    # The authors list 200M for the 11x11 model too; it differs from large only in the RPB
    # tables ([heads, 21, 21] instead of [heads, 13, 13]), i.e. +0.20M (201.14M in all).
    with torch.device("meta"):
        k7 = count_parameters(DinatForImageClassification(DinatConfig.from_variant("large")))
        k11 = count_parameters(DinatForImageClassification(DinatConfig.from_variant("large_k11")))
    heads = 3 * 6 + 4 * 12 + 18 * 24 + 5 * 48
    assert k11 - k7 == heads * (21 ** 2 - 13 ** 2)
    assert k11 == hand_params(192, [3, 4, 18, 5], [6, 12, 24, 48], 2.0, 0.0, 11)


def hand_mini_macs(res=224):
    """Multiply-adds of convolutions, linears and NA of dinat-mini (fvcore's convention)."""
    C, depths, heads, mlp, k = 64, [3, 4, 6, 5], [2, 4, 8, 16], 3, 7
    s = res // 2
    conv = 3 * (C // 2) * 9 * s * s
    s //= 2
    conv += (C // 2) * C * 9 * s * s
    linear = na = 0
    for i, (depth, h) in enumerate(zip(depths, heads)):
        c, tokens = C * 2 ** i, s * s
        linear += depth * tokens * (c * 3 * c + c * c + 2 * c * mlp * c)
        na += depth * h * tokens * k * k * 2 * (c // h)
        if i < 3:
            s //= 2
            conv += c * 2 * c * 9 * s * s
    linear += C * 8 * 1000                              # head
    return conv, linear, na


def test_mini_flops_match_authors_and_hand_count():
    torch.manual_seed(0)
    model = DinatForImageClassification(DinatConfig.from_variant("mini"))
    rep = count_flops(model, image_size=224)
    conv, linear, na = hand_mini_macs()
    assert rep.by_operator["conv"] == conv
    assert rep.by_operator["linear"] == linear
    assert rep.by_operator[NA_OP_NAME.split("::")[1]] == na
    assert abs(rep.total / 1e9 / AUTHORS["mini"][1] - 1) <= 0.03, rep.total
    assert rep.params == count_parameters(model)
    assert model.training                               # mode restored after counting


def test_na_handle_counts_qk_and_av_for_per_axis_kernels():
    class Op(torch.nn.Module):
        def forward(self, q, k, v):
            return na2d(q, k, v, (3, 5), (2, 1), rpb=torch.zeros(2, 5, 9))

    q = k = torch.randn(1, 2, 9, 11, 4)
    v = torch.randn(1, 2, 9, 11, 6)                     # its own head dim
    counter = flop_count_analysis(Op(), (q, k, v))
    assert counter.by_operator() == {NA_OP_NAME.split("::")[1]: 2 * 9 * 11 * 15 * (4 + 6)}


@pytest.mark.filterwarnings("ignore")
def test_na_op_is_exact_inside_the_flop_trace():
    # While counting, na2d runs as one autograd.Function; it still computes the same numbers.
    from dinat_backbone.flops import flop_tracing

    q, k, v = (torch.randn(1, 2, 8, 8, 4) for _ in range(3))
    want = na2d(q, k, v, 3, 2)
    with flop_tracing():
        traced = torch.jit.trace(lambda a, b, c: na2d(a, b, c, 3, 2), (q, k, v),
                                 check_trace=False)
    torch.testing.assert_close(traced(q, k, v), want)


def _traces_as_one_node(q, k, v) -> bool:
    traced = torch.jit.trace(lambda a, b, c: na2d(a, b, c, 3, 2), (q, k, v), check_trace=False)
    return any(n.kind() == "prim::PythonOp" for n in traced.graph.nodes())


@pytest.mark.filterwarnings("ignore")
def test_flop_tracing_is_scoped_to_its_context():
    # The switch is a context variable: on inside the `with` in this thread only, off after it,
    # and never seen by another thread tracing at the same time.
    import threading

    from dinat_backbone.flops import NeighborhoodAttention2DFunction, flop_tracing

    q, k, v = (torch.randn(1, 2, 8, 8, 4) for _ in range(3))
    assert not _traces_as_one_node(q, k, v)
    other = {}
    with flop_tracing():
        assert _traces_as_one_node(q, k, v)
        t = threading.Thread(target=lambda: other.setdefault("one_node",
                                                             _traces_as_one_node(q, k, v)))
        t.start()
        t.join()
    assert other == {"one_node": False}
    assert not _traces_as_one_node(q, k, v)
    assert NA_OP_NAME.endswith(NeighborhoodAttention2DFunction.__name__)
