"""The DiNAT model: patch embedding, (dilated) neighborhood-attention layers, stages.

Parameter names follow the authors' classification code (``patch_embed.proj.{0,1}``,
``levels.{i}.blocks.{j}.attn.{qkv,rpb,proj}``, ``levels.{i}.downsample.{reduction,norm}``,
``norm``, ``head``), so their checkpoints load without renaming; outputs follow transformers'
``DinatModel`` conventions, so its weights give the same tensors (see weights/convert.py).
"""
from __future__ import annotations

import contextlib
import contextvars
import warnings
from dataclasses import dataclass, fields
from typing import Any, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from ._constants import ACTIVATIONS, ATTENTION_BACKENDS
from .config import ConfigError, DinatConfig
from .ops import na2d, na2d_qkv
from .weights.loading import from_pretrained as _weights_from_pretrained

__all__ = [
    "DinatModel",
    "DinatForImageClassification",
    "DinatPreTrainedModel",
    "DinatModelOutput",
    "DinatImageClassifierOutput",
    "NeighborhoodAttention2D",
    "check_pixel_values",
]


# ---------------------------------------------------------------------------------- outputs
class _Output:
    """A dataclass that also indexes like a tuple of its non-None fields (transformers style)."""

    def to_tuple(self) -> Tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self)
                     if getattr(self, f.name) is not None)

    def __getitem__(self, key):
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]

    def __iter__(self):
        return iter(self.to_tuple())

    def __len__(self):
        return len(self.to_tuple())

    def keys(self):
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


@dataclass
class DinatModelOutput(_Output):
    last_hidden_state: Optional[torch.Tensor] = None
    pooler_output: Optional[torch.Tensor] = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None
    reshaped_hidden_states: Optional[Tuple[torch.Tensor, ...]] = None


@dataclass
class DinatImageClassifierOutput(_Output):
    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None
    reshaped_hidden_states: Optional[Tuple[torch.Tensor, ...]] = None


# ---------------------------------------------------------------------------------- layers
class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


def activation(name: str) -> nn.Module:
    """The module for ``config.hidden_act`` (the names of dinat_backbone._constants.ACTIVATIONS)."""
    key = str(name).lower()
    if key not in ACTIVATIONS:
        raise ConfigError("hidden_act", name, "is not a supported activation",
                          f"use one of {sorted(ACTIVATIONS)}")
    module, kwargs = ACTIVATIONS[key]
    return QuickGELU() if module == "QuickGELU" else getattr(nn, module)(**kwargs)


class DropPath(nn.Module):
    """Stochastic depth per sample (identity at eval or with p = 0)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        return x * self._scale(x)

    def _scale(self, x):
        """Per sample 0 (dropped) or 1 / keep, shape [B, 1, ...]: the division on B numbers,
        not on the whole tensor (the same draws as ``bernoulli_(keep)`` on that shape)."""
        keep = 1.0 - self.p
        return x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep).div_(keep)

    def add(self, x, y):
        """``x + self(y)`` in one pass in training (``addcmul``), ``x + y`` otherwise."""
        if self.p == 0.0 or not self.training:
            return x + y
        return torch.addcmul(x, y, self._scale(y))

    def extra_repr(self):
        return f"p={self.p}"


class PatchEmbed(nn.Module):
    """Overlapping tokenizer: two 3x3 stride-2 convolutions, then LayerNorm (channels-last out)."""

    def __init__(self, in_chans: int, embed_dim: int, eps: float):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 2, kernel_size=3, stride=2, padding=1),
            nn.Conv2d(embed_dim // 2, embed_dim, kernel_size=3, stride=2, padding=1),
        )
        self.norm = nn.LayerNorm(embed_dim, eps=eps)

    def forward(self, x):
        # channels-last convolutions: faster here than NCHW (oneDNN), and the output permuted to
        # [B, H, W, C] is contiguous, so the norm needs no copy of it
        x = x.contiguous(memory_format=torch.channels_last)
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class Downsampler(nn.Module):
    """3x3 stride-2 convolution doubling the channels, then LayerNorm (channels-last in/out)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = nn.LayerNorm(2 * dim, eps=eps)

    def forward(self, x):
        return self.norm(self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = activation(act)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class NeighborhoodAttention2D(nn.Module):
    """Multi-head (dilated) neighborhood attention on channels-last maps [B, H, W, C].

    A map smaller than kernel_size * dilation on an axis is zero-padded at the bottom / right up
    to that size for the attention and cropped back afterwards (what the authors' original module
    and transformers do; NATTEN >= 0.17 raises instead).
    """

    def __init__(self, dim: int, num_heads: int, kernel_size: int, dilation: int,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 backend: str = "auto"):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.backend = backend
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        B, H, W, C = x.shape
        window = self.kernel_size * self.dilation
        ph, pw = max(0, window - H), max(0, window - W)
        if ph or pw:
            x = F.pad(x, (0, 0, 0, pw, 0, ph))
        Hp, Wp = H + ph, W + pw
        qkv = self.qkv(x).reshape(B, Hp, Wp, 3, self.num_heads, self.head_dim)
        if return_attn:
            q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
            out, attn = na2d(q, k, v, self.kernel_size, self.dilation, rpb=self.rpb,
                             scale=self.scale, return_attn=True, backend=self.backend,
                             dropout_p=self.attn_drop, training=self.training)
        else:  # q, k, v packed: the compiled kernel's gradient lands in the linear's layout
            out = na2d_qkv(qkv, self.kernel_size, self.dilation, rpb=self.rpb, scale=self.scale,
                           backend=self.backend, dropout_p=self.attn_drop,
                           training=self.training)
            attn = None
        out = out.permute(0, 2, 3, 1, 4).reshape(B, Hp, Wp, C)
        if ph or pw:
            out = out[:, :H, :W, :]
            attn = attn[:, :, :H, :W, :] if attn is not None else None
        return self.proj_drop(self.proj(out)), attn

    def extra_repr(self):
        return (f"heads={self.num_heads}, kernel_size={self.kernel_size}, "
                f"dilation={self.dilation}, backend={self.backend!r}")


class NALayer(nn.Module):
    """Pre-norm NA + pre-norm MLP, each with drop path and optional layer scale."""

    def __init__(self, dim: int, num_heads: int, kernel_size: int, dilation: int,
                 config: DinatConfig, drop_path: float):
        super().__init__()
        eps = config.layer_norm_eps
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = NeighborhoodAttention2D(
            dim, num_heads, kernel_size, dilation, config.qkv_bias,
            config.attention_probs_dropout_prob, config.hidden_dropout_prob,
            config.attention_backend)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio), config.hidden_act,
                       config.hidden_dropout_prob)
        self.layer_scale = config.layer_scale_init_value > 0
        if self.layer_scale:
            self.gamma1 = nn.Parameter(config.layer_scale_init_value * torch.ones(dim))
            self.gamma2 = nn.Parameter(config.layer_scale_init_value * torch.ones(dim))

    def forward(self, x, return_attn: bool = False):
        a, attn = self.attn(self.norm1(x), return_attn)
        if self.layer_scale:
            x = self.drop_path.add(x, self.gamma1 * a)
            x = self.drop_path.add(x, self.gamma2 * self.mlp(self.norm2(x)))
        else:
            x = self.drop_path.add(x, a)
            x = self.drop_path.add(x, self.mlp(self.norm2(x)))
        return x, attn


class NAStage(nn.Module):
    """One level: NA layers, then (except the last level) a downsampler."""

    def __init__(self, dim: int, depth: int, num_heads: int, dilations: List[int],
                 config: DinatConfig, drop_path: List[float], downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList([
            NALayer(dim, num_heads, config.kernel_size, dilations[i], config, drop_path[i])
            for i in range(depth)
        ])
        self.downsample = Downsampler(dim, config.layer_norm_eps) if downsample else None
        self.gradient_checkpointing = bool(config.gradient_checkpointing)

    def _blocks(self, x, return_attn: bool):
        attns = []
        for blk in self.blocks:
            x, a = blk(x, return_attn)
            if return_attn:
                attns.append(a)
        return x, attns

    def forward(self, x, return_attn: bool = False):
        """x [B, H, W, C] -> (output before downsampling, after downsampling, attentions)."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            x, attns = torch.utils.checkpoint.checkpoint(
                self._blocks, x, return_attn, use_reentrant=False)
        else:
            x, attns = self._blocks(x, return_attn)
        down = self.downsample(x) if self.downsample is not None else x
        return x, down, attns


def check_pixel_values(x, num_channels: int, reference: Optional[torch.Tensor] = None):
    """Validate an image batch [B, C, H, W]; raise a TypeError/ValueError that says the fix.

    Any H, W >= 1 and any batch size (0 too) are accepted. Values are not inspected: checking
    for NaN / inf would cost a device-to-host synchronisation per call. Non-finite pixels
    propagate instead: every output position whose receptive field holds one is NaN, all other
    positions are unaffected (tests/test_bad_inputs.py, rows image/nan-pixel, image/inf-pixel).
    """
    if not torch.is_tensor(x):
        raise TypeError(f"pixel_values must be a torch.Tensor [B, {num_channels}, H, W], got "
                        f"{type(x).__name__}; convert with torch.as_tensor(...)")
    if x.dim() == 3 and x.shape[0] == num_channels:
        raise ValueError(f"pixel_values has shape {tuple(x.shape)}: a single image without the "
                         "batch dimension; use x.unsqueeze(0)")
    if x.dim() == 3 and x.shape[-1] == num_channels:
        raise ValueError(f"pixel_values has shape {tuple(x.shape)}: a single channels-last (HWC) "
                         f"image; the model expects NCHW [B, {num_channels}, H, W]: use "
                         "x.permute(2, 0, 1).unsqueeze(0)")
    if x.dim() != 4:
        raise ValueError(f"pixel_values must be 4-D [B, {num_channels}, H, W], got shape "
                         f"{tuple(x.shape)}; add a batch dimension with x.unsqueeze(0) or "
                         f"reshape to [B, {num_channels}, H, W]")
    if x.shape[1] != num_channels:
        if x.shape[-1] == num_channels:
            raise ValueError(
                f"pixel_values has shape {tuple(x.shape)}, which looks channels-last (NHWC); "
                f"the model expects NCHW [B, {num_channels}, H, W]: use x.permute(0, 3, 1, 2)")
        if x.shape[-1] <= 4 < x.shape[1]:
            raise ValueError(
                f"pixel_values has shape {tuple(x.shape)}, which looks channels-last (NHWC) with "
                f"{x.shape[-1]} channels; the model expects NCHW with {num_channels} channels: "
                f"use x.permute(0, 3, 1, 2), then convert the channels (grayscale -> RGB with "
                f"x.expand(-1, 3, -1, -1), RGBA -> RGB with x[:, :3]) or build the model with "
                f"num_channels={x.shape[-1]}")
        raise ValueError(
            f"pixel_values has {x.shape[1]} channels but the model is configured for "
            f"{num_channels} (num_channels); convert the images (e.g. grayscale -> RGB with "
            f"x.expand(-1, 3, -1, -1), RGBA -> RGB with x[:, :3]) or build the model with "
            f"num_channels={x.shape[1]}")
    if not x.is_floating_point():
        raise TypeError(f"pixel_values must be floating point, got {x.dtype}; convert with "
                        "x.float() (and normalise, e.g. (x / 255 - mean) / std)")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"pixel_values has an empty spatial size {tuple(x.shape[2:])}: height "
                         "and width must be >= 1 (any size >= 1 works; the model pads small "
                         "feature maps itself)")
    if reference is not None:
        if x.device != reference.device:
            raise ValueError(f"pixel_values is on {x.device} but the model is on "
                             f"{reference.device}; move one of them (x.to(model_device))")
        if x.dtype != reference.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f"pixel_values is {x.dtype} but the model's weights are "
                            f"{reference.dtype}; use x.to({reference.dtype}) or model.to(...), or "
                            "run under torch.autocast")


# ---------------------------------------------------------------------------------- models
_SKIP_INIT = contextvars.ContextVar("dinat_skip_init", default=False)


@contextlib.contextmanager
def skip_init():
    """Within this context (per thread / task) models skip their random initialisation pass;
    used when every tensor is about to be overwritten by a checkpoint."""
    token = _SKIP_INIT.set(True)
    try:
        yield
    finally:
        _SKIP_INIT.reset(token)


class DinatPreTrainedModel(nn.Module):
    """Shared construction, initialisation and checkpoint loading."""

    config_class = DinatConfig

    def __init__(self, config: DinatConfig):
        super().__init__()
        if not isinstance(config, DinatConfig):
            raise TypeError(f"config must be a DinatConfig, got {type(config).__name__}")
        config.validate()  # catches fields changed after construction (cfg.kernel_size = 4)
        self.config = config

    def _build_trunk(self) -> None:
        cfg = self.config
        self.patch_embed = PatchEmbed(cfg.num_channels, cfg.embed_dim, cfg.layer_norm_eps)
        self.pos_drop = nn.Dropout(cfg.hidden_dropout_prob)
        # float32 linspace as the authors; on the CPU so that building under torch.device("meta")
        # works (parameter counting without memory).
        dpr = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths), device="cpu").tolist()
        self.levels = nn.ModuleList()
        start = 0
        for i, depth in enumerate(cfg.depths):
            self.levels.append(NAStage(
                dim=cfg.embed_dim * 2 ** i, depth=depth, num_heads=cfg.num_heads[i],
                dilations=cfg.dilations[i], config=cfg, drop_path=dpr[start:start + depth],
                downsample=i < len(cfg.depths) - 1))
            start += depth
        self.num_features = [cfg.embed_dim * 2 ** i for i in range(len(cfg.depths))]

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, NeighborhoodAttention2D):
            nn.init.trunc_normal_(module.rpb, std=std)

    def init_dinat_weights(self) -> None:
        """Random initialisation of every parameter (skipped inside :func:`skip_init`).

        Named so that it does not collide with mmengine's ``BaseModule.init_weights`` (which the
        mmengine adapter's subclass keeps with mmengine's meaning)."""
        if _SKIP_INIT.get():
            return
        self.apply(self._init_weights)

    def init_weights(self) -> None:
        """Deprecated alias of :meth:`init_dinat_weights`."""
        warnings.warn("DinatPreTrainedModel.init_weights() is deprecated: call "
                      "init_dinat_weights()", DeprecationWarning, stacklevel=2)
        self.init_dinat_weights()

    def set_attention_backend(self, backend: str) -> None:
        """Switch every NA layer to ``backend`` ("auto", "tiled", "gather", "natten", "flex")."""
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; use one of "
                             f"{list(ATTENTION_BACKENDS)}")
        self.config.attention_backend = backend
        for m in self.modules():
            if isinstance(m, NeighborhoodAttention2D):
                m.backend = backend

    def set_gradient_checkpointing(self, enable: bool = True) -> None:
        self.config.gradient_checkpointing = bool(enable)
        for m in self.modules():
            if isinstance(m, NAStage):
                m.gradient_checkpointing = bool(enable)

    def _check_input(self, pixel_values):
        check_pixel_values(pixel_values, self.config.num_channels,
                           self.patch_embed.proj[0].weight)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str, config: Optional[DinatConfig] = None,
                        **kwargs):
        """Load from a local file / directory (any supported format, also the folder of a
        transformers composite model such as UperNet / Mask2Former / OneFormer) or a Hub id.

        See :func:`dinat_backbone.weights.from_pretrained`; the random initialisation is
        skipped for the tensors the checkpoint provides.
        """
        return _weights_from_pretrained(cls, path_or_hub_id, config=config,
                                        init_context=skip_init, **kwargs)


class DinatModel(DinatPreTrainedModel):
    """The bare DiNAT trunk (transformers' ``DinatModel`` outputs)."""

    def __init__(self, config: DinatConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self._build_trunk()
        self.norm = nn.LayerNorm(self.num_features[-1], eps=config.layer_norm_eps)
        self.add_pooling_layer = add_pooling_layer
        self.init_dinat_weights()

    def forward(self, pixel_values: torch.Tensor, output_attentions: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None):
        cfg = self.config
        output_attentions = (cfg.output_attentions if output_attentions is None
                             else output_attentions)
        output_hidden_states = (cfg.output_hidden_states if output_hidden_states is None
                                else output_hidden_states)
        return_dict = cfg.use_return_dict if return_dict is None else return_dict
        self._check_input(pixel_values)

        x = self.pos_drop(self.patch_embed(pixel_values))
        hidden = [x] if output_hidden_states else None
        attentions: List[torch.Tensor] = [] if output_attentions else None
        for level in self.levels:
            _, x, attns = level(x, bool(output_attentions))
            if output_hidden_states:
                hidden.append(x)
            if output_attentions:
                attentions.extend(attns)
        last = self.norm(x)
        pooled = last.mean(dim=(1, 2)) if self.add_pooling_layer else None
        out = DinatModelOutput(
            last_hidden_state=last,
            pooler_output=pooled,
            hidden_states=tuple(hidden) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
            reshaped_hidden_states=tuple(h.permute(0, 3, 1, 2) for h in hidden)
            if output_hidden_states else None,
        )
        return out if return_dict else out.to_tuple()


class DinatForImageClassification(DinatModel):
    """DiNAT with a linear head on the pooled output (the authors' classification model)."""

    def __init__(self, config: DinatConfig):
        super().__init__(config, add_pooling_layer=True)
        n = config.num_labels
        self.head = nn.Linear(self.num_features[-1], n) if n > 0 else nn.Identity()
        self._init_weights(self.head)

    def forward(self, pixel_values: torch.Tensor, labels: Optional[torch.Tensor] = None,
                output_attentions: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None):
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        base = super().forward(pixel_values, output_attentions, output_hidden_states,
                               return_dict=True)
        logits = self.head(base.pooler_output)
        loss = self.loss(logits, labels) if labels is not None else None
        out = DinatImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=base.hidden_states,
            attentions=base.attentions, reshaped_hidden_states=base.reshaped_hidden_states)
        return out if return_dict else out.to_tuple()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """transformers' semantics: regression for one label, cross-entropy for integer labels,
        BCE for float multi-hot labels, or the config's explicit ``problem_type``."""
        n = self.config.num_labels
        labels = labels.to(logits.device)
        problem = self.config.problem_type
        if problem is None:
            if n == 1:
                problem = "regression"
            elif labels.dtype in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
                problem = "single_label_classification"
            else:
                problem = "multi_label_classification"
        if problem == "regression":
            if n == 1:
                return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
            return F.mse_loss(logits, labels.to(logits.dtype))
        if problem == "single_label_classification":
            return F.cross_entropy(logits.view(-1, n), labels.view(-1).long())
        if labels.shape != logits.shape:
            raise ValueError(f"multi-label classification needs labels shaped like the logits "
                             f"{tuple(logits.shape)}, got {tuple(labels.shape)}")
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
