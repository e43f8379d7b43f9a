# RouteLedger — two commands do all set-up:
#   make demo   runs the main job on the embedded SQLite store (./routeledger.db)
#   make test   runs the whole suite (PostgreSQL included: installed from Debian's
#               packages if missing, started on loopback for the run, stopped after)
# Each creates/updates its own virtual environment in .venv.

# Debian's CPython when there is one: it is built with PGO and LTO and runs this
# project's hot paths ~25% faster than an interpreter built without them (a
# pyenv default build); any other Python >= 3.11 works.
PYTHON ?= $(shell test -x /usr/bin/python3 && /usr/bin/python3 -m venv --help >/dev/null 2>&1 && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' && echo /usr/bin/python3 || echo python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all venv demo test lint typecheck unit test-sdk-previous test-extras bench bench-compare simulate clean

all: test

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "RouteLedger needs Python >= 3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/routeledger demo

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	PYTHON=$(PY) bash .ci/mypy.sh

unit: $(STAMP)
	bash .ci/postgres.sh install
	$(PY) -m pytest --cov --cov-branch --cov-report=term --cov-report=xml:coverage.xml
	$(PY) -m coverage report --include='*/core/*' --fail-under=100

test: lint typecheck test-extras test-sdk-previous unit

# The SDK classification tests again with the previous majors users still run:
# openai 2.x and anthropic 0.x, built on httpx (the newest, openai 3 and anthropic
# 2, are on httpx2 and in .venv), in a virtual environment of their own.
SDK_PREVIOUS ?= .venv-sdk-previous
$(SDK_PREVIOUS)/.installed: pyproject.toml
	@test -x $(SDK_PREVIOUS)/bin/python || $(PYTHON) -m venv $(SDK_PREVIOUS)
	$(SDK_PREVIOUS)/bin/python -m pip install --quiet --upgrade pip
	$(SDK_PREVIOUS)/bin/python -m pip install --quiet -e '.[postgres]' 'httpx<1' pytest hypothesis 'openai>=2,<3' 'anthropic<1'
	@touch $@

test-sdk-previous: $(SDK_PREVIOUS)/.installed
	$(SDK_PREVIOUS)/bin/python -m pytest -p no:cacheprovider tests/adapters/http/test_sdk_classification.py

# Each integration from a virtual environment holding only its extra (G7): the
# runnable examples of docs/integrations.md, run there. Fresh environments each
# time (under .venv-extras/), so nothing the dev environment has can hide a
# missing dependency.
EXTRAS_DIR ?= .venv-extras
, := ,
define run_extra
	rm -rf $(EXTRAS_DIR)/$(1) && $(PYTHON) -m venv $(EXTRAS_DIR)/$(1)
	$(EXTRAS_DIR)/$(1)/bin/python -m pip install --quiet -e '.[$(2)]' $(3)
	cd $(EXTRAS_DIR) && for example in $(4); do \
	  $(1)/bin/python ../docs/examples/integrations/$$example.py >/dev/null || exit 1; \
	  echo "extras: [$(2)] $$example ok"; done
endef

test-extras:
	$(call run_extra,pydantic-ai,pydantic-ai,,pydantic_ai_agent openai_sdk_transport anthropic_sdk_transport)
	$(call run_extra,litellm,litellm,,litellm_import litellm_router)
	$(call run_extra,otel,otel$(,)providers,opentelemetry-sdk,hooks_and_otel)

# A long campaign of the deterministic fleet simulation (docs/reliability.md).
SEEDS ?= 10000
simulate: $(STAMP)
	$(PY) -m routeledger.adapters.testing.simulation --seeds $(SEEDS) --jobs 2

bench: $(STAMP)
	bash .ci/postgres.sh install
	$(PY) bench/run.py

# RouteLedger beside LiteLLM (bench/compare.py, bench/README.md), in its own
# environment so LiteLLM never enters .venv: LiteLLM pinned, RouteLedger editable.
# Offline: the script sets LITELLM_LOCAL_MODEL_COST_MAP and loads a loopback-only
# socket guard (bench/offline/sitecustomize.py) in every process it starts.
# COMPARE_ARGS=--quick for a smoke run (~1 minute).
COMPARE_VENV ?= .venv-compare
LITELLM_VERSION := 1.110.2
COMPARE_STAMP := $(COMPARE_VENV)/.installed-litellm-$(LITELLM_VERSION)
COMPARE_ARGS ?=

$(COMPARE_STAMP): pyproject.toml
	@test -x $(COMPARE_VENV)/bin/python || $(PYTHON) -m venv $(COMPARE_VENV)
	$(COMPARE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(COMPARE_VENV)/bin/python -m pip install --quiet -e '.[server]' 'litellm==$(LITELLM_VERSION)'
	@touch $@

bench-compare: $(COMPARE_STAMP)
	$(COMPARE_VENV)/bin/python bench/compare.py $(COMPARE_ARGS)

clean:
	rm -rf $(VENV) $(COMPARE_VENV) $(SDK_PREVIOUS) $(EXTRAS_DIR) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage coverage.xml
