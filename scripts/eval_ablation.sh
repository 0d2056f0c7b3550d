#!/usr/bin/env bash
# Evaluate the finished runs of scripts/ablate_scene_mixing.sh: the audio route on val
# (mixed held-out voices, images as a new index embeds them, d8) and end to end on the val
# mosaic (300 held-out-voice clips, four tilings, tiles embedded once: single views, 8x
# cheaper than d8 and the same for every run). Skips what is already measured; re-run to
# continue. Writes runs/ablate/<name>/eval/report.json and runs/ablate/<name>/bench_e2e.json.
#
#   scripts/eval_ablation.sh [NAME ...]     (default: every finished run)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
ROOT=runs/ablate
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(all shift scale rotate none)
for name in "${names[@]}"; do
  run="$ROOT/$name"
  [ -e "$run/done" ] || { echo "== $name: not finished"; continue; }
  if [ ! -e "$run/eval/report.json" ]; then
    echo "== $name: evaluate $(date -u +%H:%M:%S)"
    "$BIN/rsia-geo" evaluate "$run/best" runs/v2_val/manifest.jsonl --split val \
      -o "$run/eval" --no-progress
  fi
  if [ ! -e "$run/bench_e2e.json" ]; then
    echo "== $name: bench_e2e $(date -u +%H:%M:%S)"
    "$BIN/python" benchmarks/bench_e2e.py --voices runs/v2_val/manifest.jsonl --clips 300 \
      --checkpoint "$run/best" --image-views single --workdir "$run/bench_e2e" \
      --tilings half-shift+L2+ov aligned+L2+ov random-offset+L2+ov half-shift+L2 \
      --out "$run/bench_e2e.json"
  fi
done
