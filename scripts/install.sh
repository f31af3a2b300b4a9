#!/usr/bin/env bash
# Install ikd and its stack into ./.venv (Python 3.11). Idempotent: a second run on an
# installed machine only checks versions (seconds). See shared INSTALL-FACTS for why each pin.
#
#   bash scripts/install.sh            # CPU ops; CUDA ops too where nvidia-smi works
#   IKD_VENV=/path/venv bash scripts/install.sh
#   IKD_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 bash scripts/install.sh   # CUDA ops without a GPU here
#   IKD_CUDA=0 bash scripts/install.sh # CPU ops only, even on a GPU machine
#   IKD_WITH_WANDB=1 bash scripts/install.sh  # also wandb, for train.wandb
# The CPU/CUDA choice (and where nvcc comes from) is scripts/cuda_plan.sh's.
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

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $PY_BIN"
  "$PY_BIN" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q)

# BUILD_ENV for a CUDA build: nvcc (from PATH, or installed from PyPI into the venv when the plan
# names packages), TORCH_CUDA_ARCH_LIST, and two fixes for toolkits assembled from PyPI packages.
cuda_build_env() {
  local cuda_home
  if [ -n "$NVCC_PKGS" ]; then
    log "installing nvcc $TORCH_CUDA from PyPI into the venv (~100 MB, a minute)"
    local pkgs; read -ra pkgs <<< "$NVCC_PKGS"  # an array: no glob expansion of "==13.0.*"
    "${PIP[@]}" "${pkgs[@]}"
    # CUDA 13's PyPI packages unpack beside torch's CUDA headers and libraries: nvidia/cu13/
    cuda_home="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu${TORCH_CUDA%%.*}"
  else
    cuda_home="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
  fi
  [ -x "$cuda_home/bin/nvcc" ] || { log "error: no nvcc under $cuda_home/bin"; exit 1; }
  local nvcc_args="${MMCV_CUDA_ARGS:-}"
  # CCCL (thrust, cub, nv/target) sits in include/cccl, which only a full toolkit's nvcc searches.
  if [ -d "$cuda_home/include/cccl" ]; then nvcc_args="$nvcc_args -I$cuda_home/include/cccl"; fi
  BUILD_ENV+=(CUDA_HOME="$cuda_home" TORCH_CUDA_ARCH_LIST="$ARCH_LIST" MMCV_CUDA_ARGS="${nvcc_args# }")
  # The extension links -lcudart; PyPI ships only libcudart.so.13 (no unversioned name), so give
  # the linker one in the build folder. At run time torch has already loaded libcudart.so.13.
  if ! ls "$cuda_home"/lib*/libcudart.so >/dev/null 2>&1; then
    local cudart; cudart="$(ls "$cuda_home"/lib*/libcudart.so.* 2>/dev/null | head -n1 || true)"
    [ -n "$cudart" ] || { log "error: no libcudart.so* under $cuda_home/lib*"; exit 1; }
    mkdir -p "$BUILD/cudart" && ln -sf "$cudart" "$BUILD/cudart/libcudart.so"
    BUILD_ENV+=(LDFLAGS="${LDFLAGS:-} -L$BUILD/cudart")
  fi
}

# A CUDA build runs for an hour on few cores and pip -q prints nothing meanwhile: every 5 minutes,
# say how far it is (objects compiled of those in ninja's plan). Stops with this script.
build_progress() {  # build_progress SRC
  local ninja total
  while sleep 300 && kill -0 $$ 2>/dev/null; do
    ninja="$(ls "$1"/build/temp*/build.ninja 2>/dev/null | head -n1 || true)"
    [ -n "$ninja" ] || continue
    total="$(grep -c '^build .*\.o:' "$ninja" || true)"
    log "compiled $(find "$1/build" -name '*.o' | wc -l) of $total files, $(( (SECONDS - START) / 60 )) min so far"
  done
}

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
# goes in before mmcv so mmcv does not pull the GUI build. typer pinned: docs/cli.md is generated from its
# rendering of the options (tests/test_docs.py); mkdocs for the docs site (`mkdocs build --strict`, tested).
"${PIP[@]}" "numpy<2" "setuptools>=77,<81" wheel ninja "opencv-python-headless<4.12" \
  addict yapf packaging Pillow pyyaml pycocotools "typer==0.29.2" rich pytest "pytest-xdist==3.8.0" \
  "mkdocs==1.6.1" "mkdocs-material==9.8.2"
# imagecorruptions (`ikd evaluate --robustness`) asks for opencv-python, the GUI build, which would
# install a second cv2 over the headless one: its other needs first, then the package alone.
"${PIP[@]}" "scikit-image==0.26.0" "numpy<2"
"${PIP[@]}" --no-deps "imagecorruptions==1.1.2"

if ! have mmcv-full "$MMCV_VERSION"; then
  PLAN="$(bash "$ROOT/scripts/cuda_plan.sh" "$PY")"  # not inside eval: set -e sees its failure
  eval "$PLAN"
  WHEEL_DIR="$CACHE/wheels/torch-$TORCH_VERSION-$FLAVOUR"
  mkdir -p "$WHEEL_DIR"
  WHEEL="$(ls "$WHEEL_DIR"/mmcv_full-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
  if [ -z "$WHEEL" ]; then
    BUILD="$(mktemp -d)"
    # mmcv's setup.py builds CUDA ops where torch sees a GPU, whatever FORCE_CUDA says: a CPU build
    # hides the GPU (no effect on a machine without one).
    BUILD_ENV=(FORCE_CUDA=0 CUDA_VISIBLE_DEVICES=)
    if [ "$WITH_CUDA" = 1 ]; then
      BUILD_ENV=(FORCE_CUDA=1)
      cuda_build_env  # sets BUILD_ENV for nvcc: CUDA_HOME, arch list, include and link fixes
      log "building mmcv-full $MMCV_VERSION with CPU and CUDA ops for arch $ARCH_LIST ($FLAVOUR):" \
          "about 2 CPU-hours (56 CUDA files at 1-2 min each), so ~$(( 120 / $(nproc) + 1 )) min on $(nproc) cores; once per machine and arch"
    else
      log "building mmcv-full $MMCV_VERSION with ops ($FLAVOUR); about 10 minutes on 2 cores, once per machine"
    fi
    "$PY" -m pip download -q --no-deps --no-binary :all: -d "$BUILD" "mmcv-full==$MMCV_VERSION"
    tar -xzf "$BUILD"/mmcv-full-"$MMCV_VERSION".tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-full-$MMCV_VERSION"
    # torch 2.14's headers need C++20; mmcv's setup.py hard-codes older standards.
    sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
    START=$SECONDS
    if [ "$WITH_CUDA" = 1 ]; then
      build_progress "$SRC" &
      trap 'kill '"$!"' 2>/dev/null || true' EXIT
    fi
    ( cd "$SRC" && env MMCV_WITH_OPS=1 "${BUILD_ENV[@]}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        "$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$BUILD/dist" . )
    log "mmcv-full built in $(( (SECONDS - START) / 60 )) min $(( (SECONDS - START) % 60 )) s"
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

# W&B logging (train.wandb) is optional: installed only with IKD_WITH_WANDB=1 (.ci/run sets it so
# that tests/test_wandb.py runs in CI). wandb brings protobuf and requests; numpy stays as pinned.
WANDB_VERSION=0.31.0
if [ "${IKD_WITH_WANDB:-0}" = 1 ] && ! have wandb "$WANDB_VERSION"; then
  log "wandb $WANDB_VERSION (train.wandb)"
  "${PIP[@]}" "wandb==$WANDB_VERSION" "numpy<2"
fi

log "ikd (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"

"$PY" -W ignore -c "
import logging; logging.getLogger('torch.utils.cpp_extension').setLevel(logging.ERROR)
import mmcv, mmdet; from mmcv.ops import nms, get_compiling_cuda_version
cuda = get_compiling_cuda_version()
print('[install] ok: mmcv', mmcv.__version__, '+ ops, mmdet', mmdet.__version__
      + ('' if cuda == 'not available' else f' (ops with CUDA {cuda})'))"
