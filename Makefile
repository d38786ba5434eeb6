# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install extras demo test bench clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	grep -v '^torch==' requirements.txt | $(PY) -m pip install -q -r /dev/stdin
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# fairseq + ONNX extras (optional; CI runs them). Constrained by requirements.txt so torch,
# numpy, hydra and omegaconf stay at the tested versions.
extras: $(VENV)/.extras

$(VENV)/.extras: $(STAMP) requirements-extras.txt
	$(PY) -m pip install -q cython wheel
	grep -v '^torch==' requirements.txt > $(VENV)/constraints.txt
	echo "$(TORCH)" | grep -q '==' && echo "$(TORCH)" >> $(VENV)/constraints.txt || true
	$(PY) -m pip install -q --no-build-isolation -c $(VENV)/constraints.txt -r requirements-extras.txt
	touch $(VENV)/.extras

demo: install
	$(VENV)/bin/hat demo

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) benchmarks/bench_model.py

clean:
	rm -rf $(VENV) build dist *.egg-info
