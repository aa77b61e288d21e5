"""Whether detectron2 imports, and what to tell the user when it does not.

The rest of ``dinat_backbone`` never needs detectron2. This module tries the detectron2 imports
the adapter uses, once, and keeps the error; the package's ``__init__`` imports its detectron2
modules only when this succeeded, and otherwise answers every detectron2-dependent name with
:func:`require_detectron2`'s ImportError (install instructions plus the original error).
"""
from __future__ import annotations

from typing import Optional

__all__ = ["INSTALL_HINT", "detectron2_available", "require_detectron2", "IMPORT_ERROR"]

INSTALL_HINT = (
    "dinat_backbone.detectron2 needs detectron2, which is not installed (or fails to import). "
    "detectron2 is not published on the package registries; install it from its official source "
    "as its INSTALL.md says, into the environment that has torch and torchvision:\n"
    "    pip install -e '.[detectron2]'   # detectron2's own requirements, from this checkout\n"
    "    pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'\n"
    "(or: git clone https://github.com/facebookresearch/detectron2.git && "
    "pip install --no-build-isolation -e detectron2). The rest of dinat_backbone works without it."
)

IMPORT_ERROR: Optional[ImportError] = None
try:  # the detectron2 modules the adapter imports; a broken build fails here, not later
    import detectron2.checkpoint  # noqa: F401
    import detectron2.config  # noqa: F401
    import detectron2.modeling  # noqa: F401
    import detectron2.solver  # noqa: F401
except ImportError as e:  # detectron2 absent, or present but broken (e.g. its compiled ops)
    IMPORT_ERROR = e


def detectron2_available() -> bool:
    """True when detectron2 imports (and the adapter registered its backbones)."""
    return IMPORT_ERROR is None


def require_detectron2() -> None:
    """Raise an ImportError with the install instructions when detectron2 does not import."""
    if IMPORT_ERROR is not None:
        raise ImportError(f"{INSTALL_HINT}\n(import error: {IMPORT_ERROR})") from IMPORT_ERROR
