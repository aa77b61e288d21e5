"""Reading and writing checkpoint files without running code.

Every checkpoint this package reads goes through :func:`load_checkpoint_file`:

* ``.safetensors`` through safetensors (a format that holds tensors only);
* ``.pkl`` / ``.pickle`` that are plain pickles (detectron2's numpy arrays) through an
  unpickler that resolves only the globals in :data:`SAFE_GLOBALS`;
* everything else (``.pth``, ``.pt``, ``.bin``, ``.ckpt``, zip-format ``.pkl``) through
  ``torch.load(weights_only=True)`` with the same :data:`SAFE_GLOBALS` allowed.

A pickle that names any other global (``os.system``, ``builtins.open``, a custom class) is
refused with :class:`UnsafeCheckpointError` before that global is ever looked up, so none of
the file's code runs. ``tools/convert_weights.py --trust-pickle`` converts a file whose origin
the user trusts into one that loads safely.
"""
from __future__ import annotations

import codecs
import collections
import io
import json
import os
import pickle
import re
import zipfile
from typing import Any, Callable, Dict, Iterable, Mapping, Tuple, Union

import torch

__all__ = [
    "SAFE_GLOBALS",
    "UnsafeCheckpointError",
    "load_checkpoint_file",
    "save_state_dict",
    "replace_atomically",
    "weights_file_in",
    "WEIGHT_FILES",
    "WEIGHT_EXTS",
]

# Weights files looked for in a directory, in this order; then any file with these extensions.
# The ``*.index.json`` files list the shards of a sharded transformers save_pretrained.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json", "model.pth", "pytorch_model.pth", "model.pt",
                "model_final.pth", "model_final.pkl")
INDEX_SUFFIX = ".index.json"
WEIGHT_EXTS = (".safetensors", ".bin", ".pth", ".pt", ".pkl", ".pickle", ".ckpt")

TRUSTED_CONVERSION = ("python tools/convert_weights.py FILE clean.pth --to dinat --trust-pickle "
                      "(it reads FILE once with torch.load(weights_only=False))")


# ================================================================================== allowlist
def _load_storage_bytes(b: bytes):
    """Stand-in for ``torch.storage._load_from_bytes`` (plainly pickled tensors): the bytes are
    a torch file, read with ``weights_only=True``."""
    return torch.load(io.BytesIO(b), weights_only=True)


def _numpy_globals() -> Dict[str, Any]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is optional for torch
        return {}
    try:
        from numpy._core import multiarray as ma, numeric as nm
    except ImportError:  # numpy < 2
        from numpy.core import multiarray as ma, numeric as nm  # type: ignore
    out: Dict[str, Any] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for mod in ("numpy.core", "numpy._core"):  # files written under numpy 1 and 2
        out[f"{mod}.multiarray._reconstruct"] = ma._reconstruct
        out[f"{mod}.multiarray.scalar"] = ma.scalar
        if hasattr(nm, "_frombuffer"):
            out[f"{mod}.numeric._frombuffer"] = nm._frombuffer
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25 pickles dtypes through these classes
    for name in dir(dtypes) if dtypes is not None else ():
        if name.endswith("DType") and isinstance(getattr(dtypes, name), type):
            out[f"numpy.dtypes.{name}"] = getattr(dtypes, name)
    return out


def _build_safe_globals() -> Dict[str, Any]:
    import argparse

    out: Dict[str, Any] = {
        "collections.OrderedDict": collections.OrderedDict,
        "_codecs.encode": codecs.encode,
        "torch.Size": torch.Size,
        "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
        "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
        "torch.storage._load_from_bytes": _load_storage_bytes,
        "argparse.Namespace": argparse.Namespace,  # timm stores its training arguments
    }
    out.update(_numpy_globals())
    return out


#: The one allowlist: "module.name" -> the object a checkpoint may name. Data only (containers,
#: tensors, numpy arrays / scalars / dtypes); nothing that can call arbitrary code.
SAFE_GLOBALS: Mapping[str, Any] = _build_safe_globals()

GlobalSpec = Union[Callable, type, Tuple[Any, str]]


def _global_name(entry: GlobalSpec) -> Tuple[str, Any]:
    if isinstance(entry, tuple):
        obj, name = entry
        return str(name), obj
    return f"{entry.__module__}.{entry.__qualname__}", entry


def _allowed(extra_globals: Iterable[GlobalSpec] = ()) -> Dict[str, Any]:
    allowed = dict(SAFE_GLOBALS)
    allowed.update(_global_name(e) for e in extra_globals)
    return allowed


# ================================================================================== errors
class UnsafeCheckpointError(ValueError):
    """A checkpoint that needs to run code to load; nothing of it was executed."""

    def __init__(self, path: str, global_name: str = ""):
        self.path = path
        self.global_name = global_name
        what = f" (it asks for '{global_name}')" if global_name else ""
        super().__init__(
            f"{path}: refused to load. This file is a pickle that needs to run code to load"
            f"{what}; it was NOT executed: the file was only parsed and nothing in it ran. "
            "Running code from a checkpoint can do anything a program can (delete or send "
            "files), so only tensors, numpy arrays and plain containers are read. If you trust "
            f"the file's origin, convert it once: {TRUSTED_CONVERSION.replace('FILE', path)}, "
            "then load clean.pth instead.")


class _Refused(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(f"global '{name}' is not allowed")
        self.name = name


def _corrupt(path: str, size: int, err: Exception) -> ValueError:
    first = str(err).splitlines()[0] if str(err) else ""
    return ValueError(f"{path}: cannot be read as a checkpoint ({size} bytes; "
                      f"{type(err).__name__}: {first}). The file is truncated or not a "
                      "checkpoint: download it again, or check that it is a .pth / .bin / "
                      ".safetensors / .pkl weights file")


def _refused_global(err: Exception) -> str:
    """The global that torch's weights-only unpickler refused, read from its message."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    m = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"global '([\w.]+)'", text)
    return m.group(1) if m else ""


# ================================================================================== readers
class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allowlisted globals; any other one stops the load before it is imported."""

    def __init__(self, f, allowed: Mapping[str, Any]):
        super().__init__(f, encoding="latin1")
        self._allowed = allowed

    def find_class(self, module, name):
        try:
            return self._allowed[f"{module}.{name}"]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


_CORRUPT = (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, RuntimeError)


def _read_plain_pickle(path: str, size: int, allowed: Mapping[str, Any]) -> Any:
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f, allowed).load()
        except _Refused as e:
            raise UnsafeCheckpointError(path, e.name) from None
        except (pickle.UnpicklingError,) + _CORRUPT as e:
            raise _corrupt(path, size, e) from None


def _read_safetensors(path: str, size: int) -> Dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ValueError(f"{path}: reading .safetensors needs the safetensors package; "
                         "install it with: pip install safetensors") from None
    try:
        return load_file(path, device="cpu")
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors file ({size} bytes; "
                         f"{type(e).__name__}: {e}); it may be truncated: download it again"
                         ) from None


def _torch_allowed(allowed: Mapping[str, Any]):
    ctx = getattr(torch.serialization, "safe_globals", None)
    if ctx is None:  # pragma: no cover - torch < 2.5: numpy arrays in .pth are refused
        import contextlib

        return contextlib.nullcontext()
    return ctx([(obj, name) for name, obj in allowed.items()])


def _read_torch(path: str, size: int, allowed: Mapping[str, Any], map_location) -> Any:
    try:
        with _torch_allowed(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        # "Unsupported global: GLOBAL os.system" = a pickle that needs code; "Unsupported
        # operand 60" and other opcode errors = not a pickle at all (an HTML page, garbage).
        if "Unsupported global" in msg or ("Weights only load failed" in msg
                                           and "Unsupported operand" not in msg):
            raise UnsafeCheckpointError(path, _refused_global(e)) from None
        raise _corrupt(path, size, e) from None
    except (EOFError, RuntimeError, ValueError, zipfile.BadZipFile, OSError) as e:
        raise _corrupt(path, size, e) from None


def weights_file_in(directory: str) -> str:
    """The weights file of a checkpoint folder (see :data:`WEIGHT_FILES`)."""
    for name in WEIGHT_FILES:
        p = os.path.join(directory, name)
        if os.path.isfile(p):
            return p
    cands = sorted(f for f in os.listdir(directory) if f.lower().endswith(WEIGHT_EXTS))
    if len(cands) == 1:
        return os.path.join(directory, cands[0])
    if not cands:
        raise ValueError(f"{directory}: no weights file found (looked for {list(WEIGHT_FILES)} "
                         f"and any *{'/*'.join(WEIGHT_EXTS)})")
    raise ValueError(f"{directory}: several weights files {cands}; pass the one to load")


def _shard_files(index_path: str) -> list:
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{index_path}: not a readable shard index ({type(e).__name__}: {e}); "
                         "download it again") from None
    folder = os.path.dirname(index_path)
    bad = [n for n in names if os.path.basename(n) != n]
    if bad:  # shard names are plain file names next to the index
        raise ValueError(f"{index_path}: shard names {bad} point outside its folder")
    return [os.path.join(folder, n) for n in names]


def _read_file(path: str, allowed: Mapping[str, Any], map_location) -> Any:
    """One checkpoint file, by its extension."""
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path!r}: no such file")
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(f"checkpoint {path!r} is empty (0 bytes); download it again")
    lower = path.lower()
    if lower.endswith(".safetensors"):
        return _read_safetensors(path, size)
    if lower.endswith((".pkl", ".pickle")) and not zipfile.is_zipfile(path):
        return _read_plain_pickle(path, size, allowed)
    return _read_torch(path, size, allowed, map_location)


def load_checkpoint_file(path: Union[str, os.PathLike], extra_globals: Iterable[GlobalSpec] = (),
                         map_location: Any = "cpu") -> Any:
    """Read a checkpoint file (or the weights file of a directory) without running its code.

    ``extra_globals``: further objects a caller's own files legitimately hold (e.g. mmengine's
    ``HistoryBuffer``), as objects or ``(object, "module.name")`` pairs, added to
    :data:`SAFE_GLOBALS` for this one read. A ``*.index.json`` (a sharded transformers save)
    reads every shard it lists. Returns what the file holds (a state dict or a dict
    wrapping one). Raises :class:`UnsafeCheckpointError` for a pickle that needs code, and a
    ValueError naming the file for a missing, empty, truncated or foreign one.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = weights_file_in(path)
    allowed = _allowed(extra_globals)
    if not (path.endswith(INDEX_SUFFIX) and os.path.isfile(path)):
        return _read_file(path, allowed, map_location)
    out: Dict[str, Any] = {}
    for shard in _shard_files(path):
        out.update(_read_file(shard, allowed, map_location))
    return out


# ================================================================================== saving
def _numpy_tree(x: Any) -> Any:
    if torch.is_tensor(x):
        return x.detach().cpu().numpy()
    if isinstance(x, Mapping):
        return {k: _numpy_tree(v) for k, v in x.items()}
    return x


def _write(obj: Mapping[str, Any], path: str, lower: str) -> None:
    if lower.endswith(".safetensors"):
        try:
            from safetensors.torch import save_file
        except ImportError:
            raise ValueError("writing .safetensors needs: pip install safetensors") from None
        if not all(torch.is_tensor(v) for v in obj.values()):
            raise ValueError(".safetensors holds a flat dict of tensors; write this checkpoint "
                             "(which wraps its weights) as .pth instead")
        save_file({k: v.contiguous() for k, v in obj.items()}, path)
    elif lower.endswith((".pkl", ".pickle")):
        with open(path, "wb") as f:
            pickle.dump(_numpy_tree(dict(obj)), f, protocol=2)
    else:
        torch.save(dict(obj), path)


def save_state_dict(obj: Mapping[str, Any], path: Union[str, os.PathLike]) -> str:
    """Write a state dict (``.safetensors``) or checkpoint dict (``.pth`` / ``.bin`` / ``.pt``
    / ``.ckpt`` via torch.save; ``.pkl`` as detectron2's pickle of numpy arrays).

    Atomic: the data goes to a temporary file in the same folder, which then replaces ``path``;
    an interrupted save leaves any previous file intact. Returns ``path``.
    """
    path = os.fspath(path)
    lower = path.lower()
    if not lower.endswith((".safetensors", ".pkl", ".pickle", ".pth", ".pt", ".bin", ".ckpt")):
        raise ValueError(f"{path}: unknown extension; use .pth, .bin, .pt, .safetensors or .pkl")
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    replace_atomically(path, lambda tmp: _write(obj, tmp, lower))
    return path


def replace_atomically(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` writes the new content to ``tmp``, a temporary file beside ``path``; it is
    flushed to disk and renamed onto ``path`` (atomic on one file system), so ``path`` holds the
    old content or the new, never a torn file. On an error the temporary file is removed."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
