"""``DiNAT``: the core :class:`~dinat_backbone.DinatBackbone` as an mmengine ``BaseModule``."""
from __future__ import annotations

import copy
import difflib
import os
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.registry import MODELS

from ..backbone import DinatBackbone
from ..config import ConfigError, DinatConfig
from .checkpoint import local_file

__all__ = ["DiNAT", "ADAPTER_FIELDS", "KEY_MAP"]

# Adapter field -> DinatConfig field (the others have the same name).
_TO_CORE = {
    "in_channels": "num_channels",
    "drop_rate": "hidden_dropout_prob",
    "attn_drop_rate": "attention_probs_dropout_prob",
    "layer_scale": "layer_scale_init_value",
    "with_cp": "gradient_checkpointing",
}
_FIELDS = ("embed_dim", "depths", "num_heads", "kernel_size", "dilations", "mlp_ratio",
           "qkv_bias", "layer_scale", "layer_norm_eps", "in_channels", "drop_rate",
           "attn_drop_rate", "drop_path_rate", "out_indices", "frozen_stages",
           "attention_backend", "with_cp")
ADAPTER_FIELDS = ("variant",) + _FIELDS + ("pretrained", "init_cfg")
# How a core ConfigError names the field in a config: model.backbone.<adapter field>.
KEY_MAP = {core: f"model.backbone.{name}" for name, core in _TO_CORE.items()}
KEY_MAP.update({name: f"model.backbone.{name}" for name in _FIELDS if name not in _TO_CORE})
KEY_MAP["variant"] = "model.backbone.variant"
KEY_MAP["out_features"] = "model.backbone.out_indices"


@MODELS.register_module()
class DiNAT(DinatBackbone, BaseModule):
    """DiNAT backbone for mmdet / mmseg; returns a tuple of NCHW maps, one per ``out_indices``.

    Every field is optional; ``None`` takes the variant's value, else the core default
    (``DinatConfig.FIELDS``; e.g. drop_path_rate 0.1).

    Args:
        variant: 'mini' (default), 'tiny', 'small', 'base', 'large' or 'large_k11'.
        embed_dim, depths, num_heads, kernel_size, mlp_ratio, qkv_bias, layer_norm_eps,
            drop_path_rate, frozen_stages, attention_backend: as :class:`~dinat_backbone.DinatConfig`.
        dilations: per-layer lists (one list per stage) or a preset name: 'coco', 'ade20k512',
            'ade20k640', 'mask2former', 'imagenet224' (default), 'imagenet384'.
        layer_scale: layer-scale init value (0 = off; base uses 1e-5).
        in_channels (alias in_chans): image channels.
        drop_rate, attn_drop_rate: dropout, attention dropout.
        out_indices: stages to return, 0..3 = stage 1..4 (strides 4, 8, 16, 32); each output has
            its own LayerNorm (``norm{i}``).
        with_cp: gradient checkpointing per stage (saves memory, costs a second forward).
        pretrained: the authors' spelling of ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
        init_cfg: ``dict(type='Pretrained', checkpoint=path_or_url, prefix=None)``: any released
            DiNAT format, read without running code from it; ``prefix`` (e.g. 'backbone.') takes
            the backbone out of a detector / segmentor checkpoint.
    """

    def __init__(self, variant: Optional[str] = None, embed_dim: Optional[int] = None,
                 depths: Optional[Sequence[int]] = None, num_heads: Optional[Sequence[int]] = None,
                 kernel_size: Optional[int] = None,
                 dilations: Union[str, Sequence[Sequence[int]], None] = None,
                 mlp_ratio: Optional[float] = None, qkv_bias: Optional[bool] = None,
                 layer_scale: Optional[float] = None, layer_norm_eps: Optional[float] = None,
                 in_channels: Optional[int] = None, drop_rate: Optional[float] = None,
                 attn_drop_rate: Optional[float] = None, drop_path_rate: Optional[float] = None,
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: Optional[int] = None,
                 attention_backend: Optional[str] = None, with_cp: Optional[bool] = None,
                 pretrained: Optional[str] = None, qk_scale: Optional[float] = None,
                 init_cfg: Union[dict, List[dict], None] = None, **kwargs: Any):
        if "in_chans" in kwargs:  # the authors' name
            if in_channels is not None:
                raise ValueError("DiNAT backbone: give in_channels or in_chans, not both")
            in_channels = kwargs.pop("in_chans")
        if kwargs:
            bad = sorted(kwargs)
            hints = {k: difflib.get_close_matches(k, ADAPTER_FIELDS, n=1) for k in bad}
            hint = "; ".join(f"{k!r}: did you mean {v[0]!r}?" for k, v in hints.items() if v)
            raise TypeError(f"DiNAT backbone got unknown field(s) {bad}. "
                            f"{hint + '. ' if hint else ''}Valid fields: {list(ADAPTER_FIELDS)}")
        if qk_scale is not None:
            raise ValueError(f"model.backbone.qk_scale={qk_scale!r}: not supported, the attention "
                             "scale is head_dim ** -0.5 as in every released model. Fix: remove "
                             "qk_scale (or set it to None)")
        given = dict(embed_dim=embed_dim, depths=depths, num_heads=num_heads,
                     kernel_size=kernel_size, dilations=dilations, mlp_ratio=mlp_ratio,
                     qkv_bias=qkv_bias, layer_scale=layer_scale, layer_norm_eps=layer_norm_eps,
                     in_channels=in_channels, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                     drop_path_rate=drop_path_rate, frozen_stages=frozen_stages,
                     attention_backend=attention_backend, with_cp=with_cp)
        config = self.build_config(variant, out_indices, **given)
        init_cfg = self._check_init_cfg(init_cfg, pretrained)
        super().__init__(config)  # DinatBackbone -> DinatPreTrainedModel -> BaseModule
        self.init_cfg = init_cfg
        self.variant = config.variant  # None when the fields were given one by one

    @staticmethod
    def build_config(variant: Optional[str], out_indices, **fields) -> DinatConfig:
        """The core config for these adapter fields (``None`` = variant / core default)."""
        core = {_TO_CORE.get(k, k): v for k, v in fields.items() if v is not None}
        if core.get("layer_scale_init_value") is False:  # the authors' "off"
            core["layer_scale_init_value"] = 0.0
        if isinstance(out_indices, int) and not isinstance(out_indices, bool):
            out_indices = (out_indices,)
        try:
            return DinatConfig.from_variant(variant, out_indices=out_indices, **core)
        except ConfigError as e:
            raise e.renamed(KEY_MAP) from None

    @staticmethod
    def _check_init_cfg(init_cfg, pretrained):
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError("DiNAT backbone: give init_cfg=dict(type='Pretrained', "
                                 "checkpoint=...) or pretrained=..., not both")
            if not isinstance(pretrained, (str, os.PathLike)):
                raise ValueError(f"model.backbone.pretrained={pretrained!r}: not a path. Fix: "
                                 "give a path or URL (or use init_cfg)")
            init_cfg = dict(type="Pretrained", checkpoint=os.fspath(pretrained))
        if init_cfg is None:
            return None
        for c in init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]:
            if not isinstance(c, dict) or "type" not in c:
                raise ValueError(f"model.backbone.init_cfg={init_cfg!r}: not an init config. "
                                 "Fix: use dict(type='Pretrained', checkpoint='path/or/url.pth')")
            if c["type"] != "Pretrained":
                continue
            ck = c.get("checkpoint")
            if not isinstance(ck, (str, os.PathLike)) or not os.fspath(ck):
                raise ValueError(
                    f"model.backbone.init_cfg.checkpoint={ck!r}: no checkpoint given. Fix: give "
                    "the path or URL of a released DiNAT checkpoint (.pth, .pkl, .safetensors, or "
                    "a transformers model directory)")
            unknown = set(c) - {"type", "checkpoint", "prefix", "map_location"}
            if unknown:
                raise ValueError(f"model.backbone.init_cfg has unknown keys {sorted(unknown)}. "
                                 "Fix: Pretrained takes checkpoint and prefix")
        return copy.deepcopy(init_cfg)

    # ------------------------------------------------------------------ weights
    def init_weights(self) -> None:
        """mmengine's init: load ``init_cfg`` if it has one, else the core's random init."""
        cfgs = self.init_cfg if isinstance(self.init_cfg, (list, tuple)) else (
            [self.init_cfg] if self.init_cfg else [])
        pretrained = [c for c in cfgs if c.get("type") == "Pretrained"]
        others = [c for c in cfgs if c.get("type") != "Pretrained"]
        if not cfgs:
            self.init_dinat_weights()
        if others:
            from mmengine.model.weight_init import initialize

            initialize(self, others)
        for c in pretrained:
            self.load_released_checkpoint(c["checkpoint"], prefix=c.get("prefix"))
        self._is_init = True

    def load_released_checkpoint(self, checkpoint: str, prefix: Optional[str] = None):
        """Load a released DiNAT checkpoint (path or URL, any supported format) into the trunk.

        The trunk must match (the checkpoint's variant / kernel size); the per-output norms and a
        classification head are optional (a classification checkpoint has no ``norm0..3``: they
        keep their initialisation). ``prefix`` picks the backbone out of a detector / segmentor
        checkpoint (found automatically when omitted). Returns the loading report.
        """
        from ..weights import UnsafeCheckpointError, load_pretrained

        what = "model.backbone.init_cfg.checkpoint"
        path = local_file(os.fspath(checkpoint), what=what)
        try:
            report = load_pretrained(self, path, strict=True, prefix=prefix or None)
        except UnsafeCheckpointError:
            raise  # names the file, why it is refused, and how to convert a trusted one
        except ValueError as e:  # names the problem; say which config entry it came from
            raise ValueError(f"{what}={checkpoint!r}: {e}") from e
        print_log(f"DiNAT: loaded {checkpoint}\n{report}", logger="current")
        return report

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(DinatBackbone.forward(self, x).values())
