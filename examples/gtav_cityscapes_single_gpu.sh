#!/usr/bin/env bash
# GTAV + Cityscapes -> Cityscapes on one GPU: prepare shards once, train the
# paper's Table 1 rows (FCN-8s / VGG16), evaluate on Cityscapes val, draw the
# weight maps and compare everything in one table.
#
#   GTAV=/data/GTAV CITYSCAPES=/data/cityscapes OUT=/scratch/hrseg bash examples/gtav_cityscapes_single_gpu.sh
#
# GTAV: images/ and labels/ (24,966 pairs). Cityscapes: leftImg8bit/ and gtFine/.
# ImageNet weights come from torchvision's published files via torch.hub; on a
# machine without internet, put vgg16-397923af.pth in $TORCH_HOME/hub/checkpoints.
set -euo pipefail
: "${GTAV:?set GTAV to the GTAV root}" "${CITYSCAPES:?set CITYSCAPES to the Cityscapes root}"
OUT=${OUT:-hrseg-work}
DATA=$OUT/data
SEED=${SEED:-0}
TARGET_IMAGES=${TARGET_IMAGES:-}          # empty: all 2975 Cityscapes train images

# 1. Decode, resize and label-map once (parallel, resumable, atomic).
hrseg prepare gtav --root "$GTAV" --out "$DATA"
hrseg prepare cityscapes --root "$CITYSCAPES" --out "$DATA" --split train --split val

# 2. Train the rows of Table 1. Presets fix architecture, budget and GAN; flags override them.
EXTRA=()
[ -n "$TARGET_IMAGES" ] && EXTRA+=(--target-images "$TARGET_IMAGES")
for preset in baseline1-target-only joint w1 w19; do
    hrseg train --preset "$preset" --data "$DATA" --out "$OUT/runs/$preset-s$SEED" \
        --seed "$SEED" --device cuda "${EXTRA[@]}"
done

# 3. Evaluate at full label resolution (2048x1024), saving official-format predictions
#    for the w19 run and checking them with the official Cityscapes script.
for preset in baseline1-target-only joint w1 w19; do
    hrseg eval "$OUT/runs/$preset-s$SEED" --split val --device cuda
done
hrseg eval "$OUT/runs/w19-s$SEED" --split val --device cuda --save-predictions "$OUT/pred-w19" --colour
if command -v csEvalPixelLevelSemanticLabeling >/dev/null; then
    CITYSCAPES_DATASET="$CITYSCAPES" CITYSCAPES_RESULTS="$OUT/pred-w19/labelIds" csEvalPixelLevelSemanticLabeling
fi

# 4. Look at what the weighting networks select (real GTAV has no realism mask,
#    so only the pictures, not the AUC, are available here).
hrseg visualize weights "$OUT/runs/w19-s$SEED" --out "$OUT/weights-w19" --num 16
hrseg visualize predictions "$OUT/runs/w19-s$SEED" --out "$OUT/pred-panels-w19" --num 16

# 5. One Table-1 style comparison (Markdown + JSON in $OUT/report).
hrseg report "$OUT"/runs/*-s"$SEED" --out "$OUT/report"
