#!/usr/bin/env bash
# Main job: set up, execute every chapter on the embedded Digits-AV data (FAST mode unless
# MMBAL_FAST=0) and build the HTML book offline into _build/html. Unchanged notebooks are not
# re-executed (jupyter-cache); a change to the mmbal package or to the committed results clears
# that cache. MPLBACKEND stays unset so the kernels draw figures inline into the pages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MMBAL_FAST=${MMBAL_FAST:-1} PYTHONHASHSEED=0
unset MPLBACKEND
src=$(find mmbal book/results -type f \( -name '*.py' -o -name '*.npz' -o -name '*.json' -o -name '*.csv' \) \
      | sort | xargs cat | sha256sum | cut -d' ' -f1)-fast$MMBAL_FAST
mkdir -p _build
if [ "$(cat _build/.mmbal-src 2>/dev/null)" != "$src" ]; then
    rm -rf _build/.jupyter_cache
fi
.venv/bin/jupyter-book build . -W -n --keep-going
echo "$src" > _build/.mmbal-src
echo "book: open _build/html/index.html"
