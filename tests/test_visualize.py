"""tools/visualize_attention.py: its attention arrays, receptive fields and command line.

Oracles: tests/na_reference.py's slow definition of neighborhood attention (on the layer's own
q / k / v), receptive-field arithmetic written out by hand, and the support of the input
gradient (a pixel outside a token's receptive field has exactly zero gradient).
"""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from na_reference import _window, na2d_slow

from dinat_backbone import DinatBackbone, DinatConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "visualize_attention.py")

pytestmark = pytest.mark.usefixtures("one_thread")


def _tool():
    spec = importlib.util.spec_from_file_location("visualize_attention", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


va = _tool()


def _tiny(depths=(2, 2), dilations=((1, 2), (1, 2)), heads=(2, 4)):
    return DinatConfig(embed_dim=16, depths=list(depths), num_heads=list(heads), kernel_size=3,
                       dilations=[list(d) for d in dilations], mlp_ratio=2.0)


def _tiny_model(**kw):
    torch.manual_seed(0)
    m = DinatBackbone(_tiny(**kw)).eval()
    # random (not zero) relative-position biases, so that the weights are far from uniform
    for mod in m.modules():
        if isinstance(mod, torch.nn.Module) and hasattr(mod, "rpb"):
            with torch.no_grad():
                mod.rpb.normal_(0, 1.0)
    return m


def test_attention_panel_equals_the_reference_op_on_the_layers_qkv():
    model = _tiny_model()
    H, W = 40, 48  # stage1 map 10 x 12; stage2 map 5 x 6 (height padded to 3 * 2 = 6)
    x = torch.randn(1, 3, H, W)
    points = [(13, 30), (0, 0), (39, 47), (20, 5)]

    inputs = {}
    hooks = [blk.attn.register_forward_hook(
        lambda mod, args, out, key=(i, j): inputs.__setitem__(key, args[0].detach().clone()))
        for i, lvl in enumerate(model.levels) for j, blk in enumerate(lvl.blocks)]
    try:
        att = va.attention_maps(model, x, points)
    finally:
        for h in hooks:
            h.remove()

    # query tokens by hand: token i of a stride-s stage is centred on pixel s * i; the nearest
    # one, clamped to the map. (13, 30) at stride 4: 3.25 -> 3, 7.5 -> 8; at stride 8:
    # 1.625 -> 2, 3.75 -> 4. (39, 47) at stride 4: 9.75 -> 10 -> clamped to 9, 11.75 -> 12 ->
    # 11; at stride 8: 4.875 -> 5 -> clamped to 4, 5.875 -> 6 -> 5. (20, 5) at stride 4: 5,
    # 1.25 -> 1; at stride 8: 2.5 -> 3 (halves round up), 0.625 -> 1.
    s1, s2 = att["stages"]
    assert (s1["stride"], s1["map_size"], s2["stride"], s2["map_size"]) == (4, (10, 12),
                                                                            8, (5, 6))
    assert s1["layers"][0]["query_tokens"].tolist() == [[3, 8], [0, 0], [9, 11], [5, 1]]
    assert s2["layers"][0]["query_tokens"].tolist() == [[2, 4], [0, 0], [4, 5], [3, 1]]

    checked = 0
    for i, st in enumerate(att["stages"]):
        for j, layer in enumerate(st["layers"]):
            na = model.levels[i].blocks[j].attn
            k, d = na.kernel_size, na.dilation
            assert (layer["kernel_size"], layer["dilation"]) == (k, d)
            h_in = inputs[(i, j)]                                    # norm1 output [1, h, w, C]
            h, w = h_in.shape[1:3]
            hp, wp = max(h, k * d), max(w, k * d)
            h_in = F.pad(h_in, (0, 0, 0, wp - w, 0, hp - h))         # as the layer pads
            with torch.no_grad():
                qkv = na.qkv(h_in).reshape(1, hp, wp, 3, na.num_heads, -1)
                q, kk, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
                _, ref = na2d_slow(q.double(), kk.double(), v.double(), k, d,
                                   rpb=na.rpb.double(), scale=na.scale)
            for p, (ty, tx) in enumerate(layer["query_tokens"].tolist()):
                want = ref[0, :, ty, tx, :]                          # [heads, k*k]
                np.testing.assert_allclose(layer["weights_per_head"][p], want.numpy(),
                                           rtol=0, atol=1e-5)
                np.testing.assert_allclose(layer["weights"][p], want.mean(0).numpy(),
                                           rtol=0, atol=1e-5)
                rows, _ = _window(ty, hp, k, d)
                cols, _ = _window(tx, wp, k, d)
                keys = [[r, c] for r in rows for c in cols]          # row-major window
                assert layer["key_tokens"][p].tolist() == keys
                assert (layer["key_pixels"][p] == np.array(keys) * st["stride"]).all()
                checked += 1
    assert checked == 4 * 4
    # the weights are not uniform (the comparison above is not one of two constants)
    assert np.ptp(s1["layers"][1]["weights"][0]) > 0.05
    # the dilated layer's keys of point 1 are 2 tokens = 8 pixels apart, the plain layer's 4
    assert np.diff(np.unique(s1["layers"][1]["key_pixels"][0][:, 0])).tolist() == [8, 8]
    assert np.diff(np.unique(s1["layers"][0]["key_pixels"][0][:, 0])).tolist() == [4, 4]
    plain, dilated = va.pick_layers(s1)
    assert (plain["dilation"], dilated["dilation"]) == (1, 2)


def test_theoretical_rf_matches_hand_computation_small_config():
    cfg = _tiny(depths=(1, 2), dilations=((1,), (1, 2)))
    rf = va.theoretical_rf(cfg)
    # Each operator adds (kernel - 1) * dilation * jump pixels; a stride-2 one doubles the jump.
    # stem conv 1 (3x3, s2): 1 + 2*1*1 = 3, jump 2;  stem conv 2 (3x3, s2): 3 + 2*1*2 = 7, jump 4
    # stage1 NA (k3, d1): 7 + 2*1*4 = 15                                   -> stage1: 15 / 15
    # downsampler (3x3, s2): 15 + 2*1*4 = 23, jump 8
    # stage2 NA (k3, d1): 23 + 2*1*8 = 39;  DiNA (k3, d2): 39 + 2*2*8 = 71 -> stage2: 71
    #   NA only: 39 + 2*1*8 = 55                                           -> stage2: 55
    assert rf["stages"] == {
        "stem": dict(stride=4, rf_dinat=7, rf_na=7),
        "stage1": dict(stride=4, rf_dinat=15, rf_na=15),
        "stage2": dict(stride=8, rf_dinat=71, rf_na=55),
    }
    assert [s["rf_dinat"] for s in rf["steps"]] == [3, 7, 15, 23, 39, 71]
    assert [s["rf_na"] for s in rf["steps"]] == [3, 7, 15, 23, 39, 55]


def test_theoretical_rf_dinat_mini_by_hand():
    rf = va.theoretical_rf(DinatConfig.from_variant("mini"))["stages"]
    # dilations [1,8,1], [1,4,1,4], [1,2,1,2,1,2], [1,1,1,1,1]; kernel 7 adds 6 * d * jump
    s1 = 7 + 6 * 4 * (1 + 8 + 1)                   # 247   (NA only: 7 + 6*4*3 = 79)
    s2 = s1 + 2 * 4 + 6 * 8 * (1 + 4 + 1 + 4)      # 735   (NA only: 79 + 8 + 6*8*4 = 279)
    s3 = s2 + 2 * 8 + 6 * 16 * (1 + 2) * 3         # 1615  (NA only: 279 + 16 + 6*16*6 = 871)
    s4 = s3 + 2 * 16 + 6 * 32 * 5                  # 2607  (NA only: 871 + 32 + 6*32*5 = 1863)
    assert [rf[f"stage{i}"]["rf_dinat"] for i in (1, 2, 3, 4)] == [s1, s2, s3, s4]
    assert [rf[f"stage{i}"]["rf_na"] for i in (1, 2, 3, 4)] == [79, 279, 871, 1863]
    assert (s1, s2, s3, s4) == (247, 735, 1615, 2607)


def test_effective_rf_support_is_the_theoretical_rf():
    """Outside a token's theoretical receptive field the input gradient is exactly zero; inside
    it, with random weights, it is not: the ERF's support is the theoretical square."""
    model = _tiny_model(depths=(1, 2), dilations=((1,), (1, 2))).double()
    x = torch.randn(2, 3, 128, 128, dtype=torch.float64)
    erf = va.effective_rf(model, x)
    rf = va.theoretical_rf(model)["stages"]
    for name in ("stage1", "stage2"):
        e = erf[name]
        cy, cx = e["centre_pixel"]
        # stage1 map 32 x 32 -> centre token 16, pixel 64; stage2 map 16 -> token 8, pixel 64
        assert (cy, cx) == (64, 64)
        ys, xs = np.nonzero(e["erf"] > 0)
        half = (rf[name]["rf_dinat"] - 1) // 2
        assert (ys.min(), ys.max(), xs.min(), xs.max()) == (cy - half, cy + half,
                                                            cx - half, cx + half), name
    assert erf["stage2"]["r90"] <= (rf["stage2"]["rf_dinat"] - 1) // 2


def _png(path, size=(70, 50)):
    from PIL import Image

    a = np.zeros((size[1], size[0], 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, size[0])[None]
    a[..., 1] = np.linspace(0, 255, size[1])[:, None]
    Image.fromarray(a).save(path)
    return path


def test_cli_writes_png(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the picture needs matplotlib")
    from PIL import Image

    img = _png(str(tmp_path / "in.png"))
    out = str(tmp_path / "sub" / "out.png")
    rc = va.main([img, "--out", out, "--size", "96", "--noise", "1", "--points", "10,20",
                  "40,90"])
    assert rc == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 500 and im.size[1] > 300
    printed = capsys.readouterr().out
    assert "stage1  stride  4  RF NA-only    79 px  RF DiNAT   247 px" in printed


def test_load_image_resizes_keeping_aspect(tmp_path):
    img = _png(str(tmp_path / "in.png"), size=(70, 50))
    assert va.load_image(img, 140).shape == (100, 140, 3)
    assert va.load_image(img, 35).shape == (25, 35, 3)


def test_weights_are_loaded(tmp_path):
    torch.manual_seed(1)
    src = DinatBackbone(_tiny(depths=(1, 1, 1, 1), dilations=((1,), (1,), (1,), (1,)),
                              heads=(1, 2, 2, 4)))
    ckpt = str(tmp_path / "tiny.pth")
    torch.save({"model": src.state_dict()}, ckpt)
    model, desc = va.build_model(weights=ckpt)
    assert "tiny.pth" in desc and "random" not in desc
    sd = model.state_dict()
    for k, v in src.state_dict().items():
        assert torch.equal(sd[k], v), k


@pytest.mark.parametrize("case", ["missing", "not-an-image", "bad-point", "point-outside",
                                  "missing-weights"])
def test_cli_rejects_bad_input(tmp_path, case):
    img = _png(str(tmp_path / "in.png"))
    args = {
        "missing": [str(tmp_path / "nope.jpg")],
        "not-an-image": [str(tmp_path / "notes.txt")],
        "bad-point": [img, "--points", "10;20"],
        "point-outside": [img, "--size", "64", "--points", "70,10"],
        "missing-weights": [img, "--weights", str(tmp_path / "none.pth")],
    }[case]
    (tmp_path / "notes.txt").write_text("not an image\n")
    r = subprocess.run([sys.executable, TOOL, *args, "--out", str(tmp_path / "o.png")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    want = {"missing": "does not exist", "not-an-image": "is not an image",
            "bad-point": "a point is Y,X",
            "point-outside": "outside the resized image (height x width 46 x 64)",
            "missing-weights": "--weights"}[case]
    assert want in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "o.png")


def test_erf_summaries_by_hand():
    erf = np.ones((5, 5))
    # the centred 3 x 3 square holds 9 of 25: 64 % outside; 50 % needs the 5 x 5 (radius 2)
    assert va.share_outside(erf, 2, 2, 3) == pytest.approx(16 / 25)
    assert va._mass_radius(erf, 2, 2, 0.5) == 2
    assert va._mass_radius(erf, 2, 2, 0.3) == 1          # 9 / 25 = 0.36 >= 0.3
    erf[2, 2] = 100.0                                     # 100 of 124 at the centre pixel
    assert va._mass_radius(erf, 2, 2, 0.8) == 0
    assert va.share_outside(erf, 2, 2, 1) == pytest.approx(24 / 124)
