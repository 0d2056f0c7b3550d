#!/usr/bin/env bash
# What each part of scene mixing gives: the v0.3.0 recipe (8 plain + 8 mixed views, the last
# two backbone stages fine-tuned on cached trunk activations) with every part (all), with one
# part at a time (shift only, scale only, rotation only) and with none (no mixed views), the
# same seed, clips and epochs for every run.
#
#   scripts/ablate_scene_mixing.sh [AUDIO_CACHE_DIR]
#
# AUDIO_CACHE_DIR: a run's cache folder holding the Whisper features of runs/v2_train and
# runs/v2_val for this seed (e.g. runs/v4_audio/cache); they are hard-linked, not recomputed.
# The first run writes the plain views' trunk cache, which the others hard-link. Resumable:
# re-run to continue (finished runs are skipped, a killed one resumes at its last epoch).
# Evaluate each with: rsia-geo evaluate runs/ablate/<name>/best runs/v2_val/manifest.jsonl
# --split val, and benchmarks/bench_e2e.py --checkpoint runs/ablate/<name>/best.
set -euo pipefail
cd "$(dirname "$0")/.."
RSIA=${RSIA:-.venv/bin/rsia-geo}
AUDIO_CACHE=${1:-}
EPOCHS=${EPOCHS:-16}
SEED=${SEED:-1}
ROOT=runs/ablate
link_from() {  # link_from SRC_DIR DEST_DIR PATTERN
  for f in "$1"/$3; do
    [ -e "$f" ] || continue
    [ -e "$2/$(basename "$f")" ] || ln "$f" "$2/"
  done
}
run() {
  name=$1; shift
  out="$ROOT/$name"
  if [ -e "$out/done" ]; then echo "== $name: done"; return; fi
  mkdir -p "$out/cache"
  [ -n "$AUDIO_CACHE" ] && link_from "$AUDIO_CACHE" "$out/cache" "*_audio_*"
  link_from "$ROOT/all/cache" "$out/cache" "*_tokens_trunk*"
  echo "== $name: $(date -u +%H:%M:%S) start"
  "$RSIA" train runs/v2_train/manifest.jsonl runs/v2_val/manifest.jsonl -o "$out" \
    --model alac-efficientnet-lite0-whisper --epochs "$EPOCHS" --lr 3e-4 --views 8 \
    --finetune-stages 2 --backbone-lr 0.1 --audio-augment --threads 2 --no-progress \
    --seed "$SEED" "$@"
  touch "$out/done"
  echo "== $name: $(date -u +%H:%M:%S) done"
}
run all --mix-views 8
run shift --mix-views 8 --mix-scale 1 1 --mix-no-rotate
run scale --mix-views 8 --mix-no-shift --mix-no-rotate
run rotate --mix-views 8 --mix-no-shift --mix-scale 1 1
run none --mix-views 0
