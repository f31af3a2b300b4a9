#!/usr/bin/env bash
# The README's main job: install if needed, then the whole IKD pipeline on the built-in shapes
# data: train the teacher, attack it, distil (stage 1 + stage 2 in one run), evaluate.
# Every step is resumable: running this again continues where it stopped (each ikd command
# continues its own run, and says so; a finished step only says "nothing to do").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
IKD=.venv/bin/ikd
WORK=work_dirs/shapes

"$IKD" train --preset shapes --model teacher
"$IKD" evaluate "$WORK/teacher/latest.pth"
"$IKD" attack --preset shapes                    # the training images, for stage 1 of distill
"$IKD" attack --preset shapes --split val        # the val images: what the attack does to the teacher
"$IKD" evaluate "$WORK/teacher/latest.pth" --images data/shapes_adv_difgsm_8_5_val
"$IKD" distill --preset shapes
"$IKD" evaluate "$WORK/distill/student_latest.pth"
