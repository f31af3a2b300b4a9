#!/usr/bin/env bash
# The README's main job: install if needed, then the whole IKD pipeline on the built-in shapes
# data: train the teacher (36 epochs), attack it, train the student three ways on the same seed
# and schedule (alone, FGD = distill --dfa-until 0, IKD = both stages), evaluate everything, and
# end with the table and pictures of `ikd report`.
#
# Every step runs with one thread (the preset's train.threads: the figures repeat to the digit
# only at one count), so the cores are used by running independent steps side by side, in two
# lanes (2 cores):
#   lane 1 (here):    teacher -> attack of the training images -> IKD -> evaluate IKD
#   lane 2 (beside):  student alone -> evaluate it -> (teacher done) evaluate the teacher ->
#                     attack of the val images -> evaluate the teacher on them -> FGD -> evaluate FGD
# Lane 2's output goes to <work dir>/logs/lane2.log; this terminal says when it starts and ends.
# Every step is resumable: running this again continues where it stopped (each ikd command
# continues its own run and holds its folder's lock; a finished step only says "nothing to do").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
IKD=.venv/bin/ikd
where() { "$IKD" presets show shapes --path "$@"; }  # where the preset puts a run's files (config/layout.py)
W=$(where work_dir)
ADV_VAL=$(where attack.out_val)
TEACHER=$(where teacher)
LOGS="$W/logs"
mkdir -p "$LOGS"
TEACHER_DONE=$(mktemp -u)   # lane 1 creates it once the teacher is trained (this run or an earlier one)
START=$(date +%s)

# The data first, once: both lanes read it.
"$IKD" data check --preset shapes --no-images

lane2() {
  set -e
  "$IKD" train --preset shapes --model student     # the student alone: needs no teacher
  "$IKD" evaluate "$(where student)"
  while [ ! -e "$TEACHER_DONE" ]; do sleep 10; done   # lane 1 says when the teacher is trained
  "$IKD" evaluate "$TEACHER"
  "$IKD" attack --preset shapes --split val        # the val images: what the attack does to the teacher
  "$IKD" evaluate "$TEACHER" --images "$ADV_VAL"
  "$IKD" distill --preset shapes --dfa-until 0 --work-dir "$W/fgd"   # FGD: stage 2 only
  "$IKD" evaluate "$(where distill --work-dir "$W/fgd")"
}
echo "lane 2 (student alone, evaluations, val attack, FGD) runs beside this one: $LOGS/lane2.log"
lane2 > "$LOGS/lane2.log" 2>&1 &
LANE2=$!
# Lane 1 failing or Ctrl-C ends lane 2 too (its running ikd step stops as after a Ctrl-C of its own:
# resumable); the marker goes with the script.
trap 'pkill -TERM -P "$LANE2" 2>/dev/null || true; kill "$LANE2" 2>/dev/null || true; rm -f "$TEACHER_DONE"' EXIT


"$IKD" train --preset shapes --model teacher
touch "$TEACHER_DONE"
"$IKD" attack --preset shapes                    # the training images, for stage 1 of distill
"$IKD" distill --preset shapes                   # IKD: stage 1 (epochs 1-8), then stage 2
"$IKD" evaluate "$(where distill)"

if ! wait "$LANE2"; then
  echo "lane 2 failed; its last lines ($LOGS/lane2.log):" >&2
  tail -n 15 "$LOGS/lane2.log" >&2
  exit 1
fi
echo "lane 2 done"
"$IKD" report "$W" --out "$W/report"
echo "main job: $(( ($(date +%s) - START) / 60 )) min (steps one thread each, two lanes)"
echo "the attack, seen: $ADV_VAL/preview.png (clean | adversarial | perturbation, with the teacher's boxes)"
