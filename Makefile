# The two commands of the README, and the steps they are made of.
# Everything installs itself and is cached under $(BATON_CACHE) by content hash.
SHELL := /bin/bash
export BATON_CACHE ?= $(HOME)/.cache/baton
ENV := source .ci/env.sh &&

.PHONY: help setup demo test lint crds
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: ## install everything the demo and the tests need (cached: seconds when warm)
	.ci/setup

demo: ## the local closed loop: models built, served, a better candidate promoted, a worse one rejected
	.ci/setup demo
	$(ENV) baton demo

test: setup ## lint, CRD freshness, then unit, integration and end-to-end tests against real components
	.ci/test

lint: ## ruff over every source root
	$(ENV) ruff check operator serving models tests bench && ruff format --check operator serving models tests bench

crds: ## regenerate manifests/crds from the pydantic API types
	$(ENV) baton crds
