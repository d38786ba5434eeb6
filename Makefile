# Two commands on a fresh machine: `make quick` (a first look, about 2 minutes) or `make demo`
# (the main job), and `make test`. Everything installs into .venv; call `.venv/bin/hat` (or
# `source .venv/bin/activate`, then `hat`).
PYTHON ?= python3
VENV ?= .venv
# The torch build and the index it comes from, e.g. for CUDA:
#   make install TORCH=torch==2.13.0 TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_CHOICE := $(VENV)/.torch

.PHONY: install extras quick demo test bench clean FORCE

install: $(STAMP)

# Rewritten only when TORCH or TORCH_INDEX change, so a new choice reinstalls and the same one does not.
$(TORCH_CHOICE): FORCE
	@mkdir -p $(VENV)
	@echo "$(TORCH) $(TORCH_INDEX)" | cmp -s - $@ || echo "$(TORCH) $(TORCH_INDEX)" > $@

$(STAMP): requirements.txt pyproject.toml $(TORCH_CHOICE)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	grep -v '^torch==' requirements.txt | $(PY) -m pip install -q -r /dev/stdin
	$(PY) -m pip uninstall -q -y hat 2>/dev/null || true  # this package's name before it became hat-nas
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

quick: install
	$(VENV)/bin/hat demo --quick

demo: install
	$(VENV)/bin/hat demo

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) benchmarks/bench_model.py

clean:
	rm -rf $(VENV) build dist *.egg-info
