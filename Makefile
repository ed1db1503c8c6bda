# natsim: the commands people and CI use. `make help` lists them.
VENV    := .venv
BIN     := $(VENV)/bin
NATSIM  := $(BIN)/natsim
STAMP   := $(VENV)/.installed

.PHONY: help setup scenario list demo test test-fast test-rootless test-docker lint cleanup clean capacity bench image fuzz kill-test bench-replay verify-model-time wheel

help:
	@echo "make setup                 install (Debian packages if missing, .venv with natsim)"
	@echo "make scenario NAME=nat-gw  run a scenario (SPEED=K to override its time compression)"
	@echo "make list                  list scenarios, their expected outcomes and safe speeds"
	@echo "make demo [STORY=idle-pool]  narrated teaching run: three scenarios side by side"
	@echo "make capacity              the four capacity scenarios at the real numbers, plan vs actual (about 2 min)"
	@echo "make wheel                 dist/natsim-*.whl with its compiled parts, for pip install into your own project"
	@echo "make image                 the natsim Docker image (offline: a debootstrap base, host-built wheels)"
	@echo "make bench                 the userspace middlebox against kernel forwarding, side by side"
	@echo "make fuzz                  1,000,000 mutated frames through the dataplane and its fast path (FRAMES=N, SEED=N), then 20,000 mutated scenario/matrix files and captures (INPUTS=N)"
	@echo "make bench-replay          natsim replay's speed on a 1 GB synthetic capture (MB=N)"
	@echo "make verify-model-time     real clients in model time (speed 35) against real time (speed 1): verdicts and instants agree (about 9 min)"
	@echo "make kill-test             100 runs killed at random moments, then cleanup: nothing left (root)"
	@echo "make test                  unit and integration tests (needs root; Docker and rootless apart)"
	@echo "make test-docker           docker-compose.yml on a real engine (installs docker.io; root)"
	@echo "make test-rootless         natsim as an ordinary user (run it as one)"
	@echo "make test-fast             unit tests only (no root, a second or two)"
	@echo "make lint                  ruff and mypy"
	@echo "make cleanup               remove namespaces and containers left by crashed runs"
	@echo "make clean                 cleanup, then remove .venv and results/"

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh simulator/dataplane/_fastpath.c \
		simulator/dataplane/_fastpath_forward.c simulator/dataplane/_fastpath.h \
		simulator/world/_timershim.c
	@scripts/setup.sh

# NAME and SPEED reach natsim through the environment, each as one argument: a value is
# never read by the shell (`make scenario NAME='x; touch F'` names a scenario "x; touch F")
export NAME SPEED RUNS

scenario: setup
	@if [ -z "$$NAME" ]; then echo "usage: make scenario NAME=<scenario>   (make list shows them)"; exit 2; fi
	@$(NATSIM) run "$$NAME" $${SPEED:+--speed "$$SPEED"}

list: setup
	@$(NATSIM) list

CAPACITY := nat-gw-port-exhaustion nat-gw-secondary-ips hyperplane-eni-limit hyperplane-more-subnets

capacity: setup
	$(BIN)/python -m bench.capacity $(CAPACITY)

IMAGE ?= natsim:local
SUITE := $(shell . /etc/os-release 2>/dev/null && echo $$VERSION_CODENAME)

image: setup
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { \
	  echo "make image: a running Docker engine is needed (apt-get install docker.io; dockerd)"; exit 3; }
	@rm -rf build && $(BIN)/pip wheel -q --wheel-dir build/wheels . > .venv/wheels.log 2>&1 || { \
	  tail -20 .venv/wheels.log; exit 1; }
	@# libfaketime for programs in model time (simulator/world/modeltime.py): the host's Debian build,
	@# the same release as the image's base
	@mkdir -p build/faketime && cp "$$(ls /usr/lib/*/faketime/libfaketimeMT.so.1 | head -1)" \
	  build/faketime/ || { echo "make image: libfaketime is needed: apt-get install libfaketime"; exit 3; }
	@if [ -n "$(BASE)" ]; then base="$(BASE)"; \
	elif docker image inspect python:3.11-slim-bookworm >/dev/null 2>&1 || \
	     timeout 30 docker pull -q python:3.11-slim-bookworm >/dev/null 2>&1; then \
	  base=python:3.11-slim-bookworm; \
	else echo "make image: python:3.11-slim-bookworm cannot be pulled: building a local base"; \
	  scripts/base-image.sh || { echo "make image: no base image (see above)"; exit 1; }; \
	  base=natsim-base:$(SUITE); fi; \
	echo "make image: $(IMAGE) from $$base"; \
	docker build -q --build-arg BASE="$$base" -t $(IMAGE) . >/dev/null

# A wheel of natsim with the dataplane's fast path and the timer shim compiled for this
# machine, and the shipped scenarios; `pip install dist/natsim-*.whl` gives the natsim command
# and the pytest plugin (tests/integration/test_wheel.py installs it into a fresh venv).
wheel: setup
	@rm -rf dist build/lib.* build/temp.* build/bdist.* && $(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w dist . \
	  > .venv/wheel.log 2>&1 || { tail -20 .venv/wheel.log; exit 1; }
	@ls dist/natsim-*.whl

bench: setup
	@command -v iperf3 >/dev/null && command -v nft >/dev/null || { \
	  echo "make bench: installing iperf3 and nftables"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 nftables >/dev/null; }
	@$(BIN)/python -m bench.run $(BENCH_ARGS)

FRAMES ?= 1000000
SEED ?= 1

INPUTS ?= 20000

fuzz: setup
	@$(BIN)/python -m bench.fuzz --frames "$(FRAMES)" --seed "$(SEED)"
	@$(BIN)/python -m bench.fuzz --frames "$(FRAMES)" --seed "$(SEED)" --fast
	@$(BIN)/python -m bench.fuzz_inputs --count "$(INPUTS)" --seed "$(SEED)"

MB ?= 1024

bench-replay: setup
	@out=$$(mktemp /tmp/natsim-replay-XXXXXX.pcap); \
	$(BIN)/python -m bench.replay_capture "$$out" --megabytes "$(MB)"; status=$$?; \
	rm -f "$$out"; exit $$status

verify-model-time: setup
	$(BIN)/python -m bench.verify_model_time

kill-test: setup
	NATSIM_KILL_RUNS=$${RUNS:-100} $(BIN)/pytest -q tests/integration/test_trust.py -k killed_at_random

demo: setup
	@$(NATSIM) demo $${SPEED:+--speed "$$SPEED"} $${STORY:+--story "$$STORY"}

# three at a time on two cores (the integration tests mostly wait on compressed model
# time; the plugin's worlds and the runs are safe side by side: every run has its own names
# and clock), work-stealing so that the long integration tests do not end on one worker;
# TEST_JOBS=1 runs them one after the other
TEST_JOBS ?= 3
test: setup
	$(BIN)/pytest -n $(TEST_JOBS) --dist worksteal --durations=15

test-docker: setup
	$(BIN)/pytest -m docker tests/integration/test_docker.py

test-rootless: setup
	@if [ "$$(id -u)" -eq 0 ]; then echo "make test-rootless: run it as an ordinary user"; exit 2; fi
	$(BIN)/pytest -m rootless tests/integration/test_rootless.py

test-fast: setup
	$(BIN)/pytest tests/unit

lint: setup
	$(BIN)/ruff check simulator tests bench examples
	$(BIN)/mypy

cleanup: setup
	@$(NATSIM) cleanup

clean:
	@if [ -x $(NATSIM) ]; then $(NATSIM) cleanup; fi
	rm -rf $(VENV) results *.egg-info
