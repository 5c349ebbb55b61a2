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
RECIPE ?= improved
EPOCHS ?= 20
N_SYNTH ?= 500
DEVICE ?= auto
NPROC ?= 1
SEEDS ?= 3
CLF_EPOCHS ?= 10
CLF_DIR := outputs/classify
GAN_DIR := outputs/gan
comma := ,
empty :=
space := $(empty) $(empty)

FRACTIONS ?= 0.1 0.25 0.5
INCEPTION_WEIGHTS ?=

ifeq ($(DATA),nih)
DATASET := data/nih-$(SIZE).h5
CLF_SIZE ?= 224
INCEPTION ?= 1
else
DATASET := data/phantom-$(SIZE).h5
CLF_SIZE ?= $(SIZE)
INCEPTION ?= 0
endif
# the domain metrics always (no download needed); the standard Inception metrics with INCEPTION=1
METRICS := outputs/metrics/domain.json $(if $(filter 1,$(INCEPTION)),outputs/metrics/inception.json)
FID_ARGS = --real $(DATASET) --fake outputs/synthetic.h5 --out $@ --seed $(SEED) --device $(DEVICE)
CLF_ARGS = --data $(DATASET) --out $(@D) --epochs $(CLF_EPOCHS) --seeds $(SEEDS) --seed $(SEED) --size $(CLF_SIZE) \
	--device $(DEVICE)

ifeq ($(RECIPE),seed)
GAN_RUNS := $(GAN_DIR)/seed-c0 $(GAN_DIR)/seed-c1
else
GAN_RUNS := $(GAN_DIR)/improved
endif
# torchrun when NPROC > 1 (DistributedDataParallel; --batch stays the global batch)
TRAIN := $(if $(filter-out 1,$(NPROC)),$(VENV)/bin/torchrun --nproc_per_node=$(NPROC),$(PY)) tools/train_dcgan.py
TRAIN_ARGS = --data $(DATASET) --out $(@D) --epochs $(EPOCHS) --seed $(SEED) --device $(DEVICE)

.DEFAULT_GOAL := help
.PHONY: help setup data all test bench clean gan samples classify efficiency metrics report

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

gan: $(addsuffix /summary.json,$(GAN_RUNS))  ## train the GAN(s) (RECIPE=improved: one conditional model; RECIPE=seed: one DCGAN per class)

# summary.json is written only when a run reaches EPOCHS; an interrupted run resumes from last.pt
$(GAN_DIR)/improved/summary.json: $(DATASET) | $(STAMP)
	$(TRAIN) $(TRAIN_ARGS) --recipe improved

$(GAN_DIR)/seed-c%/summary.json: $(DATASET) | $(STAMP)
	$(TRAIN) $(TRAIN_ARGS) --recipe seed --cls $*

samples: outputs/synthetic.h5  ## sample N_SYNTH images per class from the trained GAN(s)

outputs/synthetic.h5: $(addsuffix /summary.json,$(GAN_RUNS))
	$(PY) tools/sample.py --n $(N_SYNTH) --seed $(SEED) --device $(DEVICE) --out $@ \
		--ckpt $(subst $(space),$(comma),$(addsuffix /last.pt,$(GAN_RUNS)))

classify: $(CLF_DIR)/real/metrics.json $(CLF_DIR)/real+synthetic/metrics.json $(CLF_DIR)/tstr/metrics.json  ## ResNet-18: real vs real+synthetic (paired) vs synthetic-only, SEEDS seeds

$(CLF_DIR)/real/metrics.json: $(DATASET) | $(STAMP)
	$(PY) tools/train_resnet.py $(CLF_ARGS)

$(CLF_DIR)/real+synthetic/metrics.json: $(DATASET) outputs/synthetic.h5 $(CLF_DIR)/real/metrics.json
	$(PY) tools/train_resnet.py $(CLF_ARGS) --synthetic outputs/synthetic.h5 --baseline $(CLF_DIR)/real

$(CLF_DIR)/tstr/metrics.json: $(DATASET) outputs/synthetic.h5 | $(STAMP)
	$(PY) tools/train_resnet.py $(CLF_ARGS) --synthetic outputs/synthetic.h5 --synthetic-only

efficiency: $(foreach f,$(FRACTIONS),$(CLF_DIR)/fraction-$(f)/real/metrics.json $(CLF_DIR)/fraction-$(f)/real+synthetic/metrics.json)  ## real vs real+synthetic at each real fraction in FRACTIONS (the data-efficiency plot)

$(CLF_DIR)/fraction-%/real/metrics.json: $(DATASET) | $(STAMP)
	$(PY) tools/train_resnet.py $(CLF_ARGS) --real-fraction $*

$(CLF_DIR)/fraction-%/real+synthetic/metrics.json: $(DATASET) outputs/synthetic.h5 $(CLF_DIR)/fraction-%/real/metrics.json
	$(PY) tools/train_resnet.py $(CLF_ARGS) --real-fraction $* --synthetic outputs/synthetic.h5 \
		--baseline $(CLF_DIR)/fraction-$*/real

metrics: $(METRICS)  ## FID, KID, precision/recall (+IS) and the memorisation audit (INCEPTION=1 adds the Inception metrics)

outputs/metrics/domain.json: outputs/synthetic.h5 $(CLF_DIR)/real/metrics.json
	$(PY) tools/fid_is.py $(FID_ARGS) --features classifier:$(CLF_DIR)/real/model-seed$(SEED).pt

outputs/metrics/inception.json: outputs/synthetic.h5 | $(STAMP)
	$(PY) tools/fid_is.py $(FID_ARGS) --features inception $(if $(INCEPTION_WEIGHTS),--inception-weights $(INCEPTION_WEIGHTS))

report: classify metrics  ## outputs/REPORT.md from every result under outputs/ (tables, figures, audit)
	$(PY) tools/report.py --outputs outputs --seed $(SEED)

all: data gan samples classify metrics report  ## the whole pipeline on the default data

test: $(STAMP)  ## unit tests (tiny generated data; extra cases when ../shared/data exists)
	$(PY) -m pytest -q tests

bench: $(STAMP)  ## speed benchmarks (needs ../shared/data), results to docs/benchmarks.md
	$(PY) bench/compression.py
	$(PY) bench/ingest.py
	$(PY) bench/reader.py
	$(PY) bench/train_speed.py
	$(PY) bench/sample_speed.py

clean:  ## remove outputs/ and built data (keeps data/nih downloads and .venv)
	rm -rf outputs/* data/phantom-*.h5 data/*.report.json
