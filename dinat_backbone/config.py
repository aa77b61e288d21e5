"""DinatConfig: the model's hyper-parameters, the authors' variants and dilation presets.

One table, :data:`FIELDS`, lists every field once (default, documentation, check); it drives the
signature of ``DinatConfig(...)``, :meth:`DinatConfig.to_dict` / :meth:`DinatConfig.from_dict`
and :meth:`DinatConfig.validate`. Every invalid value raises a :class:`ConfigError` naming the
field, the value, the problem and the fix; adapters show it with their own key names through
:meth:`ConfigError.renamed`.

Names and defaults follow the Hugging Face ``transformers.DinatConfig`` (dinat-mini), so a
``config.json`` written by transformers loads here unchanged. Backbone-only fields
(``out_features`` / ``out_indices``, ``frozen_stages``) and run-time choices
(``attention_backend``, ``gradient_checkpointing``) sit beside them.
"""
from __future__ import annotations

import copy
import difflib
import inspect
import json
import math
import os
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from ._constants import ACTIVATIONS, ATTENTION_BACKENDS

__all__ = [
    "DinatConfig",
    "ConfigError",
    "Field",
    "FIELDS",
    "VARIANTS",
    "DILATION_PRESETS",
    "dilation_preset",
    "derive_dilations",
    "ATTENTION_BACKENDS",
    "ACTIVATIONS",
]


class ConfigError(ValueError):
    """An invalid configuration value: ``str(err)`` is "<key>=<value!r>: <problem>. Fix: <fix>".

    ``field`` is the DinatConfig field (or from_variant argument) at fault; the message shows it
    under ``key``, the field's own name unless an adapter renamed it with :meth:`renamed`.
    """

    def __init__(self, field: str, value: Any, problem: str, fix: str, *,
                 key: Optional[str] = None):
        super().__init__(field, value, problem, fix)
        self.field = field
        self.value = value
        self.problem = problem
        self.fix = fix
        self.key = field if key is None else key

    def __str__(self) -> str:
        return f"{self.key}={self.value!r}: {self.problem}. Fix: {self.fix}"

    def renamed(self, key_map: Mapping) -> "ConfigError":
        """A copy whose message names the field as ``key_map[field]`` (e.g. an adapter's key,
        ``{"depths": "MODEL.DINAT.DEPTHS"}``); fields not in ``key_map`` keep their name."""
        return ConfigError(self.field, self.value, self.problem, self.fix,
                           key=key_map.get(self.field, self.key))


class _Invalid(Exception):
    """Raised by a field check; validate() turns it into a ConfigError for that field."""

    def __init__(self, problem: str, fix: str):
        super().__init__(problem)
        self.problem, self.fix = problem, fix


# ----------------------------------------------------------------------------- variants, presets
# The authors' variants (their classification models). kernel 7 unless named.
VARIANTS: Dict[str, Dict[str, Any]] = {
    "mini": dict(embed_dim=64, depths=(3, 4, 6, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3.0,
                 layer_scale_init_value=0.0),
    "tiny": dict(embed_dim=64, depths=(3, 4, 18, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3.0,
                 layer_scale_init_value=0.0),
    "small": dict(embed_dim=96, depths=(3, 4, 18, 5), num_heads=(3, 6, 12, 24), mlp_ratio=2.0,
                  layer_scale_init_value=0.0),
    "base": dict(embed_dim=128, depths=(3, 4, 18, 5), num_heads=(4, 8, 16, 32), mlp_ratio=2.0,
                 layer_scale_init_value=1e-5),
    "large": dict(embed_dim=192, depths=(3, 4, 18, 5), num_heads=(6, 12, 24, 48), mlp_ratio=2.0,
                  layer_scale_init_value=0.0),
}
VARIANTS["large_k11"] = dict(VARIANTS["large"], kernel_size=11)
_VARIANT_ALIASES = {"large-k11": "large_k11", "large11": "large_k11", "large_11x11": "large_k11",
                    "large-11x11": "large_k11"}

# Per-stage dilation patterns of the authors' configs. A stage's list is its pattern repeated
# to the stage's depth; when the depth is not a multiple of the pattern, the remainder is the
# pattern's tail, as in the authors' depth-18 configs (ADE20K 640: [1,2,1,3,1,4,1,5] x 2 + [1,5];
# Mask2Former: [1,2,1,3] x 4 + [1,3]); a stage shorter than its pattern takes its head.
DILATION_PRESETS: Dict[str, Tuple[Tuple[int, ...], ...]] = {
    "imagenet224": ((1, 8, 1), (1, 4, 1, 4), (1, 2), (1, 1)),
    "imagenet384": ((1, 13, 1), (1, 6, 1, 6), (1, 3), (1, 1)),
    "coco": ((1, 28, 1), (1, 7, 1, 14), (1, 3, 1, 5, 1, 7), (1, 3, 1, 3, 1)),
    "ade20k512": ((1, 16, 1), (1, 4, 1, 8), (1, 2, 1, 3, 1, 4), (1, 2, 1, 2, 1)),
    "ade20k640": ((1, 20, 1), (1, 5, 1, 10), (1, 2, 1, 3, 1, 4, 1, 5), (1, 2, 1, 2, 1)),
    "mask2former": ((1, 14, 1), (1, 4, 1, 7), (1, 2, 1, 3), (1, 1)),
}
_PRESET_ALIASES = {"224": "imagenet224", "imagenet": "imagenet224", "384": "imagenet384",
                   "detection": "coco", "ade20k": "ade20k512", "ade": "ade20k512",
                   "ade20k_512": "ade20k512", "ade20k_640": "ade20k640", "m2f": "mask2former",
                   "mask2former_large": "mask2former"}


def _repeat_to(pattern: Sequence[int], depth: int) -> List[int]:
    n = len(pattern)
    if depth < n:
        return [int(x) for x in pattern[:depth]]
    rest = depth % n
    tail = list(pattern[n - rest:]) if rest else []
    return [int(x) for x in list(pattern) * (depth // n) + tail]


def dilation_preset(name: str, depths: Sequence[int] = (3, 4, 6, 5)) -> List[List[int]]:
    """The authors' per-layer dilations for a named setting, fitted to ``depths``.

    Names: imagenet224 (alias 224), imagenet384 (384), coco, ade20k512 (ade20k), ade20k640,
    mask2former.
    """
    key = _PRESET_ALIASES.get(str(name).lower(), str(name).lower())
    if key not in DILATION_PRESETS:
        raise ConfigError("dilations", name, f"unknown preset {name!r}",
                          f"use one of {sorted(DILATION_PRESETS)} (or an explicit list of "
                          "per-layer lists)")
    pats = DILATION_PRESETS[key]
    if len(depths) != len(pats):
        raise ConfigError("dilations", name,
                          f"preset {name!r} has {len(pats)} stages, depths has {len(depths)}",
                          f"give {len(pats)} depths, or explicit per-layer lists")
    return [_repeat_to(p, d) for p, d in zip(pats, depths)]


def derive_dilations(
    resolution: Union[int, Sequence[int]],
    depths: Sequence[int] = (3, 4, 6, 5),
    kernel_size: int = 7,
    patch_size: int = 4,
) -> List[List[int]]:
    """Per-layer dilations for a training resolution by the authors' rule.

    In stage i the feature map is ``resolution / (patch_size * 2**i)`` on a side; its largest
    dilation is ``floor(side / kernel_size)`` (so that kernel x dilation still fits the map), and
    layers alternate between 1 (local NA) and that value (sparse global DiNA), starting with 1.
    ``derive_dilations(224)`` and ``derive_dilations(384)`` give the authors' 224 and 384 presets.
    For a non-square resolution the shorter side decides.
    """
    if isinstance(resolution, (tuple, list)):
        side = min(int(r) for r in resolution)
    else:
        side = int(resolution)
    if side <= 0:
        raise ConfigError("image_size", resolution, f"resolution must be positive, got {side}",
                          "give the training resolution in pixels, e.g. 224 or (512, 1024)")
    out = []
    for i, depth in enumerate(depths):
        stage_side = math.ceil(side / (patch_size * 2 ** i))
        dmax = max(1, stage_side // kernel_size)
        out.append([1 if j % 2 == 0 else dmax for j in range(depth)])
    return out


# ----------------------------------------------------------------------------- field checks
# Each check takes (value, config) and returns the normalised value or raises _Invalid; checks
# run in FIELDS order, so a check may rely on the fields before it (depths before num_heads).
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_list(v) -> Optional[List[int]]:
    """v as a list of ints (integral floats accepted), or None if it is not one."""
    if isinstance(v, (str, bytes)) or not isinstance(v, Sequence):
        return None
    if not all(_is_int(x) or (isinstance(x, float) and x.is_integer()) for x in v):
        return None
    return [int(x) for x in v]


def _boolean(v, cfg):
    if not isinstance(v, bool):
        raise _Invalid("must be True or False",
                       "write True or False (in YAML: true or false), not a string or a number")
    return v


def _probability(v, cfg):
    if not _is_real(v) or not 0.0 <= v < 1.0:
        raise _Invalid("must be a probability in [0, 1)", "e.g. 0.0 (off) or 0.1")
    return v


def _real(minimum: float, strict: bool, fix: str) -> Callable:
    problem = "must be a positive number (> 0)" if strict and minimum == 0 else \
        f"must be a number {'>' if strict else '>='} {minimum}"

    def check(v, cfg):
        if not _is_real(v) or v < minimum or (strict and v == minimum):
            raise _Invalid(problem, fix)
        return v
    return check


def _choice(options: Sequence, fix: Optional[str] = None) -> Callable:
    def check(v, cfg):
        if v not in options:
            raise _Invalid("is not one of the supported values",
                           fix or f"use one of {list(options)}")
        return v
    return check


def _patch_size(v, cfg):
    if v not in (4, (4, 4), [4, 4]):
        raise _Invalid("only patch size 4 is supported (two stride-2 convolutions)",
                       "set patch_size=4")
    return v


def _num_channels(v, cfg):
    if not _is_int(v) or v < 1:
        raise _Invalid("must be a positive integer", "give the image channels (3 for RGB)")
    return v


def _embed_dim(v, cfg):
    if not _is_int(v) or v < 2 or v % 2:
        raise _Invalid("must be a positive even integer", "e.g. 64 (the stem halves it once)")
    return v


def _depths(v, cfg):
    depths = _int_list(v)
    if not depths or any(d < 1 for d in depths):
        raise _Invalid("must be a non-empty list of positive integers (layers per stage)",
                       "e.g. [3, 4, 6, 5]")
    return depths


def _num_heads(v, cfg):
    heads, n = _int_list(v), len(cfg.depths)
    if heads is None:
        raise _Invalid("must be a list of positive integers, one per stage", "e.g. [2, 4, 8, 16]")
    if len(heads) != n:
        raise _Invalid(f"needs one entry per stage ({n} stages in depths)",
                       f"give {n} head counts")
    for i, h in enumerate(heads):
        dim = cfg.embed_dim * 2 ** i
        if h < 1 or dim % h:
            raise _Invalid(f"stage {i + 1} has {dim} channels, which {h} heads do not divide",
                           f"pick a divisor of {dim}")
    return heads


def _kernel_size(v, cfg):
    if not _is_int(v) or v < 3 or v % 2 == 0:
        raise _Invalid("must be an odd integer >= 3", "7, or 11 as in the large 11x11 models")
    return v


def _dilations(v, cfg):
    if v is None or isinstance(v, str):  # a preset name (dilation_preset raises ConfigError)
        return dilation_preset("imagenet224" if v is None else v, cfg.depths)
    depths = cfg.depths
    fix = "give per-layer lists (one list per stage) or a preset name such as 'coco'"
    if not isinstance(v, (list, tuple)) or len(v) != len(depths):
        raise _Invalid(f"needs one list per stage ({len(depths)} stages), each as long as that "
                       "stage's depth", fix)
    out = []
    for i, (dl, d) in enumerate(zip(v, depths)):
        ints = _int_list(dl)
        if ints is None:
            raise _Invalid(f"stage {i + 1} entry {dl!r} is not a list of ints", fix)
        if len(ints) != d:
            raise _Invalid(f"stage {i + 1} has depth {d} but {len(ints)} dilations",
                           "give exactly one per layer (or use dilation_preset(name, depths))")
        if any(x < 1 for x in ints):
            raise _Invalid(f"stage {i + 1}: dilations must be >= 1", "1 is local attention")
        out.append(ints)
    return out


def _hidden_act(v, cfg):
    if str(v).lower() not in ACTIVATIONS:
        raise _Invalid("is not a supported activation", f"use one of {sorted(ACTIVATIONS)}")
    return v


def _frozen_stages(v, cfg):
    n = len(cfg.depths)
    if not _is_int(v) or not -1 <= v <= n:
        raise _Invalid(f"must be an integer in [-1, {n}]",
                       "-1 trains everything, 0 freezes the patch embedding, i also freezes "
                       "stages 1..i")
    return v


def _str_keys(d):
    return {str(k): v for k, v in d.items()}


@dataclass(frozen=True)
class Field:
    """One configuration field: its default, what it means, and how it is checked / saved."""

    default: Any
    doc: str
    check: Optional[Callable[[Any, "DinatConfig"], Any]] = None  # None: checked elsewhere
    to_json: Optional[Callable[[Any], Any]] = None                # None: the value as is
    saved: bool = True                                            # written by to_dict


# THE field table: name -> Field. Order = signature order = validation order. Fields without a
# check are checked in pairs: out_features / out_indices by _align_outputs (after the others),
# num_labels / id2label / label2id by _labels (at construction).
FIELDS: Dict[str, Field] = {
    "patch_size": Field(4, "patch size of the stem (two stride-2 convolutions): 4", _patch_size),
    "num_channels": Field(3, "image channels", _num_channels),
    "embed_dim": Field(64, "channels of stage 1 (doubled at every stage)", _embed_dim),
    "depths": Field((3, 4, 6, 5), "layers per stage", _depths, list),
    "num_heads": Field((2, 4, 8, 16), "attention heads per stage", _num_heads, list),
    "kernel_size": Field(7, "neighborhood size (odd)", _kernel_size),
    "dilations": Field(
        "imagenet224", "per-layer dilations, one list per stage, or a preset name "
        "(imagenet224, imagenet384, coco, ade20k512, ade20k640, mask2former) fitted to depths; "
        "None means imagenet224", _dilations, lambda d: [list(x) for x in d]),
    "mlp_ratio": Field(3.0, "MLP hidden channels / channels",
                       _real(0, True, "2.0 or 3.0 as in the released models")),
    "qkv_bias": Field(True, "bias in the q/k/v projection", _boolean),
    "hidden_dropout_prob": Field(0.0, "dropout after the projections and the MLP", _probability),
    "attention_probs_dropout_prob": Field(0.0, "dropout on the attention weights", _probability),
    "drop_path_rate": Field(0.1, "stochastic depth of the last layer (0 at the first, linear)",
                            _probability),
    "hidden_act": Field("gelu", "MLP activation (transformers' names)", _hidden_act),
    "initializer_range": Field(0.02, "std of the truncated-normal initialisation",
                               _real(0, False, "0.02 as in the released models")),
    "layer_norm_eps": Field(1e-5, "LayerNorm epsilon", _real(0, True, "1e-5")),
    "layer_scale_init_value": Field(
        0.0, "layer-scale initial value, 0 = off", _real(0, False, "0 disables layer scale; "
                                                            "base uses 1e-5")),
    "out_features": Field(None, "backbone outputs among stage_names (stem, stage1..stage4); "
                          "None: stage1..stage4", None, list),
    "out_indices": Field(None, "the same as indices into stage_names (0 = stem)", None, list),
    "num_labels": Field(None, "classes of the classification head; None: 1000, or "
                        "len(id2label)", None, saved=False),
    "id2label": Field(None, "class index -> name", None, _str_keys),
    "label2id": Field(None, "class name -> index", None, dict),
    "problem_type": Field(None, "classification loss: None (from the labels), 'regression', "
                          "'single_label_classification' or 'multi_label_classification'",
                          _choice((None, "regression", "single_label_classification",
                                   "multi_label_classification"),
                                  "use None, 'regression', 'single_label_classification' or "
                                  "'multi_label_classification'")),
    "frozen_stages": Field(-1, "-1 none, 0 the patch embedding, i also stages 1..i (backbone)",
                           _frozen_stages),
    "attention_backend": Field("auto", "na2d backend (see dinat_backbone.ops)",
                               _choice(ATTENTION_BACKENDS)),
    "gradient_checkpointing": Field(False, "recompute each stage in the backward pass",
                                    _boolean),
    "output_hidden_states": Field(False, "DinatModel returns every stage's map", _boolean),
    "output_attentions": Field(False, "DinatModel returns the attention weights", _boolean),
    "use_return_dict": Field(True, "DinatModel returns a dataclass (False: a tuple)", _boolean),
}
_SIGNATURE = inspect.Signature(
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default)
       for n, f in FIELDS.items()]
    + [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)])

# Keys a transformers DinatConfig / PretrainedConfig may write that are not fields here; never
# treated as misspellings of a field.
_TRANSFORMERS_KEYS = frozenset({
    "num_layers", "hidden_size", "stage_names", "image_size", "path_norm", "architectures",
    "torch_dtype", "dtype", "transformers_version", "return_dict", "torchscript", "use_bfloat16",
    "pruned_heads", "tie_word_embeddings", "is_encoder_decoder", "is_decoder", "variant",
    "finetuning_task", "tokenizer_class", "prefix", "task_specific_params",
    "chunk_size_feed_forward",
})


def _check_unknown_keys(kwargs: Dict[str, Any]) -> None:
    """Near-misses of a field name ("dilation", "kernal_size") would be silently ignored."""
    for k, v in kwargs.items():
        if k.startswith("_") or k in _TRANSFORMERS_KEYS:
            continue
        close = difflib.get_close_matches(k, list(FIELDS), n=1, cutoff=0.8)
        if close:
            raise ConfigError(k, v, f"unknown field {k!r} (a misspelt field would be silently "
                                    "ignored)", f"did you mean {close[0]!r}?")


def _labels(num_labels, id2label, label2id) -> Tuple[Dict[int, str], Dict[str, int]]:
    """(id2label, label2id) with transformers' semantics: id2label wins over num_labels."""
    examples = {"id2label": "{0: 'cat', 1: 'dog'}", "label2id": "{'cat': 0, 'dog': 1}"}
    for name, value in (("id2label", id2label), ("label2id", label2id)):
        if value is not None and not isinstance(value, Mapping):
            raise ConfigError(name, value, "must be a dict", f"give a dict, e.g. {examples[name]}")
    if id2label is not None:
        try:
            ids = {int(k): str(v) for k, v in dict(id2label).items()}
        except (TypeError, ValueError):
            raise ConfigError("id2label", id2label, "keys must be class indices (integers)",
                              f"e.g. {examples['id2label']}") from None
        if num_labels is not None and num_labels != len(ids):
            raise ConfigError("id2label", id2label, f"num_labels={num_labels} disagrees with "
                              f"id2label ({len(ids)} entries)", "give one of them, or make them "
                              "agree")
    else:
        n = 1000 if num_labels is None else num_labels
        if not _is_int(n) or n < 0:
            raise ConfigError("num_labels", num_labels, "must be an integer >= 0",
                              "give the number of classes (0: no classification head)")
        ids = {i: f"LABEL_{i}" for i in range(n)}
    return ids, dict(label2id) if label2id is not None else {v: k for k, v in ids.items()}


# ----------------------------------------------------------------------------- the config
class DinatConfig:
    """Configuration of a DiNAT model (defaults: dinat-mini, as ``transformers.DinatConfig()``).

    Every invalid value raises :class:`ConfigError`. Unknown keys (e.g. from a transformers
    ``config.json``) are kept for round trips, except near-misses of a field name. The fields
    (``DinatConfig.FIELDS``; positional order as listed):
    """

    model_type = "dinat"
    FIELDS = FIELDS

    def __init__(self, *args: Any, **kwargs: Any):
        bound = _SIGNATURE.bind(self, *args, **kwargs)
        values = {n: bound.arguments.get(n, f.default) for n, f in FIELDS.items()}
        extra = bound.arguments.get("kwargs", {})
        for name, value in values.items():
            if name not in ("num_labels", "id2label", "label2id"):
                setattr(self, name, value)
        self.id2label, self.label2id = _labels(values["num_labels"], values["id2label"],
                                               values["label2id"])
        _check_unknown_keys(extra)
        self._extra = {k: v for k, v in extra.items() if not k.startswith("_")}
        self.validate()

    __init__.__signature__ = _SIGNATURE  # what help() and IDEs show: the table's defaults

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check (and normalise) every field in table order; raise ConfigError on the first
        invalid one. Models call it again, so fields changed after construction are caught."""
        for name, f in FIELDS.items():
            if f.check is None:
                continue
            value = getattr(self, name)
            try:
                setattr(self, name, f.check(value, self))
            except _Invalid as e:
                raise ConfigError(name, value, e.problem, e.fix) from None
        self.num_layers = len(self.depths)
        self.stage_names = ["stem"] + [f"stage{i + 1}" for i in range(len(self.depths))]
        self.out_features, self.out_indices = self._align_outputs(self.out_features,
                                                                  self.out_indices)

    def _align_outputs(self, out_features, out_indices) -> Tuple[List[str], List[int]]:
        names = self.stage_names
        if out_features is None and out_indices is None:
            out_indices = list(range(1, len(names)))
        if out_features is not None:
            if isinstance(out_features, str) or not isinstance(out_features, Sequence):
                raise ConfigError("out_features", out_features, "must be a list of stage names",
                                  f"give a list of names from {names}")
            unknown = [f for f in out_features if f not in names]
            if unknown:
                raise ConfigError("out_features", list(out_features),
                                  f"{unknown} not among the stages {names}",
                                  f"use names from {names}")
            idx = [names.index(f) for f in out_features]
            if out_indices is not None and list(out_indices) != idx:
                raise ConfigError("out_indices", list(out_indices),
                                  f"disagrees with out_features={list(out_features)!r}",
                                  "give only one of out_features / out_indices")
            out_indices = idx
        if isinstance(out_indices, str) or not isinstance(out_indices, Sequence):
            raise ConfigError("out_indices", out_indices, "must be a list of indices",
                              f"give indices into {names}, e.g. [1, 2, 3, 4]")
        idx = []
        for i in out_indices:
            if not _is_int(i) or not -len(names) <= i < len(names):
                raise ConfigError("out_indices", list(out_indices),
                                  f"indices must be in [0, {len(names) - 1}] over {names}",
                                  "0 is the stem, 1..4 the stages")
            idx.append(i % len(names))
        if not idx:
            raise ConfigError("out_features", out_features,
                              "out_features / out_indices select no output",
                              f"give at least one of {names} (default: stage1..stage4)")
        if len(set(idx)) != len(idx) or idx != sorted(idx):
            raise ConfigError("out_indices", list(out_indices),
                              "must be increasing and without repeats", "e.g. [1, 2, 3, 4]")
        return [names[i] for i in idx], idx

    # ------------------------------------------------------------------ helpers
    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def hidden_size(self) -> int:
        """Channels of the last stage (transformers' name)."""
        return int(self.embed_dim * 2 ** (len(self.depths) - 1))

    @property
    def stage_channels(self) -> List[int]:
        return [self.embed_dim * 2 ** i for i in range(len(self.depths))]

    @classmethod
    def from_variant(cls, name: Optional[str], *,
                     image_size: Union[int, Sequence[int], None] = None,
                     out_indices: Union[int, Sequence[int], None] = None,
                     **overrides: Any) -> "DinatConfig":
        """A named variant (mini, tiny, small, base, large, large_k11), then ``overrides``.

        Args:
            name: the variant; None for none (the overrides over the defaults, i.e. mini).
            image_size: the training resolution, an int or (height, width): dilations derived
                from it by :func:`derive_dilations` for the final depths and kernel size.
            out_indices: stages to output, numbered as in mmdet / mmseg / timm: 0 = stage 1
                (stride 4) ... 3 = stage 4 (stride 32). (The config's own ``out_indices``
                field counts the stem as 0; it comes out as these + 1.)
            overrides: DinatConfig fields; an override of None means "the variant's value".
                ``dilations`` may be a preset name; without it and without ``image_size``, the
                classification preset imagenet224 fitted to the depths, which is what every
                released classification model uses (also large_k11 at 384: 96 // 11 = 8).
        """
        key = _variant_key(name)
        kw = dict(VARIANTS[key]) if key is not None else {}
        kw.update({k: v for k, v in overrides.items() if v is not None})
        if image_size is not None and "dilations" in kw:
            raise ConfigError("image_size", image_size, "given together with dilations",
                              "give either image_size (dilations derived from it) or dilations")
        if out_indices is not None and ("out_features" in kw or "out_indices" in kw):
            raise ConfigError("out_indices", out_indices, "given together with out_features",
                              "give only one of them")
        cfg = cls(**kw)
        if image_size is not None:
            kw["dilations"] = derive_dilations(_check_image_size(image_size, cfg), cfg.depths,
                                               cfg.kernel_size, 4)
        if out_indices is not None:
            kw["out_features"] = _stage_outputs(out_indices, len(cfg.depths))
        if image_size is not None or out_indices is not None:
            cfg = cls(**kw)
        cfg.variant = key
        return cfg

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"model_type": self.model_type}
        for name, f in FIELDS.items():
            if f.saved:
                value = getattr(self, name)
                d[name] = f.to_json(value) if f.to_json is not None and value is not None \
                    else value
        for k, v in self._extra.items():
            d.setdefault(k, v)
        return copy.deepcopy(d)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "DinatConfig":
        d = dict(d)
        d.pop("model_type", None)
        if "return_dict" in d and "use_return_dict" not in d:
            d["use_return_dict"] = d.pop("return_dict")
        # transformers writes out_features/out_indices together; both agree by construction.
        return cls(**d)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json_file(cls, path) -> "DinatConfig":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def save_pretrained(self, directory) -> None:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
            f.write(self.to_json_string())

    def copy(self, **overrides: Any) -> "DinatConfig":
        d = self.to_dict()
        if "out_features" in overrides or "out_indices" in overrides:
            d.pop("out_features", None)
            d.pop("out_indices", None)
        if "num_labels" in overrides or "id2label" in overrides:
            d.pop("id2label", None)
            d.pop("label2id", None)
        d.update(overrides)
        return DinatConfig.from_dict(d)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DinatConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"DinatConfig({self.to_json_string()})"


DinatConfig.__doc__ += "".join(
    "\n" + textwrap.fill(f"{n} = {f.default!r}: {f.doc}.", 96, initial_indent=" " * 8,
                         subsequent_indent=" " * 12) for n, f in FIELDS.items()) + "\n"


def _variant_key(name: Optional[str]) -> Optional[str]:
    if name is None:
        return None
    if not isinstance(name, str):
        raise ConfigError("variant", name, "must be a variant name",
                          f"use one of {sorted(VARIANTS)}")
    key = _VARIANT_ALIASES.get(name.lower(), name.lower())
    if key not in VARIANTS:
        raise ConfigError("variant", name, f"unknown DiNAT variant {name!r}",
                          f"use one of {sorted(VARIANTS)}")
    return key


def _check_image_size(image_size, cfg: DinatConfig) -> Union[int, List[int]]:
    """A training resolution (int or (h, w)) at least one pixel at the last stage's stride."""
    stride = 4 * 2 ** (len(cfg.depths) - 1)
    sides = list(image_size) if isinstance(image_size, (list, tuple)) else [image_size]
    fix = "give the training resolution in pixels, e.g. 224, 512 or (800, 1333)"
    if len(sides) not in (1, 2) or not all(_is_int(s) for s in sides):
        raise ConfigError("image_size", image_size, "must be an integer or (height, width)", fix)
    if min(sides) < stride:
        raise ConfigError("image_size", image_size,
                          f"is smaller than the stride of the last stage ({stride} pixels)", fix)
    return sides[0] if len(sides) == 1 else sides


def _stage_outputs(out_indices, num_stages: int) -> List[str]:
    """mmdet / mmseg / timm stage indices (0 = stage 1) -> stage names."""
    if _is_int(out_indices):
        out_indices = (out_indices,)
    n = num_stages
    example = f"e.g. {tuple(range(n))}"
    if not isinstance(out_indices, (list, tuple)) or not out_indices or not all(
            _is_int(i) and 0 <= i < n for i in out_indices):
        raise ConfigError("out_indices", out_indices,
                          f"stage indices must be in 0..{n - 1} (0 = stage 1, stride 4 ... "
                          f"{n - 1} = stage {n}, stride {4 * 2 ** (n - 1)})", example)
    if list(out_indices) != sorted(set(out_indices)):
        raise ConfigError("out_indices", out_indices, "must be increasing and without repeats",
                          example)
    return [f"stage{i + 1}" for i in out_indices]
