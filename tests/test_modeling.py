"""DinatModel / DinatForImageClassification: output shapes and conventions (transformers'),
odd and tiny input sizes, the padding of maps smaller than kernel x dilation (checked against the
slow oracle on a hand-padded input), the classification losses (against torch.nn.functional),
drop path and gradient checkpointing, the initialisation and the activations.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from dinat_backbone import DinatConfig, DinatForImageClassification, DinatModel
from dinat_backbone.modeling import DropPath, NALayer, NeighborhoodAttention2D
from na_reference import na2d_slow
from model_helpers import small_config


pytestmark = pytest.mark.usefixtures("one_thread")


def ceil_half(n, times):
    for _ in range(times):
        n = (n + 1) // 2
    return n


# ----------------------------------------------------------------------- mini at 224
@pytest.fixture(scope="module")
def mini_224():
    torch.manual_seed(0)
    model = DinatModel(DinatConfig.from_variant("mini")).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        out = model(x, output_hidden_states=True, output_attentions=True)
    return model, out


def test_mini_224_hidden_states_shapes(mini_224):
    _, out = mini_224
    shapes = [tuple(h.shape) for h in out.hidden_states]
    assert shapes == [(1, 56, 56, 64), (1, 28, 28, 128), (1, 14, 14, 256), (1, 7, 7, 512),
                      (1, 7, 7, 512)]
    assert tuple(out.last_hidden_state.shape) == (1, 7, 7, 512)
    assert tuple(out.pooler_output.shape) == (1, 512)
    for h, r in zip(out.hidden_states, out.reshaped_hidden_states):
        assert torch.equal(r, h.permute(0, 3, 1, 2))


def test_mini_224_last_hidden_state_and_pooler(mini_224):
    model, out = mini_224
    # last_hidden_state = final LayerNorm of the last hidden state; pooler = its spatial mean.
    ln = F.layer_norm(out.hidden_states[-1], (512,), model.norm.weight, model.norm.bias, 1e-5)
    torch.testing.assert_close(out.last_hidden_state, ln)
    torch.testing.assert_close(out.pooler_output, ln.mean(dim=(1, 2)))


def test_mini_224_attentions(mini_224):
    _, out = mini_224
    heads, sizes = [2, 4, 8, 16], [56, 28, 14, 7]
    want = [(1, h, s, s, 49) for h, s, d in zip(heads, sizes, [3, 4, 6, 5]) for _ in range(d)]
    assert [tuple(a.shape) for a in out.attentions] == want
    for a in out.attentions:
        torch.testing.assert_close(a.sum(-1), torch.ones_like(a[..., 0]))
        assert (a >= 0).all()


# ----------------------------------------------------------------------- conventions
def test_return_dict_false_gives_the_tuple_in_transformers_order():
    torch.manual_seed(0)
    model = DinatModel(small_config()).eval()
    x = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        d = model(x, output_hidden_states=True, output_attentions=True)
        t = model(x, output_hidden_states=True, output_attentions=True, return_dict=False)
    assert isinstance(t, tuple) and len(t) == 5
    torch.testing.assert_close(t[0], d.last_hidden_state)
    torch.testing.assert_close(t[1], d.pooler_output)
    for name, i in (("hidden_states", 2), ("attentions", 3), ("reshaped_hidden_states", 4)):
        assert len(t[i]) == len(getattr(d, name))
        for a, b in zip(t[i], getattr(d, name)):
            torch.testing.assert_close(a, b)
    with torch.no_grad():
        plain = model(x, return_dict=False)
    assert len(plain) == 2                  # last_hidden_state, pooler_output


def test_flags_default_from_the_config():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    cfg = small_config(output_hidden_states=True, output_attentions=True, use_return_dict=False)
    model = DinatModel(cfg).eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, tuple) and len(out) == 5
    assert len(out[2]) == 5 and len(out[3]) == sum(cfg.depths)
    model.config.output_hidden_states = False
    model.config.output_attentions = False
    model.config.use_return_dict = True
    with torch.no_grad():
        out = model(x)
    assert out.hidden_states is None and out.attentions is None
    with torch.no_grad():   # an explicit argument wins over the config
        assert model(x, output_attentions=True).attentions is not None
    assert DinatModel(small_config(), add_pooling_layer=False).eval()(x).pooler_output is None


@pytest.mark.parametrize("hw", [(97, 131), (32, 32), (1, 1), (5, 9)])
def test_output_sizes_for_odd_and_tiny_inputs(hw):
    # Each stride-2, padding-1, 3x3 conv maps n -> ceil(n / 2): embeddings ceil^2, then one
    # more per downsampler (see dinat_backbone/backbone.py).
    torch.manual_seed(0)
    H, W = hw
    model = DinatModel(small_config()).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, H, W), output_hidden_states=True, output_attentions=True)
    want = [(ceil_half(H, n), ceil_half(W, n)) for n in (2, 3, 4, 5, 5)]
    assert [tuple(h.shape[1:3]) for h in out.hidden_states] == want
    assert torch.isfinite(out.last_hidden_state).all()
    # Attention weights are cropped back to the map (before downsampling) of their stage.
    stage_sizes = [want[0], want[1], want[2], want[3]]
    sizes = [s for s, d in zip(stage_sizes, model.config.depths) for _ in range(d)]
    assert [tuple(a.shape[2:4]) for a in out.attentions] == sizes


def test_hand_written_sizes_97x131():
    assert [ceil_half(97, n) for n in (2, 3, 4, 5)] == [25, 13, 7, 4]
    assert [ceil_half(131, n) for n in (2, 3, 4, 5)] == [33, 17, 9, 5]
    assert [ceil_half(32, n) for n in (2, 3, 4, 5)] == [8, 4, 2, 1]


def test_mini_at_97x131_with_real_dilations():
    torch.manual_seed(0)
    model = DinatModel(DinatConfig.from_variant("mini")).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 97, 131), output_hidden_states=True)
    assert [tuple(h.shape) for h in out.hidden_states] == [
        (1, 25, 33, 64), (1, 13, 17, 128), (1, 7, 9, 256), (1, 4, 5, 512), (1, 4, 5, 512)]
    assert torch.isfinite(out.last_hidden_state).all()


# ----------------------------------------------------------------------- padding of small maps
@pytest.mark.parametrize("size,kernel,dilation", [((5, 9), 3, 2), ((4, 4), 7, 1),
                                                  ((9, 5), 3, 4), ((3, 17), 5, 3), ((1, 1), 3, 1)])
def test_small_map_padding_matches_oracle_on_hand_padded_input(size, kernel, dilation):
    torch.manual_seed(0)
    H, W = size
    dim, heads = 8, 2
    attn = NeighborhoodAttention2D(dim, heads, kernel, dilation).double().eval()
    with torch.no_grad():
        attn.rpb.normal_()
        attn.qkv.bias.normal_()
    x = torch.randn(2, H, W, dim, dtype=torch.float64)
    with torch.no_grad():
        got, got_attn = attn(x, return_attn=True)
    # By hand: zero-pad the (normed) input at the bottom / right to kernel * dilation, project,
    # run the slow definition, keep the top-left H x W, project out.
    win = kernel * dilation
    Hp, Wp = max(H, win), max(W, win)
    xp = torch.zeros(2, Hp, Wp, dim, dtype=torch.float64)
    xp[:, :H, :W] = x
    qkv = xp @ attn.qkv.weight.T + attn.qkv.bias               # [B, Hp, Wp, 3*dim]
    q, k, v = qkv.split(dim, dim=-1)
    def heads_first(t):
        return t.reshape(2, Hp, Wp, heads, dim // heads).permute(0, 3, 1, 2, 4)
    with torch.no_grad():
        o, a = na2d_slow(heads_first(q), heads_first(k), heads_first(v), kernel, dilation,
                         attn.rpb, scale=(dim // heads) ** -0.5)
    o = o.permute(0, 2, 3, 1, 4).reshape(2, Hp, Wp, dim)[:, :H, :W]
    want = o @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    torch.testing.assert_close(got_attn, a[:, :, :H, :W], rtol=0, atol=1e-10)


def test_no_padding_when_the_map_is_large_enough():
    torch.manual_seed(0)
    attn = NeighborhoodAttention2D(8, 2, 3, 2).double().eval()
    x = torch.randn(1, 6, 7, 8, dtype=torch.float64)
    with torch.no_grad():
        got = attn(x)[0]
        qkv = x @ attn.qkv.weight.T + attn.qkv.bias
        q, k, v = (t.reshape(1, 6, 7, 2, 4).permute(0, 3, 1, 2, 4) for t in qkv.split(8, -1))
        o, _ = na2d_slow(q, k, v, 3, 2, attn.rpb)
        want = o.permute(0, 2, 3, 1, 4).reshape(1, 6, 7, 8) @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


# ----------------------------------------------------------------------- classification loss
def _classifier(num_labels, problem_type=None):
    torch.manual_seed(0)
    cfg = small_config(num_labels=num_labels, problem_type=problem_type)
    return DinatForImageClassification(cfg).eval()


def test_classifier_logits_are_the_head_on_the_pooled_output():
    model = _classifier(5)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        pooled = DinatModel.forward(model, x).pooler_output
    assert tuple(out.logits.shape) == (3, 5) and out.loss is None
    torch.testing.assert_close(out.logits, pooled @ model.head.weight.T + model.head.bias)


def test_loss_regression_for_one_label():
    model = _classifier(1)
    x, y = torch.randn(3, 3, 32, 32), torch.randn(3)
    out = model(x, labels=y)
    want = ((out.logits[:, 0] - y) ** 2).mean()
    torch.testing.assert_close(out.loss, want)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.squeeze(), y.squeeze()))


def test_loss_single_label_cross_entropy_for_integer_labels():
    model = _classifier(4)
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([0, 3, 1])
    out = model(x, labels=y)
    logp = out.logits.log_softmax(-1)
    want = -logp[torch.arange(3), y].mean()
    torch.testing.assert_close(out.loss, want)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, y))
    # int32 labels are single-label too (transformers: long or int).
    torch.testing.assert_close(model(x, labels=y.int()).loss, want)


def test_loss_multi_label_bce_for_float_labels():
    model = _classifier(4)
    x = torch.randn(3, 3, 32, 32)
    y = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1]], dtype=torch.float32)
    out = model(x, labels=y)
    p = torch.sigmoid(out.logits)
    want = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    torch.testing.assert_close(out.loss, want)
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, y))


def test_loss_explicit_problem_type_wins():
    x = torch.randn(2, 3, 32, 32)
    model = _classifier(3, "regression")
    y = torch.randn(2, 3)
    out = model(x, labels=y)
    torch.testing.assert_close(out.loss, ((out.logits - y) ** 2).mean())
    model = _classifier(3, "multi_label_classification")
    y = torch.tensor([[1, 0, 1], [0, 1, 0]])              # integer multi-hot labels
    out = model(x, labels=y)
    torch.testing.assert_close(out.loss,
                               F.binary_cross_entropy_with_logits(out.logits, y.float()))
    model = _classifier(3, "single_label_classification")
    y = torch.tensor([2, 0])
    out = model(x, labels=y)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, y))


def test_loss_backpropagates_and_tuple_output_starts_with_loss():
    model = _classifier(4)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    loss, logits = model(x, labels=y, return_dict=False)
    loss.backward()
    assert tuple(logits.shape) == (2, 4)
    assert model.head.weight.grad is not None
    assert model.patch_embed.proj[0].weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------- drop path, checkpointing
def test_drop_path_is_per_sample_and_rescaled():
    torch.manual_seed(0)
    dp = DropPath(0.5).train()
    y = dp(torch.ones(4000, 3, 2))
    per_sample = y.reshape(4000, -1)
    assert ((per_sample == 0).all(1) | (per_sample == 2).all(1)).all()   # dropped or 1/keep
    kept = (per_sample[:, 0] == 2).float().mean().item()
    assert abs(kept - 0.5) < 0.05
    assert torch.equal(dp.eval()(torch.ones(3, 2)), torch.ones(3, 2))


def test_drop_path_rates_increase_linearly_per_layer():
    model = DinatModel(small_config(drop_path_rate=0.3, depths=[1, 2, 3, 1],
                                    dilations=[[1], [1, 1], [1, 1, 1], [1]]))
    rates = [m.drop_path.p for m in model.modules() if isinstance(m, NALayer)]
    n = 7
    assert rates == pytest.approx([0.3 * i / (n - 1) for i in range(n)], abs=1e-7)


def test_drop_path_stochastic_in_train_identity_in_eval():
    torch.manual_seed(0)
    model = DinatModel(small_config(drop_path_rate=0.5))
    ref = DinatModel(small_config(drop_path_rate=0.0))
    ref.load_state_dict(model.state_dict())
    x = torch.randn(4, 3, 32, 32)
    model.train()
    with torch.no_grad():
        a, b = model(x).last_hidden_state, model(x).last_hidden_state
    assert not torch.allclose(a, b)
    model.eval()
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x).last_hidden_state, ref(x).last_hidden_state,
                                   rtol=0, atol=0)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    cfg = small_config(drop_path_rate=0.2)
    plain = DinatModel(cfg).train()
    ckpt = DinatModel(small_config(drop_path_rate=0.2, gradient_checkpointing=True)).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for m in (plain, ckpt):
        torch.manual_seed(1)                  # same drop-path draws in both
        m.zero_grad()
        m(x).last_hidden_state.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-7, msg=n)
    assert any(g.abs().sum() > 0 for g in grads[1].values())
    # and it can be switched on for a built model
    plain.set_gradient_checkpointing(True)
    assert all(lv.gradient_checkpointing for lv in plain.levels)


def test_layer_scale_parameters_follow_the_config():
    m = DinatModel(small_config(layer_scale_init_value=1e-5))
    g = dict(m.named_parameters())
    assert "levels.0.blocks.0.gamma1" in g and "levels.3.blocks.0.gamma2" in g
    assert torch.equal(g["levels.1.blocks.1.gamma1"], torch.full((32,), 1e-5))
    assert not any("gamma" in n for n, _ in DinatModel(small_config()).named_parameters())


def test_weight_init_follows_initializer_range():
    torch.manual_seed(0)
    m = DinatModel(small_config(embed_dim=64, initializer_range=0.05))
    w = m.levels[2].blocks[0].mlp.fc1.weight            # 256 x 768 samples
    assert abs(w.std().item() - 0.05) < 0.005 * 2 and w.abs().max() <= 2.0 + 1e-6
    assert not m.levels[2].blocks[0].mlp.fc1.bias.any()
    assert torch.equal(m.norm.weight, torch.ones(512))
    rpb = torch.cat([p.reshape(-1) for n, p in m.named_parameters() if n.endswith("rpb")])
    assert math.isclose(rpb.std().item(), 0.05, rel_tol=0.25)


# ----------------------------------------------------------------------- init, activations
def test_init_dinat_weights_and_the_deprecated_init_weights_alias():
    torch.manual_seed(3)
    a = DinatModel(small_config())
    b = DinatModel(small_config())
    torch.manual_seed(5)
    a.init_dinat_weights()
    torch.manual_seed(5)
    with pytest.warns(DeprecationWarning, match="init_dinat_weights"):
        b.init_weights()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)


def test_construction_never_calls_init_weights():
    # A framework's base class (mmengine's BaseModule) gives init_weights its own meaning; a
    # subclass that overrides it must not be entered while the model is built.
    from dinat_backbone import DinatBackbone

    class Framework(DinatBackbone):
        def init_weights(self):
            raise AssertionError("init_weights called during construction")

    m = Framework(small_config())
    assert torch.equal(m.norm0.weight, torch.ones(16))        # the DiNAT init still ran


def _quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def _tanh_gelu(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


ACT_ORACLE = {
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "gelu_new": _tanh_gelu, "gelu_fast": _tanh_gelu, "gelu_pytorch_tanh": _tanh_gelu,
    "quick_gelu": _quick_gelu,
    "relu": lambda x: x.clamp(min=0),
    "silu": lambda x: x * torch.sigmoid(x), "swish": lambda x: x * torch.sigmoid(x),
    "tanh": torch.tanh,
    "mish": lambda x: x * torch.tanh(torch.log1p(torch.exp(x))),
}


def test_every_configurable_activation_builds_and_computes_its_formula():
    from dinat_backbone.config import ACTIVATIONS
    from dinat_backbone.modeling import activation

    assert set(ACTIVATIONS) == set(ACT_ORACLE)
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    for name in ACTIVATIONS:
        DinatConfig(hidden_act=name)                           # the config accepts it
        torch.testing.assert_close(activation(name)(x), ACT_ORACLE[name](x), msg=name)
    torch.testing.assert_close(activation("GELU")(x), ACT_ORACLE["gelu"](x))
    with pytest.raises(ValueError, match="hidden_act='gelu2'"):
        activation("gelu2")
