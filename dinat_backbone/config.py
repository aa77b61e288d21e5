"""DinatConfig: the model's hyper-parameters, the authors' variants and dilation presets.

Names and defaults follow the Hugging Face ``transformers.DinatConfig`` (dinat-mini), so a
``config.json`` written by transformers loads here unchanged. Backbone-only fields
(``out_features`` / ``out_indices``, ``frozen_stages``) and run-time choices
(``attention_backend``, ``gradient_checkpointing``) sit beside them.
"""
from __future__ import annotations

import copy
import json
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

__all__ = [
    "DinatConfig",
    "VARIANTS",
    "DILATION_PRESETS",
    "dilation_preset",
    "derive_dilations",
    "ATTENTION_BACKENDS",
]

ATTENTION_BACKENDS = ("auto", "tiled", "gather", "natten", "flex")
ACTIVATIONS = ("gelu", "relu", "silu", "swish", "gelu_new", "gelu_fast", "quick_gelu", "tanh",
               "gelu_pytorch_tanh", "mish")

# The authors' variants (REFERENCE.md). kernel 7 unless named.
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
        raise ValueError(
            f"dilations: unknown preset {name!r}. Use one of {sorted(DILATION_PRESETS)} "
            "(or an explicit list of per-layer lists)."
        )
    pats = DILATION_PRESETS[key]
    if len(depths) != len(pats):
        raise ValueError(f"dilations: preset {name!r} has {len(pats)} stages, depths has {len(depths)}")
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
        raise ValueError(f"resolution must be positive, got {resolution!r}")
    out = []
    for i, depth in enumerate(depths):
        stage_side = math.ceil(side / (patch_size * 2 ** i))
        dmax = max(1, stage_side // kernel_size)
        out.append([1 if j % 2 == 0 else dmax for j in range(depth)])
    return out


def _as_int_list(value, name: str) -> List[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a list of integers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int,)) and not (
            isinstance(v, float) and float(v).is_integer()
        ):
            raise ValueError(f"{name} must be a list of integers, got {value!r}")
        out.append(int(v))
    return out


# Keys a transformers DinatConfig / PretrainedConfig may write that are not fields here; never
# treated as misspellings of a field.
_TRANSFORMERS_KEYS = frozenset({
    "num_layers", "hidden_size", "stage_names", "image_size", "path_norm", "architectures",
    "torch_dtype", "dtype", "transformers_version", "return_dict", "torchscript", "use_bfloat16",
    "pruned_heads", "tie_word_embeddings", "is_encoder_decoder", "is_decoder", "variant",
    "finetuning_task", "tokenizer_class", "prefix", "task_specific_params", "chunk_size_feed_forward",
})


def _check_unknown_keys(kwargs: Dict[str, Any]) -> None:
    import difflib
    import inspect

    fields = [p for p in inspect.signature(DinatConfig.__init__).parameters
              if p not in ("self", "kwargs")]
    for k in kwargs:
        if k.startswith("_") or k in _TRANSFORMERS_KEYS:
            continue
        close = difflib.get_close_matches(k, fields, n=1, cutoff=0.8)
        if close:
            raise ValueError(f"DinatConfig got an unknown field {k!r}: did you mean {close[0]!r}? "
                             f"(a misspelt field would be silently ignored; fields: {fields})")


class DinatConfig:
    """Configuration of a DiNAT model (defaults: dinat-mini, as ``transformers.DinatConfig()``).

    Args mirror ``transformers.DinatConfig``; additionally:
        out_features / out_indices: backbone outputs among ``stage_names``
            (``["stem", "stage1", "stage2", "stage3", "stage4"]``); default stage1..stage4.
        num_labels / id2label / label2id / problem_type: classification head.
        frozen_stages: -1 none, 0 the patch embedding, i also stages 1..i (backbone).
        attention_backend: "auto", "tiled", "gather", "natten" or "flex" (see dinat_backbone.ops).
        gradient_checkpointing: recompute each stage in the backward pass (saves memory).
    ``dilations`` may also be a preset name ("coco", "ade20k512", ...), resolved at construction.
    """

    model_type = "dinat"

    def __init__(
        self,
        patch_size: int = 4,
        num_channels: int = 3,
        embed_dim: int = 64,
        depths: Sequence[int] = (3, 4, 6, 5),
        num_heads: Sequence[int] = (2, 4, 8, 16),
        kernel_size: int = 7,
        dilations: Union[str, Sequence[Sequence[int]], None] = None,
        mlp_ratio: float = 3.0,
        qkv_bias: bool = True,
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        drop_path_rate: float = 0.1,
        hidden_act: str = "gelu",
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-5,
        layer_scale_init_value: float = 0.0,
        out_features: Optional[Sequence[str]] = None,
        out_indices: Optional[Sequence[int]] = None,
        num_labels: Optional[int] = None,
        id2label: Optional[Dict[Any, str]] = None,
        label2id: Optional[Dict[str, int]] = None,
        problem_type: Optional[str] = None,
        frozen_stages: int = -1,
        attention_backend: str = "auto",
        gradient_checkpointing: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        use_return_dict: bool = True,
        **kwargs: Any,
    ):
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.embed_dim = embed_dim
        self.depths = list(depths) if isinstance(depths, (list, tuple)) else depths
        self.num_layers = len(self.depths) if isinstance(self.depths, list) else None
        self.num_heads = list(num_heads) if isinstance(num_heads, (list, tuple)) else num_heads
        self.kernel_size = kernel_size
        if dilations is None:
            dilations = [[1, 8, 1], [1, 4, 1, 4], [1, 2, 1, 2, 1, 2], [1, 1, 1, 1, 1]]
        if isinstance(dilations, str):
            if not isinstance(self.depths, list):
                raise ValueError(f"depths must be a list of integers, got {depths!r}")
            dilations = dilation_preset(dilations, self.depths)
        self.dilations = [list(d) if isinstance(d, (list, tuple)) else d for d in dilations] \
            if isinstance(dilations, (list, tuple)) else dilations
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.hidden_act = hidden_act
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.layer_scale_init_value = layer_scale_init_value
        self.frozen_stages = frozen_stages
        self.attention_backend = attention_backend
        self.gradient_checkpointing = gradient_checkpointing
        self.output_hidden_states = output_hidden_states
        self.output_attentions = output_attentions
        self.use_return_dict = use_return_dict
        self.problem_type = problem_type
        # Classification labels (transformers semantics: id2label wins over num_labels).
        from collections.abc import Mapping

        for name, value in (("id2label", id2label), ("label2id", label2id)):
            if value is not None and not isinstance(value, Mapping):
                raise ValueError(f"DinatConfig.{name}={value!r} is invalid: give a dict, e.g. "
                                 + ("{0: 'cat', 1: 'dog'}" if name == "id2label"
                                    else "{'cat': 0, 'dog': 1}"))
        if id2label is not None:
            try:
                self.id2label = {int(k): str(v) for k, v in dict(id2label).items()}
            except (TypeError, ValueError):
                raise ValueError(f"DinatConfig.id2label={id2label!r} is invalid: keys must be "
                                 "class indices (integers), e.g. {0: 'cat', 1: 'dog'}") from None
            if num_labels is not None and num_labels != len(self.id2label):
                raise ValueError(
                    f"num_labels={num_labels} disagrees with id2label ({len(self.id2label)} "
                    "entries): give one of them, or make them agree")
        else:
            n = 1000 if num_labels is None else num_labels
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"num_labels must be an integer >= 0, got {num_labels!r}")
            self.id2label = {i: f"LABEL_{i}" for i in range(n)}
        self.label2id = dict(label2id) if label2id is not None else {
            v: k for k, v in self.id2label.items()}
        # Unknown keys (e.g. from a transformers config.json) are kept for round trips, except
        # near-misses of a field name ("dilation", "kernal_size"), which would be silently ignored.
        _check_unknown_keys(kwargs)
        self._extra = {k: v for k, v in kwargs.items() if not k.startswith("_")}
        self.validate()
        self.stage_names = ["stem"] + [f"stage{i + 1}" for i in range(len(self.depths))]
        self.out_features, self.out_indices = self._align_outputs(out_features, out_indices)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ValueError naming the first invalid field and how to fix it."""

        def bad(field, value, fix):
            raise ValueError(f"DinatConfig.{field}={value!r} is invalid: {fix}")

        if self.patch_size != 4 and self.patch_size != (4, 4) and self.patch_size != [4, 4]:
            bad("patch_size", self.patch_size,
                "only patch size 4 is supported (two stride-2 convolutions), set patch_size=4")
        if isinstance(self.num_channels, bool) or not isinstance(self.num_channels, int) \
                or self.num_channels < 1:
            bad("num_channels", self.num_channels, "must be a positive integer (3 for RGB)")
        if isinstance(self.embed_dim, bool) or not isinstance(self.embed_dim, int) \
                or self.embed_dim < 2 or self.embed_dim % 2:
            bad("embed_dim", self.embed_dim, "must be a positive even integer (e.g. 64)")
        try:
            depths = _as_int_list(self.depths, "depths")
        except ValueError:
            bad("depths", self.depths, "must be a list of positive integers, e.g. [3, 4, 6, 5]")
        if not depths or any(d < 1 for d in depths):
            bad("depths", self.depths, "must be a non-empty list of positive integers")
        self.depths = depths
        self.num_layers = len(depths)
        try:
            heads = _as_int_list(self.num_heads, "num_heads")
        except ValueError:
            bad("num_heads", self.num_heads, "must be a list of positive integers, one per stage")
        if len(heads) != len(depths):
            bad("num_heads", self.num_heads,
                f"needs one entry per stage ({len(depths)} stages in depths)")
        for i, h in enumerate(heads):
            dim = self.embed_dim * 2 ** i
            if h < 1 or dim % h:
                bad("num_heads", self.num_heads,
                    f"stage {i + 1} has {dim} channels, which {h} heads do not divide; pick a "
                    f"divisor of {dim}")
        self.num_heads = heads
        k = self.kernel_size
        if isinstance(k, bool) or not isinstance(k, int) or k < 3 or k % 2 == 0:
            bad("kernel_size", k, "must be an odd integer >= 3 (7 or 11 in the released models)")
        if not isinstance(self.dilations, (list, tuple)) or len(self.dilations) != len(depths):
            bad("dilations", self.dilations,
                f"needs one list per stage ({len(depths)} stages), each as long as that stage's "
                "depth, or a preset name such as 'coco'")
        dil = []
        for i, (dl, d) in enumerate(zip(self.dilations, depths)):
            try:
                dl = _as_int_list(dl, "dilations")
            except ValueError:
                bad("dilations", self.dilations, f"stage {i + 1} entry {dl!r} is not a list of ints")
            if len(dl) != d:
                bad("dilations", self.dilations,
                    f"stage {i + 1} has depth {d} but {len(dl)} dilations; give exactly one per "
                    "layer (or use dilation_preset(name, depths))")
            if any(x < 1 for x in dl):
                bad("dilations", self.dilations, f"stage {i + 1}: dilations must be >= 1")
            dil.append(dl)
        self.dilations = dil
        if not isinstance(self.mlp_ratio, (int, float)) or isinstance(self.mlp_ratio, bool) \
                or not 0 < self.mlp_ratio < math.inf:
            bad("mlp_ratio", self.mlp_ratio, "must be a positive number (2.0 or 3.0)")
        if not isinstance(self.qkv_bias, bool):
            bad("qkv_bias", self.qkv_bias, "must be True or False")
        for field in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
                bad(field, v, "must be a probability in [0, 1)")
        if str(self.hidden_act).lower() not in ACTIVATIONS:
            bad("hidden_act", self.hidden_act, f"use one of {list(ACTIVATIONS)}")
        if not isinstance(self.initializer_range, (int, float)) or isinstance(
                self.initializer_range, bool) or not 0 <= self.initializer_range < math.inf:
            bad("initializer_range", self.initializer_range, "must be >= 0 (0.02)")
        if not isinstance(self.layer_norm_eps, (int, float)) or isinstance(
                self.layer_norm_eps, bool) or not 0 < self.layer_norm_eps < math.inf:
            bad("layer_norm_eps", self.layer_norm_eps, "must be > 0 (1e-5)")
        if isinstance(self.layer_scale_init_value, bool) or not isinstance(
                self.layer_scale_init_value, (int, float)) or not (
                0 <= self.layer_scale_init_value < math.inf):
            bad("layer_scale_init_value", self.layer_scale_init_value,
                "must be >= 0 (0 disables layer scale; base uses 1e-5)")
        if isinstance(self.frozen_stages, bool) or not isinstance(self.frozen_stages, int) \
                or not -1 <= self.frozen_stages <= len(depths):
            bad("frozen_stages", self.frozen_stages,
                f"must be an integer in [-1, {len(depths)}]: -1 trains everything, 0 freezes the "
                "patch embedding, i also freezes stages 1..i")
        for field in ("gradient_checkpointing", "output_hidden_states", "output_attentions",
                      "use_return_dict"):
            if not isinstance(getattr(self, field), bool):
                bad(field, getattr(self, field), "must be True or False")
        if self.attention_backend not in ATTENTION_BACKENDS:
            bad("attention_backend", self.attention_backend, f"use one of {list(ATTENTION_BACKENDS)}")
        if self.problem_type not in (None, "regression", "single_label_classification",
                                     "multi_label_classification"):
            bad("problem_type", self.problem_type,
                "use None, 'regression', 'single_label_classification' or "
                "'multi_label_classification'")
        if hasattr(self, "out_features"):  # a built config, validated again (e.g. by a model)
            self.stage_names = ["stem"] + [f"stage{i + 1}" for i in range(len(depths))]
            self.out_features, self.out_indices = self._align_outputs(self.out_features,
                                                                      self.out_indices)

    def _align_outputs(self, out_features, out_indices):
        names = self.stage_names
        if out_features is None and out_indices is None:
            out_indices = list(range(1, len(names)))
        if out_features is not None:
            if isinstance(out_features, str) or not isinstance(out_features, Sequence):
                raise ValueError(f"DinatConfig.out_features={out_features!r} is invalid: give a "
                                 f"list of names from {names}")
            unknown = [f for f in out_features if f not in names]
            if unknown:
                raise ValueError(f"DinatConfig.out_features={list(out_features)!r} is invalid: "
                                 f"{unknown} not among the stages {names}")
            idx = [names.index(f) for f in out_features]
            if out_indices is not None and list(out_indices) != idx:
                raise ValueError(f"DinatConfig.out_features={list(out_features)!r} and "
                                 f"out_indices={list(out_indices)!r} disagree; give only one")
            out_indices = idx
        idx = []
        for i in out_indices:
            if isinstance(i, bool) or not isinstance(i, int) or not -len(names) <= i < len(names):
                raise ValueError(f"DinatConfig.out_indices={list(out_indices)!r} is invalid: "
                                 f"indices must be in [0, {len(names) - 1}] over {names}")
            idx.append(i % len(names))
        if not idx:
            raise ValueError(f"DinatConfig.out_features / out_indices select no output: give at "
                             f"least one of {names} (default: stage1..stage4)")
        if len(set(idx)) != len(idx) or idx != sorted(idx):
            raise ValueError(f"DinatConfig.out_indices={list(out_indices)!r} must be increasing "
                             "and without repeats")
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
    def from_variant(cls, name: str, **overrides: Any) -> "DinatConfig":
        """A named variant (mini, tiny, small, base, large, large_k11), then ``overrides``.

        ``dilations`` may be a preset name; if not given, the classification preset
        ([1,8,1], [1,4,1,4], [1,2,...], [1,1,...]) fitted to the depths, which is what every
        released classification model uses (also large_k11 at 384: floor(96 / 11) = 8).
        """
        key = _VARIANT_ALIASES.get(str(name).lower(), str(name).lower())
        if key not in VARIANTS:
            raise ValueError(f"unknown DiNAT variant {name!r}: use one of {sorted(VARIANTS)}")
        kw = dict(VARIANTS[key])
        kw.update(overrides)
        depths = kw["depths"]
        if "dilations" not in overrides or overrides["dilations"] is None:
            kw["dilations"] = dilation_preset("imagenet224", depths)
        elif isinstance(kw["dilations"], str):
            kw["dilations"] = dilation_preset(kw["dilations"], depths)
        cfg = cls(**kw)
        cfg.variant = key
        return cfg

    def to_dict(self) -> Dict[str, Any]:
        d = {
            "model_type": self.model_type,
            "patch_size": self.patch_size,
            "num_channels": self.num_channels,
            "embed_dim": self.embed_dim,
            "depths": list(self.depths),
            "num_heads": list(self.num_heads),
            "kernel_size": self.kernel_size,
            "dilations": [list(x) for x in self.dilations],
            "mlp_ratio": self.mlp_ratio,
            "qkv_bias": self.qkv_bias,
            "hidden_dropout_prob": self.hidden_dropout_prob,
            "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
            "drop_path_rate": self.drop_path_rate,
            "hidden_act": self.hidden_act,
            "initializer_range": self.initializer_range,
            "layer_norm_eps": self.layer_norm_eps,
            "layer_scale_init_value": self.layer_scale_init_value,
            "out_features": list(self.out_features),
            "out_indices": list(self.out_indices),
            "id2label": {str(k): v for k, v in self.id2label.items()},
            "label2id": dict(self.label2id),
            "problem_type": self.problem_type,
            "frozen_stages": self.frozen_stages,
            "attention_backend": self.attention_backend,
            "gradient_checkpointing": self.gradient_checkpointing,
            "output_hidden_states": self.output_hidden_states,
            "output_attentions": self.output_attentions,
            "use_return_dict": self.use_return_dict,
        }
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
        import os

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
