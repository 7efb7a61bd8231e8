#!/usr/bin/env bash
# The longer tiny run of docs/ablations.md ("It learns"), ~25 min on 2 CPU cores: 800
# synthetic training images, the pretrained tiny tower, then general1 (200 steps) and
# general2 (1500 steps) for Baseline-1, Dragonfly with the paper's selection rule and
# Dragonfly keeping the least similar tiles, evaluated on the held-out synthetic test split,
# plus the zoom recall of both Dragonfly models. Not part of CI.
#
# VARIANTS (space-separated ablation names) and SEEDS change what runs; seed 0 writes to
# ablation/, seed N to ablation_seedN/. The controls of docs/ablations.md:
#   VARIANTS="dragonfly_random baseline3 dragonfly_index_block" SEEDS="0 1" scripts/long_run.sh
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
variants=${VARIANTS:-baseline1 dragonfly_region dragonfly_least_similar}
for seed in ${SEEDS:-0}; do
    out=ablation
    [ "$seed" = 0 ] || out=ablation_seed$seed
    args=()
    for variant in $variants; do args+=(--variant "$variant"); done
    "$bin/dragonfly" ablate --out "$out" --seed "$seed" --no-progress "${args[@]}" \
        stages.general1.max_steps=200 stages.general2.max_steps=1500 stages.general2.epochs=20
    for variant in $variants; do
        case $variant in
            baseline*) ;;  # no selection to measure
            *) "$bin/dragonfly" zoom-recall --model "$out/$variant/general2/final" --images 64 ;;
        esac
    done
    echo "tables in $work/$out/ablation.md"
done
