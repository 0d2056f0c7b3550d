#!/usr/bin/env bash
# What each part of scene mixing gives: shift only, scale only, rotation only (8 mixed views
# each, the v0.3.0 recipe otherwise). Needs the v0.2.0 run's caches in runs/v2_run/cache (the
# voicings and caches of docs/model_card.md); each run reuses them through hard links and adds
# its own mixed-view cache. Resumable: re-run to continue. About 25 min per run on 2 cores.
# Evaluate each with: rsia-geo evaluate runs/<name>/best runs/v2_val/manifest.jsonl --split val
# and benchmarks/bench_e2e.py --checkpoint runs/<name>/best.
set -euo pipefail
cd "$(dirname "$0")/.."
run() {
  name=$1; shift
  mkdir -p "runs/$name/cache"
  for f in runs/v2_run/cache/*.safetensors; do
    [ -e "runs/$name/cache/$(basename "$f")" ] || ln "$f" "runs/$name/cache/"
  done
  rsia-geo train runs/v2_train/manifest.jsonl runs/v2_val/manifest.jsonl -o "runs/$name" \
    --model alac-efficientnet-lite0-whisper --epochs 20 --lr 3e-4 --views 8 --finetune-stages 2 \
    --backbone-lr 0.1 --audio-augment --threads 2 --no-progress --mix-views 8 "$@"
}
run v3_shift --mix-scale 1 1 --mix-no-rotate
run v3_scale --mix-no-shift --mix-no-rotate
run v3_rotate --mix-no-shift --mix-scale 1 1
