#!/usr/bin/env bash
# Run bench/gpu.py on a machine that has CUDA torch but no network (the lent GPU machine):
# install the wheels in tools/gpu_wheels/ (what that machine's Python lacks: diffusers) into a
# private target directory, put it on PYTHONPATH, check the imports, then run the benchmark.
#
#   tools/gpu_run.sh [bench/gpu.py arguments ...]          e.g. tools/gpu_run.sh --out "$OUT/bench_gpu.json"
#
# Environment: PYTHON (default python3), GPU_SITE (default /tmp/motus_gpu_site).
# Nothing is fetched: pip runs with --no-index on the carried files only, with --no-deps (each wheel's
# needs are already on that machine; bench/gpu.py says exactly what is missing if not).
set -u
cd "$(dirname "$0")/.." || exit 3
PY=${PYTHON:-python3}
SITE=${GPU_SITE:-/tmp/motus_gpu_site}

shopt -s nullglob
wheels=(tools/gpu_wheels/*.whl)
if [ ${#wheels[@]} -eq 0 ]; then
    echo "gpu_run: no wheels in tools/gpu_wheels/ (is the working tree complete?)" >&2
    exit 3
fi
# Install only what differs from the machine's own: a wheel whose exact version is installed is skipped;
# one of another version goes into $SITE, which comes first on PYTHONPATH.
todo=()
for w in "${wheels[@]}"; do
    base=$(basename "$w")
    name=$(echo "$base" | cut -d- -f1)
    version=$(echo "$base" | cut -d- -f2)
    have=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null)
    if [ "$have" = "$version" ]; then
        echo "gpu_run: $name $have is installed here; not installing $base"
    else
        echo "gpu_run: $name ${have:-absent} here; installing $base"
        todo+=("$w")
    fi
done
if [ ${#todo[@]} -gt 0 ]; then
    echo "gpu_run: installing ${todo[*]} into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
        --upgrade --target "$SITE" "${todo[@]}" || { echo "gpu_run: pip install of the carried wheels failed" >&2; exit 3; }
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
exec "$PY" bench/gpu.py "$@"
