"""Loading weights into a model: :func:`load_pretrained` with its :class:`LoadReport`, reading
``config.json`` (this project's, transformers' and transformers' composite models'), the Hub
download, and the :func:`from_pretrained` helper behind ``DinatPreTrainedModel.from_pretrained``.

This module knows models only through what it is given (a class to build, a module to fill):
it never imports the modeling code.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Dict, Iterable, List, Optional, Tuple, Union

import torch

from ..config import DinatConfig
from .convert import split_checkpoint
from .safe_io import WEIGHT_EXTS, load_checkpoint_file, weights_file_in
from .shapes import check_fit, infer_from_weights, short_list

__all__ = ["LoadReport", "load_pretrained", "from_pretrained", "config_from_json",
           "CONFIG_FIELDS"]

logger = logging.getLogger(__name__)

#: Keys of a config.json that become DinatConfig fields (everything else is ignored).
CONFIG_FIELDS = frozenset(DinatConfig().to_dict()) | {"out_features", "out_indices",
                                                      "num_labels", "id2label", "label2id"}
_LABEL_FIELDS = ("num_labels", "id2label", "label2id")


# ================================================================================== report
@dataclass
class LoadReport:
    """What :func:`load_pretrained` did. ``missing_keys`` / ``unexpected_keys`` follow
    ``torch.nn.Module.load_state_dict``; ``newly_initialized`` is the part of ``missing_keys``
    that may legitimately be absent (head, final / per-output norms), ``dropped_keys`` the part
    of ``unexpected_keys`` that the model has no use for (e.g. the head, for a backbone)."""

    source: str = ""
    format: str = ""
    prefix: str = ""
    missing_keys: List[str] = field(default_factory=list)
    unexpected_keys: List[str] = field(default_factory=list)
    newly_initialized: List[str] = field(default_factory=list)
    dropped_keys: List[str] = field(default_factory=list)
    resized_keys: List[str] = field(default_factory=list)
    ignored_keys: int = 0
    loaded_keys: int = 0
    notes: List[str] = field(default_factory=list)

    @property
    def missing_backbone_keys(self) -> List[str]:
        """Missing keys of the trunk (patch_embed + levels): a strict load refuses these."""
        s = set(self.newly_initialized)
        return [k for k in self.missing_keys if k not in s]

    @property
    def unexpected_backbone_keys(self) -> List[str]:
        s = set(self.dropped_keys)
        return [k for k in self.unexpected_keys if k not in s]

    def __str__(self) -> str:
        parts = [f"loaded {self.loaded_keys} tensors from {self.source or 'a state dict'} "
                 f"(format {self.format}, prefix {self.prefix!r})"]
        for label, keys in (("missing", self.missing_backbone_keys),
                            ("unexpected", self.unexpected_backbone_keys)):
            if keys:
                parts.append(f"{label} {len(keys)}: {short_list(keys)}")
        if self.newly_initialized:
            parts.append(f"newly initialised (not in the checkpoint): "
                         f"{short_list(self.newly_initialized)}")
        if self.dropped_keys:
            parts.append(f"not used by this model: {short_list(self.dropped_keys)}")
        if self.resized_keys:
            parts.append(f"RPB resized for a new kernel size: {len(self.resized_keys)} tables")
        return "; ".join(parts + self.notes)


# ================================================================================== loading
def load_pretrained(model: torch.nn.Module, source: Any, strict: bool = True,
                    prefix: Optional[str] = None, use_ema: bool = False) -> LoadReport:
    """Load a checkpoint in any supported format into a DinatModel /
    DinatForImageClassification / DinatBackbone (or a subclass, e.g. an adapter's backbone).

    ``source``: a path (file or directory) or a dict. The trunk (patch_embed, levels) must
    match (``strict``, the default): one ValueError lists missing and unexpected keys. The head
    and the final / per-output norms are optional: absent ones stay initialised, superfluous
    ones are dropped, a head for another number of classes is replaced by a new one; all of
    it is in the returned :class:`LoadReport`. RPB tables of another kernel size are resized.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a DiNAT torch module, got {type(model).__name__}")
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else ""
    sd, info = split_checkpoint(source, prefix, use_ema)
    own = model.state_dict()
    cfg = getattr(model, "config", None)
    fit = check_fit(sd, {k: tuple(v.shape) for k, v in own.items()},
                    f"this {type(model).__name__}", cfg, strict,
                    f"{name or '(state dict)'} (format {info['format']}, prefix "
                    f"{info['prefix']!r})")
    loadable = {k: v for k, v in sd.items() if k in own}
    model.load_state_dict(loadable, strict=False)
    report = LoadReport(source=name, format=info["format"], prefix=info["prefix"],
                        missing_keys=fit.missing, unexpected_keys=fit.unexpected,
                        newly_initialized=fit.newly_initialized, dropped_keys=fit.dropped,
                        resized_keys=fit.resized, ignored_keys=info["ignored"],
                        loaded_keys=len(loadable), notes=list(info["notes"]) + fit.notes)
    if isinstance(cfg, DinatConfig):  # a DiNAT model keeps its report
        model.loading_report = report
    logger.info("%s", report)
    return report


# ================================================================================== config.json
def _read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: config.json is present but cannot be read ({type(e).__name__}:"
                         f" {e}); fix or delete it, or pass config= to from_pretrained") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: config.json holds a {type(d).__name__}, not a JSON object; "
                         "fix or delete it, or pass config= to from_pretrained")
    return d


def _not_dinat(path: str, what: str) -> ValueError:
    return ValueError(f"{path}: {what}, not a DiNAT; point from_pretrained at a DiNAT checkpoint "
                      "folder, or pass config= to use these weights with another config")


def _dinat_section(d: Dict[str, Any], path: str) -> Tuple[Dict[str, Any], str]:
    """(the DiNAT config dict, where it was found): the file itself, or the nested
    ``backbone_config`` of a transformers composite model (UperNet, Mask2Former, OneFormer)."""
    outer = d.get("model_type")
    nested = d.get("backbone_config")
    if isinstance(nested, dict):
        if nested.get("model_type", "dinat") != "dinat":
            raise _not_dinat(path, f"the {outer or 'composite'} model's backbone_config is a "
                                   f"{nested.get('model_type')!r} backbone")
        # a composite model's labels are its own, not the backbone's: not carried over
        section = {k: v for k, v in nested.items() if k not in _LABEL_FIELDS}
        return section, f"config from {path} (backbone_config of a {outer or 'composite'} model)"
    if outer not in (None, "dinat"):
        raise _not_dinat(path, f"config.json describes a {outer!r} model with no DiNAT "
                               "backbone_config")
    if outer is None and not {"embed_dim", "depths"} & set(d):
        raise _not_dinat(path, f"config.json has no model_type and no DiNAT fields (keys: "
                               f"{short_list(sorted(d), 8)})")
    return d, f"config from {path}"


def config_from_json(path: Union[str, os.PathLike]) -> Tuple[DinatConfig, str]:
    """(DinatConfig, note) from a ``config.json``: this project's, transformers' ``DinatConfig``,
    or a transformers composite model's (its nested ``backbone_config``). Raises a ValueError
    naming the file and the problem when it cannot be read or does not describe a valid DiNAT."""
    path = os.fspath(path)
    d, note = _dinat_section(_read_json(path), path)
    try:
        return DinatConfig.from_dict({k: v for k, v in d.items() if k in CONFIG_FIELDS}), note
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: config.json does not describe a valid DiNAT: {e}") from None


# ================================================================================== sources
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_ABSENT = ("EntryNotFoundError", "RemoteEntryNotFoundError")


def _hub_module(repo_id: str):
    try:
        import huggingface_hub
    except ImportError:
        raise ValueError(
            f"{repo_id!r} is not a local file or directory, and downloading it from the Hugging "
            "Face Hub needs huggingface_hub: pip install huggingface_hub (or the 'hub' extra). "
            f"Or download 'config.json' and 'pytorch_model.bin' (or 'model.safetensors') from "
            f"the Hub repository {repo_id} into one folder and pass that folder") from None
    return huggingface_hub


def _hub_weights(hub, repo_id: str, **kw) -> str:
    errors = []
    for fname in _HUB_WEIGHTS:
        try:
            return hub.hf_hub_download(repo_id, fname, **kw)
        except Exception as e:  # EntryNotFound for one name, network errors for all
            errors.append(f"{fname}: {type(e).__name__}")
            if type(e).__name__ not in _ABSENT:
                break
    raise ValueError(
        f"could not fetch the weights of {repo_id!r} from the Hugging Face Hub "
        f"({'; '.join(errors)}). Without a network: download 'config.json' and "
        f"'pytorch_model.bin' (or 'model.safetensors') from the Hub repository {repo_id} "
        "on a machine that has one, put both in one folder and pass that folder to "
        "from_pretrained")


def _hub_config(hub, repo_id: str, **kw) -> Tuple[Optional[str], str]:
    try:
        return hub.hf_hub_download(repo_id, "config.json", **kw), ""
    except Exception as e:
        if type(e).__name__ in _ABSENT:
            return None, f"the Hub repository {repo_id} has no config.json"
        raise ValueError(
            f"{repo_id}: the weights were fetched but config.json could not be "
            f"({type(e).__name__}: {e}); retry, or download config.json by hand into a folder "
            "with the weights and pass that folder") from None


def _resolve(src: str, revision: Optional[str], cache_dir: Optional[str]
             ) -> Tuple[str, Optional[str], str]:
    """(weights file, config.json or None, why there is none)."""
    if os.path.isdir(src):
        c = os.path.join(src, "config.json")
        if os.path.exists(c):
            return weights_file_in(src), c, ""
        return weights_file_in(src), None, f"the folder {src} has no config.json"
    if os.path.isfile(src):
        return src, None, "a single weights file was given (no config.json)"
    if _HUB_ID.match(src) and not src.lower().endswith(WEIGHT_EXTS + (".json",)):
        hub = _hub_module(src)
        kw = dict(revision=revision, cache_dir=cache_dir)
        return (_hub_weights(hub, src, **kw),) + _hub_config(hub, src, **kw)
    raise ValueError(f"from_pretrained: {src!r} is neither a file, a directory nor a Hub "
                     "id (owner/name)")


# ================================================================================== config choice
def _layer_scale_as_weights(config: DinatConfig, sd, cfg_file: str) -> Tuple[DinatConfig, list]:
    has_scale = any(k.endswith((".gamma1", ".gamma2")) for k in sd)
    if has_scale == (config.layer_scale_init_value > 0):
        return config, []
    return (config.copy(layer_scale_init_value=1e-5 if has_scale else 0.0),
            [f"layer scale {'on' if has_scale else 'off'} as in the weights ({cfg_file} said "
             "otherwise)"])


def _choose_config(config: Optional[DinatConfig], cfg_file: Optional[str], why: str, sd,
                   overrides: Dict[str, Any]) -> Tuple[DinatConfig, List[str]]:
    """``config``, else ``cfg_file``, else inferred from the weights; overrides on top."""
    notes: List[str] = []
    if config is None and cfg_file is not None:
        config, note = config_from_json(cfg_file)
        config, ls_notes = _layer_scale_as_weights(config, sd, cfg_file)
        notes += [note] + ls_notes
    if config is None:
        overrides = dict(overrides)
        config, inferred = infer_from_weights(sd, overrides.pop("dilations", None),
                                              why or "no config was given", **overrides)
        return config, notes + inferred
    return (config.copy(**overrides) if overrides else config), notes


# ================================================================================== building
def _init_missing(model: torch.nn.Module, missing: Iterable[str]) -> None:
    """Give exactly the ``missing`` tensors the model's own initialisation (its per-module
    ``_init_weights``; layer scale to the config's value)."""
    init = getattr(model, "_init_weights", None)
    if init is None:
        return
    owners: Dict[str, List[str]] = {}
    for k in missing:
        owner, _, name = k.rpartition(".")
        owners.setdefault(owner, []).append(name)
    with torch.no_grad():
        for owner, names in owners.items():
            module = model.get_submodule(owner) if owner else model
            fresh = copy.deepcopy(module)
            init(fresh)  # this module's own tensors only (not recursive)
            for n in names:
                t = getattr(module, n, None)
                if not torch.is_tensor(t):
                    continue
                if n in ("gamma1", "gamma2"):
                    t.fill_(model.config.layer_scale_init_value)
                else:
                    t.copy_(getattr(fresh, n))


def _check_overrides(overrides: Dict[str, Any]) -> None:
    unknown = set(overrides) - CONFIG_FIELDS
    if unknown:
        raise TypeError(f"from_pretrained: unknown arguments {sorted(unknown)}; config fields "
                        f"are {sorted(CONFIG_FIELDS)}")


def from_pretrained(cls: Callable[[DinatConfig], torch.nn.Module],
                    path_or_hub_id: Union[str, os.PathLike],
                    config: Optional[DinatConfig] = None, strict: bool = True,
                    use_ema: bool = False, prefix: Optional[str] = None,
                    output_loading_info: bool = False, revision: Optional[str] = None,
                    cache_dir: Optional[str] = None,
                    init_context: Optional[Callable[[], ContextManager]] = None,
                    **config_overrides: Any):
    """Build ``cls(config)`` (DinatModel, DinatForImageClassification, DinatBackbone, ...) and
    load weights into it.

    ``path_or_hub_id``: a checkpoint file in any supported format, a directory holding one
    (and optionally ``config.json``: this project's, transformers' or a transformers composite
    model's such as UperNet / Mask2Former / OneFormer, whose DiNAT backbone is then loaded),
    or a Hub id such as ``shi-labs/dinat-mini-in1k-224`` (needs huggingface_hub and a network).
    The config is, in order: ``config``; ``config.json`` (an unreadable or invalid one is an
    error, not skipped); inferred from the weights (dilations from the classification preset,
    with a warning saying why). ``config_overrides`` (e.g. ``out_features=["stage3"]``,
    ``dilations="coco"``, ``num_labels=10``) apply on top. ``init_context``: a context manager
    factory under which ``cls`` skips its random initialisation (the tensors the checkpoint
    lacks are then initialised one by one). Returns the model (and the :class:`LoadReport`
    with ``output_loading_info=True``); the report is also kept as ``model.loading_report``.
    """
    _check_overrides(config_overrides)
    weights, cfg_file, why = _resolve(os.fspath(path_or_hub_id), revision, cache_dir)
    sd, info = split_checkpoint(load_checkpoint_file(weights), prefix, use_ema)
    config, notes = _choose_config(config, cfg_file, why, sd, config_overrides)
    with (init_context or contextlib.nullcontext)():
        model = cls(config)
    report = load_pretrained(model, sd, strict=strict)
    _init_missing(model, report.missing_keys)
    report.source, report.format, report.prefix = os.fspath(weights), info["format"], info["prefix"]
    report.notes = info["notes"] + notes + report.notes
    report.ignored_keys = info["ignored"]
    for n in notes:
        if n.startswith("dilations are not stored"):
            warnings.warn(n, UserWarning, stacklevel=3)
    model.loading_report = report
    return (model, report) if output_loading_info else model
