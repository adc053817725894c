#!/usr/bin/env bash
# The GPU check behind the README's GPU numbers: bench/gpu_step.py at CREMA-D ResNet-18 shapes (fp32 eager against
# bf16 + channels_last (+ compile), the cached loader with 0/4/8 workers), then two short MLB runs on a CREMA-D
# cache (fp32, then bf16 + channels_last) and their time per epoch.
#   bash bench/gpu_check.sh CACHE OUT          # CACHE: a CREMA-D cache (bench/gpu_step.py --fabricate writes one)
# DEVICE (default cuda), PY (python3), STEPS (20), WARMUP (5), COMPILE (--compile; empty: none), EPOCHS (4) and
# BATCH (16) change the defaults.
set -euo pipefail
cache=$1 out=$2 device=${DEVICE:-cuda} py=${PY:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}   # mmbal from this checkout, installed or not
$py bench/gpu_step.py --tables cremad_resnet18 --device "$device" --steps "${STEPS:-20}" --warmup "${WARMUP:-5}" ${COMPILE---compile} \
    --cache "$cache" --workers 0,4,8 --loader-batches 5 2>&1 | grep --line-buffered -v Warning | tee "$out/bench.txt"
train=(-m mmbal train --dataset cremad --data-root "$cache" --data-opt fold=0 --encoder resnet18 --balancer mlb
       --alpha 0.5 --beta-max 10 --optimizer adam --lr 1e-3 --weight-decay 1e-4 --schedule constant
       --batch-size "${BATCH:-16}" --epochs "${EPOCHS:-4}" --seed 109 --device "$device" --no-progress)
$py "${train[@]}" --out "$out/mlb_fp32.json" > "$out/mlb_fp32.txt" 2>&1
$py "${train[@]}" --amp --channels-last --out "$out/mlb_bf16_cl.json" > "$out/mlb_bf16_cl.txt" 2>&1
$py - "$out" <<'EOF'
import json, sys
runs = {k: json.load(open(f"{sys.argv[1]}/mlb_{k}.json")) for k in ("fp32", "bf16_cl")}
per_epoch = {}
for k, r in runs.items():
    t = [h["seconds"] for h in r["history"]]
    per_epoch[k] = (t[-1] - t[0]) / (len(t) - 1)            # epochs after the first (warm-up, cuDNN autotuning)
    print(f"MLB {k:<8} {len(t)} epochs, {per_epoch[k]:.2f} s/epoch after the first, first {t[0]:.2f} s, "
          f"test mm acc {r['test']['mm']['accuracy']:.3f}, steps {len(r['trace']['step'])}")
print(f"MLB run time ratio fp32 / bf16+channels_last = {per_epoch['fp32'] / per_epoch['bf16_cl']:.2f}x")
EOF
