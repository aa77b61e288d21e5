"""``patch_transformers()``: transformers' DiNAT modules, computed by ``dinat_backbone.ops.na2d``.

Why: transformers' ``modeling_dinat`` imports ``natten2dqkrpb`` / ``natten2dav`` from
``natten.functional`` when NATTEN is importable (both were removed in NATTEN 0.17.5, so the import
fails), calls them without NATTEN (stubs that raise), and from 4.57 lays the query / key / value
out wrongly before calling them (4.57 unpacks the [B, H, W, C] map as [B, L, C]; 5.x transposes
H and W instead of moving the heads first). 4.50-4.53 were right (tests/test_transformers_oracle.py).

What the patch changes, in ``transformers.models.dinat.modeling_dinat`` only:

1. imports the module (if it is not imported yet) with transformers' ``is_natten_available()``
   answering False for the duration of the import, so the module never touches NATTEN;
2. ``natten2dqkrpb`` / ``natten2dav`` become this package's ``na2d_qk`` / ``na2d_av`` in the
   layout NATTEN <= 0.17 had ([batch, heads, height, width, head_dim]), for any code that calls them;
3. ``requires_backends`` (the module's reference) no longer asks for "natten"; every other
   backend is still checked by transformers' own function;
4. ``NeighborhoodAttention.forward`` computes with :func:`dinat_backbone.ops.na2d`. The module's
   parameters (``query``, ``key``, ``value``, ``rpb``) and everything around it (small-map
   padding in ``DinatLayer.maybe_pad``, layer scale, drop path, downsamplers, norms, heads) stay
   transformers' own, so checkpoints saved by transformers load unchanged.

The patch is on the classes and the module, so models built before the call use it too.
Everything is validated before anything is changed: a refused call leaves transformers as it was.

Behaviour kept from transformers: ``output_attentions`` returns, per stage, the softmax weights
of the stage's last layer, shaped [batch, heads, height, width, kernel_size**2] on the padded map
when the map was padded; attention dropout (``attention_probs_dropout_prob``) drops attention
weights in training. One difference: the returned weights are those before dropout (transformers'
code returned them after; identical in eval mode or with a dropout of 0).
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from typing import List, Tuple

import torch

from ..ops import na2d, na2d_av, na2d_qk

__all__ = ["patch_transformers", "is_patched", "TransformersPatchError", "SUPPORTED_RANGE",
           "VERIFIED_VERSIONS"]

MODULE = "transformers.models.dinat.modeling_dinat"
_MIN, _MAX_EXCLUDED = (4, 50), (5, 25)
SUPPORTED_RANGE = ">=4.50,<5.25"
#: Versions tests/test_transformers_patch.py passed on (CI runs 5.24.0, and 4.53.3 through
#: tests/test_transformers_oracle.py; the others by hand, see docs/transformers.md). The rest of
#: the range has the same modeling_dinat structure (read in 4.55.4 and 5.12.1), which is checked
#: at run time before anything is changed.
VERIFIED_VERSIONS = ("4.50.3", "4.53.3", "4.57.6", "5.0.0", "5.24.0")
_MARK = "_dinat_backbone_patch"


class TransformersPatchError(ImportError):
    """transformers cannot be patched (unsupported version, no DiNAT, unknown structure)."""


def _marked(fn) -> bool:
    return bool(getattr(fn, _MARK, False))


def _version_tuple(version: str) -> Tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", version)
    if not m:
        raise TransformersPatchError(
            f"cannot read the transformers version {version!r}; dinat_backbone.transformers "
            f"supports transformers{SUPPORTED_RANGE}: pip install 'transformers{SUPPORTED_RANGE}'")
    return int(m.group(1)), int(m.group(2))


def _import_transformers():
    try:
        import transformers
    except ImportError as e:
        raise ImportError(
            f"dinat_backbone.transformers needs transformers{SUPPORTED_RANGE}, which is not "
            f"importable ({e}); install it with pip install 'transformers{SUPPORTED_RANGE}'"
        ) from e
    return transformers


def _check_version(transformers) -> str:
    version = str(getattr(transformers, "__version__", "unknown"))
    vt = _version_tuple(version)
    if not (_MIN <= vt < _MAX_EXCLUDED):
        raise TransformersPatchError(
            f"transformers {version} is not supported by dinat_backbone.transformers: it patches "
            f"transformers{SUPPORTED_RANGE} (verified on {', '.join(VERIFIED_VERSIONS)}), whose "
            "DiNAT module it has read. Install a supported version, e.g. "
            f"pip install 'transformers{SUPPORTED_RANGE}', or use this package's own models "
            "(dinat_backbone.DinatForImageClassification.from_pretrained reads the same folders)")
    return version


def _no_dinat(version: str, err: BaseException = None) -> TransformersPatchError:
    why = f" ({type(err).__name__}: {err})" if err is not None else ""
    return TransformersPatchError(
        f"transformers {version} has no importable DiNAT model ({MODULE}){why}. "
        f"Install a transformers that ships it: pip install 'transformers{SUPPORTED_RANGE}', or use "
        "this package's own models (dinat_backbone.DinatModel / DinatForImageClassification / "
        "DinatBackbone.from_pretrained read transformers' folders)")


def _import_modeling_dinat(version: str):
    """(module, imported_here). Imports with is_natten_available() False, restored afterwards."""
    md = sys.modules.get(MODULE)
    if md is not None:
        return md, False
    try:
        spec = importlib.util.find_spec("transformers.models.dinat")
    except (ImportError, ValueError) as e:
        raise _no_dinat(version, e) from e
    if spec is None:
        raise _no_dinat(version)
    import transformers.utils as tu

    if not hasattr(tu, "is_natten_available"):
        raise TransformersPatchError(
            f"transformers {version}: transformers.utils.is_natten_available is missing, so its "
            f"DiNAT module cannot be imported the way dinat_backbone.transformers knows; supported: "
            f"transformers{SUPPORTED_RANGE}")
    saved = tu.is_natten_available
    tu.is_natten_available = lambda: False  # the module's `from ...utils import` reads this name
    try:
        md = importlib.import_module(MODULE)
    except ImportError as e:
        raise _no_dinat(version, e) from e
    finally:
        tu.is_natten_available = saved
    return md, True


def _param_names(fn) -> List[str]:
    return list(inspect.signature(fn).parameters)


def _check_structure(md, version: str) -> None:
    """Everything the patch relies on, checked before anything is changed."""
    def fail(what):
        raise TransformersPatchError(
            f"transformers {version}: {MODULE} does not have the structure "
            f"dinat_backbone.transformers knows ({what}); nothing was changed. Supported: "
            f"transformers{SUPPORTED_RANGE} (verified on {', '.join(VERIFIED_VERSIONS)})")

    for name in ("NeighborhoodAttention", "DinatLayer", "DinatConfig", "requires_backends",
                 "natten2dqkrpb", "natten2dav"):
        if not hasattr(md, name):
            fail(f"no {name}")
    na_cls = md.NeighborhoodAttention
    if not (isinstance(na_cls, type) and issubclass(na_cls, torch.nn.Module)):
        fail("NeighborhoodAttention is not a torch module")
    fwd = na_cls.__dict__.get("forward")
    if fwd is None:
        fail("NeighborhoodAttention defines no forward")
    if not _marked(fwd) and _param_names(fwd)[:3] != ["self", "hidden_states", "output_attentions"]:
        fail(f"NeighborhoodAttention.forward takes {_param_names(fwd)}")
    if _param_names(na_cls.__init__)[:6] != ["self", "config", "dim", "num_heads", "kernel_size",
                                              "dilation"]:
        fail(f"NeighborhoodAttention.__init__ takes {_param_names(na_cls.__init__)}")
    if not callable(getattr(md.DinatLayer, "maybe_pad", None)):
        fail("DinatLayer has no maybe_pad (the small-map padding)")
    # Build one tiny module and check the attributes the new forward reads.
    try:
        probe = na_cls(md.DinatConfig(), 8, 2, 3, 1)
    except Exception as e:  # noqa: BLE001 - any failure means an unknown structure
        fail(f"NeighborhoodAttention(config, 8, 2, 3, 1) raised {type(e).__name__}: {e}")
    for attr, kind in (("query", torch.nn.Linear), ("key", torch.nn.Linear),
                       ("value", torch.nn.Linear), ("rpb", torch.nn.Parameter),
                       ("dropout", torch.nn.Dropout)):
        if not isinstance(getattr(probe, attr, None), kind):
            fail(f"NeighborhoodAttention.{attr} is not a {kind.__name__}")
    for attr, want in (("num_attention_heads", 2), ("attention_head_size", 4),
                       ("kernel_size", 3), ("dilation", 1)):
        if getattr(probe, attr, None) != want:
            fail(f"NeighborhoodAttention.{attr} is {getattr(probe, attr, None)!r}, expected {want}")
    if tuple(probe.rpb.shape) != (2, 5, 5):
        fail(f"NeighborhoodAttention.rpb has shape {tuple(probe.rpb.shape)}, expected (2, 5, 5)")


# ------------------------------------------------------------------------------ replacements
def natten2dqkrpb(query, key, rpb, kernel_size, dilation):
    """NATTEN <= 0.17's ``natten2dqkrpb``: [B, heads, H, W, D] -> logits [B, heads, H, W, k*k]."""
    return na2d_qk(query, key, (kernel_size, kernel_size), (dilation, dilation), rpb)


def natten2dav(attn, value, kernel_size, dilation):
    """NATTEN <= 0.17's ``natten2dav``: attn [B, heads, H, W, k*k], value [B, heads, H, W, D]."""
    return na2d_av(attn, value, (kernel_size, kernel_size), (dilation, dilation))


def neighborhood_attention_forward(self, hidden_states: torch.Tensor,
                                   output_attentions: bool = False):
    """transformers' ``NeighborhoodAttention.forward`` computed with ``dinat_backbone.ops.na2d``.

    hidden_states [B, H, W, C] (channels last, already padded by ``DinatLayer``) ->
    (context [B, H, W, C],) or (context, attention weights [B, heads, H, W, k*k]).
    """
    if hidden_states.dim() != 4:
        raise ValueError(f"NeighborhoodAttention expects channels-last maps [batch, height, width, "
                         f"channels], got shape {tuple(hidden_states.shape)}")
    b, h, w, _ = hidden_states.shape
    heads, d = self.num_attention_heads, self.attention_head_size

    def heads_first(x):  # [B, H, W, heads*D] -> [B, heads, H, W, D]
        return x.view(b, h, w, heads, d).permute(0, 3, 1, 2, 4)

    q = heads_first(self.query(hidden_states))
    k = heads_first(self.key(hidden_states))
    v = heads_first(self.value(hidden_states))
    res = na2d(q, k, v, self.kernel_size, self.dilation, rpb=self.rpb, scale=d ** -0.5,
               return_attn=bool(output_attentions), dropout_p=float(self.dropout.p),
               training=self.training)
    out, attn = res if output_attentions else (res, None)
    context = out.permute(0, 2, 3, 1, 4).reshape(b, h, w, heads * d)
    return (context, attn) if output_attentions else (context,)


def _requires_backends_without_natten(original):
    def requires_backends(obj, backends):
        names = [backends] if isinstance(backends, str) else list(backends)
        rest = [n for n in names if n != "natten"]
        if rest:
            original(obj, rest)

    requires_backends.__wrapped__ = original
    setattr(requires_backends, _MARK, True)
    return requires_backends


for _fn in (natten2dqkrpb, natten2dav, neighborhood_attention_forward):
    setattr(_fn, _MARK, True)


def is_patched() -> bool:
    """True when transformers' DiNAT module is imported and fully patched."""
    md = sys.modules.get(MODULE)
    return md is not None and all(
        _marked(x) for x in (md.NeighborhoodAttention.__dict__.get("forward"),
                             md.requires_backends, md.natten2dqkrpb, md.natten2dav))


def patch_transformers() -> List[str]:
    """Make transformers' DiNAT models run, computed by this package's ``na2d``.

    Explicit and idempotent: returns a list of what it changed (one line each); a second call
    returns ``[]``. Raises ImportError when transformers is not installed and
    :class:`TransformersPatchError` (an ImportError) when its version is outside
    ``SUPPORTED_RANGE``, when it has no DiNAT model, or when its DiNAT module does not have the
    structure this patch knows; in every such case nothing has been changed.
    """
    transformers = _import_transformers()
    version = _check_version(transformers)
    md, imported = _import_modeling_dinat(version)
    _check_structure(md, version)

    changes: List[str] = []
    if imported:
        changes.append(f"imported {MODULE} without NATTEN (transformers {version})")
    for name, new, ours in (("natten2dqkrpb", natten2dqkrpb, "na2d_qk"),
                            ("natten2dav", natten2dav, "na2d_av")):
        if not _marked(getattr(md, name)):
            setattr(md, name, new)
            changes.append(f"{MODULE}.{name} -> dinat_backbone.ops.{ours}")
    if not _marked(md.requires_backends):
        md.requires_backends = _requires_backends_without_natten(md.requires_backends)
        changes.append(f"{MODULE}.requires_backends no longer requires 'natten'")
    if not _marked(md.NeighborhoodAttention.__dict__.get("forward")):
        md.NeighborhoodAttention.forward = neighborhood_attention_forward
        changes.append(f"{MODULE}.NeighborhoodAttention.forward -> dinat_backbone.ops.na2d")
    return changes
