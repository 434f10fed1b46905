# safedeploy.fleet — two commands matter: `make demo` and `make test`.
# Everything else here is a step of those two, usable on its own.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
COLLECTION_LINK := build/collections/ansible_collections/safedeploy/fleet
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: demo test deps venv collection artifacts lab-up lab-down lab-status lab-reset \
        test-unit lint sanity test-integration molecule bench bench-quick clean ee module-docs \
        test-faults test-extended bench-ci

demo: deps venv collection artifacts
	$(PY) tests/lab/demo.py

# The static checks side by side (the unit tests take both cores, lint and
# sanity mostly one), then the lab tests.
test: deps venv collection artifacts
	$(MAKE) --jobs=3 --output-sync=target test-unit lint sanity
	$(MAKE) test-integration

deps: build/.deps-stamp
build/.deps-stamp: tools/install-deps.sh
	@sh tools/install-deps.sh
	@mkdir -p build && touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@touch $@

collection: $(COLLECTION_LINK)
$(COLLECTION_LINK):
	@mkdir -p $(dir $@)
	@ln -sfn ../../../.. $@

artifacts: venv
	@$(PY) tests/lab/build_artifacts.py --out build/artifacts

lab-up: deps venv collection artifacts
	$(PY) tests/lab/lab.py up
lab-down:
	$(PYTHON) tests/lab/lab.py down
lab-status:
	$(PYTHON) tests/lab/lab.py status
lab-reset:
	$(PY) tests/lab/lab.py reset

test-unit: venv collection
	$(PY) -m pytest -q -p no:cacheprovider -n 2 tests/unit

lint: venv collection
	$(VENV)/bin/ruff check plugins tests bench tools
	$(VENV)/bin/ansible-lint --profile production -q

sanity: venv
	@tools/sanity.sh

# make test's lab tests, on LAB_WORKERS labs side by side (default 3), with
# every Molecule scenario running at the same time on a lab of its own, then
# the final check that no lab left anything (tools/test-lab.sh). The long
# ones (fault injection, the interactive canary gate, blue/green analysis,
# artifact distribution, fleet scope) are marked `extended` and run by
# `make test-extended` (alias test-faults) the same way.
LAB_WORKERS ?= 3
export LAB_WORKERS

test-integration: venv collection artifacts
	@tools/test-lab.sh "not extended" --molecule

test-extended: venv collection artifacts
	@tools/test-lab.sh extended

test-faults: test-extended

molecule: venv collection artifacts
	@tools/molecule.sh

# docs/modules from the modules' DOCUMENTATION (tests/unit/test_module_docs.py checks it).
module-docs: venv collection
	$(PY) tools/module_docs.py

# The AWX execution environment's build context in build/ee/context
# (execution-environment.yml; build the image with podman/docker from there).
ee: venv
	@mkdir -p build/ee
	$(VENV)/bin/ansible-galaxy collection build --force --output-path build/ee .
	cp build/ee/safedeploy-fleet-$$(sed -n 's/^version: *//p' galaxy.yml).tar.gz build/ee/safedeploy-fleet.tar.gz
	$(VENV)/bin/ansible-builder create -f execution-environment.yml -c build/ee/context --output-filename Containerfile

bench: venv collection artifacts
	$(PY) bench/run.py

bench-quick: venv collection artifacts
	$(PY) bench/run.py --quick

# What CI runs after the tests: the short forms of the health_check and scale
# benchmarks (figures printed, never a failure on timing).
bench-ci: venv collection artifacts
	$(PY) bench/run.py --quick --only health_check,scale

clean: lab-down
	rm -rf build .pytest_cache
