# One entry point for humans and CI. Every target bootstraps what it needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
SCENARIO ?= common

.PHONY: help up down setup host image lint wheel-check syntax pytest molecule molecule-all test clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

up: image ## The whole stack on this machine (local AWS API, containers, site.yml); prints its URL
	@scripts/local.sh up

down: setup ## Remove everything `make up` made, and check that nothing is left
	@scripts/local.sh down

setup: ## Create or refresh .venv (pinned tools) and the pinned collections
	@scripts/bootstrap.sh

host: ## Install missing host packages (PostgreSQL, Pebble, Docker) and start dockerd if none answers
	@scripts/host-deps.sh

image: setup host ## Build the systemd test images, Debian 12 and 13 (only when a recipe changed; skipped when MOLECULE_IMAGE is set)
	@if [ -z "$${MOLECULE_IMAGE:-}" ]; then scripts/build-image.sh debian12 && scripts/build-image.sh debian13; fi

lint: setup ## yamllint, ansible-lint (production profile), ruff, vermin (Python 3.10), the wheel check
	@scripts/test.sh lint

wheel-check: setup ## The app's pins have wheels for CPython 3.10-3.13, x86_64 and aarch64 (ARGS=--refresh re-checks)
	@python scripts/wheel_check.py $(ARGS)

syntax: setup ## ansible-playbook --syntax-check site.yml against each inventory
	@scripts/test.sh syntax

pytest: setup host ## Every pytest suite
	@scripts/test.sh pytest

molecule: image ## One Molecule scenario: make molecule SCENARIO=common
	@scripts/test.sh molecule $(SCENARIO)

molecule-all: image ## Every Molecule scenario
	@scripts/test.sh molecule

test: image ## Everything CI runs: lint, syntax, pytest, every Molecule scenario
	@scripts/test.sh all

clean: ## Remove test containers, caches and the venv (keeps Docker images)
	@scripts/clean.sh
