#!/usr/bin/env bash
# Build the repository the way a robot user does: cloned into <ws>/src, `colcon build` with the
# documented --base-paths, then check the install space (share files, executables, interfaces).
# usage: tools/colcon_check.sh [WORKSPACE_DIR]   (default: a temporary directory)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WS=${1:-$(mktemp -d /tmp/motus_colcon_XXXXXX)}
VENV=${VENV:-$ROOT/.venv}
mkdir -p "$WS/src/motus-ros"
# copy the working tree (tracked + untracked, minus ignored build products)
(cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 -I{} cp --parents {} "$WS/src/motus-ros/")
cd "$WS"
export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
"$VENV/bin/colcon" build --base-paths src src/motus-ros/motus_msgs --cmake-args -DBUILD_TESTING=OFF \
  -DPython3_EXECUTABLE="$VENV/bin/python" >"$WS/colcon.log" 2>&1 || { tail -40 "$WS/colcon.log"; exit 1; }
share="$WS/install/motus_ros/share/motus_ros"
for f in package.xml launch/motus.launch.py config/robots/sim_aloha.yaml config/dds/fastdds_shm_loopback.xml; do
  [ -e "$share/$f" ] || { echo "missing in install space: share/motus_ros/$f"; exit 1; }
done
[ -x "$WS/install/motus_ros/lib/motus_ros/sim_node" ] || { echo "missing executable lib/motus_ros/sim_node"; exit 1; }
# use the install space like a user would (setup.sh), not the source tree
MOTUS_WS="$WS" env -u PYTHONPATH bash -c "cd /; . '$WS/install/setup.sh'; export AMENT_PREFIX_PATH=\"\$AMENT_PREFIX_PATH:$VENV\" ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
  '$VENV/bin/python' - <<'PY'
import motus_ros, motus_core, motus_msgs.msg
from ament_index_python.packages import get_package_share_directory
from motus_core.robot_profile import config_dir
share = get_package_share_directory('motus_ros')
assert str(config_dir()).startswith(share), (config_dir(), share)
import os
ws = os.environ['MOTUS_WS']
for mod in (motus_ros, motus_core, motus_msgs):
    assert mod.__file__.startswith(ws), f'{mod.__name__} imported from {mod.__file__}, not from the install space'
print('colcon_check: ok', share)
PY"
