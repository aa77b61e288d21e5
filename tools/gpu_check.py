#!/usr/bin/env python
"""One command that checks the attention op and measures the backbones on a CUDA GPU.

    python tools/gpu_check.py                 # about 5-10 minutes on one GPU
    python tools/gpu_check.py --skip-matrix   # timings only

1. The op's oracle matrix (tests/test_ops.py) on CUDA for every backend: ``tiled``, ``gather``,
   ``auto``, ``flex`` (torch's flex_attention, forward and backward, float32 / float16 /
   bfloat16) and ``natten`` where it is installed (NATTEN >= 0.20 has no RPB: the no-RPB cases),
   each against the float64 CPU oracle (pytest with ``DINAT_TEST_DEVICE=cuda``).
2. The op's speed per backend on CUDA (tools/benchmark.py op section), with NATTEN's fused
   kernel timed without the RPB as a reference row.
3. The backbones (DiNAT-T beside torchvision's Swin-T and ConvNeXt-T; tools/benchmark.py
   backbone section): float32 and bfloat16 autocast, training and inference, at 224 (batch 8)
   and 800x1216 (batch 1), ratios against Swin-T measured in the same run.

Prints one markdown table (and writes it with the raw numbers to --out). On a machine without a
CUDA GPU it says so and exits with status 2 without running anything.

``backend="auto"`` does not choose a CUDA flex path: it is for whoever reads this table from a
real GPU to decide that (and to record the GPU in the README).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402


def _no_gpu_message() -> str:
    built = torch.version.cuda
    how = f"built with CUDA {built}" if built else "built without CUDA"
    return (f"tools/gpu_check.py needs a CUDA GPU: torch.cuda.is_available() is False here "
            f"(torch {torch.__version__}, {how}). Nothing was run. Run it on a machine with an "
            "NVIDIA GPU and a CUDA build of torch; CPU speed is measured by tools/benchmark.py.")


def run_matrix(timeout_s: int, device: str = "cuda") -> dict:
    """pytest tests/test_ops.py on ``device``; outcomes grouped by backend."""
    xml_path = os.path.join(ROOT, ".gpu_check_junit.xml")
    env = dict(os.environ, DINAT_TEST_DEVICE=device)
    cmd = [sys.executable, "-m", "pytest", os.path.join(ROOT, "tests", "test_ops.py"), "-q",
           "-p", "no:cacheprovider", f"--junitxml={xml_path}"]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout_s)
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    except subprocess.TimeoutExpired:
        return dict(error=f"pytest did not finish within {timeout_s} s", seconds=timeout_s)
    groups: dict = {}
    failures = []
    if os.path.exists(xml_path):
        for case in ET.parse(xml_path).getroot().iter("testcase"):
            name = case.get("name", "")
            if "flex" in name:
                be = "flex"
            elif "natten" in name:
                be = "natten"
            elif "[" in name and name.split("[", 1)[1].split("-")[0] in ("tiled", "gather",
                                                                          "auto"):
                be = name.split("[", 1)[1].split("-")[0]
            else:
                be = "other (special cases, bad input)"
            g = groups.setdefault(be, dict(passed=0, failed=0, skipped=0))
            if case.find("failure") is not None or case.find("error") is not None:
                g["failed"] += 1
                failures.append(name)
            elif case.find("skipped") is not None:
                g["skipped"] += 1
            else:
                g["passed"] += 1
        os.remove(xml_path)
    return dict(groups=groups, failures=failures, returncode=proc.returncode,
                seconds=time.time() - t0, tail=tail)


def run_benchmark(argv) -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location("dinat_benchmark",
                                                  os.path.join(ROOT, "tools", "benchmark.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main(argv)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip-matrix", action="store_true", help="skip the oracle matrix")
    p.add_argument("--skip-backbones", action="store_true")
    p.add_argument("--matrix-timeout", type=int, default=360, help="seconds for the matrix")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--op-shapes", nargs="+", default=None,
                   help="op shapes (labels of tools/benchmark.py's OP_SHAPES); default all")
    p.add_argument("--out", default=os.path.join(ROOT, "gpu_check_result.json"))
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="cpu: a dry run of this script's plumbing (not a GPU check)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(_no_gpu_message())
        return 2
    dev = torch.device(args.device)
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "none (CPU dry run)"
    try:
        import natten
        natten_ver = natten.__version__
    except ModuleNotFoundError as e:
        if e.name != "natten":
            raise
        natten_ver = "not installed"
    head = (f"GPU: {gpu}; torch {torch.__version__}, CUDA {torch.version.cuda}; "
            f"NATTEN {natten_ver}")
    print(head, flush=True)
    rows = []           # [section, item, setting, value, vs reference]
    raw = dict(machine=head)
    t_start = time.time()

    if not args.skip_matrix:
        print(f"1/3 oracle matrix on {args.device} (pytest tests/test_ops.py) ...", flush=True)
        m = run_matrix(args.matrix_timeout, args.device)
        raw["matrix"] = m
        if "error" in m:
            rows.append(["op oracle matrix", "all backends", args.device, m["error"], "-"])
        else:
            for be, g in sorted(m["groups"].items()):
                rows.append(["op oracle matrix", be, f"{args.device} vs float64 CPU oracle",
                             f"{g['passed']} passed, {g['failed']} failed, "
                             f"{g['skipped']} skipped", "-"])
            if m["failures"]:
                print("failed:", *m["failures"][:20], sep="\n  ", flush=True)
                print("\n".join(m["tail"]), flush=True)

    print(f"2/3 op speed on {args.device} ...", flush=True)
    argv_op = ["--device", args.device, "--sections", "op", "--repeats", str(args.repeats),
               "--backends", "tiled", "gather", "flex", "natten"]
    if args.op_shapes:
        argv_op += ["--op-shapes", *args.op_shapes]
    op = run_benchmark(argv_op)
    raw["op"] = op["op"]
    ref = {(r["shape"]): r for r in op["op"] if r["backend"] == "tiled"}
    for r in op["op"]:
        if r.get("matmul"):
            continue
        t = ref.get(r["shape"])
        if r["fwd_s"]:
            fb = "-" if r["fwdbwd_s"] is None else f"{1e3 * r['fwdbwd_s']:.2f}"
            val = f"fwd {1e3 * r['fwd_s']:.2f} ms, fwd+bwd {fb} ms"
        else:
            val = r["note"] or "-"
        vs = "-"
        if t and t["fwd_s"] and r["fwd_s"]:
            vs = f"fwd {t['fwd_s'] / r['fwd_s']:.2f}x tiled's speed"
        rows.append(["op speed", f"{r['backend']} {r['shape']}", "float32", val, vs])

    if not args.skip_backbones:
        print(f"3/3 backbones on {args.device} (fp32, bf16 autocast) ...", flush=True)
        for amp in (None, "bfloat16"):
            argv_b = ["--device", args.device, "--sections", "backbone", "--repeats",
                      str(args.repeats), "--models", "dinat_tiny", "swin_t", "convnext_tiny",
                      "--sizes", "224", "800x1216"]
            if amp:
                argv_b += ["--autocast", amp]
            res = run_benchmark(argv_b)["backbone"]
            raw[f"backbone_{amp or 'float32'}"] = res
            for r in res:
                sw = next((s for s in res if s["model"] == "swin_t" and s["size"] == r["size"]
                           and s["mode"] == r["mode"]), None)
                vs = (f"{r['images_per_s'] / sw['images_per_s']:.2f}x Swin-T, memory "
                      f"{r['peak_mem'] / sw['peak_mem']:.2f}x" if sw and sw["peak_mem"]
                      else "-")
                rows.append(["backbone", f"{r['model']} {r['mode']} {r['size']} "
                             f"(batch {r['batch']})", amp and f"autocast {amp}" or "float32",
                             f"{r['images_per_s']:.1f} images/s", vs])

    lines = ["| section | item | setting | result | vs reference |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    text = "\n".join(lines)
    print(f"\n## GPU check ({head}; {time.time() - t_start:.0f} s)\n")
    print(text)
    with open(args.out, "w") as f:
        json.dump(dict(table=text, **raw), f, indent=1, default=str)
    print(f"\nwritten: {args.out}")
    failed = raw.get("matrix", {}).get("failures") or "error" in raw.get("matrix", {})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
