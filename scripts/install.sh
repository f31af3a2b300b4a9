#!/usr/bin/env bash
# Install ikd and its stack into ./.venv (Python 3.11). Idempotent: a second run on an
# installed machine only checks versions (seconds). See shared INSTALL-FACTS for why each pin.
#
#   bash scripts/install.sh            # CPU ops; CUDA ops too where nvidia-smi works
#   IKD_VENV=/path/venv bash scripts/install.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${IKD_VENV:-$ROOT/.venv}"
PY_BIN="${IKD_PYTHON:-python3.11}"
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=1.7.2
MMDET_VERSION=2.28.2
CACHE="${IKD_CACHE:-$HOME/.cache/ikd}"

log() { printf '[install] %s\n' "$*"; }

if nvidia-smi >/dev/null 2>&1 && command -v nvcc >/dev/null 2>&1; then
  WITH_CUDA=1; FLAVOUR=cuda
else
  WITH_CUDA=0; FLAVOUR=cpu
  if nvidia-smi >/dev/null 2>&1; then
    log "a GPU is present but nvcc is not on PATH: mmcv-full gets CPU ops only (install the CUDA toolkit for GPU ops)"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $PY_BIN"
  "$PY_BIN" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q)

have() {  # have DIST VERSION -> true when DIST==VERSION is installed in the venv
  "$PY" - "$1" "$2" <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version(sys.argv[1]) == sys.argv[2] else 1)
PYEOF
}

if ! have torch "$TORCH_VERSION" || ! have torchvision "$TORCHVISION_VERSION"; then
  log "torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION"
  "${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

# numpy<2 for mmcv 1.x; setuptools <81 keeps pkg_resources for mmcv's setup.py; opencv headless
# goes in before mmcv so mmcv does not pull the GUI build.
"${PIP[@]}" "numpy<2" "setuptools>=77,<81" wheel ninja "opencv-python-headless<4.12" \
  addict yapf packaging Pillow pyyaml pycocotools "typer>=0.12" rich pytest

if ! have mmcv-full "$MMCV_VERSION"; then
  WHEEL_DIR="$CACHE/wheels/torch-$TORCH_VERSION-$FLAVOUR"
  mkdir -p "$WHEEL_DIR"
  WHEEL="$(ls "$WHEEL_DIR"/mmcv_full-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
  if [ -z "$WHEEL" ]; then
    log "building mmcv-full $MMCV_VERSION with ops ($FLAVOUR); about 10 minutes on 2 cores, once per machine"
    BUILD="$(mktemp -d)"
    "$PY" -m pip download -q --no-deps --no-binary :all: -d "$BUILD" "mmcv-full==$MMCV_VERSION"
    tar -xzf "$BUILD"/mmcv-full-"$MMCV_VERSION".tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-full-$MMCV_VERSION"
    # torch 2.14's headers need C++20; mmcv's setup.py hard-codes older standards.
    sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
    ( cd "$SRC" && MMCV_WITH_OPS=1 FORCE_CUDA="$WITH_CUDA" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        "$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$BUILD/dist" . )
    WHEEL_BUILT="$(ls "$BUILD"/dist/mmcv_full-*.whl)"
    cp "$WHEEL_BUILT" "$WHEEL_DIR/.tmp-$(basename "$WHEEL_BUILT")"
    mv "$WHEEL_DIR/.tmp-$(basename "$WHEEL_BUILT")" "$WHEEL_DIR/$(basename "$WHEEL_BUILT")"
    WHEEL="$WHEEL_DIR/$(basename "$WHEEL_BUILT")"
    rm -rf "$BUILD"
  else
    log "mmcv-full from cache: $WHEEL"
  fi
  "${PIP[@]}" --no-deps "$WHEEL"
fi

if ! have mmdet "$MMDET_VERSION"; then
  log "mmdet $MMDET_VERSION"
  "${PIP[@]}" "mmdet==$MMDET_VERSION" "numpy<2"
fi

log "ikd (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"

"$PY" -W ignore -c "
import logging; logging.getLogger('torch.utils.cpp_extension').setLevel(logging.ERROR)
import mmcv, mmdet; from mmcv.ops import nms
print('[install] ok: mmcv', mmcv.__version__, '+ ops, mmdet', mmdet.__version__)"
