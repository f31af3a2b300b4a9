#!/usr/bin/env bash
# The GPU check, in one go (aimed at under 10 minutes on a 16-core machine with a cached wheel):
#   1. mmcv-full with CUDA ops for this machine's GPU arch only (install.sh: the cached wheel, or a
#      build with nvcc from PATH or PyPI: ~2 CPU-hours, so ~8 min on 16 cores),
#   2. the test suite on the GPU (IKD_TEST_DEVICE=cuda; the --gpus 2 tests run NCCL where two GPUs
#      are visible, and skip otherwise),
#   3. scripts/bench_attack.py (batch 1/4/8, fp32 and bf16; the command vs its per-batch work), its
#      --coco projection (train2017 hours) and scripts/bench_distill.py (FGD, IKD, fp32 and bf16),
# then one summary table. Each stage has a time limit so the table always comes; logs and JSON in
# $IKD_GPU_CHECK_OUT (default /tmp/ikd-gpu-check).
#
#   bash scripts/gpu_check.sh [pytest args, default -q]
#   IKD_CACHE=/path/with/wheels bash scripts/gpu_check.sh   # reuse a wheel built elsewhere
#
# Stage limits (seconds): IKD_GPU_CHECK_BUILD_S (480), _TESTS_S (420), _BENCH_S (150 each).
set -uo pipefail  # no -e: a failing stage is reported in the table, the next stage still runs

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${IKD_GPU_CHECK_OUT:-/tmp/ikd-gpu-check}"
PY="${IKD_VENV:-$ROOT/.venv}/bin/python"

GPUS="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | grep -c . || true)"
if [ "${GPUS:-0}" -lt 1 ]; then
  echo "gpu_check: no GPU on this machine (nvidia-smi finds none); run it where one is" >&2
  exit 1
fi
mkdir -p "$OUT"
echo "[gpu_check] $GPUS GPU(s): $(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader | sort -u | paste -sd ';'); logs in $OUT"

stage() {  # stage NAME LIMIT_S CMD...: run with a time limit, log to $OUT/NAME.log, record status
  local name="$1" limit="$2"; shift 2
  local start=$SECONDS
  echo "[gpu_check] $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local status=ok
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status="timed out"; elif [ "$rc" != 0 ]; then status="failed (rc $rc)"; fi
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" >>"$OUT/stages.tsv"
  echo "[gpu_check] $name: $status in $((SECONDS - start)) s"
  return "$rc"
}
: >"$OUT/stages.tsv"

# 1. CUDA ops for this GPU's arch only (cuda_plan.sh reads it from nvidia-smi). An mmcv-full without
# them (a CPU install) is replaced; with them, install.sh only checks versions.
if [ -x "$PY" ] && "$PY" -c 'from mmcv.ops import get_compiling_cuda_version as v; exit(v() == "not available")' 2>/dev/null; then
  stage install 120 bash scripts/install.sh
else
  [ -x "$PY" ] && "$PY" -m pip uninstall -y -q mmcv-full >/dev/null 2>&1
  stage install "${IKD_GPU_CHECK_BUILD_S:-480}" env IKD_CUDA=1 MAX_JOBS="$(nproc)" bash scripts/install.sh
fi || { echo "[gpu_check] install failed: see $OUT/install.log" >&2; exit 1; }

# 2. The suite on the GPU; junit XML for the counts.
export IKD_TEST_DEVICE=cuda
stage tests "${IKD_GPU_CHECK_TESTS_S:-420}" "$PY" -m pytest -p no:cacheprovider --junitxml="$OUT/tests.xml" \
  -n "${IKD_TEST_WORKERS:-8}" --dist worksteal "${@:--q}"  # 8 pytest workers share the GPU (xdist)

# 3. Benchmarks (each variant interleaved with the others, medians; see the scripts' docstrings).
stage bench_attack "${IKD_GPU_CHECK_BENCH_S:-150}" "$PY" scripts/bench_attack.py --device cuda \
  --batches 1,4,8 --amp-batches 1,4,8 --json "$OUT/bench_attack.json"
stage bench_attack_coco "${IKD_GPU_CHECK_BENCH_S:-150}" "$PY" scripts/bench_attack.py --device cuda --coco \
  --json "$OUT/bench_attack_coco.json"
stage bench_distill "${IKD_GPU_CHECK_BENCH_S:-150}" "$PY" scripts/bench_distill.py --device cuda --amp \
  --json "$OUT/bench_distill.json"

"$PY" - "$OUT" "$GPUS" <<'PYEOF'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path

out, gpus = Path(sys.argv[1]), int(sys.argv[2])
def load(name):
    p = out / name
    return json.loads(p.read_text()) if p.is_file() else None

rows = []
for line in (out / "stages.tsv").read_text().splitlines():
    name, status, secs = line.split("\t")
    rows.append((f"stage {name}", f"{status}, {secs} s"))
if (out / "tests.xml").is_file():
    suite = ET.parse(out / "tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    rows.append(("tests on cuda", f"{passed} passed, {n['failures']} failed, {n['errors']} errors, {n['skipped']} skipped"))
rows.append(("NCCL (--gpus 2 tests)", "ran in the suite" if gpus >= 2 else "skipped: 1 GPU"))
attack = load("bench_attack.json")
if attack:
    for b, ips in attack["img_per_s"].items():
        amp = attack["img_per_s_amp"].get(b)
        rows.append((f"attack images/s, batch {b}",
                     f"fp32 {ips:.1f}" + (f", bf16 {amp:.1f}, bf16/fp32 time {ips / amp:.2f}" if amp else "")))
    for b, ips in attack.get("command_img_per_s", {}).items():
        rows.append((f"attack command / per-batch work, batch {b}", f"{attack['img_per_s'][b] / ips:.3f}x time"))
coco = load("bench_attack_coco.json")
if coco:
    rows.append(("COCO attack (X101, 5 steps, batch 1)", f"{coco['coco_img_per_s']:.2f} img/s; train2017 "
                 f"{coco['train2017_hours_1']:.1f} h on 1 GPU, {coco['train2017_hours_8']:.1f} h on 8"))
distill = load("bench_distill.json")
if distill:
    it = distill["it_per_s"]
    for name in ("fgd", "ikd"):
        amp = it.get(f"{name} amp")
        rows.append((f"{name.upper()} iterations/s, batch {distill['batch']}",
                     f"fp32 {it[name]:.2f}" + (f", bf16 {amp:.2f}, bf16/fp32 time {it[name] / amp:.2f}" if amp else "")))
peaks = [d["peak_gpu_gib"] for d in (attack, distill) if d and d.get("peak_gpu_gib") is not None]
if peaks:
    rows.append(("peak GPU memory (benchmarks)", f"{max(peaks):.2f} GiB"))
width = max(len(k) for k, _ in rows)
print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
PYEOF
! grep -qv $'\tok\t' "$OUT/stages.tsv"  # exit status: 0 only when every stage passed
