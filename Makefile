# The front door: `make demo` runs the swing-up demo, `make test` runs the tests.
# Both set up .venv first (idempotent: a second run skips what is done).

PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
CLI      := $(VENV)/bin/mbrl-control
STAMP    := $(VENV)/.installed
ROBOT    ?= cartpole
DURATION ?=
MODE     ?= realtime
PLANNER  ?=
PYTEST_ARGS ?=

# Tests needing a full ROS 2 install (launch, launch_ros, the ros2 CLI and a colcon-built, sourced
# workspace) carry the ros2_install marker: `make test` (and CI) deselect them by name, `make
# test-ros2` runs them on a ROS 2 machine.
ROS2_SELECT := -m "not ros2_install"

PEERS    := .bench-peers

.PHONY: setup demo test test-ros2 warmup bench bench-peers clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py package.xml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

# The robots the tests run through the nodes: each warmed in its own process, at the same time.
WARMUP_ROBOTS ?= cartpole iiwa

warmup: setup
	$(CLI) warmup $(addprefix --robot ,$(WARMUP_ROBOTS))

demo: setup
	$(CLI) demo --robot $(ROBOT) --mode $(MODE) $(if $(DURATION),--duration $(DURATION)) $(if $(PLANNER),--planner $(PLANNER))

test: setup warmup
	$(PY) -m pytest $(ROS2_SELECT) $(PYTEST_ARGS)

test-ros2: setup
	$(PY) -m pytest -m ros2_install $(PYTEST_ARGS)

# Benchmarks (not part of the tests): each prints a table, then one JSON line.
bench: setup
	cd bench && ../$(PY) planner_latency.py && ../$(PY) planners.py && ../$(PY) estimation.py && ../$(PY) dp.py

# The libraries users would pick instead (pytorch_mppi, mbrl-lib) in a venv of their own, then
# bench/planners.py times them beside ours (bench/requirements-peers.txt says what goes in and why
# hydra-core is installed over mbrl's pin). BENCH_PEERS_ARGS: e.g. "--seeds 1 --peer-ticks 200".
BENCH_PEERS_ARGS ?=
PEERS_STAMP := $(PEERS)/.installed

bench-peers: $(PEERS_STAMP)
	cd bench && ../$(PEERS)/bin/python planners.py $(BENCH_PEERS_ARGS)

$(PEERS_STAMP): bench/requirements-peers.txt setup.py
	@test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install --quiet -r bench/requirements-peers.txt
	@echo "Installing hydra-core 1.3.2 over mbrl's pin: pip reports the conflict; expected (bench/requirements-peers.txt)"
	$(PEERS)/bin/pip install --quiet hydra-core==1.3.2 omegaconf==2.3.0
	$(PEERS)/bin/pip install --quiet --no-deps -e .
	@touch $@

clean:
	rm -rf $(VENV) $(PEERS) build install log runs .pytest_cache
