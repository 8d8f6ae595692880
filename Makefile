# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all bench clean

$(STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: pip takes the CPU build on disk instead of a multi-GB CUDA build
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m sdeflow.cli demo --out outputs --run runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m pip install -q --no-deps k-diffusion  # its sampling module only; torchsde comes with [bench]
	$(PY) benchmarks/oracle.py --markdown --out docs/oracle_results.jsonl
	$(PY) benchmarks/likelihood.py --markdown --out docs/likelihood_results.jsonl
	$(PY) benchmarks/solvers.py --markdown --out docs/solvers_results.jsonl
	cd benchmarks && ../$(PY) train_throughput.py --markdown --out ../docs/throughput_results.jsonl

clean:
	rm -rf $(VENV) outputs runs .pytest_cache
