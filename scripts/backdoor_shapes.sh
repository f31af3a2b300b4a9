#!/usr/bin/env bash
# IKD's backdoor-defence table on the built-in shapes data. First the clean model: the main job's
# teacher (`ikd train --model teacher`, nothing to do when scripts/run_shapes.sh has run). Per
# seed: poison the training set (the shapes preset's BadNets checkerboard, every object of a
# triggered image relabelled to "circle"), train the victim (the attacker fine-tunes the clean
# model on the poisoned set: backdoor.victim_init), defend it with fine-tuning, NAD and IKD given
# 5% clean training data, and evaluate each, the clean model too (ASR on the triggered val
# images, AP on the clean ones); then the table: clean AP, ASR and ASR drop, mean ± sd over the
# seeds, and the paired differences with 95% intervals.
#
#   bash scripts/backdoor_shapes.sh [--seeds N | --seed-list a,b] [--work-root DIR] [--set KEY=VALUE ...]
#
# Seed s sets train.seed=s and backdoor.seed=s (which images are poisoned, where the trigger
# lands, the clean subset, the victim's and the defences' data order). Extra arguments go to
# every step, e.g. --set backdoor.attack=disappear. Resumable: each step continues its own run or
# says it has nothing to do, and an evaluation already made is not redone. --seed-list runs only
# those seeds (e.g. two processes side by side); the table covers the seeds asked.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=3
SEED_LIST=""
ROOT=work_dirs/shapes-backdoor
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) SEEDS=$2; shift 2 ;;
    --seed-list) SEED_LIST=$2; shift 2 ;;
    --work-root) ROOT=$2; shift 2 ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done
[ -n "$SEED_LIST" ] || SEED_LIST=$(seq -s, 0 $((SEEDS - 1)))
[ -x .venv/bin/ikd ] || bash scripts/install.sh  # installs if needed
IKD=.venv/bin/ikd

"$IKD" train --preset shapes --model teacher ${EXTRA[@]+"${EXTRA[@]}"}  # the clean model
CLEAN=$(.venv/bin/python - ${EXTRA[@]+"${EXTRA[@]}"} <<'PY'
import sys
from ikd_cli.config.presets import load, parse_set
args = sys.argv[1:]  # the teacher's checkpoint as the extra --set arguments leave it
print(load("shapes", parse_set(v for k, v in zip(args, args[1:]) if k == "--set"))["teacher"]["checkpoint"])
PY
)

result() {  # a step's checkpoint in the experiment folder $1 (backdoor/layout.py)
  .venv/bin/python - "$1" "$2" <<'PY'
import sys
from ikd_cli.backdoor.layout import backdoor_dir, step_result
print(backdoor_dir({"work_dir": sys.argv[1]}) / step_result(sys.argv[2]))
PY
}
DIRS=()
for s in ${SEED_LIST//,/ }; do
  W="$ROOT/seed-$s"
  DIRS+=("$W")
  OPTS=(--preset shapes --set "train.seed=$s" --set "backdoor.seed=$s" ${EXTRA[@]+"${EXTRA[@]}"})
  echo "== seed $s: $W"
  "$IKD" backdoor poison "${OPTS[@]}"
  "$IKD" backdoor train-victim "${OPTS[@]}" --work-dir "$W"
  for method in finetune nad ikd; do
    "$IKD" backdoor defend --method "$method" "${OPTS[@]}" --work-dir "$W"
  done
  clean=$(result "$W" clean)
  mkdir -p "$(dirname "$clean")"  # a hard link where it can (no copy of the weights), else a copy
  ln -fL "$CLEAN" "$clean" 2>/dev/null || cp -L "$CLEAN" "$clean"
  "$IKD" backdoor evaluate "$clean" "${OPTS[@]}"  # against this seed's trigger
  for step in victim finetune nad ikd; do
    "$IKD" backdoor evaluate "$(result "$W" "$step")"  # each checkpoint carries its preset
  done
done
"$IKD" backdoor table "${DIRS[@]}" --markdown
