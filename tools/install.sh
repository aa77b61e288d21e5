#!/usr/bin/env bash
# One-time set-up on a fresh machine: creates .venv/ in the checkout and installs everything the
# tests and the demo need (torch, torchvision, a compiled mmcv, mmdet, mmseg, this package with its
# test extras). Idempotent: a second run only checks what is there (about half a minute).
#
#   bash tools/install.sh            # everything
#   SKIP_MM=1 bash tools/install.sh  # core only (no OpenMMLab; the mm tests then skip)
#
# Environment knobs: PYTHON (interpreter for the venv, default python3), VENV (default .venv),
# MAX_JOBS (parallel compile jobs for mmcv, default: number of cores).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
log() { printf '[install %(%H:%M:%S)T] %s\n' -1 "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment at $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check)

have() { "$PY" - "$@" <<'EOF' >/dev/null 2>&1
import sys, importlib.metadata as md
from packaging.version import Version
for spec in sys.argv[1:]:
    name, _, want = spec.partition("==")
    got = md.version(name)
    if want and Version(got) != Version(want):
        raise SystemExit(1)
EOF
}

# torch: 2.14.1 + torchvision 0.29.1 on x86_64 Linux with Python 3.11 (what this project is tested
# with); anywhere else any torch >= 2.6 with its matching torchvision.
ARCH="$(uname -m)"
PYVER="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
if [ "$ARCH" = "x86_64" ] && [ "$PYVER" = "3.11" ] && [ "$(uname -s)" = "Linux" ]; then
  TORCH=("torch==2.14.1" "torchvision==0.29.1")
else
  TORCH=("torch>=2.6" "torchvision")
fi
if have "${TORCH[0]}" && "$PY" -c "import torchvision" >/dev/null 2>&1; then
  log "torch $("$PY" -c 'import torch; print(torch.__version__)') already installed"
else
  log "installing ${TORCH[*]} (a few minutes)"
  "${PIP[@]}" "${TORCH[@]}"
fi

# Build tools (after torch, which pulls the newest setuptools): mmcv and natten build without isolation against the installed torch, and
# mmcv 2.1.0's setup imports pkg_resources (gone from setuptools >= 81).
if ! have "setuptools" || ! "$PY" -c "import pkg_resources, wheel, ninja" >/dev/null 2>&1; then
  "${PIP[@]}" "setuptools>=64,<81" wheel ninja packaging
fi

# NATTEN >= 0.20 (optional backend, used only where it computes the same thing; pure Python on
# a machine without CUDA, so it installs in seconds). Its tests skip without it.
if ! "$PY" -c "import natten" >/dev/null 2>&1; then
  "${PIP[@]}" --no-build-isolation "natten>=0.21,<0.22" || log "natten not installed (optional)"
fi

# A compiled mmcv (mmdet 3.3 / mmseg 1.2 need 2.0.0rc4 <= mmcv < 2.2 with its C++ ops; mmcv-lite
# has none). mmcv 2.1.0 asks for -std=c++17 while torch >= 2.10 headers need C++20, so the build
# runs with a compiler wrapper that appends -std=c++20 (the last -std flag wins). pip caches the
# built wheel, so this is slow (~20 min on 2 cores) only the first time on a machine.
if [ -z "${SKIP_MM:-}" ]; then
  if "$PY" -c "import mmcv, mmcv._ext, mmcv.ops" >/dev/null 2>&1; then
    log "mmcv $("$PY" -c 'import mmcv; print(mmcv.__version__)') with compiled ops already installed"
  else
    log "building mmcv 2.1.0 with its C++ ops (about 20 minutes on 2 cores the first time)"
    WRAP="$(mktemp -d)"
    trap 'rm -rf "$WRAP"' EXIT
    REAL_CXX="$(command -v g++ || command -v c++)"
    for name in g++ c++; do
      printf '#!/bin/sh\nexec "%s" "$@" -std=c++20\n' "$REAL_CXX" > "$WRAP/$name"
      chmod +x "$WRAP/$name"
    done
    PATH="$WRAP:$VENV/bin:$PATH" CXX="$WRAP/g++" MMCV_WITH_OPS=1 \
      MAX_JOBS="${MAX_JOBS:-$(nproc 2>/dev/null || echo 2)}" \
      "${PIP[@]}" --no-build-isolation "mmcv==2.1.0"
    "$PY" -c "import mmcv._ext, mmcv.ops" || { log "mmcv was built but its ops do not import"; exit 1; }
  fi
  EXTRAS="test,mm"
else
  EXTRAS="test"
fi

log "installing dinat-backbone[$EXTRAS] (editable)"
"${PIP[@]}" -e "$ROOT[$EXTRAS]"

# transformers: the test extra installs transformers 5.x (what users have), whose DiNAT runs through
# dinat_backbone.transformers.patch_transformers(). The oracle (tests/test_transformers_oracle.py)
# is transformers 4.53.3's own DiNAT code, the last release whose layout was right: it lives in its
# own folder beside the environment and runs in a subprocess with that folder first on PYTHONPATH.
# The numpy it brings is deleted so that the environment's own is used.
ORACLE_TF="$VENV/transformers-4.53"
if PYTHONPATH="$ORACLE_TF" "$PY" -c "import sys, transformers; sys.exit(transformers.__version__ != '4.53.3')" >/dev/null 2>&1; then
  log "transformers 4.53.3 oracle already in $ORACLE_TF"
else
  log "installing the transformers 4.53.3 oracle into $ORACLE_TF (about a minute)"
  rm -rf "$ORACLE_TF"
  "${PIP[@]}" --target "$ORACLE_TF" "transformers==4.53.3"
  rm -rf "$ORACLE_TF"/numpy "$ORACLE_TF"/numpy.libs "$ORACLE_TF"/numpy-*.dist-info "$ORACLE_TF"/bin
  PYTHONPATH="$ORACLE_TF" "$PY" -c "import transformers, numpy; print('oracle transformers', transformers.__version__, 'numpy', numpy.__version__)"
fi

# The compiled CPU kernel of the attention op (backend "cpp", what "auto" uses on the CPU): built
# here once (about a minute; cached per CPU in torch's extension folder) instead of at first use.
# Without a compiler the op falls back to the pure-PyTorch "tiled" backend, so this is not fatal.
"$PY" - <<'EOF' || log "C++ kernel not built: the op will use its pure-PyTorch backend"
from dinat_backbone.ops import cpp_backend
ext = cpp_backend.load_extension()
print("C++ neighborhood-attention kernel:", "ready" if ext is not None else cpp_backend.build_error())
EOF

"$PY" - <<'EOF'
import torch, dinat_backbone
print(f"torch {torch.__version__}, dinat_backbone {dinat_backbone.__version__}, "
      f"cuda available: {torch.cuda.is_available()}")
EOF
log "done. Activate with: source ${VENV#$PWD/}/bin/activate"
