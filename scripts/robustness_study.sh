#!/usr/bin/env bash
# Robustness of every finished student of the seeded study (scripts/study_shapes.sh):
# `ikd evaluate --robustness` on each final checkpoint under <out>/<arm>/seed<N>/ (clean, the
# teacher's adversarial val set, a white-box attack on the student itself, common corruptions:
# mPC, rPC), then `ikd report` with the robustness columns (mean ± sd per arm) and the paired
# differences with 95% intervals: IKD - FGD, and IKD against each of its two ablations.
#
#   bash scripts/robustness_study.sh                       # the five main arms, every seed found
#   bash scripts/robustness_study.sh --arms fgd,ikd --seed-list 0,1 --jobs 2
#   bash scripts/robustness_study.sh --corruptions all     # the benchmark's 15 x 5 (hours per model)
#   bash scripts/robustness_study.sh --set attack.eps=4     # other arguments go to attack and evaluate
#   bash scripts/robustness_study.sh --keep results/shapes-study   # the report keeps the records there
#
# Only finished runs are evaluated: the final checkpoint (student: latest.pth, distill:
# student_latest.pth) must point at the last epoch of the run's own schedule (its preset.yaml);
# a run still training is listed as skipped. Resumable: every setting already scored for these
# weights is skipped (its eval file records the checkpoint's sha256 and the setting), and the
# white-box set beside each checkpoint is reused. The transfer setting needs the teacher's
# adversarial val set: made here once (`ikd attack --preset shapes --split val`: 500 images,
# ~0.5 CPU-s each for the shapes teacher, ~5 CPU-minutes).
#
# Cost (CPU-minutes per checkpoint, hours per study): results/robustness/README.md, "Cost".
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=work_dirs/study
ARMS=student,fgd,ikd,ikd_aug,ikd_adv
SEED_LIST=""
JOBS=1
CORRUPTIONS=""
SEVERITIES=""
COMPARES="ikd,fgd ikd,ikd_aug ikd,ikd_adv"
EXTRA=()
KEEP=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --arms) ARMS="$2"; shift 2 ;;
    --seed-list) SEED_LIST="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    --corruptions) CORRUPTIONS="$2"; shift 2 ;;
    --severities) SEVERITIES="$2"; shift 2 ;;
    --compare) COMPARES="${2//;/ }"; shift 2 ;;
    --keep) KEEP=(--keep "$2"); shift 2 ;;
    --*) EXTRA+=("$1" "$2"); shift 2 ;;
    *) echo "usage: $0 [--out DIR] [--arms a,b] [--seed-list 0,1] [--jobs N] [--corruptions SET] [--severities 1,3,5] [--compare 'A,B;C,D'] [--keep DIR] [--set KEY=VALUE ...]" >&2
       exit 2 ;;
  esac
done
[ -x .venv/bin/ikd ] || bash scripts/install.sh
IKD=${IKD_BIN:-.venv/bin/ikd}  # IKD_BIN: another ikd (tests, dry runs)
PY=.venv/bin/python
[ -d "$OUT" ] || { echo "no study folder $OUT (run scripts/study_shapes.sh first)" >&2; exit 1; }

# The finished final checkpoints, one per line; a run not finished is said on stderr.
CKPTS=$("$PY" - "$OUT" "$ARMS" "$SEED_LIST" <<'PY'
import json, re, sys
from pathlib import Path
import yaml
out, arms, seeds = Path(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
wanted = {int(s) for s in seeds.split(",") if s.strip()} if seeds.strip() else None
for arm in arms:
    for folder in sorted((out / arm).glob("seed*"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0)):
        seed = int(re.sub(r"\D", "", folder.name) or -1)
        if wanted is not None and seed not in wanted:
            continue
        run, name = (folder / "student", "latest.pth") if arm == "student" else (folder / "distill", "student_latest.pth")
        ckpt = run / name
        try:
            # the length the run was built with (run.json), else its preset's (runs before it recorded one)
            epochs = int(json.loads((run / "run.json").read_text()).get("epochs")
                         or yaml.safe_load((run / "preset.yaml").read_text())["train"]["epochs"])
            last = int(re.search(r"epoch_(\d+)\.pth$", ckpt.resolve(strict=True).name).group(1))
        except (OSError, KeyError, TypeError, ValueError, AttributeError):
            print(f"skipped {ckpt}: no finished run there", file=sys.stderr)
            continue
        if last != epochs:
            print(f"skipped {ckpt}: epoch {last} of {epochs} (still training?)", file=sys.stderr)
            continue
        print(ckpt)
PY
)
[ -n "$CKPTS" ] || { echo "no finished run under $OUT for arms $ARMS" >&2; exit 1; }
echo "robustness of $(echo "$CKPTS" | wc -l) checkpoints (jobs: $JOBS)"

# The transfer setting's images, once: the teacher's adversarial copy of the val split (resumable;
# "nothing to do" when made). The teacher is the main job's (scripts/run_shapes.sh).
. scripts/shared_step.sh
shared_step "$IKD" attack --preset shapes --split val ${EXTRA[@]+"${EXTRA[@]}"}

start=$(date +%s)
ARGS=(--robustness ${EXTRA[@]+"${EXTRA[@]}"})
[ -z "$CORRUPTIONS" ] || ARGS+=(--corruptions "$CORRUPTIONS")
[ -z "$SEVERITIES" ] || ARGS+=(--severities "$SEVERITIES")
running=0
failed=0
for ckpt in $CKPTS; do
  log="${ckpt%.pth}.robustness-val.log"
  echo "evaluate $ckpt (log: $log)"
  "$IKD" evaluate "$ckpt" "${ARGS[@]}" > "$log" 2>&1 &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then
    wait -n || { failed=$((failed + 1)); echo "an evaluation failed; see its log" >&2; }
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || { failed=$((failed + 1)); echo "an evaluation failed; see its log" >&2; }
  running=$((running - 1))
done
echo "robustness: $(( ($(date +%s) - start) / 60 )) min wall for $(echo "$CKPTS" | wc -l) checkpoints, $failed failed"

# The report: robustness columns per arm and every pair's paired differences, in one report.
PAIRS=()
for pair in $COMPARES; do PAIRS+=(--compare "$pair"); done
"$IKD" report "$OUT" --out "$OUT/report" "${PAIRS[@]}" ${KEEP[@]+"${KEEP[@]}"} || echo "report failed" >&2
[ "$failed" -eq 0 ]
