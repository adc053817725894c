#!/usr/bin/env bash
# Create .venv and install the pinned stack + mmbal (editable). Re-running is a no-op unless
# requirements.txt or pyproject.toml changed (a hash of both is kept in .venv/.mmbal-setup).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
stamp=.venv/.mmbal-setup
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import mmbal" 2>/dev/null; then
    exit 0
fi
echo "setup: installing the pinned stack into .venv (a few minutes the first time)"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
echo "$want" > "$stamp"
