#!/usr/bin/env bash
# The main job at this stage: build the tiny model, then ask it about a real photo
# (scikit-image's retina fundus, shipped with the package: no download).
set -euo pipefail
out=${OUT:-outputs/demo}
mkdir -p "$out"
.venv/bin/python -c "from PIL import Image; from skimage import data; Image.fromarray(data.retina()).save('$out/retina.png')"
.venv/bin/dragonfly init "$out/model" --profile tiny
.venv/bin/dragonfly predict --model "$out/model" --image "$out/retina.png" \
    --question "What is shown in this image?" --viz "$out/selection.png" --json
echo "selected tiles drawn in $out/selection.png"
