"""DinatBackbone: multi-scale NCHW feature maps for dense prediction.

Outputs, by name (``config.out_features``, default stage1..stage4):

=========  ======  =====================  ==============================
name       stride  channels               spatial size for an H x W input
=========  ======  =====================  ==============================
stem       4       embed_dim              ceil(ceil(H/2)/2) (= ceil(H/4))
stage1     4       embed_dim              ceil(H/4)
stage2     8       2 * embed_dim          ceil(H/8)
stage3     16      4 * embed_dim          ceil(H/16)
stage4     32      8 * embed_dim          ceil(H/32)
=========  ======  =====================  ==============================

(each "ceil" is one stride-2, padding-1 convolution, so any H, W >= 1 works; a stage whose map
is smaller than kernel x dilation pads it for that layer's attention and crops it back).
Stage outputs are taken before the stage's downsampler and pass through their own LayerNorm
(``norm0``..``norm3``, the authors' detection / segmentation names; ``norm_stem`` for the stem).

Weight decay: :func:`is_no_weight_decay` is the one policy every trainer here applies (no decay
on the LayerNorms and the relative position bias tables, as in the authors' recipes).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from .config import DinatConfig
from .modeling import DinatPreTrainedModel

__all__ = ["DinatBackbone", "NO_WEIGHT_DECAY_PATTERNS", "is_no_weight_decay"]

# Substrings of a parameter's full name ("backbone.levels.0.blocks.1.attn.rpb") that mark it as
# exempt from weight decay: every LayerNorm (patch_embed.norm, blocks' norm1/norm2, downsample.norm,
# the output norms norm0..3 / norm_stem, DinatModel's norm) and every RPB table. Substring
# matching is mmengine's ``paramwise_cfg.custom_keys`` rule, so these keys work there unchanged.
NO_WEIGHT_DECAY_PATTERNS = ("norm", "rpb")


def is_no_weight_decay(name: str) -> bool:
    """True when parameter ``name`` (a full ``named_parameters()`` name) gets no weight decay."""
    return any(p in name for p in NO_WEIGHT_DECAY_PATTERNS)


def _stride(index: int) -> int:
    """Stride of stage_names[index]: the stem (0) and stage1 are at 4, each stage after doubles."""
    return 4 * 2 ** max(0, index - 1)


def _norm_name(index: int) -> str:
    """The LayerNorm module that produces output stage_names[index]."""
    return "norm_stem" if index == 0 else f"norm{index - 1}"


class DinatBackbone(DinatPreTrainedModel):
    """Dense-prediction backbone (framework-neutral; adapters wrap it).

    Args:
        config: a DinatConfig; its ``out_features`` / ``frozen_stages`` / ``drop_path_rate`` /
            ``attention_backend`` apply. Keyword overrides of those fields may be given here.
    """

    def __init__(self, config: DinatConfig, out_features: Optional[Sequence[str]] = None,
                 frozen_stages: Optional[int] = None):
        if out_features is not None or frozen_stages is not None:
            over = {}
            if out_features is not None:
                over["out_features"] = list(out_features)
            if frozen_stages is not None:
                over["frozen_stages"] = frozen_stages
            config = config.copy(**over)
        super().__init__(config)
        self._build_trunk()
        self.out_features: List[str] = list(config.out_features)
        self.stage_names = list(config.stage_names)
        chans = [config.embed_dim] + self.num_features
        self._out_feature_channels = dict(zip(self.stage_names, chans))
        self._out_feature_strides = {n: _stride(i) for i, n in enumerate(self.stage_names)}
        for name in self.out_features:
            norm = nn.LayerNorm(self._out_feature_channels[name], eps=config.layer_norm_eps)
            self.add_module(_norm_name(self.stage_names.index(name)), norm)
        self._last_level = max(self.stage_names.index(n) for n in self.out_features) - 1
        self.init_dinat_weights()
        self.frozen_stages = config.frozen_stages
        self._freeze_stages()

    # -------------------------------------------------------------- introspection (timm-like)
    @property
    def channels(self) -> List[int]:
        return [self._out_feature_channels[n] for n in self.out_features]

    @property
    def strides(self) -> List[int]:
        return [self._out_feature_strides[n] for n in self.out_features]

    @property
    def feature_info(self) -> List[dict]:
        """timm-style: per output its name, channels (num_chs), stride (reduction) and the
        module whose (channels-last) output it is, permuted to NCHW."""
        return [dict(name=n, num_chs=self._out_feature_channels[n],
                     reduction=self._out_feature_strides[n],
                     module=_norm_name(self.stage_names.index(n))) for n in self.out_features]

    @staticmethod
    def no_weight_decay_patterns() -> tuple:
        """Parameter-name substrings exempt from weight decay (see :func:`is_no_weight_decay`)."""
        return NO_WEIGHT_DECAY_PATTERNS

    @staticmethod
    def output_size(height: int, width: int, name: str) -> tuple:
        """Spatial size of output ``name`` ("stem" or "stage<k>") for a ``height`` x ``width``
        input: one ceil-halving per stride-2 convolution, log2 of the output's stride of them."""
        index = 0 if name == "stem" else int(name[5:]) if name[5:].isdigit() and \
            name.startswith("stage") and int(name[5:]) >= 1 else None
        if index is None:
            raise ValueError(f"output_size: unknown output {name!r}; use 'stem' or 'stage1', "
                             "'stage2', ...")
        for _ in range(_stride(index).bit_length() - 1):
            height, width = (height + 1) // 2, (width + 1) // 2
        return height, width

    # -------------------------------------------------------------- freezing
    def _frozen_modules(self) -> List[nn.Module]:
        mods: List[nn.Module] = []
        if self.frozen_stages >= 0:
            mods.append(self.patch_embed)
            if hasattr(self, "norm_stem"):
                mods.append(self.norm_stem)
        for i in range(min(self.frozen_stages, len(self.levels))):
            mods.append(self.levels[i])
            if hasattr(self, f"norm{i}"):
                mods.append(getattr(self, f"norm{i}"))
        return mods

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        return self

    # -------------------------------------------------------------- forward
    def _out(self, name: str, x: torch.Tensor) -> torch.Tensor:
        norm = getattr(self, _norm_name(self.stage_names.index(name)))
        return norm(x).permute(0, 3, 1, 2).contiguous()

    def forward(self, pixel_values: torch.Tensor) -> Dict[str, torch.Tensor]:
        """pixel_values [B, C, H, W] -> OrderedDict name -> NCHW map (see the module doc)."""
        self._check_input(pixel_values)
        outs: Dict[str, torch.Tensor] = OrderedDict()
        x = self.pos_drop(self.patch_embed(pixel_values))
        if "stem" in self.out_features:
            outs["stem"] = self._out("stem", x)
        for i, level in enumerate(self.levels):
            if i > self._last_level:
                break
            xo, x, _ = level(x)
            name = f"stage{i + 1}"
            if name in self.out_features:
                outs[name] = self._out(name, xo)
        return outs
