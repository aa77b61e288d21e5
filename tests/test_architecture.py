"""The package's structure: one-way imports, a framework-free core, adapters without import-time
side effects, and no citation of files that are not in the repository.

* The import graph of ``dinat_backbone.*`` is read from the sources (``ast``, imports inside
  functions included: a lazy import still ties two modules together) and must have no cycle.
* Every core module is imported in a fresh interpreter, which must then hold no detectron2 /
  OpenMMLab / transformers module.
* Importing an adapter registers names and changes nothing else in its framework (checked in a
  fresh interpreter against a snapshot taken before the import).
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "dinat_backbone"
ADAPTERS = ("detectron2", "mmengine", "transformers")      # dinat_backbone.<name>[.*]
FRAMEWORKS = ("detectron2", "mmengine", "mmcv", "mmdet", "mmseg", "transformers")


# ----------------------------------------------------------------------------- the import graph
def package_modules(root: Path, package: str) -> Dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``root/package``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path, package: str) -> Dict[str, Set[str]]:
    """module -> the package modules it imports (anywhere in its source, functions included).

    ``from X import name`` is an edge to X.name when that is a module, else to X. Parent
    packages that Python initialises on the way are not edges (every module would then depend
    on the package __init__ that imports it).
    """
    modules = package_modules(root, package)
    graph: Dict[str, Set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                src = _resolve(mod, is_pkg, node)
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in modules else src
                           for a in node.names]
            for t in targets:
                while t and t not in modules and "." in t:   # import a.b.c -> the module a.b
                    t = t.rsplit(".", 1)[0]
                if t in modules and t != mod:
                    graph[mod].add(t)
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One cycle as [m0, m1, ..., m0], or None (iterative depth-first search)."""
    state: Dict[str, int] = {}                       # 1 on the stack, 2 done
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(sorted(graph.get(child, ())))))
                path.append(child)
    return None


def test_cycle_finder_sees_a_lazy_import_cycle(tmp_path):
    # A synthetic package: a imports b inside a function, b imports a at the top; c -> b only.
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .c import C\n")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n    return b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from .. import a\n")
    (pkg / "c.py").write_text("import pkg.sub.b\nC = 1\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph == {"pkg": {"pkg.c"}, "pkg.a": {"pkg.sub.b"}, "pkg.sub": set(),
                     "pkg.sub.b": {"pkg.a"}, "pkg.c": {"pkg.sub.b"}}
    cycle = find_cycle(graph)
    assert cycle in (["pkg.a", "pkg.sub.b", "pkg.a"], ["pkg.sub.b", "pkg.a", "pkg.sub.b"]), cycle
    (pkg / "a.py").write_text("def f():\n    return 1\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) is None


def test_package_import_graph_has_no_cycle():
    graph = import_graph(ROOT, PACKAGE)
    # The graph is the real one (not empty by a parsing mistake): edges every version has.
    assert "dinat_backbone.config" in graph["dinat_backbone.modeling"]
    assert "dinat_backbone.ops" in graph["dinat_backbone.modeling"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# ----------------------------------------------------------------------------- fresh interpreters
def run_python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter from the repository root; it prints one JSON line."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def core_modules() -> List[str]:
    return [m for m in package_modules(ROOT, PACKAGE)
            if not any(m == f"{PACKAGE}.{a}" or m.startswith(f"{PACKAGE}.{a}.")
                       for a in ADAPTERS)]


def test_core_imports_no_framework():
    mods = core_modules()
    assert {"dinat_backbone", "dinat_backbone.modeling", "dinat_backbone.ops.tiled"} <= set(mods)
    out = run_python(f"""
        import importlib, json, sys
        for m in {mods!r}:
            importlib.import_module(m)
        print(json.dumps(sorted(sys.modules)))
    """)
    loaded = [m for m in out if m.split(".")[0] in FRAMEWORKS]
    assert not loaded, f"the core imported framework modules: {loaded[:20]}"


def test_the_adapters_left_out_of_the_core_exist():
    # The core / adapter split above is by name: a renamed adapter would silently join the core.
    names = set(package_modules(ROOT, PACKAGE))
    for a in ("detectron2", "mmengine"):
        assert f"{PACKAGE}.{a}" in names, a


def test_importing_the_mmengine_adapter_changes_nothing_but_registries():
    pytest.importorskip("mmengine", reason="needs mmengine (the 'mm' extra)")
    out = run_python("""
        import json
        import torch
        import mmengine.registry as R
        import mmengine.runner.checkpoint as C
        from mmengine.registry import Registry

        def registries():
            return {n: dict(r._module_dict) for n, r in vars(R).items() if isinstance(r, Registry)}

        schemes = dict(C.CheckpointLoader._schemes)
        ckpt_module = dict(vars(C))
        loaders = dict(vars(C.CheckpointLoader))
        regs = registries()
        torch_load = torch.load

        import dinat_backbone.mmengine  # noqa: F401

        problems = []
        if dict(C.CheckpointLoader._schemes) != schemes:
            changed = set(C.CheckpointLoader._schemes.items()) ^ set(schemes.items())
            problems.append(f"CheckpointLoader schemes changed: {sorted(k for k, _ in changed)}")
        problems += [f"mmengine.runner.checkpoint.{k} replaced" for k, v in ckpt_module.items()
                     if vars(C).get(k) is not v]
        problems += [f"CheckpointLoader.{k} replaced" for k, v in loaders.items()
                     if k != "_schemes" and vars(C.CheckpointLoader).get(k) is not v]
        if torch.load is not torch_load:
            problems.append("torch.load replaced")
        after = registries()
        for name, entries in regs.items():
            problems += [f"registry {name}: {k} replaced" for k, v in entries.items()
                         if after[name].get(k) is not v]
        added = sorted(k for n in after for k in after[n] if k not in regs.get(n, {}))
        print(json.dumps(dict(problems=problems, added=added)))
    """)
    assert out["problems"] == [], out["problems"]
    assert "DiNAT" in out["added"]          # what the import is for


def test_importing_the_detectron2_adapter_changes_nothing_but_registries():
    pytest.importorskip("detectron2", reason="needs detectron2 (built from its source)")
    out = run_python("""
        import json
        from detectron2.data import DatasetCatalog, MetadataCatalog
        from detectron2.config import get_cfg
        import detectron2.modeling as M
        from fvcore.common.registry import Registry

        def registries():
            return {n: dict(r._obj_map) for n, r in vars(M).items() if isinstance(r, Registry)}

        datasets, metadata = set(DatasetCatalog.list()), set(MetadataCatalog.list())
        regs, cfg_keys = registries(), str(get_cfg())

        import dinat_backbone.detectron2  # noqa: F401

        problems = []
        if set(DatasetCatalog.list()) != datasets:
            problems.append(f"datasets registered: {sorted(set(DatasetCatalog.list()) - datasets)}")
        if set(MetadataCatalog.list()) != metadata:
            problems.append("metadata registered")
        if str(get_cfg()) != cfg_keys:
            problems.append("detectron2's default config changed")
        after = registries()
        for name, entries in regs.items():
            problems += [f"{name}: {k} replaced" for k, v in entries.items()
                         if after[name].get(k) is not v]
        added = sorted(k for n in after for k in after[n] if k not in regs.get(n, {}))
        print(json.dumps(dict(problems=problems, added=added)))
    """)
    assert out["problems"] == [], out["problems"]
    assert "D2DiNAT" in out["added"]


# ----------------------------------------------------------------------------- citations
def repository_files() -> List[Path]:
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                               check=True).stdout.decode().split("\0")
        return [ROOT / n for n in names if n]
    except (OSError, subprocess.CalledProcessError):   # not a git checkout: walk the tree
        out = []
        for d, dirs, files in os.walk(ROOT):
            dirs[:] = [x for x in dirs if x not in {".git", ".venv", "__pycache__", "build"}]
            out += [Path(d) / f for f in files]
        return out


# Files that live outside this repository; the names are assembled so this file does not
# itself mention them.
OUTSIDE = ["REFERENCE" + ".md", "ENVIRONMENT" + ".md", "STYLE" + ".md", ".." + "/shared"]


def test_no_file_cites_material_outside_the_repository():
    files = repository_files()
    assert any(f.name == "setup.py" for f in files)
    hits = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        for i, line in enumerate(text.splitlines(), 1):
            for name in OUTSIDE:
                if name in line:
                    hits.append(f"{f.relative_to(ROOT)}:{i}: {name}")
    assert not hits, "\n".join(hits)
