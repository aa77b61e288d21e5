"""The "cpp" backend: a compiled CPU kernel for neighborhood attention (forward and backward).

The C++ source ships in the package (``csrc/na2d_cpu.cpp``) and is compiled on first use with
``torch.utils.cpp_extension.load`` (a C++ compiler and ninja are needed; the build is cached in
torch's extension folder, or in ``$DINAT_CPP_BUILD_DIR``, keyed by the CPU it was built for since
it is compiled with ``-march=native``). The package works without it: when the build fails,
``available_backends()`` leaves "cpp" out, "auto" (which picks "cpp" on the CPU) uses "tiled"
instead (with one warning naming the reason), and asking for ``backend="cpp"`` raises an error
that says why and what to do.
``DINAT_DISABLE_CPP=1`` skips the build altogether.

Semantics are those of :mod:`dinat_backbone.ops.windows`, computed directly: per query, the
softmax over its kh*kw window (+ RPB), then the weighted sum of values; the backward recomputes
the softmax (nothing but q, k, v and the RPB is saved) and gathers dk / dv key by key. Work
items are (batch, head, dilation residue class, chunk of >= max(16, 2 * kernel) query rows), run
in parallel on torch's threads; the split depends on the shape only (``DINAT_NA_CHUNK_ROWS``
raises the 16, for experiments), so results do not depend on the thread count. fp32 and
fp64 are computed natively; float16 / bfloat16 inputs are computed in float32 and rounded back.
Attention dropout needs the random mask of the weights, which this kernel does not draw: with
``dropout_p > 0`` in training the call goes to the "tiled" backend (same semantics), and so do
kernel sizes above 15.

On a CPU with AVX-512 the kernel is built in two vector widths (``csrc/na2d_cpu_kernel.h``,
compiled once per width): 16 queries per vector for calls whose sub-grids (columns per dilation
residue class) are at least 48 wide, 8 for narrower ones, where a 16-lane vector would be mostly
masked lanes; elsewhere only the 8-lane width is built. ``DINAT_NA_LANES=8`` (or 16) builds one
width alone; the extension's ``set_wide_min`` moves the threshold (``DINAT_NA_WIDE_MIN`` at
start-up). Both widths compute the same numbers to the tolerances the tests assert.

The kernel is wrapped as two ``torch.library`` custom ops (``dinat_backbone::na2d_cpp_fwd`` /
``_bwd``), so ``torch.compile`` sees one opaque node, with an autograd formula. A second pair
(``na2d_cpp_qkv_fwd`` / ``_bwd``, :func:`na2d_cpp_qkv`) takes q, k, v packed as one
[B, H, W, 3, heads, D] tensor (a qkv linear's output, reshaped) and writes the gradient straight
into that layout: with separate q, k, v (views of it) autograd would stack dq, dk, dv and copy
the stack into the linear's layout.
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import sys
import threading
import warnings
from typing import Optional

import torch

# Largest kernel size the compiled kernel takes (its per-block tables hold 2k - 1 <= 31 entries);
# larger kernels, like attention dropout, are computed by "tiled" (same semantics).
MAX_KERNEL = 15
_CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
_SOURCE = os.path.join(_CSRC, "na2d_cpu.cpp")
_SOURCES_HASHED = (_SOURCE, os.path.join(_CSRC, "na2d_cpu_kernel.h"))  # the build's name
_CFLAGS = ["-O3", "-march=native", "-ffp-contract=fast"]


def _lane_flags() -> list:
    """Vector width: the kernel takes 16 queries per vector where the compiler targets AVX-512,
    else 8; ``DINAT_NA_LANES=8`` (or 16) forces one (a separate build, e.g. to test the 8-lane
    layout on an AVX-512 machine)."""
    lanes = os.environ.get("DINAT_NA_LANES", "").strip()
    if lanes in ("", "auto"):
        return []
    if lanes not in ("8", "16"):
        raise ValueError(f"DINAT_NA_LANES={lanes!r}: use 8, 16 or leave it unset (automatic)")
    return [f"-DNA_LANES={lanes}"]
# at::parallel_for runs its tasks on torch's OpenMP threads only in code compiled with OpenMP;
# without these flags the kernel runs on one thread whatever torch.set_num_threads says. Tried
# first where torch uses OpenMP, then without (a compiler with no OpenMP still gets a kernel).
_OPENMP_FLAGS = ["-fopenmp"]
_lock = threading.Lock()
_state = {"ext": None, "error": None, "warned": False, "openmp": False}


def _cpu_tag(flags=()) -> str:
    """A short tag of this CPU's model and flags and the compile flags: builds with
    -march=native are per CPU."""
    text = platform.machine() + platform.processor() + " ".join(flags)
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "model name", "Features", "CPU part")):
                    text += line
                if line.strip() == "":
                    break
    except OSError:
        pass
    for path in _SOURCES_HASHED:
        with open(path, "rb") as f:
            text += hashlib.sha1(f.read()).hexdigest()
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def load_extension():
    """The compiled module, building it on the first call; None when it cannot be built (the
    reason is in :func:`build_error`)."""
    if _state["ext"] is not None or _state["error"] is not None:
        return _state["ext"]
    with _lock:
        if _state["ext"] is not None or _state["error"] is not None:
            return _state["ext"]
        if os.environ.get("DINAT_DISABLE_CPP", "") not in ("", "0"):
            _state["error"] = "disabled by the environment variable DINAT_DISABLE_CPP"
            return None
        try:
            # torch.utils.cpp_extension warns at import that no CUDA runtime is found on a
            # machine with a CUDA folder but no GPU: irrelevant to a CPU kernel, so kept quiet
            ext_log = logging.getLogger("torch.utils.cpp_extension")
            level = ext_log.level
            ext_log.setLevel(logging.ERROR)
            try:
                from torch.utils.cpp_extension import _get_build_directory, load
            finally:
                ext_log.setLevel(level)

            # ninja installed into a virtual environment sits beside its python, which need not
            # be on PATH when that python is run by its full path
            here = os.path.dirname(sys.executable)
            if shutil.which("ninja") is None and shutil.which("ninja", path=here):
                os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")

            variants = [_OPENMP_FLAGS, []] if torch.backends.openmp.is_available() else [[]]
            errors = []
            for extra in variants:
                flags = _CFLAGS + _lane_flags() + extra
                name = "dinat_na2d_cpu_" + _cpu_tag(flags)
                build_dir = os.environ.get("DINAT_CPP_BUILD_DIR") or _get_build_directory(name, False)
                os.makedirs(build_dir, exist_ok=True)
                if not os.path.exists(os.path.join(build_dir, name + ".so")):
                    print(f"dinat_backbone: compiling the C++ neighborhood-attention kernel (once; "
                          f"cached in {build_dir})", file=sys.stderr, flush=True)
                try:
                    _state["ext"] = load(name=name, sources=[_SOURCE], extra_cflags=flags,
                                         extra_ldflags=list(extra), build_directory=build_dir,
                                         verbose=False)
                    _state["openmp"] = bool(extra)
                    break
                except Exception as e:  # e.g. a compiler without OpenMP: try the next variant
                    errors.append(e)
            if _state["ext"] is None:
                raise errors[-1]
        except Exception as e:  # no compiler, no ninja, a read-only cache, ...
            msg = str(e).strip().splitlines()
            _state["error"] = f"{type(e).__name__}: {msg[-1] if msg else ''}"[:400]
    return _state["ext"]


def build_error() -> Optional[str]:
    """Why the extension is not available (None if it loaded or was not tried yet)."""
    return _state["error"]


def cpp_available() -> bool:
    """Whether the kernel is usable (building it on the first call)."""
    return load_extension() is not None


def cpp_loaded() -> bool:
    """Whether the kernel is already loaded (never builds; safe inside torch.compile)."""
    return _state["ext"] is not None


def warn_fallback_once() -> None:
    if not _state["warned"]:
        _state["warned"] = True
        warnings.warn("dinat_backbone: the compiled 'cpp' attention backend is not available "
                      f"({build_error()}); backend='auto' uses 'tiled' instead (same results, "
                      "slower on the CPU). Install a C++ compiler and ninja to build it.",
                      RuntimeWarning, stacklevel=3)


def _ext():
    ext = load_extension()
    if ext is None:
        raise RuntimeError(
            f"na2d: backend='cpp' needs the compiled CPU kernel, which could not be built "
            f"({build_error()}). Install a C++ compiler (g++) and ninja, unset "
            "DINAT_DISABLE_CPP, or use backend='tiled' / 'auto'.")
    return ext


# ----------------------------------------------------------------------------- custom ops
@torch.library.custom_op("dinat_backbone::na2d_cpp_fwd", mutates_args=(),
                         schema="(Tensor q, Tensor k, Tensor v, Tensor? rpb, int kh, int kw, "
                                "int dh, int dw, float scale, bool return_attn) "
                                "-> (Tensor, Tensor)")
def _na2d_cpp_fwd(q, k, v, rpb, kh, kw, dh, dw, scale, return_attn):
    out, attn = _ext().forward(q, k, v, rpb, kh, kw, dh, dw, scale, return_attn)
    return out, attn


def _like_canonical(x: torch.Tensor, C: int) -> torch.Tensor:
    B, nh, H, W, _ = x.shape
    return x.new_empty(B, H, W, nh, C).permute(0, 3, 1, 2, 4)


@_na2d_cpp_fwd.register_fake
def _(q, k, v, rpb, kh, kw, dh, dw, scale, return_attn):
    attn = (q.new_empty(q.shape[:4] + (kh * kw,)) if return_attn else q.new_empty(0))
    return _like_canonical(q, v.shape[-1]), attn


@torch.library.custom_op("dinat_backbone::na2d_cpp_bwd", mutates_args=(),
                         schema="(Tensor dout, Tensor? gattn, Tensor q, Tensor k, Tensor v, "
                                "Tensor? rpb, int kh, int kw, int dh, int dw, float scale, "
                                "bool rpb_grad) -> (Tensor, Tensor, Tensor, Tensor)")
def _na2d_cpp_bwd(dout, gattn, q, k, v, rpb, kh, kw, dh, dw, scale, rpb_grad):
    dq, dk, dv = (_grad_like(t) for t in (q, k, v))
    drpb = _ext().backward_out(dq, dk, dv, dout, gattn, q, k, v, rpb, kh, kw, dh, dw, scale,
                               rpb_grad)
    return dq, dk, dv, drpb


def _grad_like(x: torch.Tensor) -> torch.Tensor:
    """The gradient buffer of an input: contiguous for a contiguous input (a leaf's .grad then
    needs no copy into the leaf's layout), else the [B, H, W, heads, D] layout the model
    reshapes for free. The kernel writes any strides."""
    if x.is_contiguous():
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    return _like_canonical(x, x.shape[-1])


@_na2d_cpp_bwd.register_fake
def _(dout, gattn, q, k, v, rpb, kh, kw, dh, dw, scale, rpb_grad):
    drpb = rpb.new_empty(rpb.shape) if (rpb_grad and rpb is not None) else q.new_empty(0)
    return _grad_like(q), _grad_like(k), _grad_like(v), drpb


def _setup_context(ctx, inputs, output):
    q, k, v, rpb, kh, kw, dh, dw, scale, return_attn = inputs
    ctx.params = (kh, kw, dh, dw, scale, return_attn)
    ctx.has_rpb = rpb is not None
    ctx.save_for_backward(q, k, v, rpb)


def _backward(ctx, dout, dattn):
    q, k, v, rpb = ctx.saved_tensors
    kh, kw, dh, dw, scale, return_attn = ctx.params
    rpb_grad = ctx.has_rpb and ctx.needs_input_grad[3]
    if dout is None:
        dout = torch.zeros_like(v)
    gattn = dattn if (return_attn and dattn is not None and dattn.numel() > 0) else None
    dq, dk, dv, drpb = _na2d_cpp_bwd(dout, gattn, q, k, v, rpb, kh, kw, dh, dw, scale, rpb_grad)
    return dq, dk, dv, (drpb if rpb_grad else None), None, None, None, None, None, None


_na2d_cpp_fwd.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------- q, k, v packed as [B, H, W, 3, heads, D]
def _unpack(qkv):
    return qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)


@torch.library.custom_op("dinat_backbone::na2d_cpp_qkv_fwd", mutates_args=(),
                         schema="(Tensor qkv, Tensor? rpb, int kh, int kw, int dh, int dw, "
                                "float scale) -> Tensor")
def _na2d_cpp_qkv_fwd(qkv, rpb, kh, kw, dh, dw, scale):
    q, k, v = _unpack(qkv)
    out, _ = _ext().forward(q, k, v, rpb, kh, kw, dh, dw, scale, False)
    return out


@_na2d_cpp_qkv_fwd.register_fake
def _(qkv, rpb, kh, kw, dh, dw, scale):
    return _like_canonical(_unpack(qkv)[2], qkv.shape[-1])


@torch.library.custom_op("dinat_backbone::na2d_cpp_qkv_bwd", mutates_args=(),
                         schema="(Tensor dout, Tensor qkv, Tensor? rpb, int kh, int kw, int dh, "
                                "int dw, float scale, bool rpb_grad) -> (Tensor, Tensor)")
def _na2d_cpp_qkv_bwd(dout, qkv, rpb, kh, kw, dh, dw, scale, rpb_grad):
    dqkv = torch.empty(qkv.shape, dtype=qkv.dtype, device=qkv.device)
    dq, dk, dv = _unpack(dqkv)
    q, k, v = _unpack(qkv)
    drpb = _ext().backward_out(dq, dk, dv, dout, None, q, k, v, rpb, kh, kw, dh, dw, scale,
                               rpb_grad)
    return dqkv, drpb


@_na2d_cpp_qkv_bwd.register_fake
def _(dout, qkv, rpb, kh, kw, dh, dw, scale, rpb_grad):
    drpb = rpb.new_empty(rpb.shape) if (rpb_grad and rpb is not None) else qkv.new_empty(0)
    return qkv.new_empty(qkv.shape), drpb


def _setup_context_qkv(ctx, inputs, output):
    qkv, rpb, kh, kw, dh, dw, scale = inputs
    ctx.params = (kh, kw, dh, dw, scale)
    ctx.has_rpb = rpb is not None
    ctx.save_for_backward(qkv, rpb)


def _backward_qkv(ctx, dout):
    qkv, rpb = ctx.saved_tensors
    kh, kw, dh, dw, scale = ctx.params
    rpb_grad = ctx.has_rpb and ctx.needs_input_grad[1]
    dqkv, drpb = _na2d_cpp_qkv_bwd(dout, qkv, rpb, kh, kw, dh, dw, scale, rpb_grad)
    return dqkv, (drpb if rpb_grad else None), None, None, None, None, None


_na2d_cpp_qkv_fwd.register_autograd(_backward_qkv, setup_context=_setup_context_qkv)


def cpp_takes_packed(qkv, kernel_size, dropout_p=0.0, training=False) -> bool:
    """Whether :func:`na2d_cpp_qkv` computes this call itself (else: unpack and call na2d)."""
    return (qkv.device.type == "cpu" and not (dropout_p and training)
            and max(kernel_size) <= MAX_KERNEL and qkv.numel() > 0)


def na2d_cpp_qkv(qkv, kernel_size, dilation, rpb, scale):
    """out [B, heads, H, W, D] of q, k, v packed as qkv [B, H, W, 3, heads, D] (validated by the
    caller, see :func:`cpp_takes_packed`); the gradient of qkv comes back in qkv's layout."""
    if not torch.compiler.is_compiling():
        _ext()
    (kh, kw), (dh, dw) = kernel_size, dilation
    dtype = qkv.dtype
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    r = rpb.to(cdt) if rpb is not None else None
    out = torch.ops.dinat_backbone.na2d_cpp_qkv_fwd(qkv.to(cdt), r, kh, kw, dh, dw, float(scale))
    return out.to(dtype)


def na2d_cpp(query, key, value, kernel_size, dilation, rpb, scale, return_attn,
             dropout_p=0.0, training=False):
    """(out, attn or None) from the compiled CPU kernel (see the module docstring)."""
    if query.device.type != "cpu":
        raise RuntimeError(f"na2d: backend='cpp' runs on the CPU only, got tensors on "
                           f"{query.device}; use backend='auto' or 'tiled'")
    if (dropout_p and training) or max(kernel_size) > MAX_KERNEL:
        from .tiled import na2d_tiled

        return na2d_tiled(query, key, value, kernel_size, dilation, rpb, scale, return_attn,
                          dropout_p, training)
    if not torch.compiler.is_compiling():
        _ext()  # a clear error now, not inside the custom op
    (kh, kw), (dh, dw) = kernel_size, dilation
    dtype = query.dtype
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    q, k, v = (t.to(cdt) for t in (query, key, value))
    r = rpb.to(cdt) if rpb is not None else None
    out, attn = torch.ops.dinat_backbone.na2d_cpp_fwd(q, k, v, r, kh, kw, dh, dw, float(scale),
                                                      bool(return_attn))
    if out.dtype != dtype:
        out = out.to(dtype)
        attn = attn.to(dtype)
    return out, (attn if return_attn else None)
