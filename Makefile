# Metalform: two commands do all the set-up on a fresh Debian machine.
#   make demo   installs, starts the local lab, validates, plans and applies inventory-example/
#   make test   installs and runs the whole test suite
# Both install what they need: Debian packages (with apt-get, as root or through sudo), a
# virtualenv in .venv with Metalform and its test tools, and the npm webhook examples.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_WORKERS ?= 2
LAB_DIR ?= .metalform-lab
WEBHOOK_EXAMPLES := .cache/npm/node_modules/@octokit/webhooks-examples

.PHONY: help install system-deps demo test lint schemas bench clean lab-down tour

help:
	@echo "make demo     start the local lab and plan/apply inventory-example/"
	@echo "make test     run the whole test suite (installs what it needs)"
	@echo "make lint     ruff check and format check, mypy --strict on every product package, layer contract"
	@echo "make tour     the GitOps tour: metalform serve, webhooks, a PR comment, apply (after demo)"
	@echo "make bench    fleet, IPMI, rollout, MAAS and emulator benchmarks, each against the plain alternative"
	@echo "make schemas  regenerate schemas/ from the models"

# command that must exist -> Debian package that provides it
SYSTEM_DEPS := ipmi_sim:openipmi ipmitool:ipmitool git:git npm:npm \
               dockerd:docker.io busybox:busybox-static \
               /usr/lib/postgresql/*/bin/initdb:postgresql chromium:chromium \
               redis-server:redis-server \
               /usr/lib/rabbitmq/bin/rabbitmq-server:rabbitmq-server

system-deps:
	@missing=""; for dep in $(SYSTEM_DEPS); do \
	  cmd=$${dep%%:*}; pkg=$${dep##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || ls $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(BIN)/metalform: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

$(WEBHOOK_EXAMPLES):
	npm install --silent --no-audit --no-fund --prefix .cache/npm @octokit/webhooks-examples@7.6

install: system-deps $(BIN)/metalform

demo: install
	$(BIN)/metalform lab up --state-dir $(LAB_DIR)
	source $(LAB_DIR)/env && $(BIN)/metalform validate -C inventory-example
	source $(LAB_DIR)/env && $(BIN)/metalform plan -C inventory-example -o demo.plan.json
	source $(LAB_DIR)/env && $(BIN)/metalform apply demo.plan.json
	source $(LAB_DIR)/env && $(BIN)/metalform plan -C inventory-example --detailed-exitcode
	@echo; echo "The lab keeps running: 'source $(LAB_DIR)/env' to use it, 'make lab-down' to stop it."

tour: install
	$(BIN)/python scripts/gitops_tour.py

lab-down:
	$(BIN)/metalform lab down --state-dir $(LAB_DIR)

test: install $(WEBHOOK_EXAMPLES)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup

PRODUCT := metalform reconciler providers webhooks
lint: install
	$(BIN)/ruff check $(PRODUCT) tests bench scripts
	$(BIN)/ruff format --check $(PRODUCT) tests bench scripts
	$(BIN)/mypy $(PRODUCT)
	$(BIN)/lint-imports

schemas: install
	$(BIN)/metalform schema --out schemas

bench: install
	$(BIN)/python bench/plan_bench.py
	$(BIN)/python bench/ipmi_fleet_bench.py
	$(BIN)/python bench/rollout_bench.py
	$(BIN)/python bench/maas_bench.py
	$(BIN)/python bench/fleet_bench.py
	$(BIN)/python bench/emulator_fleet_bench.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache $(LAB_DIR) demo.plan.json
