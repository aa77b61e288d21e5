"""detectron2 adapter: DiNAT as a registered detectron2 backbone.

Importing this module (with detectron2 installed) registers in detectron2's ``BACKBONE_REGISTRY``:

* ``D2DiNAT``: the bottom-up backbone. Outputs ``res2..res5`` (strides 4, 8, 16, 32) by default;
  any subset through ``MODEL.DINAT.OUT_FEATURES`` (``stem`` is also available, stride 4).
  Usable from YAML (``MODEL.BACKBONE.NAME: "D2DiNAT"``, e.g. inside Mask2Former) and from
  LazyConfig (``L(D2DiNAT)(variant="mini", dilations="coco", drop_path_rate=0.2)``).
* ``build_dinat_fpn_backbone``: detectron2's own ``FPN`` + ``LastLevelMaxPool`` on ``D2DiNAT``
  (as ``build_resnet_fpn_backbone`` does for ResNet); ``build_retinanet_dinat_fpn_backbone``
  puts ``LastLevelP6P7`` on top instead.

``add_dinat_config(cfg)`` adds ``MODEL.DINAT.*`` (see ``_DEFAULTS`` below) and
``DATASETS.DINAT_DEMO.*`` (the synthetic demo dataset). ``DinatCheckpointer`` is a
``DetectionCheckpointer`` whose ``MODEL.WEIGHTS`` may also be a released DiNAT checkpoint
(the authors' ``.pth``, a transformers checkpoint, a converted file): it is converted with
``dinat_backbone.checkpoints`` and loaded under the backbone's key prefix.

This module imports without detectron2 (so ``BACKBONE_PREFIX`` can be read anywhere); every
detectron2-dependent name then raises an ImportError that says how to install detectron2.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .backbone import DinatBackbone
from .config import DinatConfig, derive_dilations

__all__ = [
    "BACKBONE_PREFIX",
    "MASK2FORMER_BACKBONE_PREFIX",
    "D2_STAGE_NAMES",
    "INSTALL_HINT",
    "detectron2_available",
    "dinat_config_from_cfg",
    # detectron2-dependent:
    "D2DiNAT",
    "build_dinat_fpn_backbone",
    "build_retinanet_dinat_fpn_backbone",
    "add_dinat_config",
    "DinatCheckpointer",
    "build_dinat_optimizer_params",
    "register_demo_datasets",
]

# Key prefix of the DiNAT weights inside a detectron2 model built with build_dinat_fpn_backbone
# (GeneralizedRCNN.backbone = FPN, FPN.bottom_up = D2DiNAT). Converters that write detectron2
# checkpoints put the backbone's keys (``patch_embed.*``, ``levels.*``, ``norm0..3``) under it.
BACKBONE_PREFIX = "backbone.bottom_up."
# ... and inside Mask2Former (MaskFormer.backbone = D2DiNAT), the authors' released Mask2Former
# checkpoints use the same prefix.
MASK2FORMER_BACKBONE_PREFIX = "backbone."

# detectron2 output name -> DinatBackbone output name
D2_STAGE_NAMES = {"stem": "stem", "res2": "stage1", "res3": "stage2", "res4": "stage3",
                  "res5": "stage4"}
_FROM_STAGE = {v: k for k, v in D2_STAGE_NAMES.items()}

INSTALL_HINT = (
    "dinat_backbone.detectron2 needs detectron2, which is not installed (or fails to import). "
    "detectron2 is not published on the package registries; install it from its official source "
    "as its INSTALL.md says, into the environment that has torch and torchvision:\n"
    "    pip install 'iopath>=0.1.7,<0.1.10' 'setuptools<81' fvcore pycocotools\n"
    "    pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'\n"
    "(or: git clone https://github.com/facebookresearch/detectron2.git && "
    "pip install --no-build-isolation -e detectron2). The rest of dinat_backbone works without it."
)

try:  # detectron2 is optional: the core never needs it
    import detectron2  # noqa: F401
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import CfgNode, configurable
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import BACKBONE_REGISTRY, Backbone
    from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7
    _IMPORT_ERROR: Optional[BaseException] = None
except ImportError as _e:  # pragma: no cover - exercised in the no-detectron2 environment
    _IMPORT_ERROR = _e


def detectron2_available() -> bool:
    """True when detectron2 imports (and this module registered its backbones)."""
    return _IMPORT_ERROR is None


def _require_detectron2() -> None:
    if _IMPORT_ERROR is not None:
        raise ImportError(f"{INSTALL_HINT}\n(import error: {_IMPORT_ERROR})") from _IMPORT_ERROR


_D2_NAMES = {"D2DiNAT", "build_dinat_fpn_backbone", "build_retinanet_dinat_fpn_backbone",
             "add_dinat_config", "DinatCheckpointer", "build_dinat_optimizer_params",
             "register_demo_datasets"}


def __getattr__(name: str):  # PEP 562: only reached for names not defined (detectron2 absent)
    if name in _D2_NAMES:
        _require_detectron2()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------------------------ config
# MODEL.DINAT defaults. None = "take it from VARIANT".
_DEFAULTS: Dict[str, Any] = {
    "VARIANT": "mini",          # mini, tiny, small, base, large, large_k11: sets the defaults
    "EMBED_DIM": None,          # int
    "DEPTHS": None,             # [int] * 4
    "NUM_HEADS": None,          # [int] * 4
    "KERNEL_SIZE": None,        # odd int (7; 11 for large_k11 / Mask2Former-L)
    # per-stage lists of per-layer dilations, a preset name ("imagenet224", "coco", "ade20k512",
    # "ade20k640", "mask2former", ...), or a training resolution in pixels (an int, or a string of
    # digits where a string is already set, e.g. opts over a preset: DILATIONS "'256'") from
    # which they are derived by the authors' rule. None = the variant's ImageNet-224 dilations.
    "DILATIONS": None,
    "MLP_RATIO": None,          # float
    "QKV_BIAS": True,
    "DROP_RATE": 0.0,           # dropout after attention / MLP projections
    "ATTN_DROP_RATE": 0.0,      # dropout on attention weights
    "DROP_PATH_RATE": 0.2,      # stochastic depth (linearly increasing over layers)
    "LAYER_SCALE": None,        # float, 0 = off (base uses 1e-5)
    "OUT_FEATURES": ["res2", "res3", "res4", "res5"],
    # detectron2's FREEZE_AT semantics: 0 trains everything, 1 freezes the patch embedding,
    # k >= 2 also res2..res{k} (stages 1..k-1).
    "FREEZE_AT": 0,
    "ATTENTION_BACKEND": "auto",  # auto, tiled, gather, natten, flex
    "USE_CHECKPOINT": False,    # gradient checkpointing per stage (saves memory)
}

# MODEL.DINAT key -> DinatConfig field
_FIELD_OF_KEY = {
    "EMBED_DIM": "embed_dim", "DEPTHS": "depths", "NUM_HEADS": "num_heads",
    "KERNEL_SIZE": "kernel_size", "DILATIONS": "dilations", "MLP_RATIO": "mlp_ratio",
    "QKV_BIAS": "qkv_bias", "DROP_RATE": "hidden_dropout_prob",
    "ATTN_DROP_RATE": "attention_probs_dropout_prob", "DROP_PATH_RATE": "drop_path_rate",
    "LAYER_SCALE": "layer_scale_init_value", "ATTENTION_BACKEND": "attention_backend",
    "USE_CHECKPOINT": "gradient_checkpointing", "FREEZE_AT": "frozen_stages",
    "OUT_FEATURES": "out_features",
}
_KEY_OF_FIELD = {v: k for k, v in _FIELD_OF_KEY.items()}
_KEY_OF_FIELD["layer_scale"] = "LAYER_SCALE"


def _cfg_error(key: str, value: Any, fix: str) -> ValueError:
    return ValueError(f"MODEL.DINAT.{key}={value!r} is invalid: {fix}")


def _get(node: Any, key: str) -> Any:
    if isinstance(node, dict):
        return node.get(key, _DEFAULTS.get(key))
    return getattr(node, key, _DEFAULTS.get(key))


def _plain(value: Any) -> Any:
    """Tuples, yacs lists and omegaconf ListConfigs (LazyConfig) -> plain (nested) lists."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def _translate_error(err: ValueError, values: Dict[str, Any]) -> ValueError:
    """DinatConfig's "DinatConfig.<field>=<v> is invalid: <fix>" (or "<field>: <fix>") messages
    -> "MODEL.DINAT.<KEY>=<value> is invalid: <fix>"."""
    msg = str(err)
    m = re.match(r"DinatConfig\.(\w+)=.*? is invalid: (.*)", msg, re.S) \
        or re.match(r"(\w+): (.*)", msg, re.S)
    field, fix = (m.group(1), m.group(2)) if m else (None, msg)
    key = _KEY_OF_FIELD.get(field)
    if key is None and "variant" in msg.lower():
        key, fix = "VARIANT", msg
    if key is None:
        return ValueError(f"MODEL.DINAT: {msg}")
    return ValueError(f"MODEL.DINAT.{key}={values.get(key)!r} is invalid: {fix}")


def _d2_out_features(value: Any, key: str = "OUT_FEATURES") -> List[str]:
    names = list(D2_STAGE_NAMES)
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise _cfg_error(key, value, f"give a non-empty list of names from {names}, "
                                     "e.g. ['res2', 'res3', 'res4', 'res5']")
    unknown = [v for v in value if v not in D2_STAGE_NAMES]
    if unknown:
        raise _cfg_error(key, list(value), f"{unknown} are not outputs of DiNAT; use names from "
                                           f"{names}")
    if len(set(value)) != len(value):
        raise _cfg_error(key, list(value), "names must not repeat")
    return sorted(value, key=names.index)


def _freeze_at(value: Any, num_stages: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= num_stages + 1:
        raise _cfg_error("FREEZE_AT", value,
                         f"must be an integer in [0, {num_stages + 1}]: 0 trains everything, 1 "
                         "freezes the patch embedding, k >= 2 also freezes res2..res{k}")
    return value - 1  # -> DinatConfig.frozen_stages


def dinat_config_from_cfg(node: Any, num_channels: int = 3) -> Tuple[DinatConfig, List[str]]:
    """``MODEL.DINAT`` (a CfgNode, or any object / dict with those keys) -> (DinatConfig, names).

    ``names`` are the detectron2 output names (``res2``..). Invalid values raise a ValueError
    that names the key's full name (``MODEL.DINAT.KERNEL_SIZE``) and the fix.
    """
    values = {k: _plain(_get(node, k)) for k in _DEFAULTS}
    variant = values["VARIANT"]
    if not isinstance(variant, str) or not variant:
        raise _cfg_error("VARIANT", variant, "use one of mini, tiny, small, base, large, "
                                             "large_k11")
    out_d2 = _d2_out_features(values["OUT_FEATURES"])
    for key in ("DEPTHS", "NUM_HEADS"):
        v = values[key]
        if v is not None and (not isinstance(v, (list, tuple)) or len(v) != 4):
            raise _cfg_error(key, v, "give 4 integers, one per stage (res2..res5), or leave it "
                                     "unset to take the VARIANT's")
    overrides: Dict[str, Any] = {}
    for key in ("EMBED_DIM", "DEPTHS", "NUM_HEADS", "KERNEL_SIZE", "MLP_RATIO", "LAYER_SCALE"):
        if values[key] is not None:
            overrides[_FIELD_OF_KEY[key]] = values[key]
    for key in ("QKV_BIAS", "DROP_RATE", "ATTN_DROP_RATE", "DROP_PATH_RATE",
                "ATTENTION_BACKEND", "USE_CHECKPOINT"):
        overrides[_FIELD_OF_KEY[key]] = values[key]
    if not isinstance(values["USE_CHECKPOINT"], bool):
        raise _cfg_error("USE_CHECKPOINT", values["USE_CHECKPOINT"], "must be true or false")
    try:
        base = DinatConfig.from_variant(variant, **{k: v for k, v in overrides.items()
                                                    if k in ("depths", "kernel_size")})
    except ValueError as e:
        raise _translate_error(e, values) from None
    dil = values["DILATIONS"]
    if isinstance(dil, str) and dil.strip().isdigit():  # "256": a resolution, as an int
        dil = int(dil)
    if dil is not None:
        if isinstance(dil, bool):
            raise _cfg_error("DILATIONS", dil, "give per-stage lists, a preset name or a "
                                               "resolution in pixels")
        if isinstance(dil, int):
            if dil < 32:
                raise _cfg_error("DILATIONS", dil, "as an integer it is the training "
                                                   "resolution in pixels (e.g. 256, 800)")
            dil = derive_dilations(dil, base.depths, base.kernel_size)
        overrides["dilations"] = dil
    overrides["frozen_stages"] = _freeze_at(values["FREEZE_AT"], len(base.depths))
    overrides["out_features"] = [D2_STAGE_NAMES[n] for n in out_d2]
    overrides["num_channels"] = num_channels
    try:
        config = DinatConfig.from_variant(variant, **overrides)
    except ValueError as e:
        raise _translate_error(e, values) from None
    return config, out_d2


if _IMPORT_ERROR is None:

    # ------------------------------------------------------------------------- backbone
    @BACKBONE_REGISTRY.register()
    class D2DiNAT(DinatBackbone, Backbone):
        """DiNAT as a detectron2 ``Backbone`` (outputs ``res2..res5`` by default).

        Parameter names are DinatBackbone's (``patch_embed``, ``levels.i``, ``norm0..3``), i.e.
        the authors' detection / segmentation names, so their Mask2Former checkpoints load as is.

        Build it from a config (``D2DiNAT(cfg, input_shape)``, what ``build_backbone`` does) or
        from plain arguments (LazyConfig)::

            L(D2DiNAT)(variant="tiny", dilations="coco", drop_path_rate=0.2,
                       out_features=["res2", "res3", "res4", "res5"])

        Args:
            config: a DinatConfig (its out_features / frozen_stages are replaced by the
                arguments below); or None to build ``DinatConfig.from_variant(variant, ...)``.
            variant: mini, tiny, small, base, large, large_k11 (when ``config`` is None).
            out_features: detectron2 names among stem, res2, res3, res4, res5.
            freeze_at: detectron2 semantics (0 = train all, 1 = patch embedding, k = + res2..resk).
            **overrides: DinatConfig fields (``dilations``, ``drop_path_rate``, ``kernel_size``,
                ``attention_backend``, ...); ``dilations`` may be a preset name.
        """

        @configurable
        def __init__(self, config: Optional[DinatConfig] = None, *, variant: str = "mini",
                     out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
                     freeze_at: int = 0, **overrides: Any):
            out_d2 = _d2_out_features(_plain(out_features))
            overrides = {k: _plain(v) for k, v in overrides.items()}
            if config is None:
                config = DinatConfig.from_variant(variant, **overrides)
            elif not isinstance(config, DinatConfig):
                raise TypeError(f"config must be a DinatConfig or None, got "
                                f"{type(config).__name__}")
            elif overrides:
                config = config.copy(**overrides)
            frozen = _freeze_at(freeze_at, len(config.depths))
            config = config.copy(out_features=[D2_STAGE_NAMES[n] for n in out_d2],
                                 frozen_stages=frozen)
            super().__init__(config)
            self._d2_out_features = out_d2
            if config.gradient_checkpointing:
                self.set_gradient_checkpointing(True)

        @classmethod
        def from_config(cls, cfg, input_shape=None):
            channels = input_shape.channels if input_shape is not None else \
                len(cfg.MODEL.PIXEL_MEAN)
            config, out_d2 = dinat_config_from_cfg(cfg.MODEL.DINAT, num_channels=channels)
            return {"config": config, "out_features": out_d2,
                    "freeze_at": cfg.MODEL.DINAT.FREEZE_AT}

        # detectron2 contract ------------------------------------------------------------
        def forward(self, x):
            """x: [N, C, H, W] (any H, W) -> {"res2": [N, C2, ceil(H/4), ceil(W/4)], ...}."""
            feats = super().forward(x)
            return {_FROM_STAGE[k]: v for k, v in feats.items()}

        def output_shape(self) -> Dict[str, "ShapeSpec"]:
            return {
                name: ShapeSpec(channels=self._out_feature_channels[D2_STAGE_NAMES[name]],
                                stride=self._out_feature_strides[D2_STAGE_NAMES[name]])
                for name in self._d2_out_features
            }

        @property
        def size_divisibility(self) -> int:
            # Any size works (each stride-2 conv rounds up; small maps are padded for attention),
            # but padding to the deepest stride keeps every pyramid level an exact 2x of the next,
            # which FPN's top-down path needs.
            return 32

        @property
        def padding_constraints(self) -> Dict[str, int]:
            return {"size_divisibility": self.size_divisibility, "square_size": 0}

    def _check_fpn_in_features(cfg, bottom_up) -> List[str]:
        available = list(bottom_up.output_shape())
        # empty (detectron2's default) = every res* output of the backbone
        in_features = list(cfg.MODEL.FPN.IN_FEATURES) or [f for f in available if f != "stem"]
        missing = [f for f in in_features if f not in available]
        if missing or not in_features:
            raise ValueError(
                f"MODEL.FPN.IN_FEATURES={in_features!r} is invalid: {missing or 'empty'} not "
                f"among MODEL.DINAT.OUT_FEATURES={available!r}; list the same names in both "
                "(e.g. ['res2', 'res3', 'res4', 'res5'])")
        strides = [bottom_up.output_shape()[f].stride for f in in_features]
        if any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise ValueError(f"MODEL.FPN.IN_FEATURES={in_features!r} is invalid: FPN needs "
                             "consecutive levels (strides doubling), e.g. res2..res5")
        return in_features

    @BACKBONE_REGISTRY.register()
    def build_dinat_fpn_backbone(cfg, input_shape: ShapeSpec):
        """detectron2's FPN (+ LastLevelMaxPool: p2..p6) on a D2DiNAT bottom-up backbone."""
        bottom_up = D2DiNAT(cfg, input_shape)
        return FPN(
            bottom_up=bottom_up,
            in_features=_check_fpn_in_features(cfg, bottom_up),
            out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
            norm=cfg.MODEL.FPN.NORM,
            top_block=LastLevelMaxPool(),
            fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
        )

    @BACKBONE_REGISTRY.register()
    def build_retinanet_dinat_fpn_backbone(cfg, input_shape: ShapeSpec):
        """FPN + LastLevelP6P7 (p3..p7, RetinaNet / FCOS style) on D2DiNAT."""
        bottom_up = D2DiNAT(cfg, input_shape)
        in_features = _check_fpn_in_features(cfg, bottom_up)
        last = bottom_up.output_shape()[in_features[-1]]
        out_channels = cfg.MODEL.FPN.OUT_CHANNELS
        return FPN(
            bottom_up=bottom_up,
            in_features=in_features,
            out_channels=out_channels,
            norm=cfg.MODEL.FPN.NORM,
            top_block=LastLevelP6P7(last.channels, out_channels, in_feature=in_features[-1]),
            fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
        )

    # ------------------------------------------------------------------------- config
    def add_dinat_config(cfg) -> None:
        """Add ``MODEL.DINAT.*`` and ``DATASETS.DINAT_DEMO.*`` (with defaults) to ``cfg``.

        Also adds ``SOLVER.WEIGHT_DECAY_RPB`` (weight decay of the relative position bias tables,
        0.0 as the authors) and ``SOLVER.OPTIMIZER`` ("ADAMW" or "SGD") if absent, used by
        tools/train_net.py. Idempotent; call before ``merge_from_file``.
        """
        node = CfgNode()
        for k, v in _DEFAULTS.items():
            node[k] = list(v) if isinstance(v, list) else v
        if "DINAT" not in cfg.MODEL:
            cfg.MODEL.DINAT = node
        else:
            for k, v in node.items():
                if k not in cfg.MODEL.DINAT:
                    cfg.MODEL.DINAT[k] = v
        if "OPTIMIZER" not in cfg.SOLVER:
            cfg.SOLVER.OPTIMIZER = "ADAMW"
        if "WEIGHT_DECAY_RPB" not in cfg.SOLVER:
            cfg.SOLVER.WEIGHT_DECAY_RPB = 0.0
        if "DINAT_DEMO" not in cfg.DATASETS:
            from . import demo_data

            demo = CfgNode()
            demo.ROOT = "demo_data/coco"  # as tools/make_demo_data.py writes it (relative: cwd)
            demo.NUM_TRAIN = 300
            demo.NUM_VAL = 50
            demo.IMAGE_SIZE = demo_data.DEMO_SIZE
            demo.SEED = 0
            demo.MAX_OBJECTS = 6
            # "rle" (shapes may overlap; needs INPUT.MASK_FORMAT "bitmask") or "polygon"
            # (no overlaps; what Mask2Former's COCO instance mappers read)
            demo.MASK_FORMAT = "rle"
            cfg.DATASETS.DINAT_DEMO = demo

    # ------------------------------------------------------------------------- optimizer
    def build_dinat_optimizer_params(cfg, model) -> List[Dict[str, Any]]:
        """Parameter groups with the authors' recipe: ``SOLVER.WEIGHT_DECAY`` everywhere except
        normalisation layers (``SOLVER.WEIGHT_DECAY_NORM``), the relative position bias tables
        ``*.rpb`` (``SOLVER.WEIGHT_DECAY_RPB``) and biases (``SOLVER.WEIGHT_DECAY_BIAS`` when
        set, else ``SOLVER.WEIGHT_DECAY``), via detectron2's ``get_default_optimizer_params``."""
        from detectron2.solver import get_default_optimizer_params

        rpb_wd = cfg.SOLVER.get("WEIGHT_DECAY_RPB", 0.0)
        return get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
            overrides={"rpb": {"weight_decay": rpb_wd}},
        )

    # ------------------------------------------------------------------------- checkpoints
    def _dinat_prefix(model) -> Optional[str]:
        """Key prefix of the (first) DinatBackbone inside ``model``, e.g. 'backbone.bottom_up.'."""
        model = getattr(model, "module", model)  # DDP
        for name, module in model.named_modules():
            if isinstance(module, DinatBackbone):
                return f"{name}." if name else ""
        return None

    class DinatCheckpointer(DetectionCheckpointer):
        """``DetectionCheckpointer`` that also loads released DiNAT checkpoints into the backbone.

        A file whose keys already belong to the model (a detectron2 training checkpoint, the
        authors' Mask2Former checkpoints) loads as usual. Otherwise, if it is a DiNAT
        checkpoint in a format ``dinat_backbone.checkpoints`` knows (the authors' ImageNet
        ``.pth`` / ``.pkl``, transformers ``pytorch_model.bin`` / ``.safetensors``, mmdet /
        mmseg, this project's converted files), its keys are converted and loaded under the
        backbone's prefix (``BACKBONE_PREFIX`` for FPN models). Shape mismatches between the
        checkpoint and ``MODEL.DINAT`` raise a ValueError naming both.
        """

        def _load_file(self, filename):
            from . import checkpoints as ckpt

            if filename.endswith((".safetensors", ".bin")):
                loaded = {"model": ckpt.load_checkpoint_file(filename)}
            else:
                try:
                    loaded = super()._load_file(filename)
                except Exception as e:  # e.g. a released .pth that weights_only refuses
                    self.logger.info(f"[DinatCheckpointer] detectron2 could not read {filename} "
                                     f"({type(e).__name__}); reading it as a DiNAT checkpoint")
                    loaded = ckpt.load_checkpoint_file(filename)
                    if not isinstance(loaded, dict) or "model" not in loaded:
                        loaded = {"model": loaded}
            return self._maybe_convert(loaded, filename)

        def _maybe_convert(self, loaded: Dict[str, Any], filename: str = "") -> Dict[str, Any]:
            state = loaded.get("model", loaded)
            prefix = _dinat_prefix(self.model)
            if prefix is None or not isinstance(state, dict) or not state:
                return loaded
            model_keys = set(getattr(self.model, "module", self.model).state_dict())
            if prefix and any(k.startswith(prefix) and k in model_keys for k in state):
                return loaded  # already this model's naming (a training checkpoint)
            if not prefix and sum(k in model_keys for k in state) >= 0.5 * len(state):
                return loaded
            from . import checkpoints as ckpt

            try:
                fmt = ckpt.detect_format(state)
            except (ValueError, KeyError, TypeError):
                return loaded  # not a DiNAT checkpoint: detectron2's own handling
            root = getattr(self.model, "module", self.model)
            backbone = root.get_submodule(prefix[:-1]) if prefix else root
            try:
                converted, _ = ckpt.convert_state_dict(state, config=backbone.config)
            except ValueError as e:
                raise ValueError(
                    f"{filename or 'MODEL.WEIGHTS'} is a DiNAT checkpoint ({fmt}) that does not "
                    f"fit the backbone MODEL.DINAT describes: {e} Set MODEL.DINAT.VARIANT (or "
                    "EMBED_DIM / DEPTHS / NUM_HEADS / KERNEL_SIZE) to the checkpoint's.") from None
            own = backbone.state_dict()
            dropped = sorted(k for k in converted if k not in own)
            kept = {prefix + k: v for k, v in converted.items() if k in own}
            self.logger.info(
                f"[DinatCheckpointer] {filename}: DiNAT checkpoint in {fmt!r} format; "
                f"{len(kept)} tensors go to {prefix!r}"
                + (f", {len(dropped)} unused by a backbone dropped ({', '.join(dropped[:4])}"
                   f"{', ...' if len(dropped) > 4 else ''})" if dropped else ""))
            return {"model": kept, "__author__": f"dinat_backbone ({fmt})",
                    "matching_heuristics": False}

    # ------------------------------------------------------------------------- demo data
    DEMO_PREFIX = "dinat_demo_coco"

    def register_demo_datasets(cfg=None, *, root: Optional[str] = None, prefix: str = DEMO_PREFIX,
                               num_train: Optional[int] = None, num_val: Optional[int] = None,
                               image_size: Optional[int] = None, seed: Optional[int] = None,
                               max_objects: Optional[int] = None,
                               mask_format: Optional[str] = None) -> Dict[str, str]:
        """Generate (if absent) the synthetic COCO-format demo data and register
        ``<prefix>_train`` / ``<prefix>_val`` in detectron2's DatasetCatalog (COCO evaluator).

        Parameters default to ``cfg.DATASETS.DINAT_DEMO`` (when ``cfg`` is given), else to
        dinat_backbone.demo_data's defaults. Returns {split: dataset name}. Re-registering the
        same names with the same files is a no-op.
        """
        from detectron2.data import DatasetCatalog, MetadataCatalog
        from detectron2.data.datasets import register_coco_instances

        from . import demo_data

        demo = cfg.DATASETS.DINAT_DEMO if cfg is not None and "DINAT_DEMO" in cfg.DATASETS \
            else None

        def pick(value, key, default):
            if value is not None:
                return value
            if demo is not None and key in demo:
                return demo[key]
            return default

        root = pick(root, "ROOT", "") or os.path.join("demo_data", "coco")
        info = demo_data.make_coco_instances(
            root, n_train=int(pick(num_train, "NUM_TRAIN", 300)),
            n_val=int(pick(num_val, "NUM_VAL", 50)), size=int(pick(image_size, "IMAGE_SIZE", demo_data.DEMO_SIZE)),
            seed=int(pick(seed, "SEED", 0)), max_objects=int(pick(max_objects, "MAX_OBJECTS", 6)),
            mask_format=str(pick(mask_format, "MASK_FORMAT", "rle")))
        names = {}
        for split in ("train", "val"):
            name = f"{prefix}_{split}"
            ann, img_dir = info[split]["ann_file"], info[split]["img_dir"]
            if name in DatasetCatalog.list():
                meta = MetadataCatalog.get(name)
                if getattr(meta, "json_file", None) == ann and meta.image_root == img_dir:
                    names[split] = name
                    continue
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)
            register_coco_instances(name, {}, ann, img_dir)
            names[split] = name
        logging.getLogger(__name__).info(f"demo data at {root}: {names}")
        return names

    def register_demo_datasets_for(cfg) -> List[str]:
        """Register the demo datasets named in ``cfg.DATASETS.TRAIN`` / ``TEST`` (names starting
        with ``dinat_demo_coco``); returns the names registered."""
        wanted = [n for n in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
                  if n.startswith(DEMO_PREFIX + "_")]
        if not wanted:
            return []
        return list(register_demo_datasets(cfg).values())

    __all__ += ["register_demo_datasets_for", "DEMO_PREFIX"]
