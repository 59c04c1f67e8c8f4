# The two commands a newcomer needs (both idempotent; the first run builds the environment,
# later runs reuse it and the cached mmcv wheel):
#   make demo   set up, build the demo data from real H&E, run the demo pipeline, print metrics
#   make test   set up, fetch the real H&E sources the real-data tests read, run the test suite
PY := $(or $(EPSAM_VENV),.venv)/bin/python

.PHONY: setup demo test
setup:
	bash tools/setup_env.sh

demo: setup
	bash tools/run_demo.sh

test: setup
	$(PY) tools/fetch_sources.py
	$(PY) -m pytest -q tests
