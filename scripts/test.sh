#!/usr/bin/env bash
# Set up, then run every test: unit/property/integration tests, the chapter notebooks (nbval,
# FAST mode) and the offline book build with warnings as errors. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MMBAL_FAST=1 MPLBACKEND=Agg PYTHONHASHSEED=0
exec .venv/bin/python -m pytest tests book --nbval-lax --nbval-current-env -p no:cacheprovider "$@"
