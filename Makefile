# cxrgan — every stage is a file-producing target; `make` alone lists them. Re-running a finished `make all` does
# nothing; after an interruption it resumes at the first stage whose output is missing (GAN training from last.pt).
# Each stage also depends on a stamp of the variables that shape it (see ARGS below): change one and exactly the
# stages it affects run again, with their dependents.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The recipe table (lib/cxrgan/generative/recipes.py, read without torch) says whether a recipe is one conditional model
# (outputs/gan/NAME) or one model per class (outputs/gan/NAME-c0, NAME-c1), which one is the default (the same
# as train_dcgan's: one source for both), and which one the laptop run on the shipped data uses (DATA=nih-mini).
HERE := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
RECIPE_TABLE := $(shell $(PYTHON) -c 'import sys; sys.path.insert(0, "$(HERE)lib"); \
	from cxrgan.generative.recipes import make_table; print(make_table())')
ifeq ($(RECIPE_TABLE),)
$(error cannot read the recipe table with PYTHON=$(PYTHON); set PYTHON to a Python 3.10+ interpreter)
endif
RECIPES := $(foreach r,$(RECIPE_TABLE),$(word 1,$(subst :, ,$(r))))
DEFAULT_RECIPE := $(word 1,$(subst :, ,$(filter %:default,$(RECIPE_TABLE))))
LAPTOP_RECIPE := $(word 1,$(subst :, ,$(filter %:laptop,$(RECIPE_TABLE))))
# The feature networks of fid_is (lib/cxrgan/metrics/networks.py) that need no argument or that `make features`
# builds, NAME:VAR[:OPTION[:BUILT]]: with VAR=1, `make metrics` also writes metrics/NAME-RECIPE.json (VAR_WEIGHTS: a
# local weights file, given to OPTION or as --features NAME:VAR_WEIGHTS; without it a BUILT network is OUTPUTS/BUILT,
# made by `make features`; OPTION "-": none). The control arms of train_resnet --control (lib/cxrgan/classify/arms.py),
# NAME[:efficiency][:laptop]: every arm is in the default CONTROLS, the laptop ones in DATA=nih-mini's, and the
# efficiency ones in `make efficiency`.
FEATURE_TABLE := $(shell $(PYTHON) -c 'import sys; sys.path.insert(0, "$(HERE)lib"); \
	from cxrgan.metrics.networks import make_table; print(make_table())')
ARM_TABLE := $(shell $(PYTHON) -c 'import sys; sys.path.insert(0, "$(HERE)lib"); \
	from cxrgan.classify.arms import make_table; print(make_table())')
row_field = $(word $(2),$(subst :, ,$(1)))
FEATURE_VARS := $(foreach r,$(FEATURE_TABLE),$(call row_field,$(r),2))
ARMS := $(foreach a,$(ARM_TABLE),$(call row_field,$(a),1))
arms_with = $(foreach a,$(ARM_TABLE),$(if $(filter $(1),$(wordlist 2,9,$(subst :, ,$(a)))),$(call row_field,$(a),1)))
EFFICIENCY_ARMS := $(call arms_with,efficiency)

DATA ?= nih-mini
DATA_DIR ?= data
OUTPUTS ?= outputs
NIH_DIR ?= $(DATA_DIR)/nih
SEED ?= 0
N_PHANTOMS ?= 400
RECIPE ?= $(if $(filter nih-mini,$(DATA)),$(LAPTOP_RECIPE),$(DEFAULT_RECIPE))
EPOCHS ?=
KIMG ?=
N_SYNTH ?= 500
DEVICE ?= auto
NPROC ?= 1
SEEDS ?= 3
CONTROLS ?= $(ARMS)
FRACTIONS ?= 0.1 0.25 0.5 1
REUSE_GAN ?= 0
INCEPTION_WEIGHTS ?=
XRV ?= 0
XRV_WEIGHTS ?=
# make features: the cxr feature network, trained on DATASET's train split, plus with FEATURES_EXTRA (a folder of NIH
# images and their Data_Entry csv, e.g. ../shared/data/nih64-extra) its images with other findings than the two classes
FEATURES_EXTRA ?=
FEATURES_EPOCHS ?= 20
MIRROR ?=
GAN_ARGS ?=
# extra test sets, FILE.h5[:split] each (space-separated): every classifier arm is also evaluated on each
TEST_EXTRA ?=
CLF_DIR := $(OUTPUTS)/classify
GAN_DIR := $(OUTPUTS)/gan
# what a recipe generates, and the stages that use it, are named after the recipe: after `make all` and
# `make all RECIPE=diffusion` the report sets both side by side
SYNTH := $(OUTPUTS)/synthetic-$(RECIPE).h5
SYN_ARM := real+synthetic-$(RECIPE)
ARGS_DIR = $(OUTPUTS)/.args
comma := ,
empty :=
space := $(empty) $(empty)

# DATA=nih-mini (the default) is the real NIH subset shipped in data/nih-mini (452 radiographs at 64x64), sized for
# a laptop CPU. DATA=nih is the reference study's protocol: 256x256, both classes, 20 epochs, 500 images per class,
# ResNet-18 at 224x224; the Inception metrics too. DATA=phantom: procedural phantoms (tests and `make smoke`).
NIH_MINI = $(HERE)data/nih-mini
ifeq ($(DATA),nih-mini)
SIZE := 64
CLF_SIZE ?= 64
CLF_EPOCHS ?= 6
SYNTH_RATIO ?= 1
INCEPTION ?= 0
ifeq ($(origin CONTROLS),file)
CONTROLS := $(call arms_with,laptop)
endif
# the laptop recipe trains for its own length (sized for the 15-minute run); any other recipe for 7 kimg
ifeq ($(strip $(KIMG)$(EPOCHS))$(filter $(LAPTOP_RECIPE),$(RECIPE)),)
KIMG := 7
endif
DATASET := $(DATA_DIR)/nih-mini-$(SIZE).h5
else ifeq ($(DATA),nih)
SIZE ?= 256
CLF_SIZE ?= 224
CLF_EPOCHS ?= 20
INCEPTION ?= 1
# NIH's official test_list.txt as the test split (comparable with the literature); SPLIT=random: patients at random
SPLIT ?= official
ifeq ($(filter official random,$(SPLIT)),)
$(error error: SPLIT must be official or random, not '$(SPLIT)'; give SPLIT=official or SPLIT=random)
endif
DATASET := $(DATA_DIR)/nih-$(SIZE).h5
else ifeq ($(DATA),phantom)
SIZE ?= 64
CLF_SIZE ?= $(SIZE)
CLF_EPOCHS ?= 10
SYNTH_RATIO ?= 1
INCEPTION ?= 0
DATASET := $(DATA_DIR)/phantom-$(SIZE).h5
ifeq ($(strip $(KIMG)$(EPOCHS)),)
KIMG := 8
endif
else
$(error error: DATA must be nih-mini, nih or phantom, not '$(DATA)'; give one of them)
endif

recipe_kind = $(word 2,$(subst :, ,$(filter $(1):%,$(RECIPE_TABLE))))
ifeq ($(call recipe_kind,$(RECIPE)),per-class)
GAN_RUNS := $(GAN_DIR)/$(RECIPE)-c0 $(GAN_DIR)/$(RECIPE)-c1
else ifeq ($(call recipe_kind,$(RECIPE)),conditional)
GAN_RUNS := $(GAN_DIR)/$(RECIPE)
else
$(error error: RECIPE must be one of $(RECIPES) (lib/cxrgan/generative/recipes.py), not '$(RECIPE)'; give one of \
	them)
endif
# torchrun when NPROC > 1 (DistributedDataParallel; --batch stays the global batch; --standalone: a free port of its own)
TRAIN := $(if $(filter-out 1,$(NPROC)),$(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC),$(PY)) tools/train_dcgan.py
# the training length: EPOCHS, or KIMG (thousands of images shown), or the recipe's own default (20 epochs for both)
TRAIN_ARGS = --overwrite --data $(DATASET) --out $(@D) $(if $(EPOCHS),--epochs $(EPOCHS) )$(if $(KIMG),--kimg $(KIMG) )--seed $(SEED) \
	--device $(DEVICE) $(GAN_ARGS)
CLF_ARGS = --overwrite --data $(DATASET) --out $(@D) --epochs $(CLF_EPOCHS) --seeds $(SEEDS) --seed $(SEED) --size $(CLF_SIZE) \
	--device $(DEVICE)$(if $(strip $(TEST_EXTRA)), $(foreach t,$(TEST_EXTRA),--test-extra $(t)))
# What the synthetic arm adds per class, and so each count-matched control arm: SYNTH_RATIO synthetic images per real
# training image (DATA=nih-mini and phantom: 1), or, with SYNTH_RATIO empty (DATA=nih), N_SYNTH per class: the study's
# 500 beside the real training set
ADDED = $(if $(SYNTH_RATIO),--synthetic-ratio $(SYNTH_RATIO),--synthetic-per-class $(N_SYNTH))
# the domain metrics always (no download needed); each network of FEATURE_TABLE with its VAR=1 (INCEPTION=1: the
# standard Inception metrics, the default for DATA=nih; XRV=1: FID_xrv)
$(foreach v,$(FEATURE_VARS),$(eval $(v) ?= 0))
METRICS := $(OUTPUTS)/metrics/domain-$(RECIPE).json $(foreach r,$(FEATURE_TABLE),$(if $(filter 1,$($(call \
	row_field,$(r),2))),$(OUTPUTS)/metrics/$(call row_field,$(r),1)-$(RECIPE).json))
FID_ARGS = --overwrite --real $(DATASET) --fake $(SYNTH) --out $@ --seed $(SEED) --device $(DEVICE)
CONTROL_RUNS := $(foreach c,$(CONTROLS),$(CLF_DIR)/real+$(c))
CLASSIFY := $(CLF_DIR)/real/metrics.json $(addsuffix /metrics.json,$(CONTROL_RUNS)) $(CLF_DIR)/$(SYN_ARM)/metrics.json
SMOKE_DIR := build/smoke
# make nih-smoke: the DATA=nih path on a NIH-shaped release (tests/nih_release.py) served from 127.0.0.1, made small
NIH_SMOKE := build/nih-smoke
NIH_SMOKE_VARS := DATA=nih NIH_DIR=$(NIH_SMOKE)/nih DATA_DIR=$(NIH_SMOKE)/data OUTPUTS=$(NIH_SMOKE)/outputs SIZE=64 \
	CLF_SIZE=64 KIMG=0.1 CLF_EPOCHS=1 SEEDS=2 N_SYNTH=12 FRACTIONS="0.5 1" DEVICE=cpu \
	GAN_ARGS="--base 8 --batch 16 --grid 4" INCEPTION_WEIGHTS=$(NIH_SMOKE)/weights/inception-random.pt \
	XRV=1 XRV_WEIGHTS=$(NIH_SMOKE)/weights/xrv-random.pt
SMOKE_VARS := DATA=phantom DATA_DIR=$(SMOKE_DIR)/data OUTPUTS=$(SMOKE_DIR)/outputs SIZE=32 N_PHANTOMS=120 \
	EPOCHS=1 N_SYNTH=64 SEEDS=2 CLF_EPOCHS=1 DEVICE=cpu GAN_ARGS="--base 8 --batch 16 --grid 4"

# ARGS: $(call args_stamp,FILE,TEXT) is FILE, rewritten (so newer than what was built from it) only when TEXT
# differs from what it holds. A stage's target depends on the stamp of the variables that shape its result (not
# DEVICE: where it runs), so `make all EPOCHS=3` after `make all` retrains the GAN and what uses it, and rebuilds
# neither the dataset nor the real-data classifier. Stamps are written only when make is asked to build (not for
# `make`, help, test, clean, or a dry run -n / question -q, which compare against them as they are).
NOT_BUILDING := $(or $(findstring n,$(firstword -$(MAKEFLAGS))),$(findstring q,$(firstword -$(MAKEFLAGS))),$(if \
	$(filter-out help setup test smoke nih-smoke gpu-check bench docker docker-test clean download,$(or $(MAKECMDGOALS),help)),,yes))
# Before any stage (and before a stamp is written): every variable's value is checked, and a build takes
# OUTPUTS/.make.lock for as long as this make runs (lib/cxrgan/makeguard.py), so a second make in the same OUTPUTS is
# refused at once instead of overwriting the first one's stages. Sub-makes of a locking make share its lock.
GUARD = $(1) -c 'import sys; sys.path.insert(0, "$(HERE)lib"); from cxrgan.makeguard import main; main()'
VAR_ERROR := $(shell $(call GUARD,$(PYTHON)) vars $(foreach v,SEEDS N_SYNTH CLF_EPOCHS N_PHANTOMS NPROC SIZE CLF_SIZE \
	EPOCHS SEED KIMG SYNTH_RATIO REUSE_GAN FRACTIONS FEATURES_EPOCHS,'$(v)=$($(v))') $(foreach v,$(FEATURE_VARS),'SWITCH:$(v)=$($(v))') \
	$(if $(or $(NOT_BUILDING),$(filter-out nih,$(DATA)),$(wildcard $(DATASET))),,'NIH_DIR=$(NIH_DIR)'))
$(if $(VAR_ERROR),$(error $(VAR_ERROR)))
ifeq ($(NOT_BUILDING)$(filter $(abspath $(OUTPUTS)),$(CXRGAN_MAKE_LOCK)),)
LOCK_ERROR := $(shell $(call GUARD,$(PYTHON)) lock '$(OUTPUTS)' $$PPID)
$(if $(LOCK_ERROR),$(error $(LOCK_ERROR)))
export CXRGAN_MAKE_LOCK := $(abspath $(OUTPUTS))
endif
# The progress view (lib/cxrgan/progress.py): every tool command runs as a named stage of this make (its process
# id), which prints the stage's number of how many, the time since the run began and an estimate of what is left.
MAKE_PID := $(shell echo $$PPID)
stage = $(PYTHON) $(HERE)lib/cxrgan/progress.py stage $(OUTPUTS) $(MAKE_PID) $(1) --
export CXRGAN_PROGRESS_GOALS := $(or $(MAKECMDGOALS),help)
export CXRGAN_PROGRESS_KEY := $(DATA) $(RECIPE) size$(SIZE) kimg$(or $(KIMG),-) epochs$(or $(EPOCHS),-) \
	clf$(CLF_EPOCHS) seeds$(SEEDS) synth$(N_SYNTH) controls=$(subst $(space),+,$(strip $(CONTROLS)))
args_stamp = $(strip $(eval _new := $(strip $(2)))$(eval _old := $(strip $(if $(wildcard $(1)),$(file < $(1)))))$(if \
	$(or $(NOT_BUILDING),$(and $(findstring |$(_new)|,|$(_old)|),$(findstring |$(_old)|,|$(_new)|))),,$(shell \
	mkdir -p $(dir $(1)))$(file > $(1),$(_new)))$(1))
DATA_ARGS := $(call args_stamp,$(DATA_DIR)/.args/$(notdir $(DATASET)),DATA=$(DATA) SIZE=$(SIZE) SEED=$(SEED) \
	$(if $(filter phantom,$(DATA)),N_PHANTOMS=$(N_PHANTOMS))$(if $(filter nih,$(DATA)),NIH_DIR=$(abspath $(NIH_DIR)) SPLIT=$(SPLIT)))
GAN_STAGE_ARGS := $(call args_stamp,$(ARGS_DIR)/gan-$(RECIPE),DATASET=$(DATASET) EPOCHS=$(EPOCHS) KIMG=$(KIMG) \
	SEED=$(SEED) NPROC=$(NPROC) GAN_ARGS=$(GAN_ARGS))
SAMPLE_ARGS := $(call args_stamp,$(ARGS_DIR)/samples-$(RECIPE),N_SYNTH=$(N_SYNTH) SEED=$(SEED))
CLF_STAGE_ARGS := $(call args_stamp,$(ARGS_DIR)/classify,DATASET=$(DATASET) CLF_EPOCHS=$(CLF_EPOCHS) SEEDS=$(SEEDS) \
	SEED=$(SEED) CLF_SIZE=$(CLF_SIZE)$(if $(strip $(TEST_EXTRA)), TEST_EXTRA=$(strip $(TEST_EXTRA))))
ADDED_ARGS := $(call args_stamp,$(ARGS_DIR)/added,$(ADDED))
# the synthetic arms also depend on which controls they are compared with and which GAN made their images
SYNTH_ARM_ARGS := $(call args_stamp,$(ARGS_DIR)/classify-$(RECIPE),CONTROLS=$(CONTROLS) REUSE_GAN=$(REUSE_GAN))
FEATURES_EXTRA_H5 := $(DATA_DIR)/features-extra-64.h5
FEATURES_EXTRA_ARGS := $(call args_stamp,$(DATA_DIR)/.args/features-extra-64.h5,FEATURES_EXTRA=$(abspath \
	$(FEATURES_EXTRA)) SEED=$(SEED))
FEATURES_STAGE_ARGS := $(call args_stamp,$(ARGS_DIR)/features,DATASET=$(DATASET) FEATURES_EXTRA=$(abspath \
	$(FEATURES_EXTRA)) FEATURES_EPOCHS=$(FEATURES_EPOCHS) SEED=$(SEED))
FEATURE_WEIGHTS = $(foreach v,$(FEATURE_VARS),$(v)_WEIGHTS=$($(v)_WEIGHTS))
METRIC_ARGS := $(call args_stamp,$(ARGS_DIR)/metrics,SEED=$(SEED) $(FEATURE_WEIGHTS))
# a stamp not written yet (a dry run before the first build): out of date, like everything built from it
$(ARGS_DIR)/% $(DATA_DIR)/.args/%: ;
# Once the dataset is built and before the first long stage (the GAN, the real arm): N_SYNTH covers what the synthetic
# arm adds (SYNTH_RATIO x the real images of a class). Order-only where used: checked again whenever its inputs
# change, never a reason to retrain.
SYNTH_CHECK := $(ARGS_DIR)/n-synth-ok-$(RECIPE)
$(SYNTH_CHECK): $(DATASET) $(SAMPLE_ARGS) $(ADDED_ARGS) | $(STAMP)
	@$(call GUARD,$(PY)) synthetic $(DATASET) $(N_SYNTH) $(ADDED) && touch $@

.DEFAULT_GOAL := help
.PHONY: help setup download data gan samples classify tstr efficiency features metrics report all test smoke nih-smoke \
	bench gpu-check docker docker-test clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12
	@echo
	@echo "variables: DATA=nih-mini|nih|phantom NIH_DIR SIZE EPOCHS|KIMG N_SYNTH RECIPE=$(subst $(space),|,$(RECIPES)) SEEDS DEVICE NPROC"
	@echo "           CONTROLS=\"$(ARMS)\" SYNTH_RATIO CLF_EPOCHS CLF_SIZE SPLIT=official|random (DATA=nih) OUTPUTS \
	DATA_DIR"
	@echo "           FRACTIONS REUSE_GAN=0|1 $(foreach v,$(FEATURE_VARS),$(v)=0|1 $(v)_WEIGHTS) MIRROR GAN_ARGS"
	@echo "           FEATURES_EXTRA=DIR FEATURES_EPOCHS (make features)"
	@echo "           TEST_EXTRA=\"FILE.h5[:split] ...\" (extra test sets for every classifier arm)"

setup: $(STAMP)  ## create .venv from nothing and install the pinned dependencies

# --no-compile: Python byte-compiles the modules it imports on first use, instead of every file of every wheel
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --no-compile -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

download: $(NIH_DIR)/download.json  ## fetch the official NIH ChestX-ray14 release into NIH_DIR (MIRROR=URL for another host)

$(NIH_DIR)/download.json: | $(STAMP)
	$(PY) tools/download_nih.py --out $(NIH_DIR) $(if $(MIRROR),--mirror $(MIRROR))

data: $(DATASET)  ## build the dataset HDF5 (DATA=nih-mini: the shipped real subset; DATA=nih: from NIH_DIR; DATA=phantom)

$(DATA_DIR)/phantom-$(SIZE).h5: $(DATA_ARGS) | $(STAMP)
	$(call stage,data) $(PY) tools/make_phantoms.py --overwrite --out $@ --n $(N_PHANTOMS) --size $(SIZE) --seed $(SEED)

$(DATA_DIR)/nih-mini-$(SIZE).h5: $(DATA_ARGS) $(wildcard $(NIH_MINI)/*.csv) | $(STAMP)
	$(call stage,data) $(PY) tools/make_hdf5.py --overwrite --src $(NIH_MINI) --out $@ --size $(SIZE) --seed $(SEED) --nobalance

$(DATA_DIR)/nih-$(SIZE).h5: $(DATA_ARGS) | $(STAMP)
	$(call stage,data) $(PY) tools/make_hdf5.py --overwrite --src $(NIH_DIR) --out $@ --size $(SIZE) --seed $(SEED) \
		$(if $(filter official,$(SPLIT)),--official-split)

gan: $(addsuffix /summary.json,$(GAN_RUNS))  ## train the GAN(s) (RECIPE=limited, the default, laptop, the default of DATA=nih-mini, or improved: one conditional model; RECIPE=study-dcgan, formerly seed: the study's DCGAN per class; diffusion)

# summary.json is written only when a run reaches EPOCHS; an interrupted run resumes from last.pt
define gan_rules
ifeq ($(call recipe_kind,$(1)),per-class)
$(GAN_DIR)/$(1)-c%/summary.json: $(DATASET) $(GAN_STAGE_ARGS) | $(STAMP) $(SYNTH_CHECK)
	$$(call stage,gan:$(1)-c$$*) $$(TRAIN) $$(TRAIN_ARGS) --recipe $(1) --cls $$*
else
$(GAN_DIR)/$(1)/summary.json: $(DATASET) $(GAN_STAGE_ARGS) | $(STAMP) $(SYNTH_CHECK)
	$$(call stage,gan:$(1)) $$(TRAIN) $$(TRAIN_ARGS) --recipe $(1)
endif
endef
$(foreach r,$(RECIPES),$(eval $(call gan_rules,$(r))))

samples: $(SYNTH)  ## sample N_SYNTH images per class from the trained GAN(s) into OUTPUTS/synthetic-RECIPE.h5

$(SYNTH): $(addsuffix /summary.json,$(GAN_RUNS)) $(SAMPLE_ARGS)
	$(call stage,samples) $(PY) tools/sample.py --overwrite --n $(N_SYNTH) --seed $(SEED) --device $(DEVICE) --out $@ \
		--ckpt $(subst $(space),$(comma),$(GAN_RUNS))

classify: $(CLASSIFY)  ## ResNet-18: real, real + oversampled / augmented copies (controls), real+synthetic-RECIPE (paired with all three); SEEDS seeds

tstr: $(CLF_DIR)/tstr-$(RECIPE)/metrics.json  ## train on synthetic images only, test on real (not part of `all`; the report shows it when present)

$(CLF_DIR)/real/metrics.json: $(DATASET) $(CLF_STAGE_ARGS) | $(STAMP) $(SYNTH_CHECK)
	$(call stage,classify:real) $(PY) tools/train_resnet.py $(CLF_ARGS)

$(CLF_DIR)/real+%/metrics.json: $(DATASET) $(CLF_STAGE_ARGS) $(ADDED_ARGS) $(CLF_DIR)/real/metrics.json
	$(call stage,classify:real+$*) $(PY) tools/train_resnet.py $(CLF_ARGS) $(ADDED) --control $* --baseline $(CLF_DIR)/real

$(CLF_DIR)/$(SYN_ARM)/metrics.json: $(DATASET) $(CLF_STAGE_ARGS) $(ADDED_ARGS) $(SYNTH_ARM_ARGS) $(SYNTH) $(CLF_DIR)/real/metrics.json $(addsuffix /metrics.json,$(CONTROL_RUNS))
	$(call stage,classify:$(SYN_ARM)) $(PY) tools/train_resnet.py $(CLF_ARGS) $(ADDED) --synthetic $(SYNTH) \
		--baseline $(subst $(space),$(comma),$(CLF_DIR)/real $(CONTROL_RUNS))

$(CLF_DIR)/tstr-$(RECIPE)/metrics.json: $(DATASET) $(SYNTH) $(CLF_STAGE_ARGS) | $(STAMP)
	$(call stage,classify:tstr-$(RECIPE)) $(PY) tools/train_resnet.py $(CLF_ARGS) --synthetic $(SYNTH) --synthetic-only

# the real arm and the control arms of the curve (EFFICIENCY_ARMS, from the arm table) at fraction $(1)
eff_runs = $(foreach a,real $(addprefix real+,$(EFFICIENCY_ARMS)),$(CLF_DIR)/fraction-$(1)/$(a))
efficiency: $(foreach f,$(FRACTIONS),$(addsuffix /metrics.json,$(call eff_runs,$(f)) $(CLF_DIR)/fraction-$(f)/$(SYN_ARM)))  ## real, real+oversampling, real+synthetic at each real fraction in FRACTIONS, the GAN retrained per fraction (REUSE_GAN=1: not)

$(CLF_DIR)/fraction-%/real/metrics.json: $(DATASET) $(CLF_STAGE_ARGS) | $(STAMP)
	$(call stage,fraction-$*:classify:real) $(PY) tools/train_resnet.py $(CLF_ARGS) --real-fraction $*

define efficiency_arm_rules
$(CLF_DIR)/fraction-%/real+$(1)/metrics.json: $(DATASET) $(CLF_STAGE_ARGS) $(ADDED_ARGS) \
		$(CLF_DIR)/fraction-%/real/metrics.json
	$$(call stage,fraction-$$*:classify:real+$(1)) $$(PY) tools/train_resnet.py $$(CLF_ARGS) $$(ADDED) --real-fraction $$* --control $(1) \
		--baseline $$(CLF_DIR)/fraction-$$*/real
endef
$(foreach a,$(EFFICIENCY_ARMS),$(eval $(call efficiency_arm_rules,$(a))))

# The synthetic arm at fraction F uses a GAN trained on that fraction's patients only (the same nested subset as the
# classifier's, --subset-seed 0): a GAN trained on all patients would carry the held-back ones into the low-data
# arm. REUSE_GAN=1 samples the full-data GAN instead (quicker); the report then says so.
is_full = $(filter 1 1.0 1.00,$(1))
eff_gan_runs = $(if $(filter per-class,$(call recipe_kind,$(RECIPE))),$(GAN_DIR)/fraction-$(1)/$(RECIPE)-c0 \
	$(GAN_DIR)/fraction-$(1)/$(RECIPE)-c1,$(GAN_DIR)/fraction-$(1)/$(RECIPE))
eff_synth = $(if $(or $(filter 1,$(REUSE_GAN)),$(call is_full,$(1))),$(SYNTH),$(OUTPUTS)/fraction-$(1)/synthetic-$(RECIPE).h5)
define fraction_rules
$(OUTPUTS)/fraction-$(1)/synthetic-$(RECIPE).h5: $(addsuffix /summary.json,$(call eff_gan_runs,$(1))) $(SAMPLE_ARGS)
	$$(call stage,fraction-$(1):samples) $$(PY) tools/sample.py --overwrite --n $$(N_SYNTH) --seed $$(SEED) --device $$(DEVICE) --out $$@ \
		--ckpt $(subst $(space),$(comma),$(strip $(call eff_gan_runs,$(1))))
ifeq ($(call recipe_kind,$(RECIPE)),per-class)
$(GAN_DIR)/fraction-$(1)/$(RECIPE)-c%/summary.json: $(DATASET) $(GAN_STAGE_ARGS) | $(STAMP)
	$$(call stage,fraction-$(1):gan:$(RECIPE)-c$$*) $$(TRAIN) $$(TRAIN_ARGS) --recipe $(RECIPE) --cls $$* --real-fraction $(1)
else
$(GAN_DIR)/fraction-$(1)/$(RECIPE)/summary.json: $(DATASET) $(GAN_STAGE_ARGS) | $(STAMP)
	$$(call stage,fraction-$(1):gan:$(RECIPE)) $$(TRAIN) $$(TRAIN_ARGS) --recipe $(RECIPE) --real-fraction $(1)
endif
$(CLF_DIR)/fraction-$(1)/$(SYN_ARM)/metrics.json: $(DATASET) $(CLF_STAGE_ARGS) $(ADDED_ARGS) $(SYNTH_ARM_ARGS) \
		$(call eff_synth,$(1)) \
		$(addsuffix /metrics.json,$(call eff_runs,$(1)))
	$$(call stage,fraction-$(1):classify:$(SYN_ARM)) $$(PY) tools/train_resnet.py $$(CLF_ARGS) $$(ADDED) --real-fraction $(1) --synthetic $(call eff_synth,$(1)) \
		--baseline $(subst $(space),$(comma),$(strip $(call eff_runs,$(1))))
endef
$(foreach f,$(FRACTIONS),$(eval $(call fraction_rules,$(f))))

metrics: $(METRICS)  ## FID, KID, precision/recall (+IS) and the memorisation audit (INCEPTION=1: Inception metrics; XRV=1: torchxrayvision's DenseNet, FID_xrv; NAME=1: any other network of lib/cxrgan/metrics/networks.py)

$(OUTPUTS)/metrics/domain-$(RECIPE).json: $(SYNTH) $(METRIC_ARGS) $(CLF_DIR)/real/metrics.json
	$(call stage,metrics:domain) $(PY) tools/fid_is.py $(FID_ARGS) --features classifier:$(CLF_DIR)/real/model-seed$(SEED).pt

# one rule per feature network of FEATURE_TABLE; its weights: NAME:VAR:OPTION passes OPTION $(VAR_WEIGHTS),
# NAME:VAR --features NAME:$(VAR_WEIGHTS); without VAR_WEIGHTS, NAME:VAR:-:BUILT --features NAME:$(OUTPUTS)/BUILT
feature_weights = $(if $($(2)_WEIGHTS),$(if $(3), $(3) $($(2)_WEIGHTS),:$($(2)_WEIGHTS)),$(if $(4),:$(OUTPUTS)/$(4)))
define feature_rules
$(OUTPUTS)/metrics/$(1)-$(RECIPE).json: $(SYNTH) $(METRIC_ARGS) $(if $(4),$(if $($(2)_WEIGHTS),,$(OUTPUTS)/$(4))) \
		| $(STAMP)
	$$(call stage,metrics:$(1)) $$(PY) tools/fid_is.py $$(FID_ARGS) --features $(1)$$(call feature_weights,$(1),$(2),$(3),$(4))
endef
feature_option = $(filter-out -,$(call row_field,$(1),3))
$(foreach r,$(FEATURE_TABLE),$(eval $(call feature_rules,$(call row_field,$(r),1),$(call row_field,$(r),2),$(call \
	feature_option,$(r)),$(call row_field,$(r),4))))

features: $(foreach r,$(FEATURE_TABLE),$(if $(call row_field,$(r),4),$(OUTPUTS)/$(call row_field,$(r),4)))  ## the feature networks of the image metrics: OUTPUTS/features/cxr.pt from DATASET's train split (+ FEATURES_EXTRA's other findings)

# FEATURES_EXTRA's images that neither class takes (no test set holds them), every one in the train split
$(FEATURES_EXTRA_H5): $(FEATURES_EXTRA_ARGS) | $(STAMP)
	$(call stage,features:extra-data) $(PY) tools/make_hdf5.py --overwrite --src $(FEATURES_EXTRA) --out $@ --size 64 --other-findings --fractions 1,0,0 \
		--nobalance --seed $(SEED)

$(OUTPUTS)/features/cxr.pt: $(DATASET) $(if $(FEATURES_EXTRA),$(FEATURES_EXTRA_H5)) $(FEATURES_STAGE_ARGS) | $(STAMP)
	$(call stage,features:cxr) $(PY) tools/train_features.py --overwrite \
		--data $(DATASET):train$(if $(FEATURES_EXTRA),$(comma)$(FEATURES_EXTRA_H5):train) --out $@ \
		--epochs $(FEATURES_EPOCHS) --seed $(SEED) --device $(DEVICE)

report: $(OUTPUTS)/REPORT.md  ## OUTPUTS/REPORT.md from every result under OUTPUTS (tables, figures, audit)

$(OUTPUTS)/REPORT.md: $(CLASSIFY) $(METRICS) $(wildcard $(CLF_DIR)/fraction-*/*/metrics.json $(CLF_DIR)/tstr-*/metrics.json)
	$(call stage,report) $(PY) tools/report.py --overwrite --outputs $(OUTPUTS) --seed $(SEED)

all: report  ## the whole pipeline on the default data: data, gan, samples, classify, metrics, report

test: $(STAMP)  ## unit tests (tiny generated data; extra cases when ../shared/data exists), the two smoke chains, gpu-check tiny
	$(PY) -m pytest -q tests
	$(MAKE) --no-print-directory smoke
	$(MAKE) --no-print-directory nih-smoke
	$(MAKE) --no-print-directory gpu-check DEVICE=cpu

smoke: $(STAMP)  ## `make all` on tiny phantoms (32x32, one epoch) in build/smoke, then check a rerun is a no-op
	rm -rf $(SMOKE_DIR)
	$(MAKE) --no-print-directory all $(SMOKE_VARS)
	test -s $(SMOKE_DIR)/outputs/REPORT.md
	@if $(MAKE) --no-print-directory -q all $(SMOKE_VARS); then echo "smoke: REPORT.md built; a second make all is a no-op"; \
	else echo "smoke: FAILED: a second make all would run again:"; $(MAKE) --no-print-directory -n all $(SMOKE_VARS); exit 1; fi
	@ran=$$($(MAKE) --no-print-directory all $(SMOKE_VARS) CLF_EPOCHS=2 2>&1); \
	if grep -q train_resnet <<<"$$ran" && ! grep -q -e train_dcgan -e make_phantoms -e sample.py <<<"$$ran"; then \
	echo "smoke: after CLF_EPOCHS changed, the classifiers re-ran and the dataset, GAN and samples did not"; \
	else echo "smoke: FAILED: CLF_EPOCHS=2 ran:"; echo "$$ran"; exit 1; fi
	@if $(MAKE) --no-print-directory -q all $(SMOKE_VARS) CLF_EPOCHS=2; then echo "smoke: and then it is a no-op"; \
	else echo "smoke: FAILED: make all CLF_EPOCHS=2 would run again"; exit 1; fi
	@ran=$$($(MAKE) --no-print-directory all $(SMOKE_VARS) CLF_EPOCHS=2 RECIPE=diffusion 2>&1) || { echo "$$ran"; exit 1; }; \
	if grep -q -E -e 'make_phantoms|--out [^ ]*/gan/limited ' \
	-e 'train_resnet.py .*--out [^ ]*/classify/real($(subst $(space),|,$(foreach a,$(ARMS),\+$(a))))? ' <<<"$$ran"; then \
	echo "smoke: FAILED: RECIPE=diffusion re-ran the dataset, the GAN or a real arm:"; echo "$$ran"; exit 1; fi; \
	if grep -q 'real + synthetic (diffusion)' $(SMOKE_DIR)/outputs/REPORT.md && \
	grep -q 'real + synthetic (limited)' $(SMOKE_DIR)/outputs/REPORT.md; then \
	echo "smoke: RECIPE=diffusion trained and sampled the diffusion model; the report shows it beside the GAN"; \
	else echo "smoke: FAILED: the report does not show both recipes' synthetic arms"; exit 1; fi

nih-smoke: $(STAMP)  ## make download and make all DATA=nih (then efficiency, tstr, RECIPE=diffusion, NPROC=2) on a small NIH-shaped release served from 127.0.0.1
	rm -rf $(NIH_SMOKE)
	$(PY) tests/nih_release.py write $(NIH_SMOKE)/release --patients 60 \
		$(if $(wildcard $(HERE)../shared/data/nih-fullres/*.png),--real $(HERE)../shared/data/nih-fullres)
	$(PY) tests/nih_release.py weights $(NIH_SMOKE)/weights
	@$(PY) tests/nih_release.py serve $(NIH_SMOKE)/release --port-file $(NIH_SMOKE)/port --max-seconds 300 & server=$$!; \
	trap 'kill $$server 2>/dev/null' EXIT; \
	for _ in $$(seq 300); do [ -s $(NIH_SMOKE)/port ] || ! kill -0 $$server 2>/dev/null && break; sleep 0.1; done; \
	mirror=http://127.0.0.1:$$(cat $(NIH_SMOKE)/port); echo "nih-smoke: the release is served at $$mirror"; \
	$(MAKE) --no-print-directory download NIH_DIR=$(NIH_SMOKE)/nih MIRROR=$$mirror; status=$$?; \
	kill $$server 2>/dev/null; exit $$status
	test "$$(ls $(NIH_SMOKE)/nih/images_0*.tar.gz | wc -l)" = 12 && test -s $(NIH_SMOKE)/nih/test_list.txt
	$(MAKE) --no-print-directory -n all $(NIH_SMOKE_VARS) > $(NIH_SMOKE)/dry-run.txt
	$(PY) tests/check_make_commands.py $(NIH_SMOKE)/dry-run.txt
	$(MAKE) --no-print-directory all $(NIH_SMOKE_VARS)
	grep -q "official lists" $(NIH_SMOKE)/outputs/REPORT.md && grep -q "12 per class" $(NIH_SMOKE)/outputs/REPORT.md
	@$(MAKE) --no-print-directory -q all $(NIH_SMOKE_VARS) || { echo "nih-smoke: FAILED: a second make all would run again"; \
	exit 1; }
	$(MAKE) --no-print-directory efficiency tstr $(NIH_SMOKE_VARS)
	$(MAKE) --no-print-directory all $(NIH_SMOKE_VARS) RECIPE=diffusion
	grep -q 'real + synthetic (diffusion)' $(NIH_SMOKE)/outputs/REPORT.md && grep -q 'Data efficiency' $(NIH_SMOKE)/outputs/REPORT.md \
		&& grep -q 'synthetic only (TSTR)' $(NIH_SMOKE)/outputs/REPORT.md
	$(MAKE) --no-print-directory gan $(NIH_SMOKE_VARS) NPROC=2 OUTPUTS=$(NIH_SMOKE)/outputs-nproc2
	test -s $(NIH_SMOKE)/outputs-nproc2/gan/$(DEFAULT_RECIPE)/summary.json
	rm -rf $(NIH_SMOKE)  # about 1.3 GB, most of it classifier checkpoints; a failed run keeps it to look at
	@echo "nih-smoke: download, make all DATA=nih (official split), efficiency, tstr, RECIPE=diffusion and NPROC=2 passed"

gpu-check: $(STAMP)  ## on one CUDA GPU (about 8 min): img/s and peak memory of every stage, then make all DATA=nih at 256x256 with 2 min of GAN training, into docs/benchmarks.md; tiny on a CPU (into build/gpu-check.md)
	$(PY) bench/speed/gpu.py --device $(DEVICE) $(if $(GPU_CHECK_OUT),--out $(GPU_CHECK_OUT))

bench: $(STAMP)  ## speed benchmarks (needs ../shared/data), results to docs/benchmarks.md
	$(PY) bench/speed/compression.py
	$(PY) bench/speed/ingest.py
	$(PY) bench/speed/reader.py
	$(PY) bench/speed/train_speed.py
	$(PY) bench/speed/sample_speed.py
	$(PY) bench/speed/fid_speed.py

# the container engine: docker when its daemon answers, else podman (ENGINE=podman or ENGINE=docker to choose);
# podman builds in docker format, which keeps the Dockerfile's SHELL
ENGINE ?= $(shell docker info >/dev/null 2>&1 && echo docker || { command -v podman >/dev/null && echo podman; } || echo docker)
docker:  ## build the CUDA image, tagged cxrgan (with docker, or podman where no docker daemon runs)
	$(ENGINE) build $(if $(filter podman,$(notdir $(ENGINE))),--format docker )-f docker/Dockerfile -t cxrgan .

docker-test: $(STAMP)  ## build the image on a Debian stand-in base (podman; installed as root) and run it: sample.py --n 500, make smoke, a bad input; skips, saying why, where no engine can run
	$(PY) docker/check.py

clean:  ## remove OUTPUTS, built datasets and build/ (keeps NIH downloads and .venv)
	find $(OUTPUTS) -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf $(DATA_DIR)/phantom-*.h5 $(DATA_DIR)/nih-*.h5 $(DATA_DIR)/features-extra-*.h5 $(DATA_DIR)/*.report.json build
