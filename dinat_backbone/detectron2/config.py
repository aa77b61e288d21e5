"""``MODEL.DINAT``: the detectron2 config keys of DiNAT, and their translation to a DinatConfig.

Needs no detectron2 (``dinat_config_from_cfg`` reads any object or dict with these keys;
``add_dinat_config`` builds its node with the class of the config it is given).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..config import FIELDS, ConfigError, DinatConfig
from ..weights import DEFAULT_DETECTRON2_PREFIX

__all__ = [
    "BACKBONE_PREFIX",
    "MASK2FORMER_BACKBONE_PREFIX",
    "D2_STAGE_NAMES",
    "DINAT_KEYS",
    "add_dinat_config",
    "dinat_config_from_cfg",
]

# Key prefix of the DiNAT weights inside a detectron2 model built with build_dinat_fpn_backbone
# (GeneralizedRCNN.backbone = FPN, FPN.bottom_up = D2DiNAT): where converters put the backbone's
# keys (patch_embed.*, levels.*, norm0..3) in a detectron2 checkpoint.
BACKBONE_PREFIX = DEFAULT_DETECTRON2_PREFIX
# ... and inside Mask2Former (MaskFormer.backbone = D2DiNAT); the authors' released Mask2Former
# checkpoints use the same prefix.
MASK2FORMER_BACKBONE_PREFIX = "backbone."

# detectron2 output name -> DinatBackbone output name
D2_STAGE_NAMES = {"stem": "stem", "res2": "stage1", "res3": "stage2", "res4": "stage3",
                  "res5": "stage4"}
STAGE_OF_D2 = {v: k for k, v in D2_STAGE_NAMES.items()}

# MODEL.DINAT key -> (DinatConfig field or None, default, meaning). Defaults of keys that are
# DinatConfig fields are the core's (FIELDS); None = the VARIANT's value.
DINAT_KEYS: Dict[str, Tuple[Optional[str], Any, str]] = {
    "VARIANT": (None, "mini", "mini, tiny, small, base, large, large_k11: sets the defaults"),
    "EMBED_DIM": ("embed_dim", None, "int"),
    "DEPTHS": ("depths", None, "[int] * 4"),
    "NUM_HEADS": ("num_heads", None, "[int] * 4"),
    "KERNEL_SIZE": ("kernel_size", None, "odd int (7; 11 for large_k11 / Mask2Former-L)"),
    "DILATIONS": ("dilations", None,
                  "per-stage lists of per-layer dilations, a preset name (imagenet224, coco, "
                  "ade20k512, ade20k640, mask2former, ...), or the training resolution in pixels "
                  "(an int, or a string of digits, e.g. opts over a preset: DILATIONS \"'256'\") "
                  "from which they are derived; None = the ImageNet-224 dilations"),
    "MLP_RATIO": ("mlp_ratio", None, "float"),
    "QKV_BIAS": ("qkv_bias", FIELDS["qkv_bias"].default, "bias in q/k/v"),
    "DROP_RATE": ("hidden_dropout_prob", FIELDS["hidden_dropout_prob"].default,
                  "dropout after attention / MLP projections"),
    "ATTN_DROP_RATE": ("attention_probs_dropout_prob",
                       FIELDS["attention_probs_dropout_prob"].default, "dropout on attention"),
    "DROP_PATH_RATE": ("drop_path_rate", FIELDS["drop_path_rate"].default,
                       "stochastic depth (linearly increasing over layers); the authors' "
                       "detection configs set 0.2..0.6"),
    "LAYER_SCALE": ("layer_scale_init_value", None, "float, 0 = off (base uses 1e-5)"),
    "OUT_FEATURES": ("out_features", ["res2", "res3", "res4", "res5"],
                     "outputs among stem, res2..res5"),
    "FREEZE_AT": ("frozen_stages", 0, "detectron2's meaning: 0 trains everything, 1 freezes the "
                  "patch embedding, k >= 2 also res2..res{k}"),
    "ATTENTION_BACKEND": ("attention_backend", FIELDS["attention_backend"].default,
                          "auto, tiled, gather, natten, flex"),
    "USE_CHECKPOINT": ("gradient_checkpointing", FIELDS["gradient_checkpointing"].default,
                       "gradient checkpointing per stage (saves memory)"),
}

# how a core ConfigError names the field here
_KEY_OF_FIELD = {f: f"MODEL.DINAT.{k}" for k, (f, _, _) in DINAT_KEYS.items() if f}
_KEY_OF_FIELD.update(variant="MODEL.DINAT.VARIANT", image_size="MODEL.DINAT.DILATIONS")


def _error(key: str, value: Any, problem: str, fix: str) -> ConfigError:
    return ConfigError(key.lower(), value, problem, fix, key=f"MODEL.DINAT.{key}")


def plain(value: Any) -> Any:
    """Tuples, yacs lists and omegaconf ListConfigs (LazyConfig) -> plain (nested) lists."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(v) for v in value]
    return value


def d2_out_features(value: Any, key: str = "OUT_FEATURES") -> List[str]:
    """detectron2 output names, checked and in stage order."""
    names = list(D2_STAGE_NAMES)
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise _error(key, value, "must be a non-empty list of output names",
                     f"give names from {names}, e.g. ['res2', 'res3', 'res4', 'res5']")
    unknown = [v for v in value if v not in D2_STAGE_NAMES]
    if unknown:
        raise _error(key, list(value), f"{unknown} are not outputs of DiNAT",
                     f"use names from {names}")
    if len(set(value)) != len(value):
        raise _error(key, list(value), "names repeat", "list each output once")
    return sorted(value, key=names.index)


def frozen_stages_of(freeze_at: Any, num_stages: int) -> int:
    """detectron2's FREEZE_AT -> DinatConfig.frozen_stages (FREEZE_AT - 1), checked."""
    if isinstance(freeze_at, bool) or not isinstance(freeze_at, int) \
            or not 0 <= freeze_at <= num_stages + 1:
        raise _error("FREEZE_AT", freeze_at, f"must be an integer in [0, {num_stages + 1}]",
                     "0 trains everything, 1 freezes the patch embedding, k >= 2 also freezes "
                     "res2..res{k}")
    return freeze_at - 1


def add_dinat_config(cfg) -> None:
    """Add ``MODEL.DINAT.*`` (defaults: :data:`DINAT_KEYS`) to a detectron2 config, keeping keys
    that are already there. Call before ``merge_from_file``. Adds nothing else."""
    node = type(cfg)()
    for key, (_, default, _) in DINAT_KEYS.items():
        node[key] = list(default) if isinstance(default, (list, tuple)) else default
    if "DINAT" not in cfg.MODEL:
        cfg.MODEL.DINAT = node
        return
    for key, value in node.items():
        if key not in cfg.MODEL.DINAT:
            cfg.MODEL.DINAT[key] = value


def _get(node: Any, key: str) -> Any:
    default = DINAT_KEYS[key][1]
    value = node.get(key, default) if isinstance(node, dict) else getattr(node, key, default)
    return plain(value)


def dinat_config_from_cfg(node: Any, num_channels: int = 3) -> Tuple[DinatConfig, List[str]]:
    """``MODEL.DINAT`` (a CfgNode, or any object / dict with those keys) -> (DinatConfig, names).

    ``names`` are the detectron2 output names (``res2``..). An invalid value raises the core's
    ConfigError under its key here (``MODEL.DINAT.KERNEL_SIZE=4: ...``).
    """
    values = {key: _get(node, key) for key in DINAT_KEYS}
    out_d2 = d2_out_features(values["OUT_FEATURES"])
    for key in ("DEPTHS", "NUM_HEADS"):  # res2..res5: four stages
        v = values[key]
        if v is not None and (not isinstance(v, list) or len(v) != 4):
            raise _error(key, v, "the detectron2 adapter names four stages (res2..res5)",
                         "give 4 integers, one per stage, or leave it unset to take the "
                         "VARIANT's")
    dilations = values["DILATIONS"]
    if isinstance(dilations, str) and dilations.strip().isdigit():
        dilations = int(dilations)
    image_size = None
    if isinstance(dilations, int) and not isinstance(dilations, bool):
        image_size, dilations = dilations, None
    overrides = {field: values[key] for key, (field, _, _) in DINAT_KEYS.items()
                 if field and key not in ("DILATIONS", "OUT_FEATURES", "FREEZE_AT")}
    try:
        config = DinatConfig.from_variant(
            values["VARIANT"], image_size=image_size, dilations=dilations,
            out_features=[D2_STAGE_NAMES[n] for n in out_d2],
            frozen_stages=frozen_stages_of(values["FREEZE_AT"], 4), num_channels=num_channels,
            **overrides)
    except ConfigError as e:
        raise e.renamed(_KEY_OF_FIELD) from None
    return config, out_d2
