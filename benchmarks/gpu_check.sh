#!/usr/bin/env bash
# The GPU check in one command (benchmarks/gpu_check.py says what it checks):
#   bash benchmarks/gpu_check.sh OUT [--smoke]
# writes OUT/gpu_check.json, OUT/gpu_check.md and OUT/gpu_check.log, within 8 minutes on one
# H200. The wheels that benchmarks/gpu_wheels.sh put in .whl/ (our pins the GPU machine
# lacks; it has no package registry) are installed first into a folder of their own that
# comes first on the path. PYTHON picks the interpreter (default python3).
set -uo pipefail
if [ $# -lt 1 ]; then
    echo "usage: bash benchmarks/gpu_check.sh OUT [--smoke]" >&2
    exit 2
fi
out=$1
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G "$repo/.whl/*.whl" >/dev/null; then
    site=$(mktemp -d /tmp/gpu-check-site.XXXXXX)
    # Wheels for another python (gpu_wheels.sh fetches the GPU machine's 3.12) are refused
    # whole: then the check runs on this python's own packages, as its JSON records.
    if "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$repo"/.whl/*.whl; then
        export PYTHONPATH="$site:$PYTHONPATH"
    else
        echo "warning: the wheels in .whl/ do not install on $("$python" -V 2>&1); running without them" >&2
    fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DRAGONFLY_TRACKING=0 PYTHONUNBUFFERED=1
cd "$repo" || exit 2
# 470 s for the check itself: the wheels and start-up take the rest of the 8 minutes.
timeout 470 "$python" benchmarks/gpu_check.py "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
