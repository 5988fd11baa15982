#!/usr/bin/env bash
# DnCNN from 5 real pairs per camera: real pairs only, synthesized pairs only, and both mixed (docs/adapt.md).
#
# SUBSETS is adapt_subsets.py's output (--pairs 5 --seeds 0 --scenes 40) and ADAPTED the model `adapt` made from the
# same subset. "real" trains on the real pairs; "synth" on noise ADAPTED draws on their clean images and on the 40
# clean simulator scenes; "mixed" on both: each real patch keeps its real partner with probability 0.5, the scenes
# are synthesized; "real+scenes" keeps every real partner and synthesizes the scenes only. Every run validates on
# scenes held out of the subset's train/ and is scored on its test/. SOURCES picks the sources (default: all four);
# EXTRA another folder of clean images in place of the 40 scenes; SHARE the mixed runs' real share (0.5).
# Prints one tab-separated row per run: set, source, steps, seed, PSNR, SSIM, noisy PSNR, best validation PSNR.
#
#     bash docs/studies/mixed_denoiser.sh SUBSETS polyu ADAPTED WORK "800 4000" "0 1"
set -euo pipefail
SUBSETS=${1:?usage: mixed_denoiser.sh SUBSETS SET ADAPTED WORK [STEPS] [SEEDS]}
SET=${2:?} ADAPTED=${3:?} WORK=${4:?}
STEPS=${5:-800} SEEDS=${6:-0} SOURCES=${SOURCES:-real synth mixed real+scenes} SHARE=${SHARE:-0.5}
DATA="$SUBSETS/$SET-k5-s0" SCENES=${EXTRA:-$SUBSETS/scenes-40}
mkdir -p "$WORK"
for steps in $STEPS; do
  for seed in $SEEDS; do
    for source in $SOURCES; do
      run="$WORK/$SET-$source-$steps-s$seed"
      case $source in
        real) noise=(--noise real) ;;
        synth) noise=(--noise "$ADAPTED" --extra-clean "$SCENES") ;;
        mixed) noise=(--noise "$ADAPTED" --extra-clean "$SCENES" --real-share "$SHARE") ;;
        real+scenes) noise=(--noise "$ADAPTED" --extra-clean "$SCENES" --real-share 1) ;;
      esac
      [ -d "$run/best" ] || nmflowgan train-denoiser "${noise[@]}" --data "$DATA" --preset small --steps "$steps" \
          --val-every 100 --seed "$seed" --out "$run" --device cpu --quiet --overwrite > "$run.log" 2>&1
      val=$(sed -n 's/.*best validation PSNR \([0-9.]*\).*/\1/p' "$run.log")  # empty, not an exit, if absent
      nmflowgan eval-denoiser --checkpoint "$run" --data "$DATA" --split test --device cpu --json --quiet \
          | python -c "import json, sys; o = json.load(sys.stdin)['overall']; print('\t'.join(map(str, [
              '$SET', '$source', $steps, $seed, round(o['psnr'], 2), round(o['ssim'], 4), round(o['noisy_psnr'], 2),
              '$val'])))"
    done
  done
done
