"""Weight-decay groups for mmengine from the core's policy (``is_no_weight_decay``)."""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch.nn as nn
from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

from ..backbone import DinatBackbone, is_no_weight_decay

__all__ = ["DinatOptimWrapperConstructor", "no_decay_custom_keys"]


def no_decay_custom_keys(model: nn.Module,
                         custom_keys: Optional[Mapping[str, dict]] = None) -> Dict[str, dict]:
    """``paramwise_cfg.custom_keys`` entries that turn weight decay off where the core says so.

    One entry per parameter of every :class:`~dinat_backbone.DinatBackbone` inside ``model``
    for which :func:`dinat_backbone.backbone.is_no_weight_decay` holds (its norms and relative
    position biases), spelled out by full name. mmengine applies only the longest key that
    matches a parameter, so each entry carries the settings of the longest key of
    ``custom_keys`` that already matched it (e.g. Mask2Former's ``'backbone': dict(lr_mult=0.1)``)
    with ``decay_mult=0``.
    """
    given = dict(custom_keys or {})
    longest_first = sorted(sorted(given), key=len, reverse=True)
    out: Dict[str, dict] = {}
    for prefix, module in model.named_modules():
        if not isinstance(module, DinatBackbone):
            continue
        for name, _ in module.named_parameters():
            if not is_no_weight_decay(name):
                continue
            full = f"{prefix}.{name}" if prefix else name
            base = next((given[k] for k in longest_first if k in full), {})
            out[full] = dict(base, decay_mult=0.0)
    return out


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class DinatOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor, plus no weight decay on the DiNAT norms and RPB tables.

    ``optim_wrapper = dict(constructor='DinatOptimWrapperConstructor', optimizer=...,
    paramwise_cfg=dict(custom_keys=...))``: the ``custom_keys`` given (e.g. a backbone
    ``lr_mult``) still apply; :func:`no_decay_custom_keys` adds the backbone's no-decay entries.
    """

    def __call__(self, model: nn.Module):
        net = model.module if is_model_wrapper(model) else model
        keys = dict(self.paramwise_cfg.get("custom_keys", {}))
        keys.update(no_decay_custom_keys(net, keys))
        self.paramwise_cfg = dict(self.paramwise_cfg, custom_keys=keys)
        return super().__call__(model)
