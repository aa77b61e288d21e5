"""Optimizer parameter groups: detectron2's defaults, with no weight decay on the DiNAT
parameters the core names (``dinat_backbone.backbone.is_no_weight_decay``: the relative position
bias tables and the normalisation layers, as the authors trained)."""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Set

import torch
from detectron2.solver import get_default_optimizer_params
from detectron2.solver.build import reduce_param_groups

from ..backbone import DinatBackbone, is_no_weight_decay

__all__ = ["no_weight_decay_params", "get_dinat_optimizer_params", "build_dinat_optimizer_params",
           "apply_no_weight_decay"]


def no_weight_decay_params(model: torch.nn.Module) -> Set[int]:
    """ids of the parameters of every DinatBackbone inside ``model`` that take no weight decay
    (names relative to the backbone, as the core's policy is written)."""
    out: Set[int] = set()
    for module in getattr(model, "module", model).modules():
        if isinstance(module, DinatBackbone):
            out |= {id(p) for n, p in module.named_parameters() if is_no_weight_decay(n)}
    return out


def _split(groups: Iterable[Dict[str, Any]], nodecay: Set[int]) -> List[Dict[str, Any]]:
    out = []
    for g in groups:
        keep = [p for p in g["params"] if id(p) not in nodecay]
        zero = [p for p in g["params"] if id(p) in nodecay]
        if keep:
            out.append(dict(g, params=keep))
        if zero:
            out.append(dict(g, params=zero, weight_decay=0.0))
    return out


def get_dinat_optimizer_params(model: torch.nn.Module, base_lr: Optional[float] = None,
                               weight_decay: Optional[float] = None,
                               weight_decay_norm: Optional[float] = None,
                               bias_lr_factor: Optional[float] = 1.0,
                               weight_decay_bias: Optional[float] = None,
                               overrides: Optional[Dict[str, Dict[str, float]]] = None
                               ) -> List[Dict[str, Any]]:
    """detectron2's ``get_default_optimizer_params`` (same arguments), then weight decay 0 on
    DiNAT's no-decay parameters. Usable from LazyConfig:
    ``optimizer.params = L(get_dinat_optimizer_params)(weight_decay_norm=0.0)`` (the trainer
    sets ``optimizer.params.model``)."""
    groups = get_default_optimizer_params(
        model, base_lr=base_lr, weight_decay=weight_decay, weight_decay_norm=weight_decay_norm,
        bias_lr_factor=bias_lr_factor, weight_decay_bias=weight_decay_bias, overrides=overrides)
    return reduce_param_groups(_split(groups, no_weight_decay_params(model)))


def build_dinat_optimizer_params(cfg, model: torch.nn.Module) -> List[Dict[str, Any]]:
    """:func:`get_dinat_optimizer_params` with ``cfg.SOLVER``'s values (``BASE_LR``,
    ``WEIGHT_DECAY``, ``WEIGHT_DECAY_NORM``, ``BIAS_LR_FACTOR``, ``WEIGHT_DECAY_BIAS``)."""
    s = cfg.SOLVER
    return get_dinat_optimizer_params(
        model, base_lr=s.BASE_LR, weight_decay=s.WEIGHT_DECAY,
        weight_decay_norm=s.WEIGHT_DECAY_NORM, bias_lr_factor=s.BIAS_LR_FACTOR,
        weight_decay_bias=s.WEIGHT_DECAY_BIAS)


def apply_no_weight_decay(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> None:
    """Give DiNAT's no-decay parameters weight decay 0 in an optimizer built by someone else
    (e.g. Mask2Former's Trainer), splitting any group that mixes them with other parameters.
    Call before the first step."""
    nodecay = no_weight_decay_params(model)
    groups = _split(optimizer.param_groups, nodecay)
    optimizer.param_groups.clear()
    for g in groups:
        optimizer.add_param_group(g)
