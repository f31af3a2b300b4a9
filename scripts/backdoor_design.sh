#!/usr/bin/env bash
# The backdoor verdict on the built-in shapes data: IKD vs NAD decided on a nested design with
# the power to, N victims x K defender subsets, every defence on the same subsets, paired per
# (victim, subset). Victim v is scripts/backdoor_shapes.sh's seed v (train.seed = backdoor.seed =
# v: which images are poisoned, where the trigger lands, the victim's data order) in the same
# work dir, so the victims of the 5-seed table are reused, not retrained. Its subsets have the
# seeds k = v + 100 j, j = 0..K-1 (backdoor.subset_seed): j = 0 is the victim's own subset (the
# 5-seed table's defences, in backdoor/), the others live in backdoor/subset-<k>/ beside the one
# victim. Each victim has subsets of its own (nested, not crossed: no two victims share one), so
# the victims are independent replicates and the interval is over them. The defences keep
# train.seed = v (their data order); the subset is what varies.
#
#   bash scripts/backdoor_design.sh [--victims N | --victim-list a,b] [--subsets K | --subset-list j,..]
#                                   [--work-root DIR] [--keep DIR] [--set KEY=VALUE ...]
#
# Defaults: 3 victims, 10 subsets. Resumable: each step continues its own run or says it has
# nothing to do, and an evaluation already made is not redone. Two processes side by side: split
# the victims (--victim-list 0,2 and --victim-list 1), or, once a victim is trained, its subsets
# (--victim-list 2 --subset-list 0,2,4,6,8 and ... 1,3,5,7,9; two processes training the same
# victim at once stop at its folder's lock). The verdict covers the victims and subsets asked; run
# once more without lists (nothing left to do) for the whole one. Extra arguments go to every step.
# --keep DIR: the verdict also copies what it read (evaluations, settings; no weights) into
# DIR/seed-<v>/ (`ikd backdoor verdict --keep`): a design spread over machines that do not last is
# decided as one with `ikd backdoor verdict DIR/seed-*`.
set -euo pipefail
cd "$(dirname "$0")/.."
VICTIMS=3
VICTIM_LIST=""
SUBSETS=10
SUBSET_LIST=""
ROOT=work_dirs/shapes-backdoor
KEEP=()
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --victims) VICTIMS=$2; shift 2 ;;
    --victim-list) VICTIM_LIST=$2; shift 2 ;;
    --subsets) SUBSETS=$2; shift 2 ;;
    --subset-list) SUBSET_LIST=$2; shift 2 ;;
    --work-root) ROOT=$2; shift 2 ;;
    --keep) KEEP=(--keep "$2"); shift 2 ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done
[ -n "$VICTIM_LIST" ] || VICTIM_LIST=$(seq -s, 0 $((VICTIMS - 1)))
[ -n "$SUBSET_LIST" ] || SUBSET_LIST=$(seq -s, 0 $((SUBSETS - 1)))
for j in ${SUBSET_LIST//,/ }; do
  [ "$j" -lt 100 ] || { echo "error: at most 100 subsets a victim (subset $j)" >&2; exit 1; }
done
[ -x .venv/bin/ikd ] || bash scripts/install.sh  # installs if needed
IKD=.venv/bin/ikd

"$IKD" train --preset shapes --model teacher ${EXTRA[@]+"${EXTRA[@]}"}  # the clean model
result() { .venv/bin/python -c "from ikd_cli.backdoor.layout import step_result; print(step_result('$1'))"; }
folder() {  # a subset's folder under backdoor/ ("" for the victim's own)
  [ "$2" = "$1" ] || .venv/bin/python -c "from ikd_cli.backdoor.layout import subset_folder; print(subset_folder($2) + '/')"
}
DIRS=()
for v in ${VICTIM_LIST//,/ }; do
  [ "$v" -lt 100 ] || { echo "error: victim seeds below 100 (got $v): subset seeds are v + 100 j" >&2; exit 1; }
  W="$ROOT/seed-$v"
  DIRS+=("$W")
  OPTS=(--preset shapes --set "train.seed=$v" --set "backdoor.seed=$v" ${EXTRA[@]+"${EXTRA[@]}"})
  echo "== victim $v: $W"
  "$IKD" backdoor poison "${OPTS[@]}"
  "$IKD" backdoor train-victim "${OPTS[@]}" --work-dir "$W"
  "$IKD" backdoor evaluate "$W/backdoor/$(result victim)"
  for j in ${SUBSET_LIST//,/ }; do
    k=$((v + 100 * j))
    sub="$W/backdoor/$(folder "$v" "$k")"
    echo "== victim $v, subset $k: $sub"
    for method in finetune nad ikd; do
      "$IKD" backdoor defend --method "$method" "${OPTS[@]}" --set "backdoor.subset_seed=$k" --work-dir "$W"
    done
    for method in finetune nad ikd; do
      "$IKD" backdoor evaluate "$sub$(result $method)"  # each checkpoint carries its preset
    done
  done
done
"$IKD" backdoor verdict "${DIRS[@]}" --out "$ROOT/verdict" --markdown ${KEEP[@]+"${KEEP[@]}"}
