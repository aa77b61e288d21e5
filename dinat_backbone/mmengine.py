"""OpenMMLab adapter: the DiNAT backbone for mmdet 3.x and mmseg 1.x configs.

Add this module to a config and name the backbone ``DiNAT``::

    custom_imports = dict(imports=['dinat_backbone.mmengine'], allow_failed_imports=False)
    model = dict(backbone=dict(
        type='DiNAT', variant='mini', dilations='coco', drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint='dinat_mini_in1k_224.pth')))

``DiNAT`` is registered in mmengine's *root* ``MODELS`` registry, so mmdet (default scope
``mmdet``) and mmseg (``mmseg``) both find it: their registries fall back to the root one.
Its parameter names are the authors' detection / segmentation backbone names (``patch_embed``,
``levels.i.blocks.j...``, ``norm0``..``norm3``), so the backbone part of a checkpoint saved by
the authors' mmdet / mmseg code matches by name, and ``init_cfg=dict(type='Pretrained', ...)``
accepts every
released classification format (the authors' ``.pth``, transformers, detectron2 ``.pkl``,
safetensors) through :func:`dinat_backbone.checkpoints.load_pretrained`.

Importing this module also

* makes mmengine read its own checkpoints with ``torch.load(weights_only=True)`` (the default
  from torch 2.6), allowing only the few data types they hold (see
  :func:`allow_mmengine_checkpoints`), so ``--resume`` and ``load_from`` work with mmengine
  0.10 on current torch;
* registers ``AtomicCheckpointHook`` (a ``CheckpointHook`` that writes to a temporary name and
  renames, so a kill while saving never leaves a truncated latest checkpoint).

mmengine is imported here at module level, but nothing in the rest of ``dinat_backbone``
imports this module: ``import dinat_backbone`` never needs OpenMMLab.
"""
from __future__ import annotations

import copy
import difflib
import os
import os.path as osp
import pickle
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

try:
    import mmengine  # noqa: F401
    from mmengine.hooks import CheckpointHook, Hook
    from mmengine.logging import print_log
    from mmengine.model import BaseModule
    from mmengine.registry import HOOKS, MODELS
except ImportError as e:  # pragma: no cover - exercised only without mmengine
    raise ImportError(
        "dinat_backbone.mmengine needs OpenMMLab (mmengine, and mmdet or mmseg with a compiled "
        "mmcv). Install with `bash tools/install.sh` from the dinat-backbone checkout, or "
        "`pip install 'dinat-backbone[mm]'` after building mmcv 2.1 with its ops "
        f"(see README.md). Original error: {e}") from e

import torch

from .backbone import DinatBackbone
from .config import VARIANTS, DinatConfig

__all__ = ["DiNAT", "AtomicCheckpointHook", "TorchRNGStateHook", "allow_mmengine_checkpoints", "ADAPTER_FIELDS",
           "no_decay_custom_keys", "load_config", "build_runner", "load_mmengine_checkpoint",
           "mmengine_safe_globals"]

# Adapter field -> DinatConfig field (the rest have the same name).
_TO_CORE = {
    "in_channels": "num_channels",
    "drop_rate": "hidden_dropout_prob",
    "attn_drop_rate": "attention_probs_dropout_prob",
    "layer_scale": "layer_scale_init_value",
    "with_cp": "gradient_checkpointing",
}
_FROM_CORE = {v: k for k, v in _TO_CORE.items()}
_ARCH_FIELDS = ("embed_dim", "depths", "num_heads", "kernel_size", "dilations", "mlp_ratio",
                "qkv_bias", "layer_scale", "layer_norm_eps", "in_channels")
ADAPTER_FIELDS = ("variant",) + _ARCH_FIELDS + (
    "drop_rate", "attn_drop_rate", "drop_path_rate", "out_indices", "frozen_stages",
    "attention_backend", "with_cp", "pretrained", "init_cfg")


def _field_error(exc: ValueError) -> ValueError:
    """Re-word a DinatConfig error with this adapter's field names."""
    msg = str(exc)

    def repl(m):
        core = m.group(1)
        return f"DiNAT backbone field {_FROM_CORE.get(core, core)}"

    msg = re.sub(r"DinatConfig\.([A-Za-z_]+)", repl, msg)
    return ValueError(msg)


def no_decay_custom_keys(backbone_prefix: str = "", depths: Optional[Sequence[int]] = None,
                         lr_mult: Optional[float] = None) -> Dict[str, dict]:
    """``paramwise_cfg.custom_keys`` that turn weight decay off for DiNAT's norms and RPB tables.

    With ``backbone_prefix=''`` (the UPerNet / Mask R-CNN recipe) this is the authors'
    ``{'rpb': dict(decay_mult=0.), 'norm': dict(decay_mult=0.)}``. With a prefix (e.g.
    ``'backbone'``) and ``lr_mult`` (Mask2Former's backbone multiplier 0.1), keys longer than the
    prefix are spelled out per layer, because mmengine applies the *longest* matching key only.
    """
    if not backbone_prefix:
        return {"rpb": dict(decay_mult=0.0), "norm": dict(decay_mult=0.0)}
    if depths is None:
        raise ValueError("no_decay_custom_keys: give depths when backbone_prefix is set")
    p = backbone_prefix.rstrip(".")
    m = {} if lr_mult is None else {"lr_mult": lr_mult}
    keys = {p: dict(m, decay_mult=1.0), f"{p}.patch_embed.norm": dict(m, decay_mult=0.0),
            f"{p}.norm": dict(m, decay_mult=0.0)}
    for i, d in enumerate(depths):
        for j in range(d):
            keys[f"{p}.levels.{i}.blocks.{j}.norm"] = dict(m, decay_mult=0.0)
            keys[f"{p}.levels.{i}.blocks.{j}.attn.rpb"] = dict(m, decay_mult=0.0)
        if i < len(depths) - 1:  # the last stage has no downsampler
            keys[f"{p}.levels.{i}.downsample.norm"] = dict(m, decay_mult=0.0)
    return keys


@MODELS.register_module()
class DiNAT(DinatBackbone, BaseModule):
    """DiNAT backbone for mmdet / mmseg; returns a tuple of NCHW maps, one per ``out_indices``.

    Args (all optional; architecture fields left as ``None`` come from ``variant``):
        variant: 'mini' (default), 'tiny', 'small', 'base', 'large' or 'large_k11'.
        embed_dim, depths, num_heads, kernel_size, mlp_ratio, qkv_bias, layer_norm_eps:
            as :class:`~dinat_backbone.DinatConfig`.
        dilations: per-layer lists (one list per stage) or a preset name: 'coco',
            'ade20k512', 'ade20k640', 'mask2former', 'imagenet224' (default), 'imagenet384'.
        layer_scale: layer-scale init value (0 / None = off unless the variant has it; base 1e-5).
        in_channels (alias in_chans): image channels, 3.
        drop_rate, attn_drop_rate, drop_path_rate: dropout, attention dropout, stochastic depth.
        out_indices: which stages to return, 0..3 = stage 1..4 (strides 4, 8, 16, 32); each output
            has its own LayerNorm (``norm{i}``).
        frozen_stages: -1 none; 0 the patch embedding; i also stages 1..i (kept in eval mode).
        attention_backend: 'auto', 'tiled', 'gather', 'natten' or 'flex'.
        with_cp: gradient checkpointing per stage (saves memory, costs a second forward).
        pretrained: the authors' spelling of ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
        init_cfg: ``dict(type='Pretrained', checkpoint=path_or_url, prefix=None)``; any released
            DiNAT format. ``prefix`` (e.g. 'backbone.') takes the backbone out of a full detector
            / segmentor checkpoint.
    """

    def __init__(self, variant: Optional[str] = None, embed_dim: Optional[int] = None,
                 depths: Optional[Sequence[int]] = None, num_heads: Optional[Sequence[int]] = None,
                 kernel_size: Optional[int] = None,
                 dilations: Union[str, Sequence[Sequence[int]], None] = None,
                 mlp_ratio: Optional[float] = None, qkv_bias: Optional[bool] = None,
                 layer_scale: Optional[float] = None, layer_norm_eps: Optional[float] = None,
                 in_channels: Optional[int] = None, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.2,
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1,
                 attention_backend: str = "auto", with_cp: bool = False,
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
            raise ValueError(f"DiNAT backbone field qk_scale={qk_scale!r} is not supported: the "
                             "attention scale is head_dim ** -0.5 as in every released model; "
                             "remove qk_scale (or set it to None)")
        config = self._make_config(
            variant=variant, embed_dim=embed_dim, depths=depths, num_heads=num_heads,
            kernel_size=kernel_size, dilations=dilations, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
            layer_scale=layer_scale, layer_norm_eps=layer_norm_eps, in_channels=in_channels,
            drop_rate=drop_rate, attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate,
            out_indices=out_indices, frozen_stages=frozen_stages,
            attention_backend=attention_backend, with_cp=with_cp)
        init_cfg = self._check_init_cfg(init_cfg, pretrained)
        super().__init__(config)  # DinatBackbone -> DinatPreTrainedModel -> BaseModule
        self.init_cfg = init_cfg
        self.variant = getattr(config, "variant", None)
        self._dinat_built = True

    # ------------------------------------------------------------------ config
    @staticmethod
    def _make_config(variant, out_indices, **fields) -> DinatConfig:
        if variant is not None and not isinstance(variant, str):
            raise ValueError(f"DiNAT backbone field variant={variant!r} is invalid: give a name "
                             f"from {sorted(VARIANTS)}")
        if isinstance(out_indices, int) and not isinstance(out_indices, bool):
            out_indices = (out_indices,)
        depth_hint = fields["depths"]
        n_stages = len(depth_hint) if isinstance(depth_hint, (list, tuple)) else 4
        if not isinstance(out_indices, (list, tuple)) or not out_indices or any(
                isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_stages
                for i in out_indices):
            raise ValueError(
                f"DiNAT backbone field out_indices={out_indices!r} is invalid: give stage indices "
                f"in 0..{n_stages - 1} (0 = stage 1, stride 4 ... {n_stages - 1} = stage "
                f"{n_stages}, stride {4 * 2 ** (n_stages - 1)}), e.g. (0, 1, 2, 3)")
        if list(out_indices) != sorted(set(out_indices)):
            raise ValueError(f"DiNAT backbone field out_indices={out_indices!r} is invalid: "
                             "indices must be increasing and without repeats, e.g. (0, 1, 2, 3)")
        core = {}
        for k, v in fields.items():
            if v is None and k in _ARCH_FIELDS:
                continue  # taken from the variant / DinatConfig defaults
            core[_TO_CORE.get(k, k)] = v
        if core.get("layer_scale_init_value") is False:
            core["layer_scale_init_value"] = 0.0
        if not isinstance(core.get("gradient_checkpointing"), bool):
            raise ValueError(f"DiNAT backbone field with_cp={fields['with_cp']!r} is invalid: "
                             "must be True or False")
        core["out_features"] = [f"stage{i + 1}" for i in out_indices]
        try:
            if variant is None and "embed_dim" not in core and "depths" not in core:
                variant = "mini"
            if variant is not None:
                dil = core.pop("dilations", None)
                return DinatConfig.from_variant(variant, dilations=dil, **core)
            if "dilations" not in core:
                from .config import dilation_preset
                depths = core.get("depths", (3, 4, 6, 5))
                if not isinstance(depths, (list, tuple)):
                    raise ValueError(f"DinatConfig.depths={depths!r} is invalid: must be a list "
                                     "of positive integers, e.g. [3, 4, 6, 5]")
                core["dilations"] = dilation_preset("imagenet224", depths)
            return DinatConfig(**core)
        except ValueError as e:
            raise _field_error(e) from None
        except TypeError as e:
            raise TypeError(f"DiNAT backbone: {e}") from None

    @staticmethod
    def _check_init_cfg(init_cfg, pretrained):
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError("DiNAT backbone: give init_cfg=dict(type='Pretrained', "
                                 "checkpoint=...) or pretrained=..., not both")
            if not isinstance(pretrained, (str, os.PathLike)):
                raise ValueError(f"DiNAT backbone field pretrained={pretrained!r} is invalid: "
                                 "give a path or URL (or use init_cfg)")
            init_cfg = dict(type="Pretrained", checkpoint=os.fspath(pretrained))
        if init_cfg is None:
            return None
        cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
        for c in cfgs:
            if not isinstance(c, dict) or "type" not in c:
                raise ValueError(f"DiNAT backbone field init_cfg={init_cfg!r} is invalid: use "
                                 "dict(type='Pretrained', checkpoint='path/or/url.pth')")
            if c["type"] == "Pretrained":
                ck = c.get("checkpoint")
                if not isinstance(ck, (str, os.PathLike)) or not os.fspath(ck):
                    raise ValueError(
                        f"DiNAT backbone field init_cfg.checkpoint={ck!r} is invalid: give the "
                        "path or URL of a released DiNAT checkpoint (.pth, .pkl, .safetensors, "
                        "or a transformers model directory)")
                unknown = set(c) - {"type", "checkpoint", "prefix", "map_location"}
                if unknown:
                    raise ValueError(f"DiNAT backbone field init_cfg has unknown keys "
                                     f"{sorted(unknown)}; Pretrained takes checkpoint and prefix")
        return copy.deepcopy(init_cfg)

    # ------------------------------------------------------------------ weights
    def init_weights(self) -> None:
        """Random init while building; at the Runner's call, load ``init_cfg`` if it has one."""
        if not getattr(self, "_dinat_built", False):
            DinatBackbone.init_weights(self)  # called by DinatBackbone.__init__
            return
        cfgs = self.init_cfg if isinstance(self.init_cfg, (list, tuple)) else (
            [self.init_cfg] if self.init_cfg else [])
        pretrained = [c for c in cfgs if c.get("type") == "Pretrained"]
        others = [c for c in cfgs if c.get("type") != "Pretrained"]
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
        from .checkpoints import load_pretrained

        path = _local_file(os.fspath(checkpoint))
        try:
            report = load_pretrained(self, path, strict=True, prefix=prefix or None)
        except ValueError as e:
            raise ValueError(f"DiNAT backbone field init_cfg.checkpoint={checkpoint!r}: {e}") from e
        print_log(f"DiNAT: loaded {checkpoint}\n{report}", logger="current")
        return report

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(DinatBackbone.forward(self, x).values())


def _local_file(checkpoint: str, cache: Optional[str] = None) -> str:
    """A local path for ``checkpoint``; URLs are downloaded once into torch's hub cache."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", checkpoint):
        if not checkpoint.startswith(("http://", "https://")):
            raise ValueError(f"DiNAT backbone field init_cfg.checkpoint={checkpoint!r}: only "
                             "local paths and http(s) URLs are supported")
        from urllib.parse import urlparse

        name = osp.basename(urlparse(checkpoint).path) or "dinat_checkpoint.pth"
        cache = cache or osp.join(torch.hub.get_dir(), "checkpoints")
        os.makedirs(cache, exist_ok=True)
        dst = osp.join(cache, name)
        if not osp.isfile(dst):
            print_log(f"DiNAT: downloading {checkpoint} to {dst}", logger="current")
            torch.hub.download_url_to_file(checkpoint, dst, progress=False)
        return dst
    path = osp.expanduser(checkpoint)
    if not osp.exists(path):
        raise FileNotFoundError(
            f"DiNAT backbone field init_cfg.checkpoint={checkpoint!r}: no such file. Download the "
            "released checkpoint (see README.md), or set init_cfg=None to start from random "
            "weights")
    return path


# ---------------------------------------------------------------------- torch >= 2.6 loading
def mmengine_safe_globals() -> List[Any]:
    """What an mmengine checkpoint holds besides tensors, for ``torch.load(weights_only=True)``.

    * ``HistoryBuffer`` (the message hub's logged numbers) and numpy's array / scalar / dtype
      reconstructors (data, no code);
    * a *restricted* stand-in for ``builtins.getattr``: a HistoryBuffer pickles its
      ``statistics_methods`` dict as ``getattr(HistoryBuffer, 'min')`` etc. The stand-in
      answers only when the object is the ``HistoryBuffer`` class (or one) and the name one of
      its public methods, and raises otherwise, so ``getattr`` cannot reach anything else (the
      real ``getattr`` is never allowed: with it a pickle could walk to ``os.system``).
    """
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    try:
        multiarray = np._core.multiarray  # numpy >= 2
    except AttributeError:  # pragma: no cover - numpy 1.x
        multiarray = np.core.multiarray
    allowed: List[Any] = [HistoryBuffer, multiarray._reconstruct, multiarray.scalar, np.ndarray,
                          np.dtype]
    # numpy >= 1.25 may pickle dtypes through their classes (numpy.dtypes.Float64DType, ...).
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes)
                    if n.endswith("DType") and isinstance(getattr(dtypes, n), type)]
    allowed.append((_history_buffer_getattr, "builtins.getattr"))
    return allowed


def load_mmengine_checkpoint(filename: str, map_location=None):
    """``torch.load(filename, weights_only=True)`` with :func:`mmengine_safe_globals` allowed.

    Use this (or mmengine's own loading, which goes through it once this module is imported)
    to read checkpoints that mmengine wrote. Anything else that needs code to unpickle is
    refused.
    """
    filename = osp.expanduser(os.fspath(filename))
    if not osp.isfile(filename):
        raise FileNotFoundError(f"checkpoint {filename!r} can not be found")
    with torch.serialization.safe_globals(mmengine_safe_globals()):
        return torch.load(filename, map_location=map_location, weights_only=True)


def _load_url(filename, map_location=None, model_dir=None, progress=False):
    from mmengine.dist import barrier, get_dist_info

    rank, world = get_dist_info()
    if rank == 0:
        path = _local_file(filename, model_dir)
    if world > 1:
        barrier()
        if rank > 0:
            path = _local_file(filename, model_dir)
    return load_mmengine_checkpoint(path, map_location)


def allow_mmengine_checkpoints() -> None:
    """Make mmengine read checkpoints with ``weights_only=True`` on torch >= 2.6.

    torch 2.6 made ``weights_only=True`` the default of ``torch.load``; mmengine 0.10.7 calls it
    without the argument, so resuming from (or ``load_from``) its own checkpoints fails with
    "Unsupported global: mmengine.logging.history_buffer.HistoryBuffer". Rather than loading
    with ``weights_only=False`` (which runs whatever code a pickle names), this replaces
    mmengine's loaders for local paths and http(s) URLs (``CheckpointLoader.register_scheme``,
    mmengine's extension point) with :func:`load_mmengine_checkpoint`, which allows exactly the
    types an mmengine checkpoint holds (:func:`mmengine_safe_globals`) for the duration of
    that one ``torch.load``. Every other global in a file is still refused. (A process-wide
    ``torch.serialization.add_safe_globals`` is not used: any ``with safe_globals(...)`` block
    elsewhere that lists the same numpy types removes them again on exit.)
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    if not hasattr(torch.serialization, "safe_globals"):  # torch < 2.5: nothing to do
        return
    CheckpointLoader.register_scheme(prefixes="", force=True)(
        lambda filename, map_location=None: load_mmengine_checkpoint(filename, map_location))
    CheckpointLoader.register_scheme(prefixes=("http://", "https://"), force=True)(_load_url)


def _history_buffer_getattr(obj, name, *default):
    """``getattr`` for unpickling, limited to a HistoryBuffer's public methods."""
    from mmengine.logging.history_buffer import HistoryBuffer

    is_buffer = obj is HistoryBuffer or type(obj) is HistoryBuffer
    if (is_buffer and isinstance(name, str) and not name.startswith("_")
            and callable(getattr(HistoryBuffer, name, None)) and not default):
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f"refused getattr({type(obj).__name__}, {name!r}) while loading a checkpoint: only a "
        "HistoryBuffer's statistics methods may be looked up (dinat_backbone.mmengine)")


# ---------------------------------------------------------------------- atomic checkpoints
@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` whose "latest" checkpoint is never truncated by a kill.

    On a local work dir each checkpoint is written to ``.<name>.tmp``, flushed to disk, then
    renamed onto ``<name>`` (``os.replace`` is atomic); ``last_checkpoint`` is replaced the same
    way, and only after the new file is in place; checkpoints beyond ``max_keep_ckpts`` are
    removed only after that. A kill at any moment leaves ``last_checkpoint`` naming a complete
    file. Other storage backends fall back to mmengine's ``CheckpointHook``.
    """

    def _save_checkpoint_with_step(self, runner, step, meta):
        from mmengine.dist import is_main_process
        from mmengine.fileio.backends import LocalBackend

        if not isinstance(self.file_backend, LocalBackend) or self.file_client_args is not None:
            return super()._save_checkpoint_with_step(runner, step, meta)
        to_remove = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                to_remove.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))
        name = self.filename_tmpl.format(step)
        final = self.file_backend.join_path(self.out_dir, name)
        self.last_ckpt = final
        runner.message_hub.update_info("last_ckpt", final)
        tmp_name = f".{name}.tmp"
        runner.save_checkpoint(self.out_dir, tmp_name, self.file_client_args,
                               save_optimizer=self.save_optimizer,
                               save_param_scheduler=self.save_param_scheduler, meta=meta,
                               by_epoch=self.by_epoch, backend_args=self.backend_args,
                               **self.args)
        if not is_main_process():
            return
        tmp = osp.join(self.out_dir, tmp_name)
        _fsync(tmp)
        os.replace(tmp, final)
        _atomic_write_text(osp.join(runner.work_dir, "last_checkpoint"), final)
        for old in to_remove:
            path = osp.join(self.out_dir, self.filename_tmpl.format(old))
            if osp.isfile(path):
                os.remove(path)


def _fsync(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------- runner helpers (tools/)
def load_config(config, work_dir: Optional[str] = None, cfg_options: Optional[dict] = None,
                launcher: str = "none", resume: Union[bool, str, None] = None, amp: bool = False,
                load_from: Optional[str] = None):
    """Read an mmdet / mmseg config and apply the command-line choices of tools/mm_train.py.

    Args:
        config: path of a Python config, or an mmengine ``Config``.
        work_dir: where logs and checkpoints go (default: the config's ``work_dir``, else
            ``./work_dirs/<config name>``).
        cfg_options: dotted-key overrides (``--cfg-options``).
        launcher: 'none' or 'pytorch' (mmengine initialises torch.distributed and wraps the
            model in its DDP; start with ``torchrun``).
        resume: True / 'auto' resumes from ``work_dir``'s ``last_checkpoint``; a path resumes
            from that checkpoint (model, optimiser, scheduler, iteration count).
        amp: train with mmengine's ``AmpOptimWrapper`` (GPU).
        load_from: weights to start from (not resuming the schedule); for tools/mm_test.py the
            checkpoint to evaluate.
    """
    from mmengine.config import Config

    if launcher not in ("none", "pytorch", "slurm", "mpi"):
        raise ValueError(f"launcher={launcher!r}: use 'none' or 'pytorch' (torchrun)")
    cfg = config.copy() if isinstance(config, Config) else Config.fromfile(os.fspath(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = launcher
    if launcher != "none" and not torch.cuda.is_available():
        # mmengine 0.10's pytorch launcher calls torch.cuda.set_device and uses NCCL.
        raise ValueError(f"launcher={launcher!r} needs CUDA GPUs (mmengine's distributed "
                         "launcher); on a CPU-only machine use --launcher none")
    if work_dir is not None:
        cfg.work_dir = os.fspath(work_dir)
    elif cfg.get("work_dir") is None:
        name = osp.splitext(osp.basename(cfg.filename or "dinat"))[0]
        cfg.work_dir = osp.join("./work_dirs", name)
    if amp:
        wrapper = cfg.optim_wrapper.get("type", "OptimWrapper")
        if wrapper == "AmpOptimWrapper":
            print_log("AMP is already enabled in the config", logger="current")
        else:
            cfg.optim_wrapper.type = "AmpOptimWrapper"
            cfg.optim_wrapper.loss_scale = "dynamic"
    if load_from is not None:
        cfg.load_from = os.fspath(load_from)
    if resume is not None and resume is not False:
        cfg.resume = True
        if resume is not True and resume != "auto":
            cfg.load_from = os.fspath(resume)
        elif load_from is None:
            cfg.load_from = None  # Runner then finds work_dir/last_checkpoint
    hooks = cfg.get("default_hooks") or {}
    ck = hooks.get("checkpoint")
    if ck is not None and ck.get("type") in ("CheckpointHook", "mmengine.CheckpointHook"):
        ck.type = "AtomicCheckpointHook"
    custom = list(cfg.get("custom_hooks") or [])
    if not any(h.get("type") in ("TorchRNGStateHook", TorchRNGStateHook) for h in custom):
        custom.append(dict(type="TorchRNGStateHook"))
        cfg.custom_hooks = custom
    return cfg


def build_runner(cfg):
    """An mmengine Runner for ``cfg`` (the config's ``runner_type`` if it names one)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    if "runner_type" in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


allow_mmengine_checkpoints()


# ------------------------------------------------------------------ exact resume
_KEY = "torch_rng_state"


@HOOKS.register_module(force=True)
class TorchRNGStateHook(Hook):
    """Save torch's RNG state in checkpoints; restore it when training resumes.

    mmengine's ``--resume`` restores weights, optimizer, schedulers and the iteration count and
    replays the data loader, but only re-seeds torch: dropout and stochastic depth would draw
    different masks than the uninterrupted run. With this hook (added by :func:`load_config`,
    so by tools/mm_train.py) a run killed with SIGKILL and resumed reaches bit-identical weights
    on the CPU with ``randomness=dict(seed=..., deterministic=True)`` (tests/test_resume.py).
    In a config of your own: ``custom_hooks = [dict(type='TorchRNGStateHook')]``.
    """

    priority = "VERY_LOW"

    def __init__(self) -> None:
        self._pending: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint[_KEY] = state

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get(_KEY)
        if state is None:
            return
        # Applied at the next training iteration: the runner still builds and replays the
        # data loader between loading and training, and must not disturb the restored state.
        self._pending = state

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state["cpu"])
        cuda = state.get("cuda")
        if cuda is not None and torch.cuda.is_available():
            if len(cuda) != torch.cuda.device_count():
                runner.logger.warning(
                    f"TorchRNGStateHook: the checkpoint holds RNG states of {len(cuda)} CUDA "
                    f"devices, this run has {torch.cuda.device_count()}; CUDA RNG not restored "
                    "(the resumed run will not reproduce the uninterrupted one exactly)")
            else:
                torch.cuda.set_rng_state_all(cuda)
