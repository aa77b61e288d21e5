"""Oracle: transformers' own Dinat code, with converted weights, gives the same tensors.

Why transformers 4.53.x: its ``modeling_dinat.NeighborhoodAttention.transpose_for_scores`` views
[B, H, W, C] as [B, H, W, heads, D] and permutes to [B, heads, H, W, D], which is the layout
NATTEN <= 0.17's ``natten2dqkrpb(query, key, rpb, kernel_size, dilation)`` / ``natten2dav(attn,
value, kernel_size, dilation)`` take; the context is permuted back with (0, 2, 3, 1, 4) (read in
4.53.3's source; 4.50.3 is the same). 4.57.1 unpacks that 4-D tensor as 3-D and 5.x transposes
H and W instead of moving the heads: both broken and unnoticed, since no NATTEN that installs on
current torch provides those two functions any more.

The environment has transformers 5.x (what users have; tests/test_transformers_patch.py runs it,
patched). transformers 4.53.3 lives beside it in ``<venv>/transformers-4.53`` (tools/install.sh:
``pip install --target DIR transformers==4.53.3``, the numpy it brings deleted), and this file
then has one test, which runs this same file in a subprocess with that folder first on
PYTHONPATH. There, transformers is 4.53 and the oracle tests below run.

The only thing supplied to transformers is those two NATTEN functions, from this project's op
(``dinat_backbone.ops.na2d_qk`` / ``na2d_av``: same semantics, same layout), plus switching off
transformers' ``requires_backends(self, ["natten"])`` check. Everything else (embedding,
padding of small maps, layer scale, downsamplers, norms, pooling, classifier) is transformers'.
The transformers model is saved with its own ``save_pretrained`` (config.json +
model.safetensors) and loaded with this project's ``from_pretrained``, so the comparison also
covers the user's path. The last test checks ``patch_transformers()`` against 4.53.3's own
attention code on the same model instance.
"""
import importlib
import os
import re
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers not installed "
                                   "(pip install -e .[test])")

from dinat_backbone import DinatBackbone, DinatForImageClassification, DinatModel  # noqa: E402
from dinat_backbone.ops import na2d_av, na2d_qk  # noqa: E402
from model_helpers import randomise  # noqa: E402

_V = tuple(int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
# Where this file runs: in an environment whose transformers is 4.50-4.53 (the oracle tests), or
# in any other (one test that runs this file again under the 4.53.3 folder).
ORACLE_HERE = (4, 50) <= _V < (4, 54)
ORACLE_DIR = os.environ.get("DINAT_TRANSFORMERS_ORACLE") or os.path.join(sys.prefix,
                                                                         "transformers-4.53")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _collected_if(here: bool):
    """Collect the decorated test only in one of the two modes (pytest honours ``__test__``)."""
    def deco(fn):
        fn.__test__ = here
        return fn
    return deco


oracle = _collected_if(ORACLE_HERE)
launcher = _collected_if(not ORACLE_HERE)


@launcher
def test_oracle_under_transformers_4_53():
    """This file's oracle tests, run by transformers 4.53.3 from its own folder."""
    if not os.path.isfile(os.path.join(ORACLE_DIR, "transformers", "__init__.py")):
        pytest.skip(f"the transformers 4.53.3 oracle folder {ORACLE_DIR} is missing (ImportError "
                    "there); bash tools/install.sh creates it (pip install --target "
                    f"{ORACLE_DIR} transformers==4.53.3)")
    path = [ORACLE_DIR, ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(path))
    proc = subprocess.run([sys.executable, "-m", "pytest", os.path.abspath(__file__), "-q", "-s",
                           "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    out = proc.stdout + proc.stderr
    for line in out.splitlines():
        if "max abs diff" in line or re.search(r"\d+ passed", line):
            print(line)
    assert proc.returncode == 0, out[-5000:]
    assert "transformers 4.53.3" in out, out[-3000:]
    summary = proc.stdout.strip().splitlines()[-1]  # pytest's last line (stderr may carry warnings)
    assert re.search(r"\b(\d+) passed", summary) and not re.search(
        r"failed|error|skipped|xfail", summary), summary


TOL = 1e-4
SIZES = [(224, 224), (160, 224)]


@pytest.fixture(scope="module")
def hf():
    """transformers' modeling_dinat with NATTEN's two functions supplied from this project."""
    import transformers.utils as tu

    saved = tu.is_natten_available
    # A NATTEN >= 0.17.5 in the environment has no natten2dqkrpb: import as if NATTEN were absent.
    tu.is_natten_available = lambda: False
    try:
        md = importlib.import_module("transformers.models.dinat.modeling_dinat")
    finally:
        tu.is_natten_available = saved
    patched = {
        "natten2dqkrpb": lambda query, key, rpb, kernel_size, dilation: na2d_qk(
            query, key, (kernel_size, kernel_size), (dilation, dilation), rpb),
        "natten2dav": lambda attn, value, kernel_size, dilation: na2d_av(
            attn, value, (kernel_size, kernel_size), (dilation, dilation)),
        "requires_backends": lambda *a, **k: None,
    }
    old = {k: getattr(md, k) for k in patched}
    for k, v in patched.items():
        setattr(md, k, v)
    yield md
    for k, v in old.items():
        setattr(md, k, v)


CONFIGS = {
    # small maps padded for kernel*dilation (stage 1 of 160 px: 40 < 7*8 rows), kernel 7
    "small_k7_pad": dict(embed_dim=16, depths=[2, 2, 2, 1], num_heads=[1, 2, 2, 4],
                         dilations=[[1, 8], [1, 4], [2, 1], [1]], kernel_size=7, mlp_ratio=2.0,
                         num_labels=7),
    # layer scale, kernel 5, another head / mlp layout
    "small_k5_layerscale": dict(embed_dim=24, depths=[1, 2, 3, 1], num_heads=[2, 3, 4, 8],
                                dilations=[[3], [1, 2], [1, 3, 1], [1]], kernel_size=5,
                                mlp_ratio=3.0, layer_scale_init_value=1e-5, num_labels=11),
    # the real dinat-mini (transformers' DinatConfig() defaults), 1000 classes
    "dinat_mini": dict(num_labels=1000),
}


def _max_diff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@oracle
@pytest.mark.parametrize("name", list(CONFIGS))
def test_classification_matches_transformers(hf, name, tmp_path):
    torch.manual_seed(0)
    cfg = transformers.DinatConfig(**CONFIGS[name])
    ref = randomise(hf.DinatForImageClassification(cfg))
    ref.save_pretrained(str(tmp_path), safe_serialization=True)
    assert os.path.isfile(tmp_path / "config.json")
    ours, report = DinatForImageClassification.from_pretrained(str(tmp_path),
                                                               output_loading_info=True)
    assert report.format == "transformers" and report.prefix == "dinat."
    assert report.missing_keys == [] and report.unexpected_keys == []
    ours.eval()
    diffs = {}
    # dinat-mini: the non-square size only (the two small configs cover both sizes; CI time)
    for size in SIZES if name != "dinat_mini" else SIZES[1:]:
        x = torch.randn(2 if name != "dinat_mini" else 1, 3, *size)
        with torch.no_grad():
            r = ref(x, output_hidden_states=True)
            o = ours(x, output_hidden_states=True)
        assert len(o.reshaped_hidden_states) == len(r.reshaped_hidden_states) == 5
        for i, (a, b) in enumerate(zip(o.reshaped_hidden_states, r.reshaped_hidden_states)):
            diffs[f"{size} reshaped_hidden_states[{i}]"] = _max_diff(a, b)
        diffs[f"{size} logits"] = _max_diff(o.logits, r.logits)
    print(f"\n{name} (transformers {transformers.__version__}) max abs diff: "
          + ", ".join(f"{k}: {v:.2e}" for k, v in diffs.items()))
    assert max(diffs.values()) < TOL, diffs


@oracle
@pytest.mark.parametrize("name", ["small_k7_pad", "small_k5_layerscale"])
def test_base_model_and_backbone_match_transformers(hf, name, tmp_path):
    torch.manual_seed(0)
    kw = dict(CONFIGS[name])
    kw.pop("num_labels")
    cfg = transformers.DinatConfig(**kw)
    ref = randomise(hf.DinatModel(cfg))
    ref.save_pretrained(str(tmp_path / "model"))  # DinatModel on its own: no "dinat." prefix
    ours = DinatModel.from_pretrained(str(tmp_path / "model")).eval()
    assert ours.loading_report.prefix == ""
    stages = ["stem", "stage1", "stage2", "stage3", "stage4"]
    ref_bb = randomise(hf.DinatBackbone(transformers.DinatConfig(out_features=stages, **kw)))
    ref_bb.save_pretrained(str(tmp_path / "backbone"))
    ours_bb = DinatBackbone.from_pretrained(str(tmp_path / "backbone")).eval()
    assert ours_bb.out_features == stages
    assert ours_bb.loading_report.missing_keys == []
    diffs = {}
    for size in SIZES[1:]:  # non-square; both sizes are covered by the classification test
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            r, o = ref(x, output_hidden_states=True), ours(x, output_hidden_states=True)
            rb, ob = ref_bb(x).feature_maps, ours_bb(x)
        diffs[f"{size} last_hidden_state"] = _max_diff(o.last_hidden_state, r.last_hidden_state)
        diffs[f"{size} pooler_output"] = _max_diff(o.pooler_output, r.pooler_output)
        for i, (a, b) in enumerate(zip(o.reshaped_hidden_states, r.reshaped_hidden_states)):
            diffs[f"{size} reshaped_hidden_states[{i}]"] = _max_diff(a, b)
        assert list(ob) == stages and len(rb) == 5
        for s, b in zip(stages, rb):
            diffs[f"{size} backbone {s}"] = _max_diff(ob[s], b)
    print(f"\n{name} DinatModel / DinatBackbone max abs diff: "
          + ", ".join(f"{k}: {v:.2e}" for k, v in diffs.items()))
    assert max(diffs.values()) < TOL, diffs


@oracle
def test_round_trip_through_transformers_layout(hf, tmp_path):
    """ours -> transformers' names -> a transformers model loads them strictly -> ours."""
    from dinat_backbone import DinatConfig
    from dinat_backbone import checkpoints as ck

    cfg = DinatConfig(embed_dim=16, depths=[1, 2, 2, 1], num_heads=[1, 2, 2, 4],
                      dilations=[[1], [1, 2], [2, 1], [1]], kernel_size=3, num_labels=4,
                      layer_scale_init_value=1e-5)
    src = DinatForImageClassification(cfg)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.05 * torch.randn_like(p))
    src.eval()
    ref = hf.DinatForImageClassification(
        transformers.DinatConfig(**ck.transformers_config_dict(cfg))).eval()
    ref.load_state_dict(ck.to_transformers(src.state_dict()), strict=True)
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        assert _max_diff(ref(x).logits, src(x).logits) < TOL
    back, _ = ck.convert_state_dict(ref.state_dict())
    own = src.state_dict()
    assert set(back) == set(own) and all(torch.equal(back[k], own[k]) for k in own)


@oracle
def test_patch_matches_transformers_own_attention(hf):
    """``patch_transformers()`` on 4.53: one model instance, built before the patch, computed by
    transformers' own NeighborhoodAttention code (NATTEN's two functions supplied) and then by the
    patched one. Outputs, attentions (padded maps included) and gradients. Runs last: the patch
    stays for the rest of the process."""
    from dinat_backbone.transformers import is_patched, patch_transformers

    assert not is_patched()
    torch.manual_seed(0)
    cfg = transformers.DinatConfig(**CONFIGS["small_k5_layerscale"])
    model = randomise(hf.DinatForImageClassification(cfg))
    inputs = {size: torch.randn(2, 3, *size) for size in [(97, 131), (40, 56)]}
    labels = torch.tensor([3, 7])

    def run():
        res = {}
        with torch.no_grad():
            for size, x in inputs.items():
                o = model(x, output_hidden_states=True, output_attentions=True)
                res[f"{size} logits"] = o.logits
                for i, h in enumerate(o.reshaped_hidden_states):
                    res[f"{size} reshaped_hidden_states[{i}]"] = h
                for i, a in enumerate(o.attentions):
                    res[f"{size} attentions[{i}]"] = a
        model.zero_grad()
        model(inputs[(97, 131)], labels=labels).loss.backward()
        for n, p in model.named_parameters():
            res[f"grad {n}"] = p.grad.clone()
        return res

    before = run()
    changes = patch_transformers()
    assert any("NeighborhoodAttention.forward" in c for c in changes) and is_patched()
    after = run()
    assert set(before) == set(after)
    diffs = {k: _max_diff(before[k], after[k]) for k in before}
    worst = max(diffs, key=diffs.get)
    print(f"\npatch_transformers() on transformers {transformers.__version__} vs its own attention "
          f"code: {len(diffs)} tensors, max abs diff {diffs[worst]:.2e} ({worst})")
    assert diffs[worst] < TOL, worst
