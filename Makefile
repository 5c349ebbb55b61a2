# cxrgan — every stage is a file-producing target; `make` alone lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

DATA ?= phantom
SIZE ?= 64
SEED ?= 0
N_PHANTOMS ?= 400
NIH_DIR ?= data/nih

ifeq ($(DATA),nih)
DATASET := data/nih-$(SIZE).h5
else
DATASET := data/phantom-$(SIZE).h5
endif

.DEFAULT_GOAL := help
.PHONY: help setup data all test bench clean gan samples classify metrics report

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

setup: $(STAMP)  ## create .venv from nothing and install the pinned dependencies

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

data: $(DATASET)  ## build the dataset HDF5 (DATA=phantom: procedural phantoms; DATA=nih: NIH_DIR)

data/phantom-$(SIZE).h5: | $(STAMP)
	$(PY) tools/make_phantoms.py --out $@ --n $(N_PHANTOMS) --size $(SIZE) --seed $(SEED)

data/nih-$(SIZE).h5: | $(STAMP)
	$(PY) tools/make_hdf5.py --src $(NIH_DIR) --out $@ --size $(SIZE) --seed $(SEED)

gan samples classify metrics report: | $(STAMP)
	@echo "make $@: not yet built (GAN training, sampling and evaluation land in later releases)"

all: data gan samples classify metrics report  ## the whole pipeline on the default data

test: $(STAMP)  ## unit tests (tiny generated data; extra cases when ../shared/data exists)
	$(PY) -m pytest -q tests

bench: $(STAMP)  ## speed benchmarks, results to docs/benchmarks.md
	$(PY) bench/compression.py
	$(PY) bench/ingest.py
	$(PY) bench/reader.py

clean:  ## remove outputs/ and built data (keeps data/nih downloads and .venv)
	rm -rf outputs/* data/phantom-*.h5 data/*.report.json
