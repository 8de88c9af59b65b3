#!/usr/bin/env bash
# Set up the development environment in .venv (idempotent; `make setup` calls it when inputs change):
# Python venv with pinned torch (CPU build here), ROS 2 Kilted wheels, the ML/sim/data stack,
# motus_msgs built with rosidl and installed into the venv, and this package (editable).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}

log() { printf '\n==> %s\n' "$*"; }

"$PYTHON" - <<'PY' || { echo "Python >= 3.10 required (found $($PYTHON --version 2>&1))"; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

# MuJoCo renders offscreen through EGL (Mesa). Present on the project's machines; install if missing.
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Mesa EGL for offscreen rendering"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri
  else
    echo "warning: libEGL not found; install libegl1 libegl-mesa0 libgl1-mesa-dri for the simulator's cameras" >&2
  fi
fi

# pyrealsense2 (the camera node without realsense2_camera) links libusb-1.0.
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing libusb-1.0 for pyrealsense2"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0
  else
    echo "warning: libusb-1.0 not found; install libusb-1.0-0 for the RealSense camera node (pyrealsense2)" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install pip==24.3.1 2>&1 | grep -v "is ignored" || true

log "installing torch (requirements/torch.txt)"
"${PIP[@]}" install -r requirements/torch.txt 2>&1 | grep -v "is ignored" || true
log "installing ROS 2 wheels and the Python stack (pinned, constraints.txt)"
"${PIP[@]}" install -r requirements/ros.txt -r requirements/main.txt -c requirements/constraints.txt 2>&1 | grep -v "is ignored" || true
"${PIP[@]}" install --no-deps -r requirements/nodeps.txt 2>&1 | grep -v "is ignored" || true
"$VENV/bin/python" -c "import torch, rclpy, mujoco, diffusers, transformers, rosbags, av" \
  || { echo "setup: the Python environment is incomplete (see pip output above)"; exit 1; }

log "patching the ROS wheels' CMake exports for this venv"
tools/fix_ros_wheel_cmake.sh "$VENV"

log "building motus_msgs (rosidl) into the venv"
export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
mkdir -p build
cmake -S motus_msgs -B build/motus_msgs -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
  -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF >build/motus_msgs.configure.log 2>&1 \
  || { cat build/motus_msgs.configure.log; exit 1; }
cmake --build build/motus_msgs -j"$(nproc)" >build/motus_msgs.build.log 2>&1 || { tail -50 build/motus_msgs.build.log; exit 1; }
cmake --install build/motus_msgs >/dev/null

log "building the upstream launch / launch_ros / ros2cli / control_msgs into the venv (tools/build_ros2_upstream.sh)"
VENV="$VENV" tools/build_ros2_upstream.sh "$VENV"

log "installing motus_ros + motus_core (editable)"
"${PIP[@]}" install --no-deps --no-build-isolation -e . 2>&1 | grep -v "is ignored" || true

ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST "$VENV/bin/python" -c "import motus_msgs.msg, motus_ros, motus_core; print('setup: ok')"
