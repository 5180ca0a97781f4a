#!/usr/bin/env bash
# The same workflow as gtav_cityscapes_single_gpu.sh, training on several GPUs
# of one machine with torchrun (DistributedDataParallel). The batch size is per
# domain and per process, so N GPUs see N times the images per iteration.
#
#   GTAV=/data/GTAV CITYSCAPES=/data/cityscapes OUT=/scratch/hrseg NGPU=4 bash examples/gtav_cityscapes_torchrun.sh
set -euo pipefail
: "${GTAV:?set GTAV to the GTAV root}" "${CITYSCAPES:?set CITYSCAPES to the Cityscapes root}"
OUT=${OUT:-hrseg-work}
DATA=$OUT/data
NGPU=${NGPU:-$(nvidia-smi -L | wc -l)}
SEED=${SEED:-0}

hrseg prepare gtav --root "$GTAV" --out "$DATA" --workers 16
hrseg prepare cityscapes --root "$CITYSCAPES" --out "$DATA" --split train --split val --workers 16

for preset in baseline1-target-only joint w1 w19 baseline2-target-only pspnet-w1; do
    torchrun --standalone --nproc_per_node="$NGPU" -m hrseg train --preset "$preset" \
        --data "$DATA" --out "$OUT/runs/$preset-s$SEED" --seed "$SEED" --workers 4
    # evaluation is cheap: one process is enough
    hrseg eval "$OUT/runs/$preset-s$SEED" --split val --device cuda
done

# An interrupted run continues exactly where it stopped:
#   torchrun --standalone --nproc_per_node="$NGPU" -m hrseg train --resume "$OUT/runs/w19-s$SEED"

hrseg visualize weights "$OUT/runs/w19-s$SEED" --out "$OUT/weights-w19" --num 16
hrseg report "$OUT"/runs/*-s"$SEED" --out "$OUT/report"
