#!/usr/bin/env bash
# IKD's backdoor-defence table on the built-in shapes data. Per seed: poison the training set
# (BadNets checkerboard on 10% of the images, every object relabelled to "circle"), train the
# victim (the shapes teacher model, the preset's 24 epochs), defend it with fine-tuning, NAD and
# IKD given 5% clean training data, and evaluate each (ASR on the triggered val images, AP on the
# clean ones); then the table: clean AP, ASR and ASR drop, mean ± sd over the seeds.
#
#   bash scripts/backdoor_shapes.sh [--seeds N] [--work-root DIR] [--clean CKPT] [--set KEY=VALUE ...]
#
# The table's first row, the clean model, is CKPT (default: the main job's teacher, which is the
# victim's model and schedule trained on the clean data; run scripts/run_shapes.sh first, or the
# row is left out), evaluated against each seed's trigger.
#
# Seed s sets train.seed=s and backdoor.seed=s (which images are poisoned, where the trigger
# lands, the clean subset). Extra arguments go to every poison/train-victim/defend step, e.g.
# --set backdoor.attack=disappear. Resumable: each step continues its own run or says it has
# nothing to do, and an evaluation already made is not redone.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=3
ROOT=work_dirs/shapes-backdoor
CLEAN=work_dirs/shapes/teacher/latest.pth
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) SEEDS=$2; shift 2 ;;
    --work-root) ROOT=$2; shift 2 ;;
    --clean) CLEAN=$2; shift 2 ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done
[ -x .venv/bin/ikd ] || bash scripts/install.sh  # installs if needed
IKD=.venv/bin/ikd

DIRS=()
for ((s = 0; s < SEEDS; s++)); do
  W="$ROOT/seed-$s"
  DIRS+=("$W")
  OPTS=(--preset shapes --set "train.seed=$s" --set "backdoor.seed=$s" ${EXTRA[@]+"${EXTRA[@]}"})
  echo "== seed $s: $W"
  "$IKD" backdoor poison "${OPTS[@]}"
  "$IKD" backdoor train-victim "${OPTS[@]}" --work-dir "$W"
  for method in finetune nad ikd; do
    "$IKD" backdoor defend --method "$method" "${OPTS[@]}" --work-dir "$W"
  done
  if [ -f "$CLEAN" ]; then   # a hard link where it can (no copy of the weights), else a copy
    mkdir -p "$W/backdoor/clean"
    ln -fL "$CLEAN" "$W/backdoor/clean/latest.pth" 2>/dev/null || cp -L "$CLEAN" "$W/backdoor/clean/latest.pth"
    "$IKD" backdoor evaluate "$W/backdoor/clean/latest.pth" "${OPTS[@]}"
  fi
  for ckpt in victim/latest.pth finetune/latest.pth nad/student_latest.pth ikd/student_latest.pth; do
    "$IKD" backdoor evaluate "$W/backdoor/$ckpt"
  done
done
"$IKD" backdoor table "${DIRS[@]}" --markdown
