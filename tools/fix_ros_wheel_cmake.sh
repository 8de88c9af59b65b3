#!/usr/bin/env bash
# The ros-*-msgs wheels on PyPI ship CMake export files that hard-code the include
# directories of the machine that built the wheels (/opt/python/cp3XX-cp3XX/...).
# CMake rejects imported targets whose include directories do not exist, so building
# an interface package against the wheels fails. Point those paths at this venv.
# Idempotent; rerun after installing or upgrading any ros-* wheel.
set -euo pipefail
prefix="${1:?usage: fix_ros_wheel_cmake.sh VENV_PREFIX}"
py="$prefix/bin/python"
py_include=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_include=$("$py" -c 'import numpy; print(numpy.get_include())')
mapfile -t files < <(grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+' "$prefix/share" --include='*.cmake' 2>/dev/null || true)
for f in "${files[@]}"; do
  sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${np_include}#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${py_include}#g" "$f"
done
left=$(grep -rl '/opt/python/' "$prefix/share" --include='*.cmake' 2>/dev/null | wc -l || true)
echo "fix_ros_wheel_cmake: patched ${#files[@]} files; ${left} unpatched references left"
[ "$left" -eq 0 ]
