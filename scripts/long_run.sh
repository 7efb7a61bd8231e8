#!/usr/bin/env bash
# The longer tiny run of docs/ablations.md ("It learns"), ~25 min on 2 CPU cores: 800
# synthetic training images, the pretrained tiny tower, then general1 (200 steps) and
# general2 (1500 steps) for Baseline-1, Dragonfly with the paper's selection rule and
# Dragonfly keeping the least similar tiles, evaluated on the held-out synthetic test split,
# plus the zoom recall of both Dragonfly models. Not part of CI.
set -euo pipefail
work=${OUT:-outputs/long}
repo=$(pwd)
bin=$repo/.venv/bin
mkdir -p "$work"
# Same params as the repository, with 5x the synthetic training images.
"$bin/python" - "$repo/params.yaml" "$work/params.yaml" <<'PY'
import sys, yaml
params = yaml.safe_load(open(sys.argv[1]))
for synth in params["data"]["synth"]:
    synth["n_train"] = 800
yaml.safe_dump(params, open(sys.argv[2], "w"), sort_keys=False)
PY
cd "$work"
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}
"$bin/dragonfly" prepare --mixture tiny_general
"$bin/dragonfly" pretrain-vision
"$bin/dragonfly" ablate --out ablation --no-progress \
    --variant baseline1 --variant dragonfly_region --variant dragonfly_least_similar \
    general1.max_steps=200 general2.max_steps=1500 general2.epochs=20
for variant in dragonfly_region dragonfly_least_similar; do
    "$bin/dragonfly" zoom-recall --model "ablation/$variant/general2/final" --images 64
done
echo "tables in $work/ablation/ablation.md"
