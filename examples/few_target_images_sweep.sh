#!/usr/bin/env bash
# How much does synthetic data help when real labels are scarce? Train
# target-only, direct joint and w19 with 16, 50, 200 and all real images, three
# seeds each, and compare in one table (each row: mean ± std over the seeds,
# delta to target-only with the same number of real images).
#
#   DATA=hrseg-work/data OUT=hrseg-sweep bash examples/few_target_images_sweep.sh
#
# DATA is a prepared directory (hrseg prepare gtav / cityscapes, or
# `hrseg prepare synthetic --out DATA` for the bundled procedural scenes; with
# those, add QUICK=1 to use the small CPU budget of the quick start).
set -euo pipefail
DATA=${DATA:?set DATA to a prepared data directory}
OUT=${OUT:-hrseg-sweep}
SEEDS=${SEEDS:-"0 1 2"}
COUNTS=${COUNTS:-"16 50 200 all"}
if [ "${QUICK:-0}" = 1 ]; then
    # the quick start's budget (hrseg.training.config.QUICK_BUDGET), spelled out as flags
    BUDGET=(--arch fcn8s-vgg16 --width 0.125 --pretrained none --iters "${ITERS:-500}" --lr 0.01 --batch-size 4 --crop 128x64
            --weight-width 0.125 --no-gan --device cpu)
else
    BUDGET=(--preset baseline1-target-only)   # paper budget; the scheme flag below picks the row
fi

runs=()
for n in $COUNTS; do
    for seed in $SEEDS; do
        for scheme in target-only joint w19; do
            run="$OUT/runs/$scheme-n$n-s$seed"
            few=()
            [ "$n" != all ] && few=(--target-images "$n")
            if [ ! -f "$run/summary.json" ]; then
                hrseg train "${BUDGET[@]}" --scheme "$scheme" --data "$DATA" --out "$run" --seed "$seed" "${few[@]}"
            fi
            [ -f "$run/eval/val.json" ] || hrseg eval "$run" --split val
            runs+=("$run")
        done
    done
done
hrseg report "${runs[@]}" --out "$OUT/report"
