"""Released DiNAT checkpoints: read them safely, recognise and convert them, load them.

* :mod:`.safe_io`: :func:`load_checkpoint_file` (no pickle code ever runs; the one allowlist
  :data:`SAFE_GLOBALS`; :class:`UnsafeCheckpointError`) and :func:`save_state_dict`.
* :mod:`.keytable`: two-way key tables (transformers' names <-> this project's).
* :mod:`.shapes`: shapes by formula, the architecture read from weights, the one fit check.
* :mod:`.convert`: format recognition and conversion to / from every supported layout.
* :mod:`.loading`: :func:`load_pretrained` + :class:`LoadReport`, ``config.json`` reading,
  Hub download and the :func:`from_pretrained` helper used by the models.

Dilations are not stored in weights: they come from ``config.json`` when there is one,
otherwise from the classification preset, and the loading report says so. Neighborhood
attention has no absolute position embedding, so a change of input resolution needs no
interpolation; a change of kernel size resizes the RPB tables bicubically, with a warning.

This package imports only :mod:`dinat_backbone.config` from the rest of the project.
"""
from .safe_io import (SAFE_GLOBALS, WEIGHT_EXTS, WEIGHT_FILES, UnsafeCheckpointError,
                      load_checkpoint_file, save_state_dict, weights_file_in)
from .keytable import TRANSFORMERS, KeyTable, Rule
from .shapes import check_fit, describe_weights, expected_shapes, resize_rpb
from .convert import (DEFAULT_DETECTRON2_PREFIX, FORMAT_PREFIXES, FORMATS, convert_state_dict,
                      detect_format, extract_state_dict, find_backbone, infer_config,
                      split_checkpoint, to_authors, to_detectron2, to_mmengine, to_transformers,
                      transformers_config_dict)
from .loading import CONFIG_FIELDS, LoadReport, config_from_json, from_pretrained, load_pretrained

__all__ = [
    "SAFE_GLOBALS", "UnsafeCheckpointError", "load_checkpoint_file", "save_state_dict",
    "weights_file_in", "WEIGHT_FILES", "WEIGHT_EXTS",
    "TRANSFORMERS", "KeyTable", "Rule",
    "check_fit", "describe_weights", "expected_shapes", "resize_rpb",
    "FORMATS", "FORMAT_PREFIXES", "DEFAULT_DETECTRON2_PREFIX", "extract_state_dict",
    "find_backbone", "detect_format", "split_checkpoint", "infer_config", "convert_state_dict",
    "to_authors", "to_transformers", "transformers_config_dict", "to_mmengine", "to_detectron2",
    "CONFIG_FIELDS", "LoadReport", "config_from_json", "from_pretrained", "load_pretrained",
]
