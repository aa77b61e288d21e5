"""Graph export: torch.export and ONNX (opset 18) with dynamic height and width.

Oracle: the eager PyTorch model (tiled backend, the project's default) on the same weights and
inputs. One exported graph is checked on several input sizes, including sizes whose small
feature maps the model pads (kernel x dilation larger than the map), odd sizes and batch 2.
"""
import numpy as np
import pytest
import torch

from dinat_backbone import DinatBackbone, DinatConfig
from dinat_backbone.export import (MIN_DYNAMIC_SIZE, ExportNeighborhoodAttention2D, export_friendly,
                                   export_onnx, export_program)

onnx = pytest.importorskip("onnx", reason="pip install onnx onnxscript onnxruntime (test extra)")
ort = pytest.importorskip("onnxruntime", reason="pip install onnxruntime (test extra)")
pytest.importorskip("onnxscript", reason="pip install onnxscript (test extra)")

# Sizes checked on the one dynamic graph: (batch, height, width).
#   (1, 40, 72):   stage2 is 5 x 9 with dilation 2 (window 6 > 5: padded), stage4 2 x 3 (padded)
#   (2, 97, 131):  odd sizes, batch 2, stage4 4 x 5
#   (1, 256, 320), (1, 481, 353): larger maps, the sizes docs/pytorch.md quotes
SIZES = [(1, 40, 72), (2, 97, 131), (1, 256, 320), (1, 481, 353)]
# Largest allowed |exported - eager| over every output element and size, fp32: the bound docs/pytorch.md
# quotes. Measured with torch 2.14.1 / onnxruntime 1.32 on an AMD EPYC CPU: torch.export 1.9e-6,
# ONNX 5.0e-6 (per size 1.9e-6, 4.1e-6, 3.3e-6, 5.0e-6); 2e-5 leaves 4x for other CPUs' SIMD
# kernels and onnxruntime versions (different summation orders). The tests print the measured max.
TOL = 2e-5


def _config():
    # Dilation 2 in the first two stages and kernel 3 everywhere: small maps get padded.
    return DinatConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                       dilations=[[2], [2], [1], [1]], kernel_size=3, drop_path_rate=0.0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = DinatBackbone(_config()).eval()
    with torch.no_grad():  # non-trivial RPB and LayerNorm parameters
        for name, p in m.named_parameters():
            if name.endswith("rpb") or "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    return m


@pytest.fixture(scope="module")
def program(model):
    # a batch-1 example: export_program still makes the batch dimension dynamic
    return export_program(model, _inputs(1, 64, 96))


def _inputs(b, h, w):
    g = torch.Generator().manual_seed(h * 1000 + w)
    return torch.randn(b, 3, h, w, generator=g)


def test_export_friendly_matches_eager_on_small_and_odd_sizes(model):
    # Independent of export: the rewritten attention gives the eager model's numbers, including
    # inputs far below the dynamic range (every stage padded).
    m = export_friendly(model)
    assert sum(isinstance(x, ExportNeighborhoodAttention2D) for x in m.modules()) == 4
    assert not any(isinstance(x, ExportNeighborhoodAttention2D) for x in model.modules())
    with torch.no_grad():
        for h, w in [(1, 1), (7, 7), (31, 33), (40, 72)]:
            x = _inputs(1, h, w)
            a, b = m(x), model(x)
            for k in b:
                assert a[k].shape == b[k].shape == (1, model._out_feature_channels[k],
                                                    *model.output_size(h, w, k))
                torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5)


def test_torch_export_dynamic_hw(model, program):
    rc = {str(v) for v in program.range_constraints.values()}
    assert any(f"VR[{MIN_DYNAMIC_SIZE}" in r for r in rc), rc  # height / width are symbolic
    diffs = {}
    with torch.no_grad():
        for b, h, w in SIZES:
            x = _inputs(b, h, w)
            got, want = program.module()(x), model(x)
            assert list(got) == list(want)
            for k in want:
                assert got[k].shape == want[k].shape
            diffs[(b, h, w)] = max(float((got[k] - want[k]).abs().max()) for k in want)
    print(f"torch.export max |difference| {max(diffs.values()):.2e} (tolerance {TOL:.0e}); per size:", diffs)
    assert all(d <= TOL for d in diffs.values()), diffs


def test_onnx_dynamic_hw_matches_pytorch(model, program, tmp_path):
    path = tmp_path / "dinat.onnx"
    export_onnx(program, str(path), opset=18, output_names=list(model.out_features))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, False, True, True]  # B, 3, H, W
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == list(model.out_features)
    diffs = {}
    with torch.no_grad():
        for b, h, w in SIZES:
            x = _inputs(b, h, w)
            want = model(x)
            outs = sess.run(None, {"pixel_values": x.numpy()})
            for o, k in zip(outs, want):
                assert o.shape == tuple(want[k].shape)
            diffs[(b, h, w)] = max(float(np.abs(o - want[k].numpy()).max())
                                   for o, k in zip(outs, want))
    print(f"ONNX max |difference| {max(diffs.values()):.2e} (tolerance {TOL:.0e}); per size:", diffs)
    assert all(d <= TOL for d in diffs.values()), diffs


def test_export_rejects_bad_arguments(model):
    with pytest.raises(ValueError, match="opset >= 17"):
        export_onnx(model, "unused.onnx", opset=13)
    with pytest.raises(ValueError, match="dynamic=False"):
        export_program(model, min_size=8)
    with pytest.raises(ValueError, match="no NeighborhoodAttention2D"):
        export_friendly(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="attention weights"):
        export_friendly(model).levels[0].blocks[0].attn(torch.randn(1, 8, 8, 16), True)
