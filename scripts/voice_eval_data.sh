#!/usr/bin/env bash
# Rebuild the voiced data the model card's numbers are measured on (runs/ is not committed):
# val voiced by the held-out families (mixed: runs/v2_val; once per family: runs/v2_val_<f>),
# the training voicing (runs/v2_train, 3 voices per caption), and what Whisper's recogniser
# hears in each (transcripts.jsonl beside every manifest; the training voicing voice by voice,
# so a partial run covers every caption). Voicing is seeded per clip: the same clips as before.
# Every step is resumable: re-run to continue. Log: runs/voice_eval_data.log.
# Times on 2 cores: val ~10 min, train ~15 min, transcripts ~60 ms per clip.
set -euo pipefail
cd "$(dirname "$0")/.."
CAPS=../shared/data/ucm/captions.json
G=${RSIA_GEO:-rsia-geo}
${PYTHON:-python3} scripts/captions_manifest.py "$CAPS" -o runs/captions_train  # the text route's captions
$G data voice "$CAPS" -o runs/v2_val --splits val --no-progress
for f in espeak-ng:en-gb-scotland espeak-ng:en-029 flite:slt flite:rms festival:kal_diphone; do
  $G data voice "$CAPS" -o "runs/v2_val_${f#*:}" --splits val --families "$f" --no-progress
done
$G data transcribe runs/v2_val/manifest.jsonl --no-progress
$G data voice "$CAPS" -o runs/v2_train --splits train --voices-per-caption 3 \
  --speed-range 0.75 1.35 --pitch-range 0.65 1.6 --no-progress
# the text route needs transcripts of training voices before the per-family evaluation does;
# a first pass over every image's first caption, then the families, then the rest
$G data transcribe runs/v2_train/manifest.jsonl --no-progress --limit 1680
for m in runs/v2_val_*/manifest.jsonl; do $G data transcribe "$m" --no-progress; done
$G data transcribe runs/v2_train/manifest.jsonl --no-progress
