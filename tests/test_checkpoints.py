"""Checkpoint formats, conversion, loading and refusal (dinat_backbone/weights/, also reached
through the old import path dinat_backbone.checkpoints).

The key names of each released format are recorded in tests/data/checkpoint_keys.json, each
section with the source (repository, file) it was read from; those lists are the oracle here,
not this project's own model. The numeric oracle (transformers' Dinat) is in
test_transformers_oracle.py.
"""
import argparse
import ast
import importlib.util
import json
import os
import pathlib
import pickle
import shutil
import subprocess
import sys

import pytest
import torch

from dinat_backbone import (DinatBackbone, DinatConfig, DinatForImageClassification,
                            DinatModel)
from dinat_backbone import checkpoints as ck

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "tests", "data", "checkpoint_keys.json"), encoding="utf-8") as f:
    KEYS = json.load(f)

MINI = dict(embed_dim=64, depths=[3, 4, 6, 5], num_heads=[2, 4, 8, 16], kernel_size=7,
            mlp_ratio=3.0)


def tiny_config(**kw):
    d = dict(embed_dim=16, depths=[1, 2, 2, 1], num_heads=[1, 2, 2, 4],
             dilations=[[1], [1, 2], [2, 1], [1]], kernel_size=3, num_labels=5,
             layer_scale_init_value=1e-5, drop_path_rate=0.0)
    d.update(kw)
    return DinatConfig(**d)


def randomised(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def fake_weights(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(tuple(s), generator=g) for k, s in shapes.items()}


def assert_same(a, b):
    assert set(a) == set(b), (sorted(set(a) ^ set(b))[:10])
    for k in a:
        assert a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k


def load_tool():
    spec = importlib.util.spec_from_file_location(
        "convert_weights", os.path.join(ROOT, "tools", "convert_weights.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------- names vs. sources
@pytest.fixture
def no_init(monkeypatch):
    """Names and shapes only: skip the (slow) weight initialisation of full-size variants."""
    from dinat_backbone.modeling import DinatPreTrainedModel

    monkeypatch.setattr(DinatPreTrainedModel, "init_weights", lambda self: None)
    monkeypatch.setattr(DinatPreTrainedModel, "_init_weights", lambda self, m: None)


def test_model_names_equal_authors_classification_checkpoint(no_init):
    model = DinatForImageClassification(DinatConfig.from_variant("mini"))
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert got == KEYS["authors_classification"]["keys"]
    # layer scale (dinat_base): gamma1 / gamma2 per layer, by the formula that builds the model
    base = ck.expected_shapes(DinatConfig.from_variant("base"))
    for k, s in KEYS["authors_classification_base_layer_scale"]["keys"].items():
        assert list(base[k]) == s, k
    k11 = ck.expected_shapes(DinatConfig.from_variant("large_k11"))
    for k, s in KEYS["authors_classification_large_11x11_rpb"]["keys"].items():
        assert list(k11[k]) == s, k


def test_backbone_names_equal_authors_dense_checkpoints(no_init):
    bb = DinatBackbone(DinatConfig.from_variant("mini"))
    got = {"backbone." + k: list(v.shape) for k, v in bb.state_dict().items()}
    assert got == KEYS["authors_mmdet_mmseg"]["keys"]
    assert got == KEYS["authors_mask2former"]["keys"]


@pytest.mark.parametrize("section,fmt,prefix", [
    ("authors_classification", "dinat", ""),
    ("authors_mmdet_mmseg", "mmengine", "backbone."),
    ("authors_mask2former", "mmengine", "backbone."),
    ("transformers_classification", "transformers", "dinat."),
])
def test_detect_format_and_infer_variant_of_released_layouts(section, fmt, prefix):
    sd = fake_weights(KEYS[section]["keys"])
    sd["neck.fpn_convs.0.conv.weight"] = torch.zeros(1)  # other modules are ignored
    assert ck.detect_format(sd) == fmt
    assert ck.find_backbone(sd)[1] == prefix
    cfg = ck.infer_config(sd)
    for k, v in MINI.items():
        assert getattr(cfg, k) == v, k
    assert cfg.variant == "mini"
    assert cfg.layer_scale_init_value == 0
    assert cfg.dilations == [[1, 8, 1], [1, 4, 1, 4], [1, 2, 1, 2, 1, 2], [1, 1, 1, 1, 1]]


def test_detect_detectron2_prefix():
    sd = {KEYS["detectron2_fpn"]["example_key"]: torch.zeros(3)}
    sd["backbone.bottom_up.patch_embed.proj.0.weight"] = torch.zeros(8, 3, 3, 3)
    assert ck.detect_format(sd) == "detectron2"
    assert ck.find_backbone(sd) == ("dinat", "backbone.bottom_up.")


def test_transformers_layout_converts_to_authors_names():
    hf = fake_weights(KEYS["transformers_classification"]["keys"])
    ours, cfg = ck.convert_state_dict(hf)
    want = KEYS["authors_classification"]["keys"]
    assert {k: list(v.shape) for k, v in ours.items()} == want
    # fused qkv = [query; key; value] along the output dimension (NATTEN's reshape(3, heads, D))
    p = "dinat.encoder.levels.2.layers.1.attention.self."
    torch.testing.assert_close(ours["levels.2.blocks.1.attn.qkv.weight"], torch.cat(
        [hf[p + "query.weight"], hf[p + "key.weight"], hf[p + "value.weight"]]), rtol=0, atol=0)
    assert torch.equal(ours["head.weight"], hf["classifier.weight"])
    assert torch.equal(ours["norm.bias"], hf["dinat.layernorm.bias"])
    # layer scale: transformers' [2, dim] rows are the authors' gamma1 / gamma2
    ls = KEYS["transformers_model_layer_scale"]["keys"]
    assert ls["encoder.levels.0.layers.0.layer_scale_parameters"] == [2, 64]
    norms = KEYS["transformers_backbone_norms"]["keys"]
    assert set(norms) == {f"hidden_states_norms.{s}.{w}" for s in
                          ("stem", "stage1", "stage2", "stage3", "stage4")
                          for w in ("weight", "bias")}


# ------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("cls", [DinatForImageClassification, DinatBackbone])
def test_round_trip_authors_and_transformers(cls):
    cfg = tiny_config(out_features=["stem", "stage1", "stage2", "stage3", "stage4"])
    sd = randomised(cls(cfg)).state_dict()
    authors = ck.to_authors(sd)
    back, _ = ck.convert_state_dict(authors)
    if cls is DinatForImageClassification:
        assert_same(back, sd)
    else:  # the authors' classification layout has no per-output norms
        assert_same(back, {k: v for k, v in sd.items() if not k.startswith("norm")})
    kind = "classification" if cls is DinatForImageClassification else "backbone"
    hf = ck.to_transformers(sd, kind)
    assert ck.detect_format(hf) == "transformers"
    back, inferred = ck.convert_state_dict(hf)
    assert_same(back, sd)
    assert inferred.layer_scale_init_value > 0 and inferred.kernel_size == 3
    assert inferred.depths == cfg.depths and inferred.num_heads == cfg.num_heads


def test_converted_files_load_into_backbone(tmp_path):
    cfg = tiny_config()
    src = randomised(DinatForImageClassification(cfg))
    torch.save(src.state_dict(), tmp_path / "cls.pth")
    cfg.save_pretrained(str(tmp_path / "cfg"))
    tool = load_tool()
    trunk = {k: v for k, v in src.state_dict().items() if k.startswith(("patch_embed", "levels"))}
    for to, name, prefix in [("mmengine", "mm.pth", "backbone."),
                             ("detectron2", "d2.pth", "backbone.bottom_up."),
                             ("detectron2", "d2.pkl", "backbone.bottom_up."),
                             ("detectron2", "m2f.pth", "backbone.")]:
        argv = [str(tmp_path / "cls.pth"), str(tmp_path / name), "--to", to]
        if name.startswith("m2f"):
            argv += ["--prefix", prefix]
        assert tool.main(argv) == 0
        raw = ck.load_checkpoint_file(tmp_path / name)
        inner = raw["state_dict"] if to == "mmengine" else raw["model"]
        assert all(k.startswith(prefix) for k in inner) and len(inner) == len(trunk)
        bb = DinatBackbone(cfg)
        rep = ck.load_pretrained(bb, str(tmp_path / name))
        assert rep.missing_backbone_keys == [] and rep.unexpected_backbone_keys == []
        assert sorted(rep.newly_initialized) == sorted(
            f"norm{i}.{w}" for i in range(4) for w in ("weight", "bias"))
        assert_same({k: v for k, v in bb.state_dict().items() if k in trunk}, trunk)
    # --to dinat (folder: weights + config.json) and --to transformers, then back
    # (dilations are not in the weights: without --config the preset would be used)
    assert tool.main([str(tmp_path / "cls.pth"), str(tmp_path / "dinat_dir"), "--to", "dinat",
                      "--config", str(tmp_path / "cfg" / "config.json")]) == 0
    assert tool.main([str(tmp_path / "dinat_dir"), str(tmp_path / "hf"), "--to",
                      "transformers"]) == 0
    m = DinatForImageClassification.from_pretrained(str(tmp_path / "hf"))
    assert m.loading_report.format == "transformers"
    assert_same(m.state_dict(), src.state_dict())
    x = torch.randn(1, 3, 40, 56)
    torch.testing.assert_close(m(x).logits, src(x).logits, rtol=0, atol=0)


def test_authors_mask2former_pickle_of_classification_weights(tmp_path):
    """mask2former/tools/convert-pretrained-dinat-model-to-d2.py pickles the classification
    state dict (tensors) with '__author__' / 'matching_heuristics'; detectron2 pkl files of
    numpy arrays go through the same restricted reader."""
    cfg = tiny_config()
    sd = randomised(DinatForImageClassification(cfg)).state_dict()
    with open(tmp_path / "m2f.pkl", "wb") as f:
        pickle.dump({"model": sd, "__author__": "third_party", "matching_heuristics": True}, f)
    with open(tmp_path / "np.pkl", "wb") as f:
        pickle.dump({"model": {"backbone." + k: v.numpy() for k, v in sd.items()},
                     "__author__": "Detectron2 Model Zoo"}, f, protocol=2)
    for name, fmt in (("m2f.pkl", "dinat"), ("np.pkl", "mmengine")):
        bb = DinatBackbone(cfg)
        rep = ck.load_pretrained(bb, str(tmp_path / name))
        assert rep.format == fmt and rep.missing_backbone_keys == []
        assert torch.equal(bb.state_dict()["levels.1.blocks.1.attn.rpb"],
                           sd["levels.1.blocks.1.attn.rpb"])


# ------------------------------------------------------------------------- loading rules
def test_backbone_strict_report_one_message():
    cfg = tiny_config()
    sd = DinatForImageClassification(cfg).state_dict()
    del sd["levels.1.blocks.0.attn.rpb"]
    sd["levels.1.blocks.0.attn.extra_table"] = torch.zeros(2)
    with pytest.raises(ValueError) as e:
        ck.load_pretrained(DinatBackbone(cfg), sd)
    msg = str(e.value)
    assert "does not fit this DinatBackbone" in msg
    assert "1 missing keys (in this DinatBackbone, not in the checkpoint): " \
           "levels.1.blocks.0.attn.rpb [2, 5, 5]" in msg
    assert "1 unexpected keys (in the checkpoint, not in this DinatBackbone): " \
           "levels.1.blocks.0.attn.extra_table [2]" in msg
    assert "pass strict=False" in msg
    rep = ck.load_pretrained(DinatBackbone(cfg), sd, strict=False)
    assert rep.missing_backbone_keys == ["levels.1.blocks.0.attn.rpb"]
    assert rep.unexpected_backbone_keys == ["levels.1.blocks.0.attn.extra_table"]


def test_head_optional_and_new_head_for_other_classes():
    cfg = tiny_config()
    src = randomised(DinatForImageClassification(cfg)).state_dict()
    # a dense-prediction checkpoint (no head, no final norm) into the classifier
    dense = {k: v for k, v in src.items() if not k.startswith(("head", "norm."))}
    m = DinatForImageClassification(cfg)
    rep = ck.load_pretrained(m, dense)
    assert sorted(rep.newly_initialized) == ["head.bias", "head.weight", "norm.bias",
                                             "norm.weight"]
    # another number of classes: the trunk loads, the head starts new, and it is reported
    m10 = DinatForImageClassification(cfg.copy(num_labels=10))
    rep = ck.load_pretrained(m10, src)
    assert "head.weight" in rep.newly_initialized and any("number of classes" in n
                                                          for n in rep.notes)
    assert torch.equal(m10.state_dict()["levels.0.blocks.0.attn.qkv.weight"],
                       src["levels.0.blocks.0.attn.qkv.weight"])
    # the classifier's own head loads when it fits
    m5 = DinatForImageClassification(cfg)
    ck.load_pretrained(m5, src)
    assert torch.equal(m5.head.weight, src["head.weight"])


def test_wrong_variant_is_one_error_with_keys_and_shapes():
    small = tiny_config()
    sd = DinatForImageClassification(small).state_dict()
    other = tiny_config(embed_dim=32)
    with pytest.raises(ValueError) as e:
        ck.load_pretrained(DinatBackbone(other), sd)
    msg = str(e.value)
    assert "patch_embed.proj.0.weight: checkpoint [8, 3, 3, 3] vs this DinatBackbone " \
           "[16, 3, 3, 3]" in msg
    assert "embed_dim=16" in msg
    deeper = tiny_config(depths=[1, 2, 3, 1], dilations=[[1], [1, 2], [2, 1, 2], [1]])
    # the same check, and the same message, for a config and for a model
    with pytest.raises(ValueError, match=r"does not fit the config: 15 missing keys \(in the "
                       r"config, not in the checkpoint\): levels\.2\.blocks\.2\.norm1\.weight \[64\]"):
        ck.convert_state_dict(sd, deeper)
    with pytest.raises(ValueError, match=r"does not fit this DinatModel: \d+ missing keys "
                       r".*levels\.2\.blocks\.2\.norm1\.weight \[64\].*The checkpoint is "
                       r"embed_dim=16, depths=\[1, 2, 2, 1\].*this DinatModel is embed_dim=16, "
                       r"depths=\[1, 2, 3, 1\]"):
        ck.load_pretrained(DinatModel(deeper), sd)


def test_rpb_resized_for_another_kernel_size():
    cfg = tiny_config()
    sd = randomised(DinatForImageClassification(cfg)).state_dict()
    sd["levels.0.blocks.0.attn.rpb"] = torch.full((1, 5, 5), 0.25)
    big = DinatForImageClassification(cfg.copy(kernel_size=7))
    with pytest.warns(UserWarning, match="kernel size changed from 3 to 7: resized 6 RPB"):
        rep = ck.load_pretrained(big, sd)
    assert len(rep.resized_keys) == 6
    got = big.levels[0].blocks[0].attn.rpb
    assert got.shape == (1, 13, 13)
    torch.testing.assert_close(got, torch.full((1, 13, 13), 0.25))  # bicubic keeps constants
    ramp = torch.arange(25.0).view(1, 5, 5)
    torch.testing.assert_close(ck.resize_rpb(ramp, 3), ramp)  # same size: untouched
    down = ck.resize_rpb(ck.resize_rpb(ramp, 7), 3)  # 5x5 -> 13x13 -> 5x5
    assert (down - ramp).abs().max() < 0.6
    with torch.no_grad():
        big(torch.randn(1, 3, 64, 64))


# ------------------------------------------------------------------------- files
def test_wrappers_ema_and_optimizer(tmp_path):
    cfg = tiny_config()
    model = randomised(DinatForImageClassification(cfg))
    sd = model.state_dict()
    ema = {k: v + 1 for k, v in sd.items()}
    opt = torch.optim.AdamW(model.parameters())
    for p in model.parameters():  # an optimiser state with tensors, as after training
        p.grad = torch.ones_like(p)
    opt.step()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    ema = {k: v + 1 for k, v in sd.items()}
    timm_style = {"epoch": 3, "arch": "dinat_mini", "state_dict": sd, "state_dict_ema": ema,
                  "optimizer": opt.state_dict(), "version": 2, "metric": 81.8,
                  "args": argparse.Namespace(model="dinat_mini", lr=1e-3)}
    torch.save(timm_style, tmp_path / "timm.pth.tar")
    m = DinatForImageClassification(cfg)
    rep = ck.load_pretrained(m, str(tmp_path / "timm.pth.tar"))
    assert_same(m.state_dict(), sd)
    assert any("use_ema=True" in n for n in rep.notes)
    rep = ck.load_pretrained(m, str(tmp_path / "timm.pth.tar"), use_ema=True)
    assert_same(m.state_dict(), ema)
    torch.save({"model_ema": ema}, tmp_path / "ema_only.pth")
    rep = ck.load_pretrained(m, str(tmp_path / "ema_only.pth"))
    assert any("only EMA" in n for n in rep.notes)
    with pytest.raises(ValueError, match="holds no weights: top-level keys"):
        ck.extract_state_dict({"optimizer": opt.state_dict(), "epoch": 1})


def test_truncated_and_foreign_files(tmp_path):
    cfg = tiny_config()
    sd = DinatForImageClassification(cfg).state_dict()
    torch.save(sd, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        ck.load_checkpoint_file(tmp_path / "cut.pth")
    from safetensors.torch import save_file
    save_file(sd, str(tmp_path / "full.safetensors"))
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="truncated"):
        ck.load_checkpoint_file(tmp_path / "cut.safetensors")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        ck.load_checkpoint_file(tmp_path / "empty.pth")
    # another model's weights (a torch Transformer: names and shapes of a different network)
    other = torch.nn.Transformer(d_model=16, nhead=2, num_encoder_layers=1,
                                 num_decoder_layers=1, dim_feedforward=32)
    torch.save({"state_dict": other.state_dict()}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"no DiNAT weights recognised.*encoder\.layers\.0"):
        ck.load_pretrained(DinatBackbone(cfg), str(tmp_path / "other.pth"))
    # safetensors round trip
    m = DinatForImageClassification(cfg)
    ck.load_pretrained(m, str(tmp_path / "full.safetensors"))
    assert_same(m.state_dict(), sd)


class _Payload:
    """Unpickling this runs open(path, 'w'): a stand-in for arbitrary code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickles_are_refused(tmp_path):
    marker = tmp_path / "pwned.txt"
    cfg = tiny_config()
    sd = dict(DinatForImageClassification(cfg).state_dict())
    sd["levels.0.blocks.0.attn.evil"] = _Payload(str(marker))
    torch.save(sd, tmp_path / "evil.pth")
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"model": {"x": _Payload(str(marker))}, "__author__": "x"}, f)
    for name in ("evil.pth", "evil.pkl"):
        with pytest.raises(ValueError, match=r"refused to load.*needs to run code to load "
                                             r"\(it asks for '(io|builtins)\.open'\)"):
            ck.load_pretrained(DinatBackbone(cfg), str(tmp_path / name))
        assert not marker.exists()
    with pytest.raises(ValueError, match="refused"):
        DinatBackbone.from_pretrained(str(tmp_path / "evil.pth"))
    assert not marker.exists()


# ------------------------------------------------------------------------- from_pretrained
def test_from_pretrained_folder_file_and_hub_errors(tmp_path, monkeypatch):
    cfg = tiny_config(dilations=[[1], [2, 1], [1, 2], [1]])
    src = randomised(DinatForImageClassification(cfg))
    x = torch.randn(1, 3, 48, 40)
    # folder with config.json: dilations come from it, outputs are identical
    folder = tmp_path / "ckpt"
    folder.mkdir()
    ck.save_state_dict(src.state_dict(), folder / "model.safetensors")
    cfg.save_pretrained(str(folder))
    m = DinatForImageClassification.from_pretrained(str(folder))
    assert m.config.dilations == cfg.dilations
    torch.testing.assert_close(m.eval()(x).logits, src(x).logits, rtol=0, atol=0)
    # a bare file: the variant from the shapes, dilations from the preset, and a warning
    torch.save({"model": src.state_dict()}, tmp_path / "bare.pth")
    with pytest.warns(UserWarning, match="dilations are not stored"):
        bb, rep = DinatBackbone.from_pretrained(str(tmp_path / "bare.pth"),
                                                output_loading_info=True,
                                                out_features=["stage2", "stage4"])
    assert bb.config.depths == cfg.depths and bb.config.dilations == [[1], [1, 4], [1, 2], [1]]
    assert bb.out_features == ["stage2", "stage4"] and rep.missing_backbone_keys == []
    bb = DinatBackbone.from_pretrained(str(tmp_path / "bare.pth"), dilations=cfg.dilations)
    assert bb.config.dilations == cfg.dilations
    # a Hub id with no network: a clear error naming the files to fetch by hand
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # as with no network
    with pytest.raises(ValueError, match=r"could not fetch.*download 'config\.json' and "
                                         r"'pytorch_model\.bin'"):
        DinatModel.from_pretrained("shi-labs/dinat-mini-in1k-224", cache_dir=str(tmp_path / "c"))
    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", None)
    with pytest.raises(ValueError, match=r"needs huggingface_hub.*pytorch_model\.bin"):
        DinatModel.from_pretrained("shi-labs/dinat-mini-in1k-224")
    with pytest.raises(ValueError, match="neither a file"):
        DinatModel.from_pretrained(str(tmp_path / "nope.pth"))


def test_from_pretrained_initialises_exactly_what_is_missing(tmp_path):
    """from_pretrained skips the initialisation pass and initialises the missing tensors only."""
    cfg = tiny_config(depths=[2, 1, 1, 1], dilations=[[1, 2], [1], [1], [1]], num_labels=300)
    sd = randomised(DinatForImageClassification(cfg)).state_dict()
    gone = ["levels.0.blocks.1.attn.rpb", "levels.1.blocks.0.gamma2",
            "levels.1.blocks.0.mlp.fc1.bias", "head.weight", "head.bias"]
    kept = {k: v for k, v in sd.items() if k not in gone}
    torch.save(kept, tmp_path / "partial.pth")
    m, rep = DinatForImageClassification.from_pretrained(
        str(tmp_path / "partial.pth"), dilations=cfg.dilations, strict=False,
        output_loading_info=True)
    assert sorted(rep.missing_keys) == sorted(gone)
    got = m.state_dict()
    assert all(torch.equal(got[k], v) for k, v in kept.items())
    std = cfg.initializer_range
    assert abs(got["levels.0.blocks.1.attn.rpb"].std().item() - std) < 0.5 * std
    assert abs(got["head.weight"].std().item() - std) < 0.2 * std
    assert torch.equal(got["levels.1.blocks.0.gamma2"],
                       torch.full((32,), cfg.layer_scale_init_value))
    assert not got["levels.1.blocks.0.mlp.fc1.bias"].any() and not got["head.bias"].any()


# ------------------------------------------------------------------------- framework adapters
def test_converted_checkpoint_loads_into_mmengine_adapter(tmp_path):
    pytest.importorskip("mmengine", reason="mmengine not installed (pip install -e .[mm])")
    try:
        from dinat_backbone.mmengine import DiNAT
    except ImportError as e:
        pytest.skip(f"dinat_backbone.mmengine unavailable: {e}")
    cfg = tiny_config()
    src = randomised(DinatForImageClassification(cfg))
    torch.save(src.state_dict(), tmp_path / "cls.pth")
    assert load_tool().main([str(tmp_path / "cls.pth"), str(tmp_path / "mm.pth"),
                             "--to", "mmengine"]) == 0
    kw = {k: v for k, v in cfg.to_dict().items()
          if k in ("embed_dim", "depths", "num_heads", "kernel_size", "dilations", "mlp_ratio")}
    kw["layer_scale"] = cfg.layer_scale_init_value
    for ckpt, prefix in ((tmp_path / "mm.pth", "backbone."), (tmp_path / "cls.pth", None)):
        init = dict(type="Pretrained", checkpoint=str(ckpt))
        if prefix:
            init["prefix"] = prefix
        m = DiNAT(init_cfg=init, **kw)
        m.init_weights()
        got = m.state_dict()
        for k, v in src.state_dict().items():
            if k.startswith(("patch_embed", "levels")):
                assert torch.equal(got[k], v), k


def test_converted_checkpoint_loads_into_detectron2_adapter(tmp_path):
    pytest.importorskip("detectron2", reason="detectron2 not installed (install it as its own "
                        "documentation says; it is not on the package registries)")
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec

    from dinat_backbone.detectron2 import (BACKBONE_PREFIX, DinatCheckpointer, add_dinat_config,
                                           build_dinat_fpn_backbone)

    assert BACKBONE_PREFIX == ck.DEFAULT_DETECTRON2_PREFIX
    cfg = tiny_config()
    src = randomised(DinatForImageClassification(cfg))
    torch.save(src.state_dict(), tmp_path / "cls.pth")
    assert load_tool().main([str(tmp_path / "cls.pth"), str(tmp_path / "d2.pth"),
                             "--to", "detectron2"]) == 0
    d2 = get_cfg()
    add_dinat_config(d2)
    d2.MODEL.DINAT.EMBED_DIM, d2.MODEL.DINAT.DEPTHS = cfg.embed_dim, cfg.depths
    d2.MODEL.DINAT.NUM_HEADS, d2.MODEL.DINAT.KERNEL_SIZE = cfg.num_heads, cfg.kernel_size
    d2.MODEL.DINAT.DILATIONS, d2.MODEL.DINAT.MLP_RATIO = cfg.dilations, cfg.mlp_ratio
    d2.MODEL.DINAT.LAYER_SCALE = cfg.layer_scale_init_value
    d2.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    trunk = {k: v for k, v in src.state_dict().items() if k.startswith(("patch_embed", "levels"))}
    for name in ("d2.pth", "cls.pth"):  # the converted file, and the released layout directly
        model = torch.nn.Module()
        model.backbone = build_dinat_fpn_backbone(d2, ShapeSpec(channels=3))
        DinatCheckpointer(model).load(str(tmp_path / name))
        got = model.state_dict()
        for k, v in trunk.items():
            assert torch.equal(got[BACKBONE_PREFIX + k], v), (name, k)


# ------------------------------------------------------------------------- code-running pickles
class _System:
    """Unpickling this runs os.system('touch <marker>')."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _Touch:
    """Unpickling this runs pathlib.Path(marker).touch() (through builtins.getattr)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (getattr(pathlib.Path(self.marker), "touch").__func__,
                (pathlib.Path(self.marker),))


def _write_evil(tmp_path, name, payload):
    """A checkpoint with real DiNAT weights plus one payload entry, in the format of ``name``."""
    sd = dict(DinatForImageClassification(tiny_config()).state_dict())
    path = tmp_path / name
    if name.endswith(".pkl"):  # detectron2's plain pickle of numpy arrays
        with open(path, "wb") as f:
            pickle.dump({"model": {k: v.numpy() for k, v in sd.items()}, "extra": payload}, f)
    else:
        torch.save({"model": sd, "extra": payload}, path)
    return path


def test_payloads_run_code_when_unpickled_unrestricted(tmp_path):
    """The oracle for the refusal tests below: plain unpickling runs each payload."""
    for payload in (_System(tmp_path / "ran_system"), _Touch(tmp_path / "ran_touch")):
        pickle.loads(pickle.dumps(payload))
        assert os.path.exists(payload.marker)


def _assert_refused(err, path, global_name=None):
    msg = str(err)
    assert isinstance(err, ck.UnsafeCheckpointError) and isinstance(err, ValueError)
    assert err.global_name and (global_name is None or err.global_name == global_name), \
        (err.global_name, global_name)
    for part in (str(path), "refused to load", f"'{err.global_name}'", "was NOT executed",
                 "tools/convert_weights.py", "--trust-pickle"):
        assert part in msg, (part, msg)


@pytest.mark.parametrize("name", ["evil.pth", "evil.pkl"])
@pytest.mark.parametrize("which", ["system", "touch"])
def test_code_running_pickle_refused_by_every_loader(tmp_path, name, which):
    marker = tmp_path / "marker"
    payload = _System(marker) if which == "system" else _Touch(marker)
    path = _write_evil(tmp_path, name, payload)
    folder = tmp_path / "folder"
    folder.mkdir()
    inner = folder / ("model" + path.suffix)
    shutil.copy(path, inner)
    tiny_config().save_pretrained(str(folder))
    cases = [
        (path, lambda: ck.load_checkpoint_file(path)),
        (path, lambda: ck.load_pretrained(DinatBackbone(tiny_config()), str(path))),
        (path, lambda: DinatBackbone.from_pretrained(str(path))),
        (inner, lambda: DinatForImageClassification.from_pretrained(str(folder))),
    ]
    for where, load in cases:
        with pytest.raises(ck.UnsafeCheckpointError) as e:
            load()
        _assert_refused(e.value, where, "posix.system" if which == "system" else None)
        assert not marker.exists()


def test_convert_tool_refuses_code_running_pickle_and_converts_trusted_file(tmp_path):
    marker = tmp_path / "marker"
    evil = _write_evil(tmp_path, "evil.pth", _System(marker))
    tool = os.path.join(ROOT, "tools", "convert_weights.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, tool, str(evil), str(tmp_path / "out.pth"), "--to",
                        "mmengine"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "refused to load" in r.stderr and "'posix.system'" in r.stderr
    assert "--trust-pickle" in r.stderr and not (tmp_path / "out.pth").exists()
    assert not marker.exists()
    # a file the user trusts, holding a harmless global the safe reader does not know
    src = randomised(DinatForImageClassification(tiny_config()))
    torch.save({"model": src.state_dict(), "origin": pathlib.PurePosixPath("/data/run1")},
               tmp_path / "trusted.pth")
    with pytest.raises(ck.UnsafeCheckpointError, match="pathlib"):
        ck.load_checkpoint_file(tmp_path / "trusted.pth")
    assert load_tool().main([str(tmp_path / "trusted.pth"), str(tmp_path / "clean.pth"), "--to",
                             "dinat", "--trust-pickle"]) == 0
    clean = ck.load_checkpoint_file(tmp_path / "clean.pth")  # now loads safely
    assert_same(clean, src.state_dict())


def test_one_allowlist():
    """SAFE_GLOBALS is the only numpy-pickle allowlist in the package (adapters add their own
    framework types through extra_globals, see the next test)."""
    hits = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "dinat_backbone")):
        for f in files:
            if f.endswith(".py"):
                text = open(os.path.join(dirpath, f), encoding="utf-8").read()
                if "_reconstruct" in text:
                    hits.append(os.path.relpath(os.path.join(dirpath, f), ROOT))
    assert hits == [os.path.join("dinat_backbone", "weights", "safe_io.py")], hits
    assert "numpy.core.multiarray._reconstruct" in ck.SAFE_GLOBALS
    assert not any(name.startswith(("os.", "posix.", "builtins.", "subprocess."))
                   for name in ck.SAFE_GLOBALS)


def test_extra_globals_are_allowed_for_one_read(tmp_path):
    obj = {"model": {"w": torch.ones(2)}, "origin": pathlib.PurePosixPath("/x")}
    for name in ("f.pth", "f.pkl"):
        ck.save_state_dict(obj, tmp_path / name)
        with pytest.raises(ck.UnsafeCheckpointError, match="PurePosixPath"):
            ck.load_checkpoint_file(tmp_path / name)
        got = ck.load_checkpoint_file(tmp_path / name, extra_globals=[pathlib.PurePosixPath])
        assert got["origin"] == pathlib.PurePosixPath("/x")
        with pytest.raises(ck.UnsafeCheckpointError):  # the extra was for that one read only
            ck.load_checkpoint_file(tmp_path / name)


def test_save_is_atomic(tmp_path):
    path = tmp_path / "w.pth"
    ck.save_state_dict({"w": torch.ones(3)}, path)
    before = path.read_bytes()
    with pytest.raises(Exception):  # torch.save fails half-way (a lambda cannot be pickled)
        ck.save_state_dict({"w": torch.zeros(1000), "f": lambda: 0}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["w.pth"]


# ------------------------------------------------------------------------- config.json
def _folder_with(tmp_path, config_text):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    src = randomised(DinatForImageClassification(tiny_config()))
    ck.save_state_dict(src.state_dict(), folder / "model.safetensors")
    if config_text is not None:
        (folder / "config.json").write_text(config_text)
    return folder, src


@pytest.mark.parametrize("text,problem", [
    ('{"embed_dim": 16, "depths": [1, 2,', "config.json is present but cannot be read"),
    ('[1, 2, 3]', "holds a list, not a JSON object"),
    ('{"model_type": "swin", "embed_dim": 96}', "describes a 'swin' model"),
    ('{"model_type": "upernet", "backbone_config": {"model_type": "convnext"}}',
     "backbone_config is a 'convnext' backbone"),
    ('{"model_type": "dinat", "embed_dim": 16, "depths": [1, 2, 2, 1], "num_heads": [1, 2, 2, 4],'
     ' "kernel_size": 4}', "does not describe a valid DiNAT"),
    ('{"num_labels": 5}', "no model_type and no DiNAT fields"),
])
def test_unreadable_or_invalid_config_json_is_an_error(tmp_path, text, problem):
    folder, _ = _folder_with(tmp_path, text)
    with pytest.raises(ValueError) as e:
        DinatForImageClassification.from_pretrained(str(folder))
    assert problem in str(e.value) and str(folder / "config.json") in str(e.value)
    with pytest.raises(ValueError, match="config.json"):
        load_tool().main([str(folder), str(tmp_path / "out.pth"), "--to", "mmengine"])


def test_absent_config_json_falls_back_and_says_why(tmp_path):
    folder, src = _folder_with(tmp_path, None)
    with pytest.warns(UserWarning) as rec:
        m = DinatForImageClassification.from_pretrained(str(folder))
    msgs = [str(w.message) for w in rec if "dilations are not stored" in str(w.message)]
    assert len(msgs) == 1 and f"the folder {folder} has no config.json" in msgs[0]
    assert_same(m.state_dict(), src.state_dict())
    with pytest.warns(UserWarning, match="a single weights file was given"):
        DinatForImageClassification.from_pretrained(str(folder / "model.safetensors"))


# ------------------------------------------------------------------------- composite models
COMPOSITE = KEYS["transformers_composite_prefixes"]


def _composite_folder(tmp_path, arch, cfg, bb):
    """The folder transformers' save_pretrained writes for ``arch`` with a DiNAT backbone:
    backbone keys in transformers' DinatBackbone names under the model's prefix, other
    modules beside them, and config.json with the DinatConfig dict as backbone_config."""
    prefix = COMPOSITE["prefixes"][arch]
    sd = {prefix + k: v for k, v in ck.to_transformers(bb.state_dict(), "backbone").items()}
    g = torch.Generator().manual_seed(3)
    for k in ("decode_head.classifier.weight", "auxiliary_head.conv.weight",
              "model.pixel_level_module.decoder.mask_projection.weight",
              "model.transformer_module.decoder.layers.0.fc1.weight", "class_predictor.weight"):
        sd[k] = torch.randn(4, 4, generator=g)
    folder = tmp_path / arch
    folder.mkdir()
    ck.save_state_dict(sd, folder / "model.safetensors")
    backbone_config = ck.transformers_config_dict(cfg, "backbone")
    backbone_config.update(id2label={"0": "LABEL_0", "1": "LABEL_1"},
                           label2id={"LABEL_0": 0, "LABEL_1": 1}, hidden_size=128, num_layers=4,
                           stage_names=["stem", "stage1", "stage2", "stage3", "stage4"])
    outer = {"model_type": COMPOSITE["model_types"][arch], "architectures": [arch],
             "backbone_config": backbone_config, "num_labels": 150, "hidden_size": 256,
             "use_pretrained_backbone": False, "transformers_version": "4.53.3"}
    (folder / "config.json").write_text(json.dumps(outer))
    return folder


@pytest.mark.parametrize("arch", sorted(COMPOSITE["prefixes"]))
def test_composite_transformers_folder_feeds_backbone_and_tool(tmp_path, arch):
    cfg = tiny_config(dilations=[[1], [2, 1], [1, 2], [1]], out_features=["stage2", "stage4"])
    bb = randomised(DinatBackbone(cfg))
    folder = _composite_folder(tmp_path, arch, cfg, bb)
    got, rep = DinatBackbone.from_pretrained(str(folder), output_loading_info=True)
    assert got.config.dilations == cfg.dilations and got.out_features == ["stage2", "stage4"]
    assert rep.format == "transformers" and rep.prefix == COMPOSITE["prefixes"][arch]
    assert rep.ignored_keys == 5 and rep.missing_backbone_keys == []
    assert any("backbone_config of a" in n for n in rep.notes)
    x = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        want, out = bb(x), got.eval()(x)
    for k in want:
        torch.testing.assert_close(out[k], want[k], rtol=0, atol=0)
    for to, name in (("mmengine", "mm.pth"), ("detectron2", "d2.pkl")):
        assert load_tool().main([str(folder), str(tmp_path / name), "--to", to]) == 0
        again = DinatBackbone(cfg)
        rep = ck.load_pretrained(again, str(tmp_path / name))
        assert rep.missing_backbone_keys == [] and rep.unexpected_backbone_keys == []
        trunk = {k: v for k, v in bb.state_dict().items() if k.startswith(("patch", "levels"))}
        assert_same({k: v for k, v in again.state_dict().items() if k in trunk}, trunk)


def test_sharded_transformers_folder(tmp_path):
    """A sharded save (model.safetensors.index.json + shards, as transformers writes large
    models) reads every shard through the safe reader."""
    arch = "OneFormerForUniversalSegmentation"
    cfg = tiny_config(dilations=[[1], [2, 1], [1, 2], [1]])
    bb = randomised(DinatBackbone(cfg))
    folder = _composite_folder(tmp_path, arch, cfg, bb)
    sd = ck.load_checkpoint_file(folder / "model.safetensors")
    os.remove(folder / "model.safetensors")
    keys = sorted(sd)
    shards = {"model-00001-of-00002.safetensors": keys[::2],
              "model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in shards.items():
        ck.save_state_dict({k: sd[k] for k in part}, folder / name)
    index = {"metadata": {"total_size": 0},
             "weight_map": {k: n for n, part in shards.items() for k in part}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    got = DinatBackbone.from_pretrained(str(folder))
    assert got.loading_report.source.endswith("model.safetensors.index.json")
    assert_same(got.state_dict(), bb.state_dict())
    index["weight_map"]["x"] = "../elsewhere.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="point outside its folder"):
        DinatBackbone.from_pretrained(str(folder))


def _hub_cache(tmp_path, files):
    """huggingface_hub's cache layout for one repository snapshot holding ``files``."""
    repo = tmp_path / "hub" / "models--someone--dinat-tiny"
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    for name, writer in files.items():
        writer(snap / name)
    return str(tmp_path / "hub")


def test_hub_config_json_unreadable_or_unfetchable_is_an_error(tmp_path, monkeypatch):
    """Offline, from huggingface_hub's own cache: a cached config.json that is not valid JSON,
    or one that cannot be fetched, is an error naming it, not a fallback to preset dilations."""
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    src = DinatForImageClassification(tiny_config())
    save = lambda p: ck.save_state_dict(src.state_dict(), p)  # noqa: E731
    cache = _hub_cache(tmp_path / "a", {"model.safetensors": save,
                                        "config.json": lambda p: p.write_text("{oops")})
    with pytest.raises(ValueError, match=r"config\.json is present but cannot be read"):
        DinatForImageClassification.from_pretrained("someone/dinat-tiny", cache_dir=cache)
    cache = _hub_cache(tmp_path / "b", {"model.safetensors": save})
    with pytest.raises(ValueError, match=r"someone/dinat-tiny: the weights were fetched but "
                                         r"config\.json could not be"):
        DinatForImageClassification.from_pretrained("someone/dinat-tiny", cache_dir=cache)
    cache = _hub_cache(tmp_path / "c", {"model.safetensors": save,
                                        "config.json": lambda p: tiny_config().save_pretrained(
                                            str(p.parent))})
    m = DinatForImageClassification.from_pretrained("someone/dinat-tiny", cache_dir=cache)
    assert m.config.dilations == tiny_config().dilations
    assert_same(m.state_dict(), src.state_dict())


# ------------------------------------------------------------------------- key table
def test_transformers_table_both_ways_against_recorded_names(no_init):
    """One table read both ways gives transformers' names (recorded from its source)."""
    cls = DinatForImageClassification(DinatConfig.from_variant("mini"))
    hf = ck.to_transformers(cls.state_dict(), "classification")
    assert {k: list(v.shape) for k, v in hf.items()} == KEYS["transformers_classification"]["keys"]
    bb = DinatBackbone(DinatConfig.from_variant("mini", out_features=["stem", "stage1", "stage2",
                                                                      "stage3", "stage4"]))
    hf_bb = ck.to_transformers(bb.state_dict(), "backbone")
    for k, s in KEYS["transformers_backbone_norms"]["keys"].items():
        assert list(hf_bb[k].shape) == s, k
    mini_ls = DinatConfig.from_variant("mini", layer_scale_init_value=1e-5)
    hf_ls = ck.to_transformers(DinatModel(mini_ls).state_dict(), "model")
    for k, s in KEYS["transformers_model_layer_scale"]["keys"].items():
        assert list(hf_ls[k].shape) == s, k
    # a transformers file missing one of query / key / value is refused by name
    sd = fake_weights(KEYS["transformers_classification"]["keys"])
    del sd["dinat.encoder.levels.1.layers.2.attention.self.key.bias"]
    with pytest.raises(ValueError, match=r"levels\.1\.layers\.2\.attention\.self\.key\.bias.*"
                                         r"the file is incomplete"):
        ck.convert_state_dict(sd)


# ------------------------------------------------------------------------- package structure
OLD_PUBLIC = ["FORMATS", "LoadReport", "load_checkpoint_file", "extract_state_dict",
              "detect_format", "find_backbone", "infer_config", "convert_state_dict",
              "expected_shapes", "resize_rpb", "load_pretrained", "from_pretrained", "to_authors",
              "to_transformers", "transformers_config_dict", "to_mmengine", "to_detectron2",
              "save_state_dict", "DEFAULT_DETECTRON2_PREFIX"]


def _imports_of(path, modname):
    """Modules ``path`` (module ``modname``; a package as ``pkg.__init__``) imports, read from
    its syntax tree, as absolute names."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = modname.rsplit(".", node.level)[0] if node.level else ""
            mod = ".".join(p for p in (base, node.module or "") if p)
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names
                       if os.path.exists(os.path.join(ROOT, *f"{mod}.{a.name}".split(".")) + ".py"))
    return out


def test_weights_package_imports_only_config_and_has_no_cycle():
    pkg = os.path.join(ROOT, "dinat_backbone", "weights")
    graph = {}
    for f in sorted(os.listdir(pkg)):
        if not f.endswith(".py"):
            continue
        name = "dinat_backbone.weights." + f[:-3]
        deps = _imports_of(os.path.join(pkg, f), name)
        deps = {d + ".__init__" if d == "dinat_backbone.weights" else d for d in deps}
        ours = {d for d in deps if d.startswith("dinat_backbone")}
        outside = {d for d in ours if not d.startswith("dinat_backbone.weights.")}
        assert outside <= {"dinat_backbone.config"}, (f, outside)
        assert not {d.split(".")[0] for d in deps} & {"detectron2", "mmengine", "mmdet", "mmseg",
                                                       "mmcv", "transformers"}, (f, deps)
        graph[name] = (ours - outside) - {name}
    assert set(graph["dinat_backbone.weights.__init__"]) >= {
        "dinat_backbone.weights." + m for m in ("safe_io", "convert", "loading")}
    seen, stack = set(), []

    def visit(n):
        assert n not in stack, f"import cycle: {' -> '.join(stack + [n])}"
        if n in seen:
            return
        stack.append(n)
        for d in graph.get(n, ()):
            visit(d)
        stack.pop()
        seen.add(n)
    for n in graph:
        visit(n)
    # the old module is a re-export of every public name it had
    for name in OLD_PUBLIC:
        assert getattr(ck, name) is getattr(__import__("dinat_backbone.weights",
                                                       fromlist=[name]), name), name
