"""``D2DiNAT`` (a detectron2 ``Backbone``) and the FPN builders, registered in detectron2's
``BACKBONE_REGISTRY`` when this module is imported."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7

from ..backbone import DinatBackbone
from ..config import DinatConfig
from .config import (
    D2_STAGE_NAMES,
    STAGE_OF_D2,
    d2_out_features,
    dinat_config_from_cfg,
    frozen_stages_of,
    plain,
)

__all__ = ["D2DiNAT", "build_dinat_fpn_backbone", "build_retinanet_dinat_fpn_backbone"]


@BACKBONE_REGISTRY.register()
class D2DiNAT(DinatBackbone, Backbone):
    """DiNAT as a detectron2 ``Backbone`` (outputs ``res2..res5`` by default).

    Parameter names are DinatBackbone's (``patch_embed``, ``levels.i``, ``norm0..3``), i.e. the
    authors' detection / segmentation names, so their Mask2Former checkpoints load as they are.

    Build it from a config (``D2DiNAT(cfg, input_shape)``, what ``build_backbone`` does) or from
    plain arguments (LazyConfig)::

        L(D2DiNAT)(variant="tiny", dilations="coco", drop_path_rate=0.2,
                   out_features=["res2", "res3", "res4", "res5"])

    Args:
        config: a DinatConfig (its out_features / frozen_stages are replaced by the arguments
            below); or None to build ``DinatConfig.from_variant(variant, **overrides)``.
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
        out_d2 = d2_out_features(plain(out_features))
        overrides = {k: plain(v) for k, v in overrides.items()}
        if config is None:
            config = DinatConfig.from_variant(variant, **overrides)
        elif not isinstance(config, DinatConfig):
            raise TypeError(f"config must be a DinatConfig or None, got {type(config).__name__}")
        elif overrides:
            config = config.copy(**overrides)
        config = config.copy(out_features=[D2_STAGE_NAMES[n] for n in out_d2],
                             frozen_stages=frozen_stages_of(freeze_at, len(config.depths)))
        super().__init__(config)
        self._d2_out_features = out_d2
        if config.gradient_checkpointing:
            self.set_gradient_checkpointing(True)

    @classmethod
    def from_config(cls, cfg, input_shape=None):
        channels = input_shape.channels if input_shape is not None else len(cfg.MODEL.PIXEL_MEAN)
        config, out_d2 = dinat_config_from_cfg(cfg.MODEL.DINAT, num_channels=channels)
        return {"config": config, "out_features": out_d2, "freeze_at": cfg.MODEL.DINAT.FREEZE_AT}

    def forward(self, x):
        """x: [N, C, H, W] (any H, W) -> {"res2": [N, C2, ceil(H/4), ceil(W/4)], ...}."""
        return {STAGE_OF_D2[k]: v for k, v in super().forward(x).items()}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {name: ShapeSpec(channels=self._out_feature_channels[D2_STAGE_NAMES[name]],
                                stride=self._out_feature_strides[D2_STAGE_NAMES[name]])
                for name in self._d2_out_features}

    @property
    def size_divisibility(self) -> int:
        # Any size works (each stride-2 conv rounds up; small maps are padded for attention), but
        # padding to the deepest stride keeps every pyramid level an exact 2x of the next, which
        # FPN's top-down path needs.
        return max(self._out_feature_strides.values())

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return {"size_divisibility": self.size_divisibility, "square_size": 0}


def _fpn_in_features(cfg, bottom_up: D2DiNAT) -> List[str]:
    shapes = bottom_up.output_shape()
    # empty (detectron2's default) = every res* output of the backbone
    in_features = list(cfg.MODEL.FPN.IN_FEATURES) or [f for f in shapes if f != "stem"]
    missing = [f for f in in_features if f not in shapes]
    if missing or not in_features:
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES={in_features!r} is invalid: {missing or 'empty'} not among "
            f"MODEL.DINAT.OUT_FEATURES={list(shapes)!r}; list the same names in both (e.g. "
            "['res2', 'res3', 'res4', 'res5'])")
    strides = [shapes[f].stride for f in in_features]
    if any(b != 2 * a for a, b in zip(strides, strides[1:])):
        raise ValueError(f"MODEL.FPN.IN_FEATURES={in_features!r} is invalid: FPN needs "
                         "consecutive levels (strides doubling), e.g. res2..res5")
    return in_features


def _fpn(cfg, input_shape: ShapeSpec, top_block) -> FPN:
    bottom_up = D2DiNAT(cfg, input_shape)
    in_features = _fpn_in_features(cfg, bottom_up)
    return FPN(bottom_up=bottom_up, in_features=in_features,
               out_channels=cfg.MODEL.FPN.OUT_CHANNELS, norm=cfg.MODEL.FPN.NORM,
               top_block=top_block(bottom_up.output_shape()[in_features[-1]], in_features[-1]),
               fuse_type=cfg.MODEL.FPN.FUSE_TYPE)


@BACKBONE_REGISTRY.register()
def build_dinat_fpn_backbone(cfg, input_shape: ShapeSpec):
    """detectron2's FPN (+ LastLevelMaxPool: p2..p6) on a D2DiNAT bottom-up backbone, as
    ``build_resnet_fpn_backbone`` does for ResNet."""
    return _fpn(cfg, input_shape, lambda last, name: LastLevelMaxPool())


@BACKBONE_REGISTRY.register()
def build_retinanet_dinat_fpn_backbone(cfg, input_shape: ShapeSpec):
    """FPN + LastLevelP6P7 (p3..p7, RetinaNet / FCOS style) on D2DiNAT."""
    out = cfg.MODEL.FPN.OUT_CHANNELS
    return _fpn(cfg, input_shape,
                lambda last, name: LastLevelP6P7(last.channels, out, in_feature=name))
