# The README's two commands, `make test` and `make demo`, set up everything they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export RECSYS_DATASETS_DIR ?= $(abspath ../shared/datasets)
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONUNBUFFERED := 1

.PHONY: venv test test-slow test-all lint lint-api demo bench clean

# Rebuilt when missing or when the pins or package metadata change.
$(STAMP): requirements.txt setup.cfg pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements.txt
	$(VPY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

test: lint
	$(VPY) -m pytest -m "not slow and not real_tfserving" -q

test-slow: $(STAMP)
	$(VPY) -m pytest -m "slow" -q

test-all: $(STAMP)
	$(VPY) -m pytest -q

# ruff (pyflakes, import order, line length; pyproject.toml), then no TensorFlow, Keras, TFRS or ScaNN
# internals (tools/check_public_api.py, also a test of the fast suite).
lint: $(STAMP)
	$(VENV)/bin/ruff check .

lint-api: $(STAMP)
	$(VPY) tools/check_public_api.py

demo: $(STAMP)
	$(VPY) -m tfrs_recsys.demo

bench: $(STAMP)
	$(VPY) bench/pipeline.py

clean:
	rm -rf runs .pytest_cache

# Hotel search benchmark: Kaggle "Personalize Expedia Hotel Searches" (ICDM 2013), see docs/benchmarks.md.
#   make benchmark-setup DATA=<folder with train.csv>   validate the download, write Parquet to $(BENCH_DIR)
#   make benchmark-train                                 train ESMM, report NDCG@38 (booking = 5, click = 1)
#   make benchmark-clean                                 remove $(BENCH_DIR)
BENCH_DIR ?= runs/expedia
DATA ?=
BENCH_SETUP_ARGS ?=
BENCH_TRAIN_ARGS ?=

.PHONY: benchmark-setup benchmark-train benchmark-clean

benchmark-setup: $(STAMP)
	$(VPY) -m tfrs_recsys.data.expedia setup --data "$(DATA)" --work-dir "$(BENCH_DIR)" $(BENCH_SETUP_ARGS)

benchmark-train: $(STAMP)
	$(VPY) -m tfrs_recsys.train esmm --dataset expedia --data-dir "$(BENCH_DIR)" --output-dir "$(BENCH_DIR)/esmm" \
		--progress false $(BENCH_TRAIN_ARGS)
	$(VPY) -m tfrs_recsys.evaluate --run-dir "$(BENCH_DIR)/esmm" --ndcg-k 38 --gains booking=5,click=1 \
		--json "$(BENCH_DIR)/esmm/competition_metrics.json"

benchmark-clean:
	test -n "$(BENCH_DIR)" && rm -rf -- "$(BENCH_DIR)"
