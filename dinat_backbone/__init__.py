"""dinat-backbone: the DiNAT backbone for dense prediction, in pure PyTorch.

Framework-neutral core (config, exact neighborhood-attention op, model, backbone, checkpoint
conversion, FLOP counting); it never imports a framework. The adapters
``dinat_backbone.detectron2``, ``dinat_backbone.mmengine`` and ``dinat_backbone.transformers``
import theirs and only register names when imported.
"""
__version__ = "0.1.0"

from .config import (
    DILATION_PRESETS,
    FIELDS,
    VARIANTS,
    ConfigError,
    DinatConfig,
    derive_dilations,
    dilation_preset,
)
from .modeling import (
    DinatForImageClassification,
    DinatImageClassifierOutput,
    DinatModel,
    DinatModelOutput,
    DinatPreTrainedModel,
)
from .backbone import DinatBackbone, is_no_weight_decay

__all__ = [
    "DinatConfig",
    "ConfigError",
    "FIELDS",
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
    "is_no_weight_decay",
    "__version__",
]
