#!/usr/bin/env bash
# The README's test command: install (idempotent, seconds when already installed), then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# pytest-xdist: one worker per core and one more (IKD_TEST_WORKERS=N to choose, 0 for one
# process), since workers often wait on their test's subprocesses and on fsync (2 quiet cores:
# 642 s with 2 workers, 597 s with 3); each test handed to the next free worker (their lengths
# differ 100-fold); one torch thread per worker (tests/conftest.py); the 15 slowest listed at the end.
exec .venv/bin/python -m pytest -q -n "${IKD_TEST_WORKERS:-$(( $(nproc) + 1 ))}" --dist worksteal --durations=15 "$@"
