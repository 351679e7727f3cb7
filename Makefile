# The harness's commands. Every target sets up .venv first when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch 2.13.0 has a CPU wheel cached on the lab machines; override for a CUDA build. torchvision
# is pinned with it, or pip would pull a newer torch (a CUDA build, several GB) to match.
# (PyPI's torchvision for Linux is a CUDA build whose C++ ops cannot load over a CPU torch; the
# harness uses only its data sets, see harness/images.py.) One requirement per word.
TORCH_SPEC ?= torch==2.13.0 torchvision==0.28.0
ARGS ?=
EXP  ?= lecture
JOBS ?= 1
PORT ?= 5000
STORE ?= sqlite:///$(CURDIR)/mlflow.db
HOST ?= 127.0.0.1
DB   ?=
DB_PASSWORD_FILE ?=

# $(call q,NAME): the value of variable NAME as one shell word, whatever it holds (spaces, quotes,
# ; or *): '...' with each ' written '\''. (A $ is make's own: write $$ for a literal one.) ARGS
# alone is split into words on purpose, a list of overrides; quote an override with a space:
#   make run ARGS="'tracking.experiment=my study' optimizer=adam"
q = '$(subst ','\'',$($(1)))'
# $(call qw,NAME): each space-separated word of NAME's value as a shell word of its own.
qw = $(foreach word,$($(1)),'$(subst ','\'',$(word))')

.DEFAULT_GOAL := help
.PHONY: help install run sweep studies report ui server test test-slow test-all test-cluster bench lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(call q,PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(call qw,TORCH_SPEC)
	$(BIN)/pip install --quiet --config-settings editable_mode=compat -e '.[dev]'
	touch $@

install: $(BIN)/.installed ## create .venv and install the project with its dev tools

# The optional extras: psycopg2 for the server, submitit and Ray for the cluster executors.
$(BIN)/.server: $(BIN)/.installed
	$(BIN)/pip install --quiet --config-settings editable_mode=compat -e '.[dev,server]'
	touch $@

$(BIN)/.cluster: $(BIN)/.installed
	$(BIN)/pip install --quiet --config-settings editable_mode=compat -e '.[dev,server,slurm,ray]'
	touch $@

run: install ## train one configuration: make run ARGS="optimizer=adam optimizer.lr=0.05"
	$(BIN)/python -m harness.train $(ARGS)

sweep: install ## run a study into mlflow.db: make sweep EXP=lr_sensitivity JOBS=2 ARGS="seed=0,1"
	$(BIN)/python -m harness.sweep $(call q,EXP) hydra.launcher.n_jobs=$(call q,JOBS) $(ARGS)

studies: install ## list the studies and the question each answers
	$(BIN)/python -m harness.sweep --list

report: install ## the HTML report of a study: make report EXP=lr_sensitivity
	$(BIN)/python -m reports $(call q,EXP) $(ARGS)

ui: install ## browse the runs in the MLflow UI; prints each study's address (PORT=..., STORE=...)
	$(BIN)/python -m harness.ui --store $(call q,STORE) --host 127.0.0.1 --port $(call q,PORT)

server: $(BIN)/.server ## shared MLflow server on a local PostgreSQL (HOST=..., PORT=..., DB=<database URI>, DB_PASSWORD_FILE=...)
	$(BIN)/python -m harness.server --host $(call q,HOST) --port $(call q,PORT) $(if $(DB),--db $(call q,DB)) $(if $(DB_PASSWORD_FILE),--db-password-file $(call q,DB_PASSWORD_FILE)) $(ARGS)

test: install ## the default test suite (not the slow tests)
	$(BIN)/pytest

test-slow: install ## the slow tests only (every job of every study composed two ways, ...)
	$(BIN)/pytest -m slow

test-all: install ## every test, the slow ones too
	$(BIN)/pytest -m "slow or not slow"

test-cluster: $(BIN)/.cluster ## the cluster tests (PostgreSQL, MLflow server, submitit, Ray)
	$(BIN)/pytest -m cluster

bench: install ## speed benchmarks, ratios measured side by side
	$(BIN)/python benchmarks/bench.py

lint: install ## ruff
	$(BIN)/ruff check .

clean: ## remove generated files (keeps .venv and mlflow.db)
	rm -rf outputs multirun .pytest_cache .ruff_cache
