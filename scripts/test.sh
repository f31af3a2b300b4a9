#!/usr/bin/env bash
# The README's test command: install (idempotent, seconds when already installed), then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# One pytest worker per core (pytest-xdist; IKD_TEST_WORKERS=0 runs in one process), each test
# handed to the next free worker (the tests' lengths differ 100-fold), one torch thread per worker
# (tests/conftest.py); the 15 slowest tests are listed at the end.
exec .venv/bin/python -m pytest -q -n "${IKD_TEST_WORKERS:-auto}" --dist worksteal --durations=15 "$@"
