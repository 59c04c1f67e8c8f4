#!/usr/bin/env bash
# Set up (or verify) the project environment: a virtualenv with the pinned OpenMMLab stack,
# full mmcv 2.1.0 with compiled ops built once into a cached wheel, and the plugin itself.
#
# Idempotent: a second run with unchanged requirements only checks a stamp and returns in
# about a second. It never rebuilds mmcv when a wheel for the same mmcv / torch / Python /
# CUDA combination is cached.
#
# Environment:
#   EPSAM_VENV   virtualenv path            (default: <repo>/.venv)
#   EPSAM_CACHE  wheel and demo-data cache  (default: ${XDG_CACHE_HOME:-~/.cache}/mmseg-epsam)
#   PYTHON       interpreter for the venv   (default: python3.11, else python3)
#   FORCE_CUDA=1 build mmcv's CUDA ops too (needs nvcc and a CUDA torch; keyed separately)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EPSAM_VENV:-$ROOT/.venv}"
CACHE="${EPSAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmseg-epsam}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
MMCV_VERSION=2.1.0
TORCH_VERSION=$(sed -n 's/^torch==\([^ ]*\).*/\1/p' "$ROOT/requirements.txt")

log() { printf '[setup_env] %s\n' "$*" >&2; }

stamp_of() {
  cat "$ROOT/requirements.txt" "$ROOT/setup.py" "$ROOT/tools/setup_env.sh" \
    | sha256sum | cut -c1-16
}
STAMP="$(stamp_of)-cuda${FORCE_CUDA:-0}"
if [[ -f "$VENV/.epsam-stamp" && "$(cat "$VENV/.epsam-stamp")" == "$STAMP" ]]; then
  log "environment up to date: $VENV"
  exit 0
fi

start=$(date +%s)
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtualenv $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q)

log "installing torch $TORCH_VERSION and build requirements"
"${PIP[@]}" "$(grep "^setuptools" "$ROOT/requirements.txt" | cut -d" " -f1)" wheel "numpy>=1.24,<3" \
  "torch==$TORCH_VERSION" "$(grep '^torchvision==' "$ROOT/requirements.txt" | cut -d' ' -f1)"

# ---- full mmcv, built once per (mmcv, torch, python, cuda) and cached -------------------
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
KEY="mmcv${MMCV_VERSION}-torch${TORCH_VERSION}-${PYTAG}-cuda${FORCE_CUDA:-0}"
WHEEL_DIR="$CACHE/wheels/$KEY"
if ! compgen -G "$WHEEL_DIR/mmcv-*.whl" >/dev/null; then
  log "building full mmcv $MMCV_VERSION with ops for torch $TORCH_VERSION (about 9 min on 2 cores)"
  BUILD="$(mktemp -d)"
  trap 'rm -rf "$BUILD"' EXIT
  "$PY" -m pip download -q --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$BUILD"
  tar -xzf "$BUILD"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD"
  # torch >= 2.14 headers refuse C++17; mmcv 2.1.0 hard-codes it (see shared stack notes).
  sed -i 's/-std=c++17/-std=c++20/g' "$BUILD/mmcv-$MMCV_VERSION/setup.py"
  (cd "$BUILD/mmcv-$MMCV_VERSION" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
     "$PY" -m pip wheel -q --no-build-isolation --no-deps . -w "$BUILD/out")
  mkdir -p "$WHEEL_DIR"
  # atomic: the wheel appears in the cache only once it is complete
  for w in "$BUILD"/out/mmcv-*.whl; do
    cp "$w" "$WHEEL_DIR/.$(basename "$w").tmp" && mv "$WHEEL_DIR/.$(basename "$w").tmp" "$WHEEL_DIR/$(basename "$w")"
  done
  log "cached $(ls "$WHEEL_DIR")"
else
  log "using cached mmcv wheel $(ls "$WHEEL_DIR")"
fi
"${PIP[@]}" --no-deps "$WHEEL_DIR"/mmcv-*.whl

log "installing the pinned stack"
"${PIP[@]}" --find-links "$WHEEL_DIR" -r "$ROOT/requirements.txt"
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"

"$PY" - <<'EOF'
import mmcv, mmengine, mmseg, torch
from mmcv.ops import nms  # noqa: F401  (proves the compiled ops are there)
import mmseg_epsam  # noqa: F401
print(f'[setup_env] torch {torch.__version__}, mmcv {mmcv.__version__} (ops), '
      f'mmengine {mmengine.__version__}, mmseg {mmseg.__version__}')
EOF
echo "$STAMP" > "$VENV/.epsam-stamp"
log "done in $(( $(date +%s) - start )) s: $VENV"
