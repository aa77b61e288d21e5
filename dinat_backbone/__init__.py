"""dinat-backbone: the DiNAT backbone for dense prediction, in pure PyTorch.

Framework-neutral core (config, exact neighborhood-attention op, model, backbone, checkpoint
conversion). Framework adapters live in ``dinat_backbone.detectron2`` and
``dinat_backbone.mmengine`` and import their frameworks lazily.
"""
__version__ = "0.1.0"

from .config import DILATION_PRESETS, VARIANTS, DinatConfig, derive_dilations, dilation_preset
from .modeling import (
    DinatForImageClassification,
    DinatImageClassifierOutput,
    DinatModel,
    DinatModelOutput,
    DinatPreTrainedModel,
)
from .backbone import DinatBackbone

__all__ = [
    "DinatConfig",
    "DinatModel",
    "DinatForImageClassification",
    "DinatBackbone",
    "DinatPreTrainedModel",
    "DinatModelOutput",
    "DinatImageClassifierOutput",
    "VARIANTS",
    "DILATION_PRESETS",
    "dilation_preset",
    "derive_dilations",
    "__version__",
]
