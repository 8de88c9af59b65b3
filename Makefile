# motus-ros: two commands on a fresh machine (Debian 12, Python >= 3.10):
#   make demo   set everything up and run the scripted demonstrator on the simulated robot
#   make test   set everything up and run the test suite
#   make proof  record demonstrations, train a reduced Motus, evaluate it in simulation (docs/proof.md)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.motus-setup-stamp
SETUP_INPUTS := tools/setup.sh tools/build_ros2_upstream.sh setup.py motus_ros/executables.py $(wildcard requirements/*.txt) $(wildcard motus_msgs/*.txt motus_msgs/*.xml motus_msgs/msg/* motus_msgs/srv/* motus_msgs/action/*)

# DDS stays on loopback; MuJoCo renders through EGL; nothing is downloaded at run time.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export MUJOCO_GL := egl
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

EPISODES ?= 3
MODE ?= scripted
PROOF_DIR ?= runs/proof
PROOF_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup test demo proof bench bench-gpu clean distclean colcon-check

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	PYTHON=$(PYTHON) tools/setup.sh
	@touch $@

test: setup
	$(PY) -m pytest test -rs --durations=25 $(PYTEST_ARGS)

demo: setup
	$(PY) -m motus_ros.demo --mode $(MODE) --episodes $(EPISODES) --proof-dir $(PROOF_DIR)

# The closed-loop proof (hours on a CPU; each stage resumes): bench/learn_transfer_cube.py
proof: setup
	$(PY) bench/learn_transfer_cube.py --workdir $(PROOF_DIR) $(PROOF_ARGS)

bench: setup
	@for b in $(filter-out bench/learn_transfer_cube.py bench/image_reliance.py bench/encoder_probe.py,$(wildcard bench/*.py)); do echo "== $$b"; $(PY) $$b || exit 1; done  # the proof: make proof; image_reliance and encoder_probe need a trained policy

# Motus + MoLA at full size on one CUDA GPU (<= 8 min, random weights, final JSON line; docs/performance.md).
# On the lent GPU machine (no venv, no network) run tools/gpu_run.sh instead. BENCH_GPU_ARGS: e.g. --parts mola
BENCH_GPU_ARGS ?=
bench-gpu: setup
	$(PY) bench/gpu.py --device cuda $(BENCH_GPU_ARGS)

colcon-check: setup
	tools/colcon_check.sh

clean:
	rm -rf build install log .pytest_cache

distclean: clean
	rm -rf $(VENV)
