#!/usr/bin/env bash
# The README's main job: install if needed, then the whole IKD pipeline on the built-in shapes
# data: train the teacher (36 epochs), attack it, train the student three ways on the same seed
# and schedule (alone, FGD = distill --dfa-until 0, IKD = both stages), evaluate everything, and
# end with the table and pictures of `ikd report`.
# Every step is resumable: running this again continues where it stopped (each ikd command
# continues its own run, and says so; a finished step only says "nothing to do").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
IKD=.venv/bin/ikd
where() { "$IKD" presets show shapes --path "$@"; }  # where the preset puts a run's files (config/layout.py)
W=$(where work_dir)
ADV_VAL=$(where attack.out_val)

"$IKD" train --preset shapes --model teacher
"$IKD" evaluate "$(where teacher)"
"$IKD" attack --preset shapes                    # the training images, for stage 1 of distill
"$IKD" attack --preset shapes --split val        # the val images: what the attack does to the teacher
"$IKD" evaluate "$(where teacher)" --images "$ADV_VAL"
"$IKD" train --preset shapes --model student     # the student alone
"$IKD" distill --preset shapes --dfa-until 0 --work-dir "$W/fgd"   # FGD: stage 2 only
"$IKD" distill --preset shapes                   # IKD: stage 1 (epochs 1-8), then stage 2
"$IKD" evaluate "$(where student)"
"$IKD" evaluate "$(where distill --work-dir "$W/fgd")"
"$IKD" evaluate "$(where distill)"
"$IKD" report "$W" --out "$W/report"
echo "the attack, seen: $ADV_VAL/preview.png (clean | adversarial | perturbation, with the teacher's boxes)"
