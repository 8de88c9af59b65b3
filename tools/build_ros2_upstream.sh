#!/usr/bin/env bash
# Build the upstream ROS 2 packages that PyPI does not carry (launch, launch_ros, ros2cli with its verbs,
# rosidl_runtime_py, composition_interfaces, control_msgs) into the venv, so that `ros2 launch`, `ros2 topic`
# and control_msgs/FollowJointTrajectory work in a pip-only environment. Idempotent (a stamp records the
# commits built). On a robot with ROS 2 from apt these packages are already installed: nothing to do.
#
# Sources, in this order:
#   1. $MOTUS_ROS2_SRC (a ros2-src.tar.gz), or ../shared/third_party/ros2/ros2-src.tar.gz next to the repository
#      (the unmodified upstream sources at the commits below, tests removed);
#   2. otherwise `git clone` of the same repositories at the same commits (needs git and network);
#   3. otherwise skip with a message: the rest of the suite works without them (the pip-only launcher
#      `motus-launch` starts the same graphs; the tests that need the real launch skip with that reason).
# usage: tools/build_ros2_upstream.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${1:-${VENV:-$ROOT/.venv}}
PACKAGES=(launch launch_xml launch_yaml launch_ros ros2launch ros2cli ros2topic ros2node ros2param ros2service
          ros2action ros2pkg ros2run ros2interface ros2lifecycle rosidl_runtime_py composition_interfaces control_msgs)
# repository  commit  (as in ../shared/third_party/ros2/README.md)
REPOS=(
  "https://github.com/ros2/launch.git 02595bafc7891d4d287667b6aa9161edf738e9f3"
  "https://github.com/ros2/launch_ros.git f9ab9371824d470bca47602bc7d277eb2217c90d"
  "https://github.com/ros2/ros2cli.git e20d2c664fc2981b0b80ebed534e5becc6fdbf34"
  "https://github.com/ros2/rosidl_runtime_py.git 3327b1dc488af514017c5446ffff12d102bbe94a"
  "https://github.com/ros2/rcl_interfaces.git f6b3741d921ef5414125091b2ccc74b863be3c24"
  "https://github.com/ros-controls/control_msgs.git 13dacdd8748264b6cd7cbbc9893c18c90e24be00"
)
STAMP="$VENV/share/motus_ros2_upstream.stamp"
WANT=$(printf '%s\n' "${REPOS[@]}" | sha1sum | cut -c1-12)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV/bin/ros2" ]; then
  echo "ros2 upstream packages: already built into $VENV"; exit 0
fi

SRC=build/ros2-src
TARBALL=${MOTUS_ROS2_SRC:-$ROOT/../shared/third_party/ros2/ros2-src.tar.gz}
rm -rf "$SRC" build/ros2-build
mkdir -p build
if [ -f "$TARBALL" ]; then
  echo "ros2 upstream packages: sources from $TARBALL"
  tar xzf "$TARBALL" -C build/
elif command -v git >/dev/null && git ls-remote https://github.com/ros2/launch.git HEAD >/dev/null 2>&1; then
  echo "ros2 upstream packages: no $TARBALL; cloning the same commits"
  mkdir -p "$SRC"
  for entry in "${REPOS[@]}"; do
    read -r url commit <<<"$entry"
    dir="$SRC/$(basename "$url" .git)"
    git init -q "$dir" && git -C "$dir" fetch -q --depth 1 "$url" "$commit" && git -C "$dir" checkout -q FETCH_HEAD
  done
else
  echo "ros2 upstream packages: SKIPPED (no $TARBALL and no network for git): 'ros2 launch' and control_msgs are" \
       "not available; use motus-launch (same graphs). Set MOTUS_ROS2_SRC=<ros2-src.tar.gz> to build them." >&2
  exit 0
fi

"$VENV/bin/python" -m pip --disable-pip-version-check -q install -r requirements/ros-upstream.txt -c requirements/constraints.txt
"$ROOT/tools/fix_ros_wheel_cmake.sh" "$VENV"
export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
# --merge-install into the venv prefix, like motus_msgs: nothing to source at run time (the wheels'
# bootstrapper puts venv/lib on the library path; site-packages and venv/bin are the venv's own).
"$VENV/bin/colcon" --log-base build/ros2-log build --base-paths "$SRC" --build-base build/ros2-build \
  --install-base "$VENV" --merge-install --packages-select "${PACKAGES[@]}" \
  --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python" >build/ros2-upstream.log 2>&1 \
  || { tail -40 build/ros2-upstream.log; echo "ros2 upstream packages: build failed (log: build/ros2-upstream.log)"; exit 1; }
echo "$WANT" >"$STAMP"
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST "$VENV/bin/python" -c "import launch, launch_ros, ros2cli, control_msgs.action" \
  && echo "ros2 upstream packages: built into $VENV (ros2 launch, ros2 topic, control_msgs)"
