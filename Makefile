# The template repository's commands: the README, .ci/run and the CI workflow call these targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

UV ?= uv
RUN := $(UV) run --frozen --no-sync
DEMO_DIR := demo
PYTEST_ARGS ?=
BAKE_DIR := build/bake
BAKE_ANSWERS ?=

#################################################################################
# Setup                                                                         #
#################################################################################

.venv/.synced: pyproject.toml uv.lock
	$(UV) sync --frozen
	@touch $@

.PHONY: setup
setup: .venv/.synced ## Install the template's dev tools (cookiecutter, pytest, ruff, ...) into .venv

#################################################################################
# Demo                                                                          #
#################################################################################

.PHONY: demo
demo: setup stop-demo ## Bake the defaults into ./demo/ and run the baked project's whole local flow
	rm -rf $(DEMO_DIR)
	$(RUN) cookiecutter --no-input --output-dir $(DEMO_DIR) .
	@project="$$(ls -d $(DEMO_DIR)/*/)" && \
		$(MAKE) -C "$$project" setup run && \
		echo "The demo project is $${project%/}: cd there and run 'make help' for more."

.PHONY: stop-demo
stop-demo: ## Stop the local endpoint of an earlier demo, if one is running
	@for makefile in $(DEMO_DIR)/*/Makefile; do \
		if [ -f "$$makefile" ]; then $(MAKE) -C "$$(dirname "$$makefile")" stop || true; fi; \
	done

#################################################################################
# Tests and lint                                                                #
#################################################################################

.PHONY: test
test: setup ## Run every template test: bakes, hooks, repo checks, and a baked project's own tests
	$(RUN) pytest $(PYTEST_ARGS)

.PHONY: test-quick
test-quick: setup ## Run the template tests without installing a bake (-F; a minute or two)
	$(RUN) pytest -F $(PYTEST_ARGS)

.PHONY: test-production
test-production: setup ## Rehearse production under act: main.yml run after run, and a PR's isolation (Snowflake, AWS emulated)
	$(RUN) pytest -m production $(PYTEST_ARGS)

.PHONY: test-bake
test-bake: setup ## Bake BAKE_ANSWERS ("tracking=none ...") into build/ and run its lint and unit tests
	rm -rf $(BAKE_DIR)
	$(RUN) cookiecutter --no-input --output-dir $(BAKE_DIR) . $(BAKE_ANSWERS)
	@project="$$(ls -d $(BAKE_DIR)/*/)" && $(MAKE) -C "$$project" setup lint test-quick

.PHONY: lint
lint: setup ## Check the hooks and the tests with ruff
	$(RUN) ruff check hooks tests
	$(RUN) ruff format --check hooks tests

.PHONY: format
format: setup ## Format the hooks and the tests with ruff
	$(RUN) ruff check --fix hooks tests
	$(RUN) ruff format hooks tests

.PHONY: clean
clean: stop-demo ## Stop the demo's endpoint and delete the demo and test caches
	rm -rf $(DEMO_DIR) build .pytest_cache .ruff_cache

#################################################################################
# Development of the template                                                   #
#################################################################################

DEV_DIR ?= build/dev
DEV_ANSWERS ?=
# What a re-render keeps in DEV_DIR: the installed environment and what runs left behind.
DEV_KEEP := .venv .git data .metaflow .pytest_cache .ruff_cache

.PHONY: dev-bake
dev-bake: setup ## Render the template into DEV_DIR/<project> (DEV_ANSWERS="tracking=none ..."), keeping its .venv
	rm -rf $(DEV_DIR).render
	$(RUN) cookiecutter --no-input --output-dir $(DEV_DIR).render . $(DEV_ANSWERS) >/dev/null
	@set -e; src="$$(ls -d $(DEV_DIR).render/*/)"; dst="$(DEV_DIR)/$$(basename "$$src")"; \
		mkdir -p "$$dst"; \
		find "$$dst" -mindepth 1 -maxdepth 1 $(foreach k,$(DEV_KEEP),! -name $(k)) \
			-exec rm -rf {} +; \
		cp -a "$$src". "$$dst"/; rm -rf $(DEV_DIR).render; \
		$(MAKE) -s -C "$$dst" setup; echo "baked into $$dst"

.PHONY: dev-sync
dev-sync: setup ## Copy edits made in DEV_DIR's bake back into the template (lists what needs a hand)
	@cd tests && $(RUN) python dev_sync.py "$$(ls -d ../$(DEV_DIR)/*/ | head -1)"

.PHONY: dev-test
dev-test: dev-bake ## Re-render DEV_DIR and run its tests there (PYTEST_ARGS="tests/test_x.py -x")
	@cd "$$(ls -d $(DEV_DIR)/*/ | head -1)" && $(UV) run --frozen --no-sync pytest $(PYTEST_ARGS)

#################################################################################
# Help                                                                          #
#################################################################################

.PHONY: help
help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## .*$$' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'
