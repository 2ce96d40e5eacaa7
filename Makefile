SHELL := /bin/bash
# robustlearn: two commands, `make reproduce` and `make test`.
# Both create .venv when it is missing. PyTorch is pinned first (TORCH), so the package's looser
# `torch>=2.2` requirement never pulls a second, multi-GB build. Elsewhere, pick a build with e.g.
#   make test TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
PIP    := $(BIN)/python -m pip install --quiet
ARGS   ?=
# notebooks run one at a time: in parallel, each kernel's torch threads fight for the cores
# (on 2 cores the tutorials took about 6 minutes two at a time, 2 minutes one at a time)
NB_WORKERS ?= 1
# folders whose files nbdev-export / nbdev-clean must leave untouched
SYNCED := nbs tutorials robustlearn

.PHONY: reproduce test sync-check docs-check lab docs outputs bench bench-mtp claim-times clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core-installed: pyproject.toml | $(BIN)/python
	$(PIP) $(TORCH)
	$(PIP) -e .
	touch $@

# seqeval (viraal's slot F1) is an sdist whose setup pulls the newest setuptools_scm, which no longer builds it:
# give it an older one and build it without isolation
SEQEVAL := $(PIP) setuptools "setuptools_scm<9" wheel && $(PIP) --no-build-isolation "seqeval>=1.2"

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(PIP) $(TORCH)
	$(SEQEVAL)
	$(PIP) -e ".[dev]"
	touch $@ $(VENV)/.core-installed

## reproduce: run every registered claim (quick preset, CPU unless CUDA is present) and print the table
reproduce: $(VENV)/.core-installed
	$(BIN)/robustlearn reproduce $(ARGS)

## test: notebooks clean and in sync with the library, the docs build, every notebook runs, then pytest
test: $(VENV)/.dev-installed sync-check docs-check
	$(BIN)/nbdev-test --n-workers $(NB_WORKERS) --timing
	$(BIN)/nbdev-test tutorials --n-workers $(NB_WORKERS) --timing
	$(BIN)/python -m pytest -q tests/test_device.py --device fake
	$(BIN)/python -m pytest -q --ignore=tests/test_docs.py

## docs-check: the website up to Quarto's rendering (nbdev-proc-nbs, every page, an API entry per exported function)
docs-check: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -q tests/test_docs.py

sync-check: $(VENV)/.dev-installed
	@before=$$(find $(SYNCED) -type f -not -path '*/.ipynb_checkpoints/*' -not -path '*/__pycache__/*' | sort | xargs sha1sum); \
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean && $(BIN)/nbdev-clean --fname tutorials; \
	after=$$(find $(SYNCED) -type f -not -path '*/.ipynb_checkpoints/*' -not -path '*/__pycache__/*' | sort | xargs sha1sum); \
	if [ "$$before" != "$$after" ]; then \
	  echo "nbdev-export / nbdev-clean changed these files (library out of sync, or notebooks not clean):"; \
	  diff <(echo "$$before") <(echo "$$after") | sed -n 's/^> [0-9a-f]*  /  /p'; \
	  echo "Commit the changes and run make test again."; exit 1; \
	fi; echo "notebooks clean, library in sync"

## lab: open the chapters and tutorials in JupyterLab
lab: $(VENV)/.dev-installed
	$(BIN)/jupyter lab

## outputs: execute the chapters and tutorials (NBS) in place, outside test mode, so the website shows their results
# (Quarto renders the stored outputs; nothing is executed at build time). About 40 minutes on 2 cores for everything.
# ROBUSTLEARN_STATIC=1: `core.explore` cells store their default run instead of live sliders.
NBS ?= nbs/*.ipynb tutorials/*.ipynb
outputs: $(VENV)/.dev-installed
	$(BIN)/nbdev-export
	for nb in $(NBS); do echo "$$nb"; ROBUSTLEARN_STATIC=1 $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	  --ExecutePreprocessor.timeout=3600 "$$nb" || exit 1; done
	$(BIN)/nbdev-clean && $(BIN)/nbdev-clean --fname tutorials

## docs: build the website with Quarto (a separate install: https://quarto.org/docs/get-started/)
docs: $(VENV)/.dev-installed
	$(BIN)/nbdev-export
	$(BIN)/python tools/docs_site.py --render

## bench: time robustlearn against the anchors' packages (flow-matching, torchcfm), in one process
# torchcfm is installed without dependencies: its torchdyn needs torchvision, which would pull another torch build.
bench: $(VENV)/.dev-installed
	$(PIP) $(TORCH) -e ".[bench]"
	$(PIP) --no-deps torchcfm
	$(BIN)/python benchmarks/flow_vs_anchors.py $(ARGS)

## bench-mtp: multi-token prediction, naive vs sequential heads and greedy vs self-speculative decoding
bench-mtp: $(VENV)/.dev-installed
	$(BIN)/python benchmarks/mtp.py $(ARGS)

## claim-times: every claim's time per seed (quick preset, one job), written into the README's table
claim-times: $(VENV)/.core-installed
	$(BIN)/python benchmarks/claim_times.py --readme README.md $(ARGS)

clean:
	rm -rf _site _docs _proc _docs_src reproduce dist build *.egg-info
