#!/usr/bin/env bash
# Decide how install.sh builds mmcv-full's ops: CPU only, or CUDA with the nvcc on PATH, or CUDA
# with nvcc installed from PyPI. Only decides (compiles and installs nothing), so that the choice
# can be tested on any machine: tests/test_install.py runs it with fake nvidia-smi / nvcc on PATH.
#
#   scripts/cuda_plan.sh VENV_PYTHON
#
# Inputs: IKD_CUDA (unset: CUDA where `nvidia-smi` works; 1: CUDA even without a GPU, e.g. to
# build a wheel for another machine; 0: CPU ops only), TORCH_CUDA_ARCH_LIST (default: the
# compute capabilities nvidia-smi reports), nvidia-smi and nvcc on PATH, and torch.version.cuda
# of VENV_PYTHON (read only when CUDA is wanted, so the CPU path imports nothing).
# Output on stdout, for `eval`: WITH_CUDA, TORCH_CUDA, FLAVOUR (the wheel cache's key: `cpu`, or e.g.
# `cu130-sm90` for CUDA 13.0 and arch 9.0), ARCH_LIST, NVCC_PKGS (PyPI packages to install; empty
# when nvcc on PATH serves). Messages go to stderr; exit 1 with one line when CUDA is asked for
# (IKD_CUDA=1) but cannot be built.
set -euo pipefail

PY="${1:?usage: cuda_plan.sh VENV_PYTHON}"
say() { printf '[install] %s\n' "$*" >&2; }
fail() { printf '[install] error: %s\n' "$*" >&2; exit 1; }
emit() { printf '%s=%q\n' "$1" "$2"; }
cpu() { emit WITH_CUDA 0; emit FLAVOUR cpu; emit TORCH_CUDA ""; emit ARCH_LIST ""; emit NVCC_PKGS ""; exit 0; }

GPU=0
if nvidia-smi >/dev/null 2>&1; then GPU=1; fi

case "${IKD_CUDA:-}" in
  0) cpu ;;
  1) ;;
  "") [ "$GPU" = 1 ] || cpu ;;
  *) fail "IKD_CUDA must be 0 or 1 (or unset), not '$IKD_CUDA'" ;;
esac

# Where CUDA was only detected (not asked for), a reason not to build it falls back to CPU ops
# with a message instead of failing the whole install.
give_up() {
  if [ "${IKD_CUDA:-}" = 1 ]; then fail "$1"; fi
  say "$1: mmcv-full gets CPU ops only (IKD_CUDA=0 silences this)"
  cpu
}

TORCH_CUDA="$("$PY" -c 'import torch; print(torch.version.cuda or "")' 2>/dev/null)" \
  || fail "cannot import torch with $PY"
[ -n "$TORCH_CUDA" ] || give_up "this torch is a CPU-only build (torch.version.cuda is None)"

# Arch list: the user's, else one entry per distinct GPU model (nvidia-smi prints e.g. "9.0").
ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-}"
if [ -z "$ARCH_LIST" ] && [ "$GPU" = 1 ]; then
  ARCH_LIST="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null \
    | tr -d ' ' | grep -E '^[0-9]+\.[0-9]+$' | sort -u -V | paste -sd ';' || true)"
fi
[ -n "$ARCH_LIST" ] || give_up "no GPU arch known: set TORCH_CUDA_ARCH_LIST (e.g. 9.0 for H100/H200, 8.0 for A100)"
for arch in ${ARCH_LIST//;/ }; do
  [[ "$arch" =~ ^[0-9]+\.[0-9]+a?(\+PTX)?$ ]] \
    || give_up "TORCH_CUDA_ARCH_LIST entry '$arch' is not like 9.0, 9.0a or 9.0+PTX"
done
# "8.0;9.0+PTX" -> "sm80_90ptx": one cached wheel per torch, CUDA version and arch list.
SM="$(printf '%s' "$ARCH_LIST" | tr ' ;' '__' | tr -d '.' | sed 's/+PTX/ptx/g')"

# nvcc on PATH serves when its release is torch's (torch refuses another major version, and a
# different minor risks mismatched headers); otherwise PyPI has the matching compiler.
USE_PYPI=1
if command -v nvcc >/dev/null 2>&1; then
  NVCC_CUDA="$(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p' | head -n1)"
  if [ "$NVCC_CUDA" = "$TORCH_CUDA" ]; then USE_PYPI=0; fi
  [ "$USE_PYPI" = 0 ] || say "nvcc on PATH is CUDA ${NVCC_CUDA:-of unknown version}, torch is built with CUDA $TORCH_CUDA: using nvcc $TORCH_CUDA from PyPI instead"
fi
# PyPI ships the CUDA 13 compiler as version-pinned packages that unpack under
# site-packages/nvidia/cu13/ beside the headers and libraries torch's wheel already carries.
# CUDA 12's packages are named and laid out differently; not supported here.
NVCC_PKGS=""
if [ "$USE_PYPI" = 1 ]; then
  [ "${TORCH_CUDA%%.*}" -ge 13 ] \
    || give_up "no PyPI nvcc recipe for CUDA $TORCH_CUDA: install CUDA toolkit $TORCH_CUDA and put its nvcc on PATH"
  NVCC_PKGS="nvidia-cuda-nvcc==$TORCH_CUDA.* nvidia-cuda-crt==$TORCH_CUDA.* nvidia-nvvm==$TORCH_CUDA.* nvidia-cuda-cccl==$TORCH_CUDA.*"
fi
emit WITH_CUDA 1
emit FLAVOUR "cu${TORCH_CUDA//./}-sm$SM"
emit TORCH_CUDA "$TORCH_CUDA"
emit ARCH_LIST "$ARCH_LIST"
emit NVCC_PKGS "$NVCC_PKGS"
