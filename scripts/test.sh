#!/usr/bin/env bash
# The README's test command: install (idempotent, seconds when already installed), then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest -q "$@"
