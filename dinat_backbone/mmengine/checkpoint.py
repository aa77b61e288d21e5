"""mmengine's ``load_from`` / ``--resume`` through the project's safe checkpoint reader.

mmengine 0.10 reads checkpoints with a bare ``torch.load``. :func:`patch_checkpoint_loader`
(called by :func:`~dinat_backbone.mmengine.load_config`, so by tools/mm_train.py and
tools/mm_test.py; call it yourself when you build a Runner another way) registers, through
mmengine's own extension point ``CheckpointLoader.register_scheme``, loaders for local paths and
http(s) URLs that read with :func:`dinat_backbone.weights.load_checkpoint_file`: a pickle that
would import anything outside the allow-list (code) is refused before any of it runs. What an
mmengine checkpoint holds besides tensors is allowed for that read only
(:func:`mmengine_safe_globals`). Importing this module changes nothing.
"""
from __future__ import annotations

import os
import os.path as osp
import pickle
import re
from typing import Any, List, Optional

import torch
from mmengine.logging import print_log

from ..weights import load_checkpoint_file

__all__ = ["mmengine_safe_globals", "load_mmengine_checkpoint", "patch_checkpoint_loader",
           "local_file"]


def mmengine_safe_globals() -> List[Any]:
    """What an mmengine checkpoint holds besides tensors and numpy data.

    * ``HistoryBuffer`` (the message hub's logged numbers);
    * a *restricted* stand-in for ``builtins.getattr``: a HistoryBuffer pickles its
      ``statistics_methods`` dict as ``getattr(HistoryBuffer, 'min')`` etc. The stand-in answers
      only when the object is the ``HistoryBuffer`` class (or one) and the name one of its public
      methods, and raises otherwise (the real ``getattr`` is never allowed: with it a pickle could
      walk to ``os.system``).

    numpy arrays / scalars / dtypes are in the project's own allow-list.
    """
    from mmengine.logging.history_buffer import HistoryBuffer

    return [HistoryBuffer, (_history_buffer_getattr, "builtins.getattr")]


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


def load_mmengine_checkpoint(filename, map_location=None) -> Any:
    """Read a checkpoint mmengine wrote (or any weights file) without running code from it.

    :func:`dinat_backbone.weights.load_checkpoint_file` with :func:`mmengine_safe_globals`
    allowed for this read; a pickle that needs code raises its ``UnsafeCheckpointError``.
    """
    filename = osp.expanduser(os.fspath(filename))
    if not osp.isfile(filename):
        raise FileNotFoundError(f"checkpoint {filename!r} can not be found")
    return load_checkpoint_file(filename, extra_globals=mmengine_safe_globals(),
                                map_location=map_location or "cpu")


def local_file(checkpoint: str, cache: Optional[str] = None, what: str = "checkpoint") -> str:
    """A local path for ``checkpoint``; http(s) URLs are downloaded once into torch's hub cache."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", checkpoint):
        if not checkpoint.startswith(("http://", "https://")):
            raise ValueError(f"{what}={checkpoint!r}: only local paths and http(s) URLs are "
                             "supported")
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
            f"{what}={checkpoint!r}: no such file. Download the released checkpoint (see "
            "README.md), or set it to None to start from random weights")
    return path


# mmengine prints "Loads checkpoint by <name[10:]> backend": local_safe / http_safe.
def load_from_local_safe(filename, map_location=None):
    return load_mmengine_checkpoint(filename, map_location)


def load_from_http_safe(filename, map_location=None, model_dir=None, progress=False):
    from mmengine.dist import barrier, get_dist_info

    rank, world = get_dist_info()
    if rank == 0:
        path = local_file(filename, model_dir)
    if world > 1:
        barrier()
        if rank > 0:
            path = local_file(filename, model_dir)
    return load_mmengine_checkpoint(path, map_location)


_PATCHED = False


def patch_checkpoint_loader() -> None:
    """Make mmengine read local and http(s) checkpoints with the project's safe reader.

    Process-wide and idempotent. ``force=True`` is what ``register_scheme`` needs to replace a
    scheme mmengine already registered (``''`` and ``http(s)://``). Other schemes
    (``open-mmlab://``, ``torchvision://``, ``s3://`` ...) keep mmengine's loaders, which call
    ``torch.load`` with torch's own default (``weights_only=True`` on the torch this package
    requires).
    """
    global _PATCHED
    if _PATCHED:
        return
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes="", loader=load_from_local_safe, force=True)
    CheckpointLoader.register_scheme(prefixes=("http://", "https://"),
                                     loader=load_from_http_safe, force=True)
    _PATCHED = True
