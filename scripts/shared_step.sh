# Sourced by the study scripts: `shared_step CMD...` runs a step that several copies of a script
# need (the teacher, an adversarial set) when they run side by side (--seed-list 0 and 1 in two
# processes). Only one process may hold the step's folder (core/lock.py); the others wait for it
# to end here, then run the step themselves, which then finds it done ("nothing to do").
shared_step() {
  local log status waited=0
  log=$(mktemp)
  while true; do
    # `|| status=...`: under the callers' `set -e -o pipefail` a bare failing pipeline would end
    # the script here, before the lock message is read
    status=0
    "$@" 2>&1 | tee "$log" || status=${PIPESTATUS[0]}
    if [ "$status" -eq 0 ] || ! grep -q "is in use by another" "$log"; then
      rm -f "$log"
      return "$status"
    fi
    [ "$waited" -eq 1 ] || echo "waiting for the other process to finish: $*" >&2
    waited=1
    sleep 15
  done
}
