"""transformers' own DiNAT models after ``dinat_backbone.transformers.patch_transformers()``.

Oracle: this package's own models (``dinat_backbone.DinatModel`` / ``DinatForImageClassification``
/ ``DinatBackbone``), which tests/test_transformers_oracle.py checks against transformers
4.53.3's own code. transformers' models get random weights (every parameter perturbed, so each
one matters), are saved with their own ``save_pretrained`` and read back with this package's
``from_pretrained``: same weights, two independent implementations of everything around the
attention op (embedding, padding of small maps, layer scale, downsamplers, norms, heads).

Then transformers' UperNet / Mask2Former / OneFormer with a tiny DiNAT backbone: a training
step, a save / load round trip, and this package's ``DinatBackbone.from_pretrained`` on the saved
composite folder. Bad input (unsupported version, no DiNAT, unknown structure, already
imported) runs in subprocesses, so that each starts from an unpatched transformers.
Nothing is downloaded.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers not installed "
                                   "(pip install -e .[test])")

from dinat_backbone import DinatBackbone, DinatForImageClassification, DinatModel  # noqa: E402
from dinat_backbone.transformers import (  # noqa: E402
    SUPPORTED_RANGE,
    TransformersPatchError,
    is_patched,
    patch_transformers,
)
from model_helpers import randomise  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-4
MODULE = "transformers.models.dinat.modeling_dinat"
STAGES = ["stem", "stage1", "stage2", "stage3", "stage4"]
# kernel 5, dilation up to 4 in stage 1: windows of 20 positions. 224: no padding; 97x131: the
# last stage (4x5) is padded; 40x56: every stage is smaller than kernel x dilation somewhere.
SIZES = {"224": (224, 224), "97x131": (97, 131), "40x56": (40, 56)}
CFG = dict(embed_dim=16, depths=[2, 2, 2, 1], num_heads=[1, 2, 2, 4],
           dilations=[[1, 4], [2, 1], [1, 2], [1]], kernel_size=5, mlp_ratio=2.0,
           layer_scale_init_value=1e-5)


@pytest.fixture(scope="module")
def md():
    patch_transformers()
    import importlib

    return importlib.import_module(MODULE)


def _diff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def _attention_diffs(ref_attns, own_attns, depths, size_hw, prefix):
    """transformers returns one attention map per stage (its last layer's), on the padded map;
    this package returns one per layer, cropped to the map. Compare the overlap."""
    assert len(ref_attns) == len(depths) and len(own_attns) == sum(depths)
    out = {}
    last = 0
    for i, (r, d) in enumerate(zip(ref_attns, depths)):
        last += d
        o = own_attns[last - 1]
        h, w = o.shape[2], o.shape[3]
        assert r.shape[:2] == o.shape[:2] and r.shape[4] == o.shape[4]
        assert r.shape[2] >= h and r.shape[3] >= w
        out[f"{prefix} attentions[{i}]"] = _diff(r[:, :, :h, :w], o)
    return out


@pytest.fixture(scope="module")
def saved(md, tmp_path_factory):
    """transformers' three DiNAT models with random weights, saved by transformers and read by
    this package."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hf_dinat")
    cls = randomise(transformers.DinatForImageClassification(
        transformers.DinatConfig(num_labels=7, **CFG)))
    cls.save_pretrained(str(root / "cls"))
    base = randomise(transformers.DinatModel(transformers.DinatConfig(**CFG)), seed=1)
    base.save_pretrained(str(root / "model"))
    bb = randomise(transformers.DinatBackbone(
        transformers.DinatConfig(out_features=STAGES, **CFG)), seed=2)
    bb.save_pretrained(str(root / "backbone"))
    return {
        "cls": (cls, DinatForImageClassification.from_pretrained(str(root / "cls")).eval()),
        "model": (base, DinatModel.from_pretrained(str(root / "model")).eval()),
        "backbone": (bb, DinatBackbone.from_pretrained(str(root / "backbone")).eval()),
        "root": root,
    }


def test_patch_is_idempotent_and_complete(md):
    assert is_patched()
    assert patch_transformers() == []
    assert md.NeighborhoodAttention.forward.__module__ == "dinat_backbone.transformers.patch"
    # requires_backends still checks every other backend through transformers' own function
    from transformers.utils.import_utils import BACKENDS_MAPPING

    missing = next(b for b, (available, _) in BACKENDS_MAPPING.items()
                   if b != "natten" and not available())
    with pytest.raises(ImportError):
        md.requires_backends(object(), ["natten", missing])
    md.requires_backends(object(), ["natten", "torch"])


@pytest.mark.parametrize("size", list(SIZES))
def test_matches_own_models(saved, size):
    h, w = SIZES[size]
    x = torch.randn(2, 3, h, w)
    diffs = {}
    ref, own = saved["cls"]
    with torch.no_grad():
        r = ref(x, output_hidden_states=True, output_attentions=True)
        o = own(x, output_hidden_states=True, output_attentions=True)
    diffs["cls logits"] = _diff(r.logits, o.logits)
    diffs.update(_attention_diffs(r.attentions, o.attentions, CFG["depths"], (h, w), "cls"))

    ref, own = saved["model"]
    with torch.no_grad():
        r = ref(x, output_hidden_states=True, output_attentions=True)
        o = own(x, output_hidden_states=True, output_attentions=True)
    diffs["model last_hidden_state"] = _diff(r.last_hidden_state, o.last_hidden_state)
    diffs["model pooler_output"] = _diff(r.pooler_output, o.pooler_output)
    assert len(r.reshaped_hidden_states) == len(o.reshaped_hidden_states) == 5
    for i, (a, b) in enumerate(zip(r.reshaped_hidden_states, o.reshaped_hidden_states)):
        diffs[f"model reshaped_hidden_states[{i}]"] = _diff(a, b)
    diffs.update(_attention_diffs(r.attentions, o.attentions, CFG["depths"], (h, w), "model"))

    ref, own = saved["backbone"]
    with torch.no_grad():
        rb = ref(x).feature_maps
        ob = own(x)
    assert list(ob) == STAGES and len(rb) == 5
    for s, a in zip(STAGES, rb):
        diffs[f"backbone feature_maps[{s}]"] = _diff(a, ob[s])
    print(f"\ntransformers {transformers.__version__} patched vs dinat_backbone at {size}: max abs "
          f"diff {max(diffs.values()):.2e} (" + ", ".join(f"{k}: {v:.1e}" for k, v in diffs.items())
          + ")")
    assert max(diffs.values()) < TOL, diffs


def test_gradients_match_own_model(saved):
    """One backward pass through both classifiers: every parameter's gradient, by name."""
    from dinat_backbone.checkpoints import to_transformers

    ref, own = saved["cls"]
    x = torch.randn(2, 3, *SIZES["97x131"])
    labels = torch.tensor([1, 5])
    for m in (ref, own):
        m.zero_grad()
        m(x, labels=labels).loss.backward()
    own_grads = to_transformers({n: p.grad for n, p in own.named_parameters()})
    ref_grads = {n: p.grad for n, p in ref.named_parameters()}
    assert set(own_grads) == set(ref_grads)
    diffs = {n: _diff(ref_grads[n], own_grads[n]) for n in ref_grads}
    worst = max(diffs, key=diffs.get)
    print(f"\ngradients: {len(diffs)} parameters, max abs diff {diffs[worst]:.2e} ({worst})")
    assert diffs[worst] < TOL, worst


def test_attention_dropout_in_training(md):
    """attention_probs_dropout_prob drops attention weights in training only."""
    torch.manual_seed(0)
    cfg = transformers.DinatConfig(attention_probs_dropout_prob=0.5, **CFG)
    na = md.NeighborhoodAttention(cfg, 16, 2, 5, 2)
    with torch.no_grad():
        na.rpb.normal_()
    x = torch.randn(1, 12, 11, 16)
    na.eval()
    e1, a1 = na(x, output_attentions=True)
    e2 = na(x)[0]
    torch.testing.assert_close(e1, e2, rtol=0, atol=1e-6)  # with / without the weights
    assert a1.shape == (1, 2, 12, 11, 25)
    torch.testing.assert_close(a1.sum(-1), torch.ones(1, 2, 12, 11))
    na.train()
    t1, t2 = na(x)[0], na(x)[0]
    assert not torch.allclose(t1, t2) and not torch.allclose(t1, e1)
    na.dropout.p = 0.0
    torch.testing.assert_close(na(x)[0], e1, rtol=0, atol=1e-6)


# ------------------------------------------------------------------- composite models
def _dinat_backbone_config(**kw):
    return transformers.DinatConfig(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4],
                                    dilations=[[1], [2], [1, 2], [1]], kernel_size=3,
                                    mlp_ratio=2.0, out_features=STAGES[1:], **kw)


def _composite(name):
    """(model, inputs for a training step, inputs for inference, its DinatBackbone)."""
    torch.manual_seed(0)
    b, h, w = 2, 64, 96
    x = torch.randn(b, 3, h, w)
    masks = [(torch.rand(2, h, w) > 0.5).float() for _ in range(b)]
    classes = [torch.tensor([0, 2]), torch.tensor([1, 2])]
    if name == "upernet":
        cfg = transformers.UperNetConfig(backbone_config=_dinat_backbone_config(), hidden_size=16,
                                         auxiliary_in_channels=64,  # stage 3: 16 * 4 channels
                                         auxiliary_channels=8, pool_scales=[1, 2], num_labels=3)
        model = transformers.UperNetForSemanticSegmentation(cfg)
        return (model, dict(pixel_values=x, labels=torch.randint(0, 3, (b, h, w))),
                dict(pixel_values=x), lambda m: m.backbone)
    pytest.importorskip("scipy", reason="scipy not installed: transformers' Mask2Former / "
                        "OneFormer losses need it (it comes with mmdet, the mm extra)")
    small = dict(encoder_feedforward_dim=64, encoder_layers=1, decoder_layers=2,
                 num_attention_heads=2, dim_feedforward=64, num_queries=4, train_num_points=64,
                 num_labels=3)
    if name == "mask2former":
        cfg = transformers.Mask2FormerConfig(backbone_config=_dinat_backbone_config(),
                                             feature_size=32, mask_feature_size=32, hidden_dim=32,
                                             **small)
        model = transformers.Mask2FormerForUniversalSegmentation(cfg)
        return (model, dict(pixel_values=x, mask_labels=masks, class_labels=classes),
                dict(pixel_values=x), lambda m: m.model.pixel_level_module.encoder)
    # OneFormer: task and text prompts as token ids (no tokenizer, nothing downloaded). Its text
    # width must equal hidden_dim (the prompt context is concatenated to the projected text), and
    # conv_dim must too: otherwise its transformer module's input projections are Conv2d layers
    # kept in a plain list (transformers' code), so never saved nor loaded (the Hub's configs
    # have conv_dim == hidden_dim == 256).
    cfg = transformers.OneFormerConfig(
        backbone_config=_dinat_backbone_config(), hidden_dim=64, conv_dim=64, mask_dim=64,
        task_seq_len=8, text_encoder_width=64, text_encoder_context_length=8,
        text_encoder_num_layers=1, text_encoder_vocab_size=100, text_encoder_n_ctx=2,
        query_dec_layers=1, is_training=True, dropout=0.0, **small)
    model = transformers.OneFormerForUniversalSegmentation(cfg)
    g = torch.Generator().manual_seed(1)
    task = torch.randint(1, 100, (b, cfg.task_seq_len), generator=g)
    text = torch.randint(1, 100, (b, cfg.num_queries - cfg.text_encoder_n_ctx,
                                  cfg.text_encoder_context_length), generator=g)
    return (model, dict(pixel_values=x, task_inputs=task, text_inputs=text, mask_labels=masks,
                        class_labels=classes),
            dict(pixel_values=x, task_inputs=task, text_inputs=text),
            lambda m: m.model.pixel_level_module.encoder)


def _outputs(out):
    keys = ("logits", "class_queries_logits", "masks_queries_logits")
    return {k: getattr(out, k) for k in keys if getattr(out, k, None) is not None}


@pytest.mark.parametrize("name", ["upernet", "mask2former", "oneformer"])
def test_composite_models(md, name, tmp_path):
    model, train_inputs, infer_inputs, backbone_of = _composite(name)
    assert isinstance(backbone_of(model), md.DinatBackbone)
    randomise(backbone_of(model), seed=3)

    # training step: finite loss, a gradient on every backbone parameter, the loss moves
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3)
    torch.manual_seed(0)
    loss = model(**train_inputs).loss
    assert torch.isfinite(loss), loss
    loss.backward()
    for n, p in backbone_of(model).named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert any(p.grad.abs().sum() > 0 for p in backbone_of(model).parameters())
    before = {n: p.detach().clone() for n, p in backbone_of(model).named_parameters()}
    opt.step()
    assert any(not torch.equal(before[n], p) for n, p in backbone_of(model).named_parameters())

    # save / load: the same outputs (to float rounding: not always bit-identical on the CPU)
    model.eval()
    if name == "oneformer":
        # Saved for inference, as the Hub's OneFormer checkpoints are (is_training=False: no
        # text encoder). transformers 5.24's own OneFormer text encoder does not survive
        # from_pretrained: its layers' attn_mask is a plain tensor attribute, left on the meta
        # device (uninitialised) by the loader, whatever the backbone.
        model.config.is_training = False
        for m in model.modules():
            if hasattr(m, "is_training"):
                m.is_training = False
        infer_inputs.pop("text_inputs")
    with torch.no_grad():
        ref = _outputs(model(**infer_inputs))
    model.save_pretrained(str(tmp_path))
    again = type(model).from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        got = _outputs(again(**infer_inputs))
    assert ref and set(got) == set(ref)
    reload_diff = max(_diff(ref[k], got[k]) for k in ref)
    assert reload_diff <= 1e-6, {k: _diff(ref[k], got[k]) for k in ref}

    # this package's DinatBackbone reads the composite folder: the nested backbone_config and
    # the backbone's weights under the model's prefix
    ours = DinatBackbone.from_pretrained(str(tmp_path)).eval()
    x = infer_inputs["pixel_values"]
    with torch.no_grad():
        theirs = backbone_of(model)(x).feature_maps
        mine = ours(x)
    assert list(mine) == STAGES[1:]
    diffs = {s: _diff(a, mine[s]) for s, a in zip(STAGES[1:], theirs)}
    print(f"\n{name}: loss {loss.item():.3f}; reload max abs diff {reload_diff:.1e}; "
          "DinatBackbone.from_pretrained(composite folder) vs transformers' backbone max abs "
          f"diff {max(diffs.values()):.2e}")
    assert max(diffs.values()) < TOL, diffs


# ------------------------------------------------------------ the seed's snippet on 5.x
def test_seed_snippet_with_local_folder(md, tmp_path):
    """transformers' documented DinatForImageClassification snippet, a local folder in place of
    the Hub id; the prediction must be this package's model's on the same pixels."""
    from PIL import Image

    torch.manual_seed(0)
    labels = ["tabby", "tiger cat", "goldfish", "hen", "ostrich", "kite", "jay"]
    cfg = transformers.DinatConfig(num_labels=7, id2label=dict(enumerate(labels)),
                                   label2id={v: i for i, v in enumerate(labels)}, **CFG)
    randomise(transformers.DinatForImageClassification(cfg)).save_pretrained(str(tmp_path))
    transformers.ViTImageProcessor(size={"height": 224, "width": 224},
                                   image_mean=[0.485, 0.456, 0.406],
                                   image_std=[0.229, 0.224, 0.225]).save_pretrained(str(tmp_path))
    g = torch.Generator().manual_seed(0)
    image = Image.fromarray(torch.randint(0, 256, (300, 400, 3), generator=g,
                                          dtype=torch.uint8).numpy())

    # --- the snippet
    from transformers import AutoImageProcessor
    from transformers import DinatForImageClassification as HFDinatForImageClassification

    image_processor = AutoImageProcessor.from_pretrained(str(tmp_path))
    model = HFDinatForImageClassification.from_pretrained(str(tmp_path))
    inputs = image_processor(image, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    predicted_label = logits.argmax(-1).item()
    label = model.config.id2label[predicted_label]
    # ---

    assert inputs["pixel_values"].shape == (1, 3, 224, 224)
    ours = DinatForImageClassification.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        want = ours(inputs["pixel_values"]).logits
    print(f"\nsnippet: predicted {label!r}; logits max abs diff vs dinat_backbone "
          f"{_diff(logits, want):.2e}")
    assert _diff(logits, want) < TOL
    assert label == labels[want.argmax(-1).item()]


# --------------------------------------------------------------- bad input (subprocesses)
def _run(code: str) -> dict:
    """Run ``code`` in a fresh interpreter (unpatched transformers); its last line is JSON."""
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in
                                                    os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Imports transformers' DiNAT module the way it imports without NATTEN (sys.modules["natten"] =
# None makes transformers' is_natten_available() False), then keeps its original objects.
_IMPORT_UNPATCHED = """
import sys, json
sys.modules["natten"] = None
import transformers
import transformers.models.dinat.modeling_dinat as md
from dinat_backbone.transformers import patch_transformers, TransformersPatchError, is_patched
ORIG = (md.NeighborhoodAttention.forward, md.requires_backends, md.natten2dqkrpb, md.natten2dav)
def unchanged():
    return ORIG == (md.NeighborhoodAttention.forward, md.requires_backends, md.natten2dqkrpb,
                    md.natten2dav) and not is_patched()
"""

# transformers' DinatModel (random weights) against this package's at a small size
_COMPARE = """
import tempfile, torch
from dinat_backbone import DinatModel as Own
def compare():
    torch.manual_seed(0)
    cfg = transformers.DinatConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4],
                                   dilations=[[3], [2], [1], [1]], kernel_size=5)
    ref = transformers.DinatModel(cfg).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    d = tempfile.mkdtemp()
    ref.save_pretrained(d)
    own = Own.from_pretrained(d).eval()
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        return (ref(x).last_hidden_state - own(x).last_hidden_state).abs().max().item()
"""


@pytest.fixture(scope="module")
def imported_unpatched():
    """One interpreter, transformers' DiNAT module imported before any patch; in order: refused
    versions, a refused structure (then restored), and the patch applied in place."""
    return _run(_IMPORT_UNPATCHED + _COMPARE + """
out = {}
tf = sys.modules["transformers"]   # transformers 5.x replaces its module object on import
real = tf.__version__
versions = {}
for v in ["4.49.0", "4.45.2", "5.25.0", "6.0.0"]:
    tf.__version__ = v
    try:
        versions[v] = ["patched", patch_transformers()]
    except TransformersPatchError as e:
        versions[v] = str(e)
tf.__version__ = real
out["versions"] = versions
out["versions_unchanged"] = unchanged()

maybe_pad = md.DinatLayer.maybe_pad
del md.DinatLayer.maybe_pad   # a transformers whose DinatLayer no longer pads small maps
try:
    out["structure"] = ["patched", patch_transformers()]
except TransformersPatchError as e:
    out["structure"] = str(e)
out["structure_unchanged"] = unchanged()
md.DinatLayer.maybe_pad = maybe_pad

out["first"] = patch_transformers()
out["second"] = patch_transformers()
out["diff"] = compare()
print(json.dumps(out))
""")


def test_unsupported_version_changes_nothing(imported_unpatched):
    res = imported_unpatched
    assert res["versions_unchanged"] is True
    for v, msg in res["versions"].items():
        assert isinstance(msg, str), (v, msg)
        assert f"transformers {v} is not supported" in msg and SUPPORTED_RANGE in msg, msg


def test_unknown_structure_is_refused_before_any_change(imported_unpatched):
    msg = imported_unpatched["structure"]
    assert isinstance(msg, str) and "maybe_pad" in msg, msg
    assert "nothing was changed" in msg and imported_unpatched["structure_unchanged"] is True


def test_patch_after_dinat_module_was_imported(imported_unpatched):
    """The module imported before the patch (possible without NATTEN): patched in place."""
    res = imported_unpatched
    assert res["first"] and not any(c.startswith("imported") for c in res["first"])
    assert res["second"] == []
    assert res["diff"] < TOL, res


def test_unsupported_version_after_patch_is_refused_too(md, monkeypatch):
    """The version is checked on every call, also when the module is already patched."""
    monkeypatch.setattr(sys.modules["transformers"], "__version__", "4.49.0")
    with pytest.raises(TransformersPatchError, match=r"transformers 4\.49\.0 is not supported"):
        patch_transformers()
    assert is_patched()


def test_without_dinat_clear_error_nothing_changed():
    """A transformers without DiNAT: its package missing, or its modeling module not importable
    (the latter after the patch has switched is_natten_available off for the import)."""
    res = _run("""
import sys, json
import transformers, transformers.utils as tu
saved = tu.is_natten_available
from dinat_backbone.transformers import patch_transformers, TransformersPatchError
out = {}
for blocked in ["transformers.models.dinat", "transformers.models.dinat.modeling_dinat"]:
    sys.modules[blocked] = None   # `import` of it now fails
    try:
        out[blocked] = ["patched", patch_transformers()]
    except TransformersPatchError as e:
        out[blocked] = str(e)
    del sys.modules[blocked]
out["restored"] = tu.is_natten_available is saved
out["imported"] = sys.modules.get("transformers.models.dinat.modeling_dinat") is not None
print(json.dumps(out))
""")
    assert res.pop("restored") is True and res.pop("imported") is False
    assert len(res) == 2
    for blocked, msg in res.items():
        assert isinstance(msg, str), (blocked, msg)
        assert "has no importable DiNAT model" in msg and SUPPORTED_RANGE in msg, msg


def test_patch_after_transformers_was_imported():
    """The user imported transformers (and maybe failed to import its DiNAT) first."""
    res = _run("""
import json, sys
import transformers
from transformers import DinatConfig
try:
    from transformers import DinatModel
    before = "imported"
except Exception as e:   # NATTEN >= 0.17.5 installed: natten2dav no longer exists
    before = f"{type(e).__name__}: {e}"
from dinat_backbone.transformers import patch_transformers
first = patch_transformers()
second = patch_transformers()
from transformers import DinatModel
""" + _COMPARE + """
natten = None
try:
    import natten.functional as nf
    natten = hasattr(nf, "natten2dav")
except ImportError:
    pass
print(json.dumps({"before": before, "first": first, "second": second, "diff": compare(),
                  "natten_has_natten2dav": natten}))
""")
    if res["natten_has_natten2dav"] is False:  # the environment's NATTEN breaks the import
        assert "natten2dav" in res["before"] or "natten2dqkrpb" in res["before"], res
    assert res["first"] and res["second"] == []
    assert res["diff"] < TOL, res
