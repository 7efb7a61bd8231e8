#!/usr/bin/env bash
# Download into .whl/ the wheels the GPU check needs on the GPU machine, which has no
# package registry (benchmarks/README.md, "GPU check"); gpu_check.sh installs them there.
#   bash benchmarks/gpu_wheels.sh
# Versions come from requirements.lock. Which packages: those the check imports (the smoke
# run's processes, traced) that the machine's image lacks, and those it has at another
# version than our pins. The machine's list: /work/.library/device/KINDS.md (2026-11-17).
# .whl/ is git-ignored; it travels with the device call through `carry`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
# Not on the machine: the data stack (datasets, pandera), grimp (the pipeline's code
# fingerprint), and huggingface-hub 2's HTTP stack.
missing="datasets dill multiprocess pandera pydantic pydantic-core typeguard typing-inspection annotated-types
grimp httpx2 httpcore2 h2 hpack hyperframe truststore"
# On the machine at another version: transformers 5.17, huggingface-hub 1.33, tokenizers
# 0.23.2; and, small, at a version nobody has read there: filelock and wrapt (our code's),
# typing-extensions (pydantic needs >= 4.16) and regex (transformers needs >= 2025.10.22).
# Not brought: pyarrow (datasets needs >= 24; 40 MiB), so the check records its version.
different="transformers huggingface-hub tokenizers filelock wrapt typing-extensions regex"
pins=()
for name in $missing $different; do
    pattern="^${name//[-_]/[-_]}=="
    pin=$(grep -iE "$pattern" "$repo/requirements.lock") || { echo "no pin for $name in requirements.lock" >&2; exit 1; }
    pins+=("$pin")
done
rm -rf "$repo/.whl"
mkdir -p "$repo/.whl"
# The machine's python is CPython 3.12 on x86-64 Linux (glibc 2.39); pip matches each tag exactly.
platforms=()
for tag in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 \
    manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$repo/.whl" "${pins[@]}"
size=$(du -sb "$repo/.whl" | cut -f1)
echo "$(ls "$repo/.whl" | wc -l) wheels, $((size / 1024 / 1024)) MiB in .whl/"
if [ "$size" -gt $((60 * 1024 * 1024)) ]; then
    echo "over the 64 MiB a device call carries (with the working tree): drop one" >&2
    exit 1
fi
