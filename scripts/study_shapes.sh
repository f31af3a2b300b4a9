#!/usr/bin/env bash
# The seeded study on the built-in data: with the main job's teacher and adversarial set, train
# for each seed the student alone, FGD, IKD and two ablations of IKD, evaluate each on the val
# split, and write the report (mean ± sd per arm, paired IKD - FGD with a 95% t-interval).
#
#   bash scripts/study_shapes.sh                      # 5 seeds, all arms (hours on 2 CPU cores)
#   bash scripts/study_shapes.sh --seeds 2 --arms fgd,ikd
#
# Resumable: each run continues where it stopped, a finished run only says "nothing to do".
# Arms:  student   the student trained alone (ikd train --model student)
#        fgd       FGD only (ikd distill --dfa-until 0)
#        ikd       IKD: FGD + adversarial feature loss + sample-specific augmentation (stage 1 for
#                  16 of 24 epochs)
#        ikd_aug   IKD without the adversarial feature loss (augmentation only: alpha_adv 0)
#        ikd_adv   IKD without the sample-specific augmentation (adversarial features only:
#                  no instance corruption, no adaptive crop)
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=5
ARMS=student,fgd,ikd,ikd_aug,ikd_adv
OUT=work_dirs/study
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) SEEDS="$2"; shift 2 ;;
    --arms) ARMS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "usage: $0 [--seeds N] [--arms a,b,...] [--out DIR]" >&2; exit 2 ;;
  esac
done
bash scripts/run_shapes.sh   # the teacher and the adversarial set the study shares
IKD=.venv/bin/ikd
mkdir -p "$OUT"
printf '{"study": "shapes", "seeds": %s, "arms": "%s"}\n' "$SEEDS" "$ARMS" > "$OUT/study.json"

arm_args() {  # the command of one arm
  case "$1" in
    student) echo "train --model student" ;;
    fgd) echo "distill --dfa-until 0" ;;
    ikd) echo "distill" ;;
    ikd_aug) echo "distill --set distill.alpha_adv=0" ;;
    ikd_adv) echo "distill --set distill.corruption_prob=0 --set distill.crop_range=1.0" ;;
    *) echo "unknown arm: $1 (choose from student, fgd, ikd, ikd_aug, ikd_adv)" >&2; exit 2 ;;
  esac
}

start=$(date +%s)
for seed in $(seq 0 $((SEEDS - 1))); do
  for arm in ${ARMS//,/ }; do
    work="$OUT/$arm/seed$seed"
    # shellcheck disable=SC2046
    "$IKD" $(arm_args "$arm") --preset shapes --work-dir "$work" --set train.seed="$seed"
    if [ "$arm" = student ]; then ckpt="$work/student/latest.pth"; else ckpt="$work/distill/student_latest.pth"; fi
    "$IKD" evaluate "$ckpt"
  done
done
echo "study: $(( ($(date +%s) - start) / 60 )) min of training and evaluation"
"$IKD" report "$OUT" --out "$OUT/report" --compare ikd,fgd
