#!/usr/bin/env bash
# The seeded study on the built-in data: with the main job's teacher and adversarial set, train
# for each seed the student alone, FGD, IKD and two ablations of IKD, evaluate each on the val
# split, and write the report (mean ± sd per arm, paired IKD - FGD with a 95% t-interval).
#
#   bash scripts/study_shapes.sh                      # seeds 0-4, the five main arms (hours on 2 cores)
#   bash scripts/study_shapes.sh --seeds 2 --arms fgd,ikd
#   bash scripts/study_shapes.sh --seed-list 1,3      # only these seeds (e.g. a second process)
#   bash scripts/study_shapes.sh --arms mgd,ikd_mgd --compare ikd_mgd,mgd   # IKD on MGD
#   bash scripts/study_shapes.sh --arms cwd,ikd_cwd,pkd,ikd_pkd --compare ikd,fgd --compare ikd_mgd,mgd \
#       --compare ikd_cwd,cwd --compare ikd_pkd,pkd      # IKD on each distiller (with the arms above)
#   bash scripts/study_shapes.sh --seeds 3 --arms ikd_adv1e-4,ikd_adv1e-3,ikd_dfa4,ikd_dfa12   # the sweep
#   bash scripts/study_shapes.sh --seed-list 2 --keep results/shapes-study   # and keep its records
#   bash scripts/study_shapes.sh --seed-list 0 --arms cwd1,cwd5,cwd25,pkd2,pkd10,pkd50 --out work_dirs/weights
#
# The report pairs, by seed, each --compare A,B given (repeat it for more pairs); without one,
# ikd against fgd, ikd_aug and ikd_adv, whichever of these arms the study folder holds. Sweep arms
# are paired against fgd and ikd_aug in the report's sweep tables (sweep_alpha_adv.png, sweep_stage1.png).
#
# Resumable: each run continues where it stopped, a finished run only says "nothing to do".
# --keep DIR: the report also copies its runs' records (settings, logs, eval files; no weights)
# into DIR (`ikd report --keep`), so a study spread over sessions on machines that do not last
# adds up in one folder: `ikd report DIR` reports all of it.
# Arms:  student   the student trained alone (ikd train --model student)
#        fgd       FGD only (ikd distill --dfa-until 0)
#        ikd       IKD: FGD + adversarial feature loss + sample-specific augmentation (stage 1 for
#                  the preset's 8 of 12 epochs)
#        ikd_aug   IKD without the adversarial feature loss (augmentation only: alpha_adv 0)
#        ikd_adv   IKD without the sample-specific augmentation (adversarial features only:
#                  no instance corruption, no adaptive crop)
#        mgd, cwd, pkd              that distiller alone (ikd distill --method X --dfa-until 0)
#        ikd_mgd, ikd_cwd, ikd_pkd  IKD on that distiller: it + adversarial feature loss +
#                                   augmentation in stage 1 (the arm ikd is IKD on FGD)
#  a distiller's weight (how configs/shapes.yaml's were chosen, on seed 0 before any IKD comparison):
#        cwdX, pkdX, mgdX   that distiller alone with distill.<method>.alpha = X (e.g. cwd25, pkd2)
#  sweeps of IKD's two knobs (not in the default arms):
#        ikd_dfaN       stage 1 for N epochs (e.g. ikd_dfa4, ikd_dfa12)
#        ikd_advX       alpha_adv = X (e.g. ikd_adv1e-4, ikd_adv1e-3)
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=5
SEED_LIST=""
ARMS=student,fgd,ikd,ikd_aug,ikd_adv
OUT=work_dirs/study
COMPARE=()
KEEP=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) SEEDS="$2"; shift 2 ;;
    --seed-list) SEED_LIST="$2"; shift 2 ;;
    --arms) ARMS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --compare) COMPARE+=(--compare "$2"); shift 2 ;;
    --keep) KEEP=(--keep "$2"); shift 2 ;;
    *) echo "usage: $0 [--seeds N | --seed-list a,b] [--arms a,b,...] [--out DIR] [--compare A,B]... [--keep DIR]" >&2; exit 2 ;;
  esac
done
[ -n "$SEED_LIST" ] || SEED_LIST=$(seq -s, 0 $((SEEDS - 1)))
[ -x .venv/bin/ikd ] || bash scripts/install.sh
IKD=.venv/bin/ikd
# The teacher and the adversarial training set the study shares: the main job's (nothing to do
# when run_shapes.sh has run).
. scripts/shared_step.sh  # two copies side by side (--seed-list) wait for each other here
shared_step "$IKD" train --preset shapes --model teacher
shared_step "$IKD" attack --preset shapes
.venv/bin/python - "$OUT" <<'PY'   # marks the folder as a study for `ikd report`
import sys
from pathlib import Path
from ikd_cli.config.layout import STUDY_FILE
from ikd_cli.core.fileio import atomic_write_json
atomic_write_json(Path(sys.argv[1]) / STUDY_FILE, {"study": "shapes"})
PY

arm_args() {  # the command of one arm
  case "$1" in
    student) echo "train --model student" ;;
    fgd) echo "distill --dfa-until 0" ;;
    ikd) echo "distill" ;;
    ikd_aug) echo "distill --set distill.alpha_adv=0" ;;
    ikd_adv) echo "distill --set distill.corruption_prob=0 --set distill.crop_range=1.0" ;;
    mgd|cwd|pkd) echo "distill --method $1 --dfa-until 0" ;;
    ikd_mgd|ikd_cwd|ikd_pkd) echo "distill --method ${1#ikd_}" ;;
    mgd[0-9]*|cwd[0-9]*|pkd[0-9]*) echo "distill --method ${1:0:3} --dfa-until 0 --set distill.${1:0:3}.alpha=${1:3}" ;;
    ikd_dfa[0-9]*) echo "distill --dfa-until ${1#ikd_dfa}" ;;
    ikd_adv[0-9]*) echo "distill --set distill.alpha_adv=${1#ikd_adv}" ;;
    *) echo "unknown arm: $1 (choose from student, fgd, ikd, ikd_aug, ikd_adv, mgd, ikd_mgd, cwd, ikd_cwd, pkd, ikd_pkd, cwdX, pkdX, mgdX, ikd_dfaN, ikd_advX)" >&2; exit 2 ;;
  esac
}
for arm in ${ARMS//,/ }; do arm_args "$arm" > /dev/null; done   # a typo fails now, not hours later

start=$(date +%s)
for seed in ${SEED_LIST//,/ }; do
  for arm in ${ARMS//,/ }; do
    work="$OUT/$arm/seed$seed"
    # shellcheck disable=SC2046
    "$IKD" $(arm_args "$arm") --preset shapes --work-dir "$work" --set train.seed="$seed"
    kind=distill; [ "$arm" = student ] && kind=student
    "$IKD" evaluate "$("$IKD" presets show shapes --path "$kind" --work-dir "$work")"
  done
done
echo "study: $(( ($(date +%s) - start) / 60 )) min of training and evaluation"
if [ ${#COMPARE[@]} -eq 0 ] && [ -d "$OUT/ikd" ]; then
  for other in fgd ikd_aug ikd_adv; do
    if [ -d "$OUT/$other" ]; then COMPARE+=(--compare "ikd,$other"); fi
  done
fi
"$IKD" report "$OUT" --out "$OUT/report" "${COMPARE[@]}" ${KEEP[@]+"${KEEP[@]}"}
