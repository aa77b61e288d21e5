"""DinatBackbone: names, channels, strides and sizes of its NCHW outputs, per-output LayerNorms,
frozen stages (no gradients, eval mode kept after .train()), drop path, gradient checkpointing.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from dinat_backbone import DinatBackbone, DinatConfig, DinatForImageClassification, DinatModel
from dinat_backbone.backbone import NO_WEIGHT_DECAY_PATTERNS, is_no_weight_decay
from dinat_backbone.modeling import DropPath, NALayer, NeighborhoodAttention2D
from model_helpers import small_config


pytestmark = pytest.mark.usefixtures("one_thread")


ALL = ["stem", "stage1", "stage2", "stage3", "stage4"]


def ceil_half(n, times):
    for _ in range(times):
        n = (n + 1) // 2
    return n


def test_default_outputs_channels_and_strides():
    bb = DinatBackbone(DinatConfig.from_variant("mini"))
    assert bb.out_features == ["stage1", "stage2", "stage3", "stage4"]
    assert bb.channels == [64, 128, 256, 512]
    assert bb.strides == [4, 8, 16, 32]
    assert bb.feature_info == [dict(name=n, num_chs=c, reduction=s, module=m) for n, c, s, m in
                               zip(bb.out_features, [64, 128, 256, 512], [4, 8, 16, 32],
                                   ["norm0", "norm1", "norm2", "norm3"])]
    # the authors' dense-prediction norm names
    names = {n for n, _ in bb.named_modules()}
    assert {"norm0", "norm1", "norm2", "norm3"} <= names and "norm_stem" not in names


def test_outputs_per_name_on_an_odd_input():
    torch.manual_seed(0)
    bb = DinatBackbone(small_config(embed_dim=32), out_features=ALL).eval()
    H, W = 97, 131
    with torch.no_grad():
        outs = bb(torch.randn(2, 3, H, W))
    assert list(outs) == ALL
    steps = dict(stem=2, stage1=2, stage2=3, stage3=4, stage4=5)
    chans = dict(stem=32, stage1=32, stage2=64, stage3=128, stage4=256)
    strides = dict(stem=4, stage1=4, stage2=8, stage3=16, stage4=32)
    assert bb.channels == [chans[n] for n in ALL] and bb.strides == [strides[n] for n in ALL]
    for n, t in outs.items():
        size = (ceil_half(H, steps[n]), ceil_half(W, steps[n]))
        assert tuple(t.shape) == (2, chans[n]) + size, n
        assert bb.output_size(H, W, n) == size
        assert t.is_contiguous()
    # hand-written: 97 -> 49 -> 25 -> 13 -> 7 -> 4, 131 -> 66 -> 33 -> 17 -> 9 -> 5
    assert [bb.output_size(97, 131, n) for n in ALL] == [(25, 33), (25, 33), (13, 17), (7, 9),
                                                         (4, 5)]


@pytest.mark.parametrize("hw,sizes", [((32, 32), [(8, 8), (4, 4), (2, 2), (1, 1)]),
                                      ((1, 1), [(1, 1)] * 4)])
def test_tiny_inputs_with_real_mini_dilations(hw, sizes):
    torch.manual_seed(0)
    bb = DinatBackbone(DinatConfig.from_variant("mini")).eval()
    with torch.no_grad():
        outs = bb(torch.randn(1, 3, *hw))
    assert [tuple(t.shape[2:]) for t in outs.values()] == sizes
    assert all(torch.isfinite(t).all() for t in outs.values())


def test_feature_info_module_is_the_module_that_produces_the_output():
    # timm's "module": a forward hook on it sees each output (channels-last, before NCHW).
    torch.manual_seed(0)
    bb = DinatBackbone(small_config(), out_features=ALL).eval()
    modules = dict(bb.named_modules())
    seen = {}
    for info in bb.feature_info:
        modules[info["module"]].register_forward_hook(
            lambda m, a, o, name=info["name"]: seen.__setitem__(name, o))
    with torch.no_grad():
        outs = bb(torch.randn(1, 3, 40, 56))
    assert [i["name"] for i in bb.feature_info] == ALL
    for name, t in outs.items():
        torch.testing.assert_close(seen[name].permute(0, 3, 1, 2), t, rtol=0, atol=0)


@pytest.mark.parametrize("depths,heads", [([1, 1, 1], [1, 2, 2]),
                                          ([1, 1, 1, 1, 1], [1, 1, 2, 2, 4])])
def test_strides_follow_the_number_of_stages(depths, heads):
    # Strides by hand: the stem and stage1 at 4, then doubling per stage.
    cfg = DinatConfig(embed_dim=8, depths=depths, num_heads=heads, kernel_size=3,
                      dilations=[[1]] * len(depths), drop_path_rate=0.0)
    names = ["stem"] + [f"stage{i + 1}" for i in range(len(depths))]
    bb = DinatBackbone(cfg, out_features=names).eval()
    want = {3: [4, 4, 8, 16], 5: [4, 4, 8, 16, 32, 64]}[len(depths)]
    assert bb.strides == want
    assert bb.channels == [8] + [8 * 2 ** i for i in range(len(depths))]
    with torch.no_grad():
        outs = bb(torch.randn(1, 3, 200, 136))
    for (name, t), s in zip(outs.items(), want):
        assert tuple(t.shape[2:]) == (math.ceil(200 / s), math.ceil(136 / s)), name
        assert bb.output_size(200, 136, name) == tuple(t.shape[2:])
    with pytest.raises(ValueError, match="unknown output 'res4'"):
        bb.output_size(10, 10, "res4")


def _decay_oracle(model):
    """Parameter names without weight decay by module type: LayerNorms and RPB tables."""
    out = set()
    for mname, m in model.named_modules():
        prefix = f"{mname}." if mname else ""
        if isinstance(m, torch.nn.LayerNorm):
            out |= {prefix + n for n, _ in m.named_parameters(recurse=False)}
        if isinstance(m, NeighborhoodAttention2D):
            out.add(prefix + "rpb")
    return out


@pytest.mark.parametrize("build", [
    lambda: DinatBackbone(small_config(layer_scale_init_value=1e-5), out_features=ALL),
    lambda: DinatForImageClassification(small_config(num_labels=5)),
], ids=["backbone-all-outputs", "classifier"])
def test_no_weight_decay_policy_is_layernorms_and_rpb(build):
    model = build()
    names = [n for n, _ in model.named_parameters()]
    want = _decay_oracle(model)
    assert {n for n in names if is_no_weight_decay(n)} == want
    # inside a detector the names carry a prefix; the policy does not depend on it
    assert {n for n in names if is_no_weight_decay("backbone.bottom_up." + n)} == want
    # biases, layer-scale gammas and the head decay (the authors' recipe)
    assert not is_no_weight_decay("levels.0.blocks.0.attn.qkv.bias")
    assert not is_no_weight_decay("levels.0.blocks.0.gamma1")
    assert DinatBackbone.no_weight_decay_patterns() == NO_WEIGHT_DECAY_PATTERNS
    for p in NO_WEIGHT_DECAY_PATTERNS:                       # no dead pattern
        assert any(p in n for n in want), p


def test_outputs_are_the_trunk_stage_maps_through_their_own_norms():
    # Same weights in DinatModel and DinatBackbone: stage4 (no downsampler) of the backbone is
    # norm3(last hidden state); stage3 downsampled by the model's downsampler is hidden_states[3].
    torch.manual_seed(0)
    cfg = small_config()
    model = DinatModel(cfg).eval()
    bb = DinatBackbone(cfg, out_features=["stage3", "stage4"]).eval()
    missing, unexpected = bb.load_state_dict(model.state_dict(), strict=False)
    assert set(missing) == {"norm2.weight", "norm2.bias", "norm3.weight", "norm3.bias"}
    assert set(unexpected) == {"norm.weight", "norm.bias"}
    with torch.no_grad():
        bb.norm3.weight.normal_()
        bb.norm3.bias.normal_()
        bb.norm2 = torch.nn.Identity()          # expose the pre-norm stage3 map
        x = torch.randn(2, 3, 64, 48)
        hs = model(x, output_hidden_states=True).hidden_states
        outs = bb(x)
        down3 = model.levels[2].downsample(outs["stage3"].permute(0, 2, 3, 1))
    want = F.layer_norm(hs[-1], (128,), bb.norm3.weight, bb.norm3.bias, cfg.layer_norm_eps)
    torch.testing.assert_close(outs["stage4"], want.permute(0, 3, 1, 2))
    torch.testing.assert_close(down3, hs[3])


def test_later_stages_are_not_computed_when_not_requested():
    torch.manual_seed(0)
    bb = DinatBackbone(small_config(), out_features=["stem", "stage2"]).eval()
    calls = []
    for i, lv in enumerate(bb.levels):
        lv.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
    with torch.no_grad():
        outs = bb(torch.randn(1, 3, 32, 32))
    assert list(outs) == ["stem", "stage2"] and calls == [0, 1]
    assert {n for n, _ in bb.named_modules()} >= {"norm_stem", "norm1"}


def test_bad_out_features_raise():
    with pytest.raises(ValueError, match="out_features"):
        DinatBackbone(small_config(), out_features=["stage5"])
    with pytest.raises(ValueError, match="frozen_stages"):
        DinatBackbone(small_config(), frozen_stages=7)


# ----------------------------------------------------------------------- freezing
@pytest.mark.parametrize("frozen", [-1, 0, 1, 2, 4])
def test_frozen_stages_stop_gradients_and_stay_in_eval(frozen):
    torch.manual_seed(0)
    bb = DinatBackbone(small_config(drop_path_rate=0.3), out_features=ALL, frozen_stages=frozen)
    bb.train()
    frozen_prefixes = (["patch_embed.", "norm_stem."] if frozen >= 0 else []) + [
        p for i in range(max(frozen, 0)) for p in (f"levels.{i}.", f"norm{i}.")]

    def is_frozen(name):
        return name.startswith(tuple(frozen_prefixes))

    for n, p in bb.named_parameters():
        assert p.requires_grad == (not is_frozen(n)), n
    for n, m in bb.named_modules():
        if n and is_frozen(n + "."):
            assert not m.training, n                    # kept in eval after .train()
        elif n and not any(is_frozen(n + "." + c) for c, _ in m.named_modules()):
            assert m.training, n
    outs = bb(torch.randn(2, 3, 32, 32))
    loss = sum(t.square().mean() for t in outs.values())
    if frozen == 4:                                     # everything frozen: nothing to train
        assert not loss.requires_grad
        return
    loss.backward()
    for n, p in bb.named_parameters():
        if is_frozen(n):
            assert p.grad is None, n
        else:
            assert p.grad is not None, n


def test_frozen_stages_have_no_drop_path_in_training():
    # Frozen stages are in eval mode: their outputs are deterministic in bb.train(), while the
    # trainable stages still drop paths.
    torch.manual_seed(0)
    bb = DinatBackbone(small_config(drop_path_rate=0.9), out_features=ALL, frozen_stages=2)
    bb.train()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        a, b = bb(x), bb(x)
    torch.testing.assert_close(a["stage1"], b["stage1"], rtol=0, atol=0)
    torch.testing.assert_close(a["stage2"], b["stage2"], rtol=0, atol=0)
    assert not torch.allclose(a["stage4"], b["stage4"])


def test_frozen_stages_from_the_config():
    bb = DinatBackbone(small_config(frozen_stages=1))
    assert not any(p.requires_grad for p in bb.levels[0].parameters())
    assert all(p.requires_grad for p in bb.levels[1].parameters())


# ----------------------------------------------------------------------- drop path, checkpointing
def test_drop_path_rate_honoured():
    bb = DinatBackbone(small_config(drop_path_rate=0.4, depths=[2, 2, 2, 2],
                                    dilations=[[1, 1]] * 4))
    rates = [m.drop_path.p for m in bb.modules() if isinstance(m, NALayer)]
    assert rates == pytest.approx([0.4 * i / 7 for i in range(8)], abs=1e-7)
    assert all(isinstance(m.drop_path, DropPath) for m in bb.modules() if isinstance(m, NALayer))
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    bb.train()
    with torch.no_grad():
        assert not torch.allclose(bb(x)["stage4"], bb(x)["stage4"])
    bb.eval()
    with torch.no_grad():
        torch.testing.assert_close(bb(x)["stage4"], bb(x)["stage4"], rtol=0, atol=0)


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(0)
    plain = DinatBackbone(small_config(drop_path_rate=0.2)).train()
    ckpt = DinatBackbone(small_config(drop_path_rate=0.2, gradient_checkpointing=True)).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for m in (plain, ckpt):
        torch.manual_seed(3)
        sum(t.square().mean() for t in m(x).values()).backward()
        grads.append({n: p.grad for n, p in m.named_parameters()})
    for n, g in grads[0].items():
        torch.testing.assert_close(grads[1][n], g, rtol=1e-5, atol=1e-7, msg=n)
