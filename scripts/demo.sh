#!/usr/bin/env bash
# The main job on the tiny profile, CPU only, a few minutes: synthetic data → the tiny vision
# tower's pretraining → the five training stages → evaluation on the held-out synthetic
# benchmarks → an answer about a real photo with the zoom-in selection drawn. Every step
# is a `dragonfly` subcommand.
set -euo pipefail
work=${OUT:-outputs/demo}
mkdir -p "$work"
cp params.yaml "$work/params.yaml"
cd "$work"
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}
bin=$(cd - >/dev/null && pwd)/.venv/bin

"$bin/dragonfly" prepare
"$bin/dragonfly" pretrain-vision   # the tiny tower's stand-in for CLIP pretraining; skipped when saved
for stage in general1 general2 med1 med2 med3; do
    "$bin/dragonfly" train --stage "$stage" --resume
done
"$bin/dragonfly" eval --model runs/tiny/general2/final --benchmark synth_general \
    --data data/synth/general/samples.jsonl --root data --out eval/general --no-progress
"$bin/dragonfly" eval --model runs/tiny/med3/final --benchmark synth_biomedical \
    --data data/synth/biomedical/samples.jsonl --root data --out eval/biomedical --no-progress
"$bin/python" -c "from PIL import Image; from skimage import data; Image.fromarray(data.retina()).save('retina.png')"
"$bin/dragonfly" predict --model runs/tiny/med3/final --image retina.png \
    --question "What is shown in this image?" --viz selection.png --json
echo "outputs in $work: runs/ (checkpoints, models, metrics), eval/, selection.png, mlflow.db"
