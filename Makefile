# The two entry points the README opens with. torch is pinned first: on a CPU machine
# torch==2.13.0 is a local CPU wheel, while an unpinned torch would download a CUDA build.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install install-test quickstart test bench

install:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e .

install-test:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps pysc2==4.0.0  # its deps are in [test]; --no-deps keeps pygame-ce as `pygame`

quickstart: install
	$(PYTHON) -m rlfleet train configs/quickstart.yaml

test: install-test
	$(PYTHON) -m pytest -q

bench:
	$(PYTHON) benchmarks/r2d2_stateless_cartpole.py --seeds 3
