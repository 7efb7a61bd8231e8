#!/usr/bin/env bash
# The main job on the tiny profile, CPU only, a few minutes: synthetic data → the tiny vision
# tower's pretraining → the five training stages → evaluation on the held-out synthetic
# benchmarks → an answer about a real photo with the zoom-in selection drawn. Every step
# runs inside the Prefect flow `dragonfly-pipeline` (flows/dragonfly_pipeline.py).
set -euo pipefail
work=${OUT:-outputs/demo}
mkdir -p "$work"
cp params.yaml "$work/params.yaml"
cd "$work"
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}
repo=$(cd - >/dev/null && pwd)
bin=$repo/.venv/bin

# The whole pipeline as one Prefect flow (ephemeral server): prepare → tower → five stages →
# evaluation → registration; it prints the report (metrics beside chance, registry aliases).
export PREFECT_HOME=${PREFECT_HOME:-$PWD/.prefect}
# The ephemeral server's first start creates its database; on a busy 2-core machine that can
# take longer than Prefect's default 20 s, which fails the run before it starts.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-120}
"$bin/python" "$repo/flows/dragonfly_pipeline.py" --profile tiny
"$bin/python" -c "from PIL import Image; from skimage import data; Image.fromarray(data.retina()).save('retina.png')"
"$bin/dragonfly" predict --model models:/dragonfly-med@champion --image retina.png \
    --question "What is shown in this image?" --viz selection.png --json
echo "outputs in $work: runs/ (checkpoints, models, metrics), eval/, selection.png, mlflow.db"
echo "MLflow UI: $bin/mlflow ui --backend-store-uri sqlite:///$PWD/mlflow.db --host 127.0.0.1"
