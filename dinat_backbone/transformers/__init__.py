"""transformers adapter: make transformers' own DiNAT models run, with this package's op.

One explicit, idempotent call; importing this package patches nothing and does not even import
transformers::

    from dinat_backbone.transformers import patch_transformers
    patch_transformers()      # -> list of what it changed; a second call returns []
    from transformers import DinatForImageClassification

See :func:`patch_transformers` for what is changed and docs/transformers.md for usage.
"""
from .patch import (
    SUPPORTED_RANGE,
    VERIFIED_VERSIONS,
    TransformersPatchError,
    is_patched,
    patch_transformers,
)

__all__ = ["patch_transformers", "is_patched", "TransformersPatchError", "SUPPORTED_RANGE",
           "VERIFIED_VERSIONS"]
