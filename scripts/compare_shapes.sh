#!/usr/bin/env bash
# The README's results table on the built-in data: the student alone, with FGD (--dfa-until 0)
# and with IKD (both stages), same seed and schedule, each evaluated on the shapes val split.
# Needs the teacher and the adversarial set of `bash scripts/run_shapes.sh` (it runs that first).
# Re-running continues whatever did not finish.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/run_shapes.sh
IKD=.venv/bin/ikd
W=work_dirs/shapes
"$IKD" train --preset shapes --model student
"$IKD" distill --preset shapes --dfa-until 0 --work-dir "$W-fgd"
"$IKD" evaluate "$W/student/latest.pth"
"$IKD" evaluate "$W-fgd/distill/student_latest.pth"
"$IKD" evaluate "$W/distill/student_latest.pth"
.venv/bin/python - <<'PY'
import json
rows = [("student alone", "work_dirs/shapes/student/latest.eval-val.json"),
        ("FGD (--dfa-until 0)", "work_dirs/shapes-fgd/distill/student_latest.eval-val.json"),
        ("IKD (--dfa-until 16)", "work_dirs/shapes/distill/student_latest.eval-val.json")]
print("| student R18 | AP | AP50 | AP75 | AP_S | AP_M | AP_L |\n|---|---|---|---|---|---|---|")
for name, path in rows:
    m = json.load(open(path))["bbox"]
    print(f"| {name} | " + " | ".join(f"{100 * m[k]:.1f}" for k in ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")) + " |")
PY
