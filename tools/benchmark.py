#!/usr/bin/env python
"""Speed and memory of DiNAT's neighborhood attention and backbone, beside peers in one run.

Sections (all by default; pick with --sections):

* ``op``: the NA op, forward and forward+backward, at representative shapes (stage 1 at 224 and
  at 800x1216 with dilation 1 and the COCO preset's dilation, and 2x2x56x56x32 k7 d2), for every
  backend that runs here: ``tiled`` (default), ``gather`` (the naive baseline that gathers each
  query's k*k keys), ``natten`` (NATTEN >= 0.20 has no RPB: timed without it, a reference row
  only) and ``flex`` where available and applicable. Beside them, a 1024^3 fp32 matmul measured
  in the same run gives the matmul-rate limit: each op row shows its effective GFLOP/s (the FLOP
  handle's count of q.k and a.v, 2 FLOPs per multiply-add, fwd+bwd counted as 3x fwd) and how
  many times slower than that limit it runs. ``--op-threads 1 2`` interleaves thread counts in
  one run and adds a thread-scaling table.
* ``backbone``: DiNAT-mini / DiNAT-tiny (DinatBackbone, four stage outputs) beside torchvision's
  Swin-T and ConvNeXt-T feature extractors (``.features``, no classifier head), inference
  (no_grad forward) and training (forward + backward of the sum of the outputs), images/s and
  peak memory, with ratios against Swin-T measured in the same run, same threads, same dtype
  (``--autocast bfloat16`` runs them under autocast). ``--models dinat_tiny_unpacked`` adds
  DiNAT-T as it was before ``na2d_qkv`` (q, k, v unbound from the qkv linear's output).
  ``--models dinat_tiny_no_na`` adds an analysis row: DiNAT-T with the attention op replaced by a
  copy of v (what the rest of the network costs). ``--models dinat_tiny_lanes8`` adds DiNAT-T
  with the compiled kernel's 8-lane width on every call (it differs from dinat_tiny only on a
  CPU with AVX-512, where the kernel takes 16 lanes on sub-grids of 48 columns or more).
* ``ckpt``: training peak memory at 1024x1024 with per-stage gradient checkpointing on vs off.
* ``profile`` (not in the default set): torch.profiler over training steps at 224 (batch 8) of
  --profile-models at --profile-threads: self time per category (attention op, linears,
  layernorm, GELU, conv, layout copies, other) and the top operators.

Time: best of --repeats runs after --warmup runs (the machine may be shared; ratios are taken
between backends / models measured in the same process, interleaved repeat by repeat). With
``--clock cpu`` (one thread only) the time is the process's CPU time, which other jobs on a
shared machine inflate much less than wall time. Peak memory: the peak of
tensor memory allocated during one call above what was held before it (from the profiler's
allocation events; on CUDA, torch.cuda.max_memory_allocated), in a separate run from the timed
ones. Output: markdown tables; --json PATH also writes the raw numbers. docs/benchmarks.md shows
what it prints, with the tables measured for this project.

Examples::

    python tools/benchmark.py                       # everything (about 30-60 min on 2 cores)
    python tools/benchmark.py --quick               # small subset (a few minutes)
    python tools/benchmark.py --sections op --backends tiled gather
    python tools/benchmark.py --sections backbone --models dinat_tiny swin_t --sizes 224
    python tools/benchmark.py --sections op --op-threads 1 2 --backends tiled gather
    python tools/benchmark.py --sections profile --profile-threads 1
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from typing import Callable, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

from dinat_backbone.config import DinatConfig, dilation_preset  # noqa: E402

# (label, shape [B, heads, H, W, D], kernel, dilation)
OP_SHAPES = [
    ("stage1@224 d1", (1, 2, 56, 56, 32), 7, 1),
    ("stage1@224 d8", (1, 2, 56, 56, 32), 7, 8),
    ("target 2x2x56x56 d2", (2, 2, 56, 56, 32), 7, 2),
    # DiNAT-T's most frequent layer at 224 (9 of its 30): stage 3, batch 8, dilation 1
    ("stage3@224 b8 d1", (8, 8, 14, 14, 32), 7, 1),
    ("stage1@800x1216 d1", (1, 2, 200, 304, 32), 7, 1),
    ("stage1@800x1216 d28", (1, 2, 200, 304, 32), 7, 28),
]
QUICK_OP_SHAPES = ["stage1@224 d1", "target 2x2x56x56 d2"]
# (label, batch, height, width)
SIZES = {"224": (8, 224, 224), "800x1216": (1, 800, 1216)}
MODELS = ["dinat_mini", "dinat_tiny", "swin_t", "convnext_tiny"]
# Analysis only (never in the default set): DiNAT-T with the attention op replaced by a copy of
# v, everything else unchanged. Its time is what the rest of the network costs, so the gap to
# dinat_tiny is the op's share (forward + backward) of a step.
# dinat_tiny_tiled: DiNAT-T with the pure-PyTorch "tiled" backend instead of "auto" (which is the
# compiled "cpp" kernel on the CPU where it builds): both backends in one run.
# dinat_tiny_unpacked: DiNAT-T calling na2d on q, k, v unbound from the qkv linear's output (the
# model before na2d_qkv): autograd then stacks dq, dk, dv and copies them into the linear's layout.
# dinat_tiny_lanes8: DiNAT-T with the compiled kernel's 8-lane width on every call, on a CPU
# with AVX-512, where "cpp" takes 16 queries per vector on sub-grids of >= 48 columns: both
# widths in one run (on other CPUs it is dinat_tiny again).
EXTRA_MODELS = ["dinat_tiny_no_na", "dinat_tiny_tiled", "dinat_tiny_unpacked", "dinat_tiny_lanes8"]


# ---------------------------------------------------------------------------------- measuring
# Wall time by default; --clock cpu uses this process's CPU time instead, which other processes
# on a shared machine do not inflate (1 thread only: with more, it adds the threads' times up).
_clock = time.perf_counter


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after ``warmup`` calls (seconds)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = _clock()
        fn()
        _sync(device)
        best = min(best, _clock() - t0)
    return best


def peak_memory(fn: Callable[[], None], device: torch.device) -> int:
    """Peak bytes of tensor memory allocated during ``fn()`` above what was allocated before."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak


def _mib(n: Optional[float]) -> str:
    return "-" if n is None else f"{n / 2 ** 20:,.0f}"


def _ms(t: Optional[float]) -> str:
    return "-" if t is None else f"{1e3 * t:,.1f}"


def machine_description(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = " load avg %.2f %.2f %.2f," % os.getloadavg()
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return (f"{dev}; {cpu}, {os.cpu_count()} logical CPUs,{load} torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def table(headers: List[str], rows: List[List[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------------------------- op section
def _op_backends(device: torch.device, wanted: Optional[List[str]]) -> List[str]:
    from dinat_backbone.ops import available_backends

    have = available_backends(device)
    order = [b for b in ("cpp", "tiled", "gather", "natten", "flex") if b in have]
    return [b for b in order if wanted is None or b in wanted]


def op_flops(shape, k: int) -> int:
    """Forward FLOPs of the op as the FLOP handle counts it (dinat_backbone.flops.na_flop_jit:
    one multiply-add per query, window position and channel, for q.k and for a.v), at 2 FLOPs
    per multiply-add, the unit in which matmul rates are quoted."""
    B, nh, H, W, D = shape
    return 2 * B * nh * H * W * k * k * (D + D)


# The backward of each of the two products is two products of the same size: fwd+bwd = 3x fwd.
FWDBWD_FLOP_FACTOR = 3


def _matmul_fn(device, dtype, n: int = 1024):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    return (lambda: torch.mm(a, b)), 2 * n ** 3


def bench_op(args, device, dtype) -> List[dict]:
    from dinat_backbone.ops import na2d
    from dinat_backbone.ops.natten_backend import natten_supports

    shapes = [s for s in OP_SHAPES if not args.quick or s[0] in QUICK_OP_SHAPES]
    if args.op_shapes:
        shapes = [s for s in OP_SHAPES if s[0] in args.op_shapes]
    backends = _op_backends(device, args.backends)
    threads_list = args.op_threads or [torch.get_num_threads()]
    saved_threads = torch.get_num_threads()
    results = []
    mm, mm_flops = _matmul_fn(device, dtype)
    for label, shape, k, d in shapes:
        runs = []
        B, nh, H, W, D = shape
        g = torch.Generator().manual_seed(0)
        q, key, v = (torch.randn(shape, generator=g).to(device, dtype) for _ in range(3))
        rpb = (0.1 * torch.randn(nh, 2 * k - 1, 2 * k - 1, generator=g)).to(device, dtype)
        for threads in threads_list:
            mrow = dict(shape=label, dims="x".join(map(str, shape)), kernel=k, dilation=d,
                        backend="matmul 1024^3", threads=threads, fwd_s=None, fwdbwd_s=None,
                        fwd_mem=None, fwdbwd_mem=None, note="the matmul-rate limit",
                        flops=mm_flops, matmul=True)
            runs.append((mrow, mm, None))
            results.append(mrow)
            for be in backends:
                row = dict(shape=label, dims="x".join(map(str, shape)), kernel=k, dilation=d,
                           backend=be, threads=threads, fwd_s=None, fwdbwd_s=None, fwd_mem=None,
                           fwdbwd_mem=None, note="", flops=op_flops(shape, k))
                use_rpb = rpb
                if be == "natten":
                    why = natten_supports(q, rpb, False, 0.0)
                    if why and natten_supports(q, None, False, 0.0) is None:
                        # NATTEN >= 0.20 has no RPB: timed without it, as a reference only
                        use_rpb = None
                        row["backend"] = "natten (no RPB)"
                        row["note"] = "reference only: computes attention without the RPB"
                    elif why:
                        row["note"] = why
                        results.append(row)
                        continue
                S = H * W
                if be.startswith("natten") and device.type == "cpu" and \
                        B * nh * S * S * 4 > args.gather_limit_mb * 2 ** 20:
                    # NATTEN >= 0.20 on the CPU runs flex_attention's unfused path: full scores
                    row["note"] = (f"skipped: NATTEN's CPU path holds B*heads*(H*W)^2 scores, "
                                   f"over --gather-limit-mb {args.gather_limit_mb}")
                    results.append(row)
                    continue
                if be == "flex" and device.type == "cpu" and not args.flex_cpu:
                    row["note"] = ("flex on CPU: forward only, compiles ~1 min per shape; "
                                   "--flex-cpu to include")
                    results.append(row)
                    continue
                if be == "gather" and H * W * B * nh * k * k * D * 4 > \
                        args.gather_limit_mb * 2 ** 20:
                    row["note"] = (f"skipped: k*k copies exceed --gather-limit-mb "
                                   f"{args.gather_limit_mb}")
                    results.append(row)
                    continue

                def fwd(be=be, use_rpb=use_rpb):
                    with torch.no_grad():
                        na2d(q, key, v, k, d, rpb=use_rpb, backend=be)

                leaves = [t.detach().clone().requires_grad_(True) for t in (q, key, v, rpb)]
                if use_rpb is None:
                    leaves[3] = None

                def fwdbwd(be=be, leaves=leaves):
                    out = na2d(leaves[0], leaves[1], leaves[2], k, d, rpb=leaves[3], backend=be)
                    out.backward(torch.ones_like(out))
                    for t in leaves:
                        if t is not None:
                            t.grad = None

                trains = not (device.type == "cpu" and (be == "flex" or use_rpb is None))
                runs.append((row, fwd, fwdbwd if trains else None))
                results.append(row)
        # Interleave everything (backends, thread counts, the matmul) repeat by repeat, so that
        # load changes hit all of them alike.
        live = []
        for row, fwd, fwdbwd in runs:
            torch.set_num_threads(row["threads"])
            try:
                for _ in range(args.warmup):
                    fwd()
                    if fwdbwd:
                        fwdbwd()
                live.append((row, fwd, fwdbwd))
            except Exception as e:  # report, don't abort the whole run
                row["note"] = f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"
        for _ in range(args.repeats):
            for row, fwd, fwdbwd in live:
                torch.set_num_threads(row["threads"])
                for name, fn in (("fwd_s", fwd), ("fwdbwd_s", fwdbwd)):
                    if fn is None:
                        continue
                    _sync(device)
                    t0 = _clock()
                    fn()
                    _sync(device)
                    dt = _clock() - t0
                    row[name] = dt if row[name] is None else min(row[name], dt)
        for row, fwd, fwdbwd in live:
            if row.get("matmul"):
                continue
            torch.set_num_threads(row["threads"])
            row["fwd_mem"] = peak_memory(fwd, device)
            if fwdbwd:
                row["fwdbwd_mem"] = peak_memory(fwdbwd, device)
            elif not row["note"]:
                row["note"] = "no flex backward on CPU"
            print(f"  op {label} {row['backend']} {row['threads']}T: fwd {_ms(row['fwd_s'])} ms, "
                  f"fwd+bwd {_ms(row['fwdbwd_s'])} ms {row['note']}", file=sys.stderr, flush=True)
    torch.set_num_threads(saved_threads)
    return results


def _gflops(flops: int, t: Optional[float]) -> Optional[float]:
    return None if not t else flops / t / 1e9


def op_tables(results: List[dict]) -> str:
    rows, scal = [], []
    base = {(r["shape"], r["threads"]): r for r in results if r["backend"] == "gather"}
    limit = {(r["shape"], r["threads"]): r for r in results if r.get("matmul")}
    for r in results:
        key = (r["shape"], r["threads"])
        if r.get("matmul"):
            rate = _gflops(r["flops"], r["fwd_s"])
            rows.append([r["shape"], r["threads"], "-", r["backend"], _ms(r["fwd_s"]), "-", "-",
                         "-" if rate is None else f"{rate:.1f}", "-", "1.0x", "-", "-", "-",
                         r["note"]])
            continue
        g = base.get(key)
        speed = "-"
        if g and g["fwdbwd_s"] and r["fwdbwd_s"]:
            speed = f"{g['fwdbwd_s'] / r['fwdbwd_s']:.1f}x"
        m = limit.get(key)
        mrate = _gflops(m["flops"], m["fwd_s"]) if m else None
        f_rate = _gflops(r["flops"], r["fwd_s"])
        b_rate = _gflops(FWDBWD_FLOP_FACTOR * r["flops"], r["fwdbwd_s"])

        def dist(rate):
            return "-" if not (rate and mrate) else f"{mrate / rate:.1f}x"

        rows.append([r["shape"], r["threads"], f"k{r['kernel']} d{r['dilation']}", r["backend"],
                     _ms(r["fwd_s"]), _ms(r["fwdbwd_s"]), speed,
                     "-" if f_rate is None else f"{f_rate:.1f}",
                     "-" if b_rate is None else f"{b_rate:.1f}", dist(f_rate), dist(b_rate),
                     _mib(r["fwd_mem"]), _mib(r["fwdbwd_mem"]), r["note"]])
        one = next((s for s in results if s["shape"] == r["shape"] and s["threads"] == 1
                    and s["backend"] == r["backend"]), None)
        if r["threads"] > 1 and one is not None and one["fwdbwd_s"] and r["fwdbwd_s"]:
            scal.append([r["shape"], r["backend"], f"{r['threads']} vs 1",
                         f"{one['fwd_s'] / r['fwd_s']:.2f}x" if one["fwd_s"] and r["fwd_s"]
                         else "-", f"{one['fwdbwd_s'] / r['fwdbwd_s']:.2f}x"])
    text = table(["shape", "threads", "kernel", "backend", "fwd ms", "fwd+bwd ms",
                  "fwd+bwd vs gather", "fwd GFLOP/s", "fwd+bwd GFLOP/s", "fwd: limit / op",
                  "fwd+bwd: limit / op", "fwd peak MiB", "fwd+bwd peak MiB", "note"], rows)
    text += ("\n\nGFLOP/s are effective: the op's FLOPs as the FLOP handle counts them (q.k and "
             "a.v, 2 per multiply-add; fwd+bwd = 3x fwd) over its time. 'limit / op' is how many "
             "times slower that is than the fp32 1024^3 matmul measured in the same run and "
             "threads (the matmul-rate limit).")
    if scal:
        text += "\n\nThread scaling (time at 1 thread / time at N threads, same run):\n\n"
        text += table(["shape", "backend", "threads", "fwd speed-up", "fwd+bwd speed-up"], scal)
    return text


# ---------------------------------------------------------------------------------- backbones
class _WithoutNA(torch.nn.Module):
    """Runs a DiNAT model with ``na2d`` swapped for a copy of v into the op's output layout."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        import dinat_backbone.modeling as modeling

        def copy_v(q, k, v, *args, **kwargs):
            B, nh, H, W, D = v.shape
            out = v.new_empty(B, H, W, nh, D).permute(0, 3, 1, 2, 4)
            return out.copy_(v)

        def copy_v_packed(qkv, *args, **kwargs):  # qkv [B, H, W, 3, heads, D]
            return copy_v(*qkv.permute(3, 0, 4, 1, 2, 5).unbind(0))

        saved = modeling.na2d, modeling.na2d_qkv
        modeling.na2d, modeling.na2d_qkv = copy_v, copy_v_packed
        try:
            return self.model(x)
        finally:
            modeling.na2d, modeling.na2d_qkv = saved


class _Unpacked(torch.nn.Module):
    """Runs a DiNAT model with na2d_qkv computed as na2d on q, k, v unbound from qkv."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        import dinat_backbone.modeling as modeling
        from dinat_backbone.ops import na2d

        def unpacked(qkv, kernel_size, dilation=1, rpb=None, scale=None, backend="auto", **kw):
            q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
            return na2d(q, k, v, kernel_size, dilation, rpb, scale, False, backend, **kw)

        saved = modeling.na2d_qkv
        modeling.na2d_qkv = unpacked
        try:
            return self.model(x)
        finally:
            modeling.na2d_qkv = saved


class _Lanes8(torch.nn.Module):
    """DiNAT model whose steps (forward and backward) run the kernel's 8-lane width only:
    ``step_context`` is entered around each timed step."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)

    @staticmethod
    @contextlib.contextmanager
    def step_context():
        from dinat_backbone.ops.cpp_backend import load_extension

        ext = load_extension()
        if ext is None:
            yield
            return
        saved = ext.set_wide_min(2 ** 30)
        try:
            yield
        finally:
            ext.set_wide_min(saved)


def build_model(name: str, size_label: str, device, dtype, ckpt: bool = False):
    if name == "dinat_tiny_no_na":
        return _WithoutNA(build_model("dinat_tiny", size_label, device, dtype, ckpt))
    if name == "dinat_tiny_unpacked":
        return _Unpacked(build_model("dinat_tiny", size_label, device, dtype, ckpt))
    if name == "dinat_tiny_lanes8":
        return _Lanes8(build_model("dinat_tiny", size_label, device, dtype, ckpt))
    if name.startswith("dinat_"):
        from dinat_backbone.backbone import DinatBackbone

        variant = name.split("_", 1)[1]
        backend = "auto"
        if variant.endswith("_tiled"):
            variant, backend = variant[:-len("_tiled")], "tiled"
        base = DinatConfig.from_variant(variant)
        preset = "imagenet224" if size_label == "224" else "coco"
        cfg = DinatConfig.from_variant(variant, dilations=dilation_preset(preset, base.depths),
                                       gradient_checkpointing=ckpt, attention_backend=backend)
        return DinatBackbone(cfg).to(device, dtype)
    import torchvision

    if name == "swin_t":
        return torchvision.models.swin_t().features.to(device, dtype)
    if name == "convnext_tiny":
        return torchvision.models.convnext_tiny().features.to(device, dtype)
    raise ValueError(f"unknown model {name!r}; use one of {MODELS + EXTRA_MODELS}")


def _outputs_sum(out) -> torch.Tensor:
    if isinstance(out, dict):
        return sum(o.float().sum() for o in out.values())
    return out.float().sum()


def _autocast(args, device):
    """torch.autocast to --autocast's dtype, or a no-op context."""
    import contextlib

    if not getattr(args, "autocast", None):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, args.autocast))


def _step_context(model):
    """The model's own context around a timed step (forward and backward), if it has one."""
    return getattr(model, "step_context", contextlib.nullcontext)()


def bench_backbones(args, device, dtype) -> List[dict]:
    sizes = args.sizes or (["224"] if args.quick else list(SIZES))
    models = args.models or (["dinat_tiny", "swin_t"] if args.quick else MODELS)
    results = []
    for size in sizes:
        B, H, W = SIZES[size]
        if args.batch:
            B = args.batch
        x = torch.randn(B, 3, H, W).to(device, dtype)
        built = {}
        for m in models:
            try:
                built[m] = build_model(m, size, device, dtype)
            except ImportError as e:
                print(f"  skip {m}: {e}", file=sys.stderr)
        for mode in ("inference", "training"):
            fns = {}
            for m, model in built.items():
                if mode == "inference":
                    model.eval()

                    def f(model=model):
                        with torch.no_grad(), _autocast(args, device), _step_context(model):
                            model(x)
                else:
                    model.train()

                    def f(model=model):
                        with _step_context(model):
                            with _autocast(args, device):
                                loss = _outputs_sum(model(x))
                            loss.backward()
                        for p in model.parameters():
                            p.grad = None
                fns[m] = f
            # interleave models by repeat so that load changes hit all of them alike
            best = {m: float("inf") for m in fns}
            for m, f in fns.items():
                for _ in range(args.warmup):
                    f()
            for _ in range(args.repeats):
                for m, f in fns.items():
                    _sync(device)
                    t0 = _clock()
                    f()
                    _sync(device)
                    best[m] = min(best[m], _clock() - t0)
            for m, f in fns.items():
                mem = peak_memory(f, device)
                results.append(dict(size=size, batch=B, mode=mode, model=m, seconds=best[m],
                                    images_per_s=B / best[m], peak_mem=mem))
                print(f"  {size} {mode} {m}: {B / best[m]:.2f} img/s, {_mib(mem)} MiB",
                      file=sys.stderr, flush=True)
    return results


def backbone_tables(results: List[dict]) -> str:
    rows = []
    for r in results:
        ref = next((s for s in results if s["model"] == "swin_t" and s["size"] == r["size"]
                    and s["mode"] == r["mode"]), None)
        thr = mem = "-"
        if ref:
            thr = f"{r['images_per_s'] / ref['images_per_s']:.2f}"
            mem = f"{r['peak_mem'] / ref['peak_mem']:.2f}" if ref["peak_mem"] else "-"
        rows.append([f"{r['size']} (batch {r['batch']})", r["mode"], r["model"],
                     f"{r['images_per_s']:.2f}", _ms(r["seconds"]), _mib(r["peak_mem"]), thr, mem])
    return table(["input", "mode", "model", "images/s", "ms / batch", "peak MiB",
                  "throughput / Swin-T", "memory / Swin-T"], rows)


# ---------------------------------------------------------------------------------- profile
# Where a training step spends its time: each profiler event's self time is charged to the
# outermost enclosing event whose name matches one of these (first rule that matches wins).
PROFILE_CATEGORIES = [
    # Swin-T's window attention: aten::matmul / bmm / softmax outside any linear layer.
    ("attention op", ("na2d", "window_attention", "scaled_dot_product", "softmax", "bmm",
                      "aten::matmul")),
    ("linear", ("linear", "addmm", "aten::mm", "mmbackward")),
    ("layernorm", ("layer_norm", "layernorm")),
    ("GELU", ("gelu",)),
    ("conv", ("conv",)),
    ("layout copies", ("copy_", "clone", "contiguous", "permute", "aten::cat", "catbackward",
                       "roll", "_unsafe_view", "pad", "index", "slice")),
]


def _category(name: str) -> Optional[str]:
    low = name.lower()
    for cat, keys in PROFILE_CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return None


def bench_profile(args, device, dtype) -> List[dict]:
    """torch.profiler of training steps (forward + backward, batch at 224): self time per
    category and the top operators, for each model in --profile-models and --profile-threads."""
    from torch.profiler import ProfilerActivity, profile

    B, H, W = SIZES["224"]
    if args.batch:
        B = args.batch
    x = torch.randn(B, 3, H, W).to(device, dtype)
    results = []
    saved_threads = torch.get_num_threads()
    for threads in args.profile_threads:
        torch.set_num_threads(threads)
        for name in args.profile_models:
            model = build_model(name, "224", device, dtype).train()

            def step(model=model):
                _outputs_sum(model(x)).backward()
                for p in model.parameters():
                    p.grad = None

            for _ in range(args.warmup):
                step()
            steps = args.profile_steps
            t0 = time.perf_counter()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(steps):
                    step()
            wall = (time.perf_counter() - t0) / steps
            cats: Dict[str, float] = {}
            ops: Dict[str, list] = {}
            for e in prof.events():
                if e.device_type.name != "CPU":
                    continue
                cat, node = None, e
                while node is not None:          # outermost matching ancestor decides
                    c = _category(node.name)
                    if c is not None:
                        cat = c
                    node = node.cpu_parent
                cat = cat or "other"
                self_us = e.self_cpu_time_total
                cats[cat] = cats.get(cat, 0.0) + self_us
                o = ops.setdefault((e.name, cat), [0.0, cat])
                o[0] += self_us
            total = sum(cats.values())
            results.append(dict(model=name, threads=threads, batch=B, steps=steps,
                                step_s=wall, total_self_s=total / 1e6 / steps,
                                categories={c: v / 1e6 / steps for c, v in cats.items()},
                                top_ops=sorted(([n, v / 1e6 / steps, c] for (n, _), (v, c) in
                                                ops.items()), key=lambda r: -r[1])[:args.profile_top]))
            print(f"  profile {name} {threads} thread(s): {wall:.2f} s/step (profiled)",
                  file=sys.stderr, flush=True)
            del model
    torch.set_num_threads(saved_threads)
    return results


def profile_tables(results: List[dict]) -> str:
    cats = [c for c, _ in PROFILE_CATEGORIES] + ["other"]
    heads = ["category"] + [f"{r['model']} {r['threads']}T ms (%)" for r in results]
    rows = []
    for c in cats:
        row = [c]
        for r in results:
            v = r["categories"].get(c, 0.0)
            row.append(f"{1e3 * v:,.0f} ({100 * v / r['total_self_s']:.0f}%)")
        rows.append(row)
    rows.append(["total self time / step"] + [f"{1e3 * r['total_self_s']:,.0f}" for r in results])
    rows.append(["wall time / step (profiled)"] + [f"{1e3 * r['step_s']:,.0f}" for r in results])
    out = [table(heads, rows)]
    for r in results:
        out.append(f"\nTop operators by self time, {r['model']}, {r['threads']} thread(s), "
                   f"batch {r['batch']} at 224 (ms per step):\n")
        out.append(table(["operator", "ms", "category"],
                         [[n, f"{1e3 * v:,.1f}", c] for n, v, c in r["top_ops"]]))
    return "\n".join(out)


# ---------------------------------------------------------------------------------- checkpointing
def bench_ckpt(args, device, dtype) -> List[dict]:
    from dinat_backbone.backbone import DinatBackbone

    res = args.ckpt_size
    x = torch.randn(1, 3, res, res).to(device, dtype)
    base = DinatConfig.from_variant(args.ckpt_variant)
    results = []
    for on in (False, True):
        cfg = DinatConfig.from_variant(args.ckpt_variant,
                                       dilations=dilation_preset("coco", base.depths),
                                       gradient_checkpointing=on)
        model = DinatBackbone(cfg).to(device, dtype).train()

        def f():
            _outputs_sum(model(x)).backward()
            for p in model.parameters():
                p.grad = None

        t = time_call(f, device, 0 if args.quick else 1, 1)
        mem = peak_memory(f, device)
        results.append(dict(variant=args.ckpt_variant, size=res, checkpointing=on, seconds=t,
                            peak_mem=mem))
        print(f"  ckpt {on}: {t:.2f} s, {_mib(mem)} MiB", file=sys.stderr, flush=True)
    return results


def ckpt_table(results: List[dict]) -> str:
    off = next(r for r in results if not r["checkpointing"])
    rows = [[f"DiNAT-{r['variant']}", f"{r['size']}x{r['size']}", "on" if r["checkpointing"]
             else "off", f"{r['seconds']:.2f}", _mib(r["peak_mem"]),
             f"{r['peak_mem'] / off['peak_mem']:.2f}"] for r in results]
    return table(["model", "input (batch 1)", "checkpointing", "fwd+bwd s", "peak MiB",
                  "memory / off"], rows)


# ---------------------------------------------------------------------------------- main
def main(argv=None) -> Dict[str, list]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", nargs="+", default=["op", "backbone", "ckpt"],
                   choices=["op", "backbone", "ckpt", "profile"])
    p.add_argument("--quick", action="store_true", help="small subset, fewer repeats")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--autocast", default=None, choices=["bfloat16", "float16"],
                   help="backbone section: run the models under torch.autocast to this dtype "
                        "(weights stay --dtype)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="wall: elapsed time (default); cpu: this process's CPU time, robust to "
                        "other jobs on a shared machine (1 thread only)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--backends", nargs="+", default=None, help="NA backends for the op section")
    p.add_argument("--op-shapes", nargs="+", default=None,
                   help="labels from: " + ", ".join(repr(s[0]) for s in OP_SHAPES))
    p.add_argument("--op-threads", nargs="+", type=int, default=None,
                   help="thread counts for the op section, interleaved in one run (e.g. 1 2)")
    p.add_argument("--flex-cpu", action="store_true", help="time flex forward on the CPU")
    p.add_argument("--gather-limit-mb", type=int, default=4096)
    p.add_argument("--models", nargs="+", default=None, choices=MODELS + EXTRA_MODELS)
    p.add_argument("--sizes", nargs="+", default=None, choices=list(SIZES))
    p.add_argument("--batch", type=int, default=None, help="override the batch size")
    p.add_argument("--ckpt-size", type=int, default=1024)
    p.add_argument("--ckpt-variant", default="tiny")
    p.add_argument("--profile-models", nargs="+", default=["dinat_tiny", "swin_t"],
                   choices=MODELS + EXTRA_MODELS, help="models for the profile section")
    p.add_argument("--profile-threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--profile-steps", type=int, default=2)
    p.add_argument("--profile-top", type=int, default=12)
    p.add_argument("--json", default=None, help="also write raw numbers to this file")
    args = p.parse_args(argv)
    global _clock
    _clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.clock == "cpu":
        many = [t for t in [args.threads or torch.get_num_threads()] + (args.op_threads or [])
                + (args.profile_threads if "profile" in args.sections else []) if t != 1]
        if many:
            p.error("--clock cpu measures CPU time, which adds up the threads' times: use it "
                    "with --threads 1 (and --op-threads 1), or use the default wall clock")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    if args.quick and args.ckpt_size == 1024 and "ckpt" in args.sections:
        args.ckpt_size = 512
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    out: Dict[str, list] = {}
    amp = f", autocast {args.autocast}" if args.autocast else ""
    print(f"Machine: {machine_description(device)}; dtype {args.dtype}{amp}; "
          f"{args.clock} clock\n")
    if "op" in args.sections:
        out["op"] = bench_op(args, device, dtype)
        print("### Neighborhood attention op\n")
        print(op_tables(out["op"]) + "\n")
    if "backbone" in args.sections:
        out["backbone"] = bench_backbones(args, device, dtype)
        print("### Backbones (ratios against Swin-T measured in the same run)\n")
        print(backbone_tables(out["backbone"]) + "\n")
    if "profile" in args.sections:
        out["profile"] = bench_profile(args, device, dtype)
        print("### Where a training step spends its time (torch.profiler, self time)\n")
        print(profile_tables(out["profile"]) + "\n")
    if "ckpt" in args.sections:
        out["ckpt"] = bench_ckpt(args, device, dtype)
        print("### Gradient checkpointing (training, peak memory)\n")
        print(ckpt_table(out["ckpt"]) + "\n")
    print(f"Finished; {machine_description(device)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=machine_description(device), dtype=args.dtype, **out), f,
                      indent=1)
    return out


if __name__ == "__main__":
    main()
