# zhongtai task runner. `make help` lists the targets; CI runs `make test` (.ci/run).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
ZT := $(BIN)/zhongtai
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install lint stack-up stack-down status test test-unit demo bench bench-collector clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(BIN)/activate:
	$(PY) -m venv $(VENV)

install: $(BIN)/activate $(CHROMIUM)  ## create .venv, install zhongtai with pinned dependencies, and Debian's chromium
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test,bench]'
	$(BIN)/python -m connectors.jvm

# The browser tests drive Debian's chromium with Playwright (tests/browser.py); Playwright's own browser
# download (`playwright install`) is never used. apt-get as root (sudo otherwise), once.
$(CHROMIUM):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium

lint: install  ## ruff, mypy on the package, the layer contracts (.importlinter)
	$(BIN)/ruff check .
	$(BIN)/mypy
	PYTHONPATH=$(CURDIR) $(BIN)/lint-imports

stack-up: install  ## start Kafka, HBase + Thrift, Redis (fetched from Maven Central / apt on first use)
	$(ZT) stack up

stack-down:  ## stop what stack-up started
	$(ZT) stack down

status:  ## show the local services
	$(ZT) stack status

test-unit: install  ## pure unit tests only (no services)
	$(BIN)/python -m pytest -q -m "not stack and not flink"

test: install lint  ## install, lint, start the stack, run the whole suite
	$(ZT) stack up --flink-cluster
	PYTHONPATH=$(CURDIR) $(BIN)/python -m pytest -q

demo: install  ## stack + sample stream + job on the embedded mini-cluster + summary from Redis
	$(ZT) stack up
	$(ZT) demo

bench: install  ## throughput benchmark (writes bench/results/latest.json)
	$(ZT) stack up
	$(ZT) bench

bench-collector: install  ## the collector's events/s and latency, 1 and 2 processes (bench/results/collector.json)
	$(ZT) stack up
	PYTHONPATH=$(CURDIR) $(BIN)/python -m bench.collector_bench

clean:  ## remove the local stack's data (keeps the jar cache)
	-$(ZT) stack down
	rm -rf .zt
