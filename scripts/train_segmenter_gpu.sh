#!/usr/bin/env bash
# Train the learned segmenter on one GPU: phantoms generated on the machine, two network
# variants trained side by side on the same cache (A: UNet at half resolution; B: the same plus
# a full-resolution refinement convolution), each stopped by a time budget.
#
#   OUT=runs/segmenter_gpu bash scripts/train_segmenter_gpu.sh
#
# Sizes (environment): N_VOL=800 phantoms, STEPS=1500, BATCH=4, BUDGET=200 s per variant,
# WORKERS=16 processes, DATA_SEED=11 (never the held-out seed 7), PY=python3, DEADLINE=380 s:
# the training budget shrinks so that everything ends by then.
# Writes $OUT/A and $OUT/B (segmenter.safetensors, segmenter.json, metrics.jsonl).
set -euo pipefail
: "${OUT:?set OUT to the output folder}"
N_VOL=${N_VOL:-800}
STEPS=${STEPS:-1500}
BATCH=${BATCH:-4}
BUDGET=${BUDGET:-200}
WORKERS=${WORKERS:-16}
DATA_SEED=${DATA_SEED:-11}
PY=${PY:-python3}
WORK=${WORK:-/tmp/rgct_segmenter}
DEADLINE=${DEADLINE:-380}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p "$WORK" "$OUT"
start=$(date +%s)
echo "synth $N_VOL volumes"
rm -rf "$WORK/data"
$PY -m rgct.cli synth --out "$WORK/data" --num-volumes "$N_VOL" --seed "$DATA_SEED" \
    --valid-fraction 0 --workers "$WORKERS" 2>&1 | tail -n 1
echo "synth done after $(( $(date +%s) - start )) s"
common=(--data "$WORK/data" --cache-dir "$WORK/cache" --steps "$STEPS" --batch-size "$BATCH"
        --save-every 250 --log-every 25)
$PY scripts/train_segmenter.py "${common[@]}" --out "$WORK/warm" --steps 1 \
    --prepare-workers "$WORKERS" --max-seconds 1 2>&1 | tail -n 1
elapsed=$(( $(date +%s) - start ))
left=$(( DEADLINE - elapsed - 30 ))
if [ "$left" -lt "$BUDGET" ]; then BUDGET=$left; fi
if [ "$BUDGET" -lt 10 ]; then echo "no time left to train ($elapsed s used)"; exit 1; fi
common+=(--max-seconds "$BUDGET")
echo "cache done after $elapsed s; training budget $BUDGET s per variant"
half=$(( WORKERS / 2 - 1 ))
$PY scripts/train_segmenter.py "${common[@]}" --out "$WORK/A" --workers "$half" \
    > "$WORK/A.log" 2>&1 &
pid_a=$!
$PY scripts/train_segmenter.py "${common[@]}" --out "$WORK/B" --workers "$half" \
    --set refine_channels=8 > "$WORK/B.log" 2>&1 &
pid_b=$!
status=0
wait "$pid_a" || status=1
wait "$pid_b" || status=1
for v in A B; do
    mkdir -p "$OUT/$v"
    tail -n 3 "$WORK/$v.log"
    for f in segmenter.safetensors segmenter.json metrics.jsonl; do
        if [ -f "$WORK/$v/$f" ]; then cp "$WORK/$v/$f" "$OUT/$v/$f"; fi
    done
done
echo "all done after $(( $(date +%s) - start )) s (status $status)"
exit "$status"
