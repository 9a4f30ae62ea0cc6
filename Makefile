# scattergather: `make run` plays the demo on an embedded broker, `make test`
# runs unit tests and the integration suite on the embedded broker. Nothing but
# Go is needed for either.

GO        ?= go
BIN       ?= bin/scattergather
PKGS      ?= ./...
GOFLAGS   ?=
export GOFLAGS

.PHONY: all build run dev test test-unit examples deploy python-processor lint vet fmt fuzz chaos bench bench-micro clean help

all: build

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

# -buildvcs=auto stamps the commit (scattergather version, bench reports)
# even where GOFLAGS turns it off, and skips it outside a git checkout.
build: ## build bin/scattergather
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/scattergather

run: ## play the demo end to end on an embedded broker and exit
	$(GO) run ./cmd/scattergather demo

dev: ## run an embedded broker and every role until Ctrl-C
	$(GO) run ./cmd/scattergather dev

# -timeout 8m: the slowest package takes about 2 minutes on a loaded 2-core
# box; a hang fails its package (with every goroutine's stack) well within
# CI's 30 minutes. Then the examples module and the deploy module (below).
test: ## unit tests + integration suite on the embedded broker (kfake), then the examples and deploy modules
	$(GO) test -count=1 -timeout 8m $(PKGS)
	@$(MAKE) --no-print-directory examples
	@$(MAKE) --no-print-directory deploy

# examples is the examples/ module: its own go.mod, which takes this module
# through a replace, so it builds against the public packages as a user's
# module does. It checks that
#   - go.sum is complete: the build runs with -mod=readonly, so a missing
#     entry fails here rather than being added (run `go mod tidy` in
#     examples/ after changing this module's dependencies);
#   - no example imports an internal package: the module's path
#     (example.com/scattergather-examples) lies outside this module's, so
#     the compiler refuses it as it would in a stranger's module; the go
#     list below says which import when it happens. The Example tests of
#     the role packages (*/example_test.go), which live in this module, are
#     held to the same rule by the grep;
#   - go vet passes and the tests pass (examples/inventory/main_test.go runs
#     the whole program end to end on an in-process broker).
# Cost on the 2-core box: 3-5s after `go test ./...` has filled the build
# cache (as in `make test`), of which the tests take 0.3-2.5s; about 170s
# with an empty build cache, nearly all of it compiling.
examples: ## vet, build and test the examples/ module (public API only, go.sum complete)
	cd examples && $(GO) build -mod=readonly -o /dev/null ./...
	@bad=$$( (cd examples && $(GO) list -e -test -f '{{range .Imports}}{{$$.ImportPath}} imports {{.}}{{"\n"}}{{end}}' ./...) | grep ' imports github.com/scattergather/scattergather/internal'; \
		grep -Hn '"github.com/scattergather/scattergather/internal' */example_test.go /dev/null); \
	if [ -n "$$bad" ]; then echo "examples: internal packages imported; a user's module cannot import them:"; echo "$$bad"; exit 1; fi
	cd examples && $(GO) vet ./... && $(GO) test -count=1 ./...

# deploy is the deploy/ module: the tests of compose.yaml, the Dockerfile,
# the Kubernetes base (deploy/kubernetes, decoded strictly with k8s.io/api),
# the Grafana dashboard and the Prometheus alert rules (parsed with
# Prometheus's rule parser, each alert evaluated by its PromQL engine). It
# is its own module, taking this one through a replace, so that k8s.io/api
# and prometheus/prometheus stay out of this module's go.mod; -mod=readonly
# fails on a missing go.sum entry (run `go mod tidy` in deploy/ after
# changing this module's dependencies).
# Cost on the 2-core box, measured: about 9s once built (vet, then the tests
# in 1.5-2.5s: they run the roles on kfake to learn their metric names); the
# first run after `go test ./...` compiles k8s.io/api, apimachinery and
# Prometheus's rule parser, PromQL engine and TSDB (for evaluating the
# alerts): 75s of CPU, 5 minutes of wall time on the box shared with other
# builds (load 20), so about a minute on an idle one.
deploy: ## test the deployment files: compose, Dockerfile, Kubernetes base, dashboard, alert rules (deploy/ module)
	cd deploy && $(GO) vet -mod=readonly ./... && $(GO) test -count=1 -mod=readonly ./...

# python-processor: examples/python/processor.py, a processor written in
# Python (confluent-kafka, fastavro) from docs/protocol.md alone, end to end
# against the Go scatterer and aggregator on the embedded broker:
# examples/python/e2e.py starts them on examples/python/routes.json (routes
# no Go processor serves), runs processor.py under both guarantees and checks
# the replies, a dead letter and an EXPIRED result. It first installs the
# pinned examples/python/requirements.txt with pip into the git-ignored
# $(PY_VENV)/ (made with $(PYTHON) -m venv). No Python, venv or pip is a
# failure, never a skip.
# Cost on the 2-core box, measured: 10-15s in a fresh clone with the Go
# build cache warm, as in CI (linking bin/scattergather, then venv and pip
# install of about 10 MB of wheels, about 5s, then the run, about 5s); about
# 6s again once the virtualenv and the binary are there.
PYTHON  ?= python3
PY_VENV ?= .venv-python
python-processor: build ## a Python processor (examples/python) end to end against the Go roles; needs python3 with venv and pip
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "python-processor: $(PYTHON) not found: install Python 3 (with venv and pip)"; exit 1; }
	@if [ ! -x $(PY_VENV)/bin/python ]; then \
		$(PYTHON) -m venv $(PY_VENV) || { rm -rf $(PY_VENV); echo "python-processor: '$(PYTHON) -m venv' failed: install venv and pip for $(PYTHON) (Debian: python3-venv)"; exit 1; }; \
	fi
	$(PY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r examples/python/requirements.txt
	$(PY_VENV)/bin/python examples/python/e2e.py --bin $(BIN)

lint: vet ## go vet and a gofmt check
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

# fuzz runs every Fuzz target in the repo (found by grepping the test files
# for `func Fuzz`, so a new target is picked up without editing this file)
# for FUZZTIME each, one after another, and prints the executions each
# reached. A failing input is saved under the package's testdata/fuzz/<target>/
# and runs with every `go test` from then on (docs/testing.md).
# Go 1.26 may end a run that found nothing with "context deadline exceeded"
# when -fuzztime expires (golang/go#75804, fixed in Go 1.27); a run that
# ends so and wrote no failing input counts as passed, and says so.
FUZZTIME ?= 10s
fuzz: ## run every Fuzz target for FUZZTIME each (default 10s) and print the executions reached
	@log=$$(mktemp); trap 'rm -f "$$log"' EXIT; failed=""; \
	for file in $$(git grep --untracked -l '^func Fuzz' -- '*_test.go'); do \
		pkg=./$$(dirname "$$file"); \
		for target in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$$file"); do \
			rc=0; start=$$(date +%s); \
			$(GO) test -tags sg_fuzz -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) "$$pkg" >"$$log" 2>&1 || rc=$$?; \
			execs=$$(sed -n 's/^fuzz: elapsed: .*, execs: \([0-9]*\) .*/\1/p' "$$log" | tail -n 1); \
			note=""; \
			if [ $$rc -ne 0 ] && grep -qx '    context deadline exceeded' "$$log" && ! grep -q 'Failing input written' "$$log"; then \
				rc=0; note=", ended by the fuzztime race golang/go#75804 (no failing input)"; \
			fi; \
			if [ $$rc -eq 0 ]; then \
				printf 'fuzz: %-18s %-27s ok: %s execs in %s (%ds with the build)%s\n' "$$pkg" "$$target" "$${execs:-?}" "$(FUZZTIME)" $$(($$(date +%s) - start)) "$$note"; \
			else \
				printf 'fuzz: %-18s %-27s FAILED (exit %d):\n' "$$pkg" "$$target" $$rc; cat "$$log"; failed="$$failed $$target"; \
			fi; \
		done; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: failed:$$failed"; exit 1; fi

clean:
	rm -rf bin

# bench: the pipeline against its raw-Kafka baseline on an embedded broker,
# 10 s measured per chain after a 3 s warmup; results in bin/bench.json and
# bin/bench.html. Override with BENCH_FLAGS (docs/benchmarks.md).
BENCH_FLAGS ?= --duration 10s --warmup 3s --baseline
# It runs the built binary: `go run` stamps no commit, and the report names
# the commit it measured.
bench: build ## a short standard bench: pipeline vs raw-Kafka baseline, same run (bin/bench.json, bin/bench.html)
	$(BIN) bench $(BENCH_FLAGS) --json bin/bench.json --plot bin/bench.html

bench-micro: ## Go micro-benchmarks: record codecs and the aggregator's add-part/complete paths
	$(GO) test -run '^$$' -bench . -benchmem ./schemas ./aggregator

# --- a real Apache Kafka for the integration suite (docs/testing.md) -------
# scripts/kafka-local.sh runs Kafka 4.x from Maven Central jars on
# 127.0.0.1:19092 (19092-19094 with KAFKA_NODES=3); Java 17 and Maven needed.
KAFKA_NODES ?= 1
GO          ?= go
PKGS        ?= ./...

.PHONY: test-kafka kafka-start kafka-stop

kafka-start: ## start a real Apache Kafka on 127.0.0.1 (KAFKA_NODES=3 for three nodes)
	scripts/kafka-local.sh start --brokers $(KAFKA_NODES)

kafka-stop: ## stop the real Apache Kafka and delete its data
	scripts/kafka-local.sh stop

# test-kafka runs the whole suite with KAFKA_BROKERS set, and the secured
# listeners' KAFKA_SASL_* and KAFKA_TLS_* (KAFKA_SASL_SSL_BROKERS, KAFKA_TLS_CA)
# exported from `scripts/kafka-local.sh env`. It starts a broker and stops it
# afterwards, even on failure; one that was already running (make
# kafka-start) is used and left running.
test-kafka: ## go test ./... against a real Apache Kafka started for the run
	@report="$(CURDIR)/.kafka/test-kafka-report.txt"; \
	if scripts/kafka-local.sh status >/dev/null 2>&1; then \
		echo "test-kafka: using the broker that is already running (left running)"; \
	else \
		trap 'scripts/kafka-local.sh stop' EXIT; trap 'exit 130' INT TERM; \
		scripts/kafka-local.sh start --brokers $(KAFKA_NODES) || exit 1; \
	fi; \
	brokers=$$(scripts/kafka-local.sh env | sed -n 's/^KAFKA_BROKERS=//p'); \
	eval "$$(scripts/kafka-local.sh env | grep -E '^KAFKA_(SASL|TLS)_' | sed 's/^/export /')"; \
	mkdir -p .kafka; : > "$$report"; \
	echo "test-kafka: KAFKA_BROKERS=$$brokers $(GO) test -count=1 $(PKGS)"; \
	rc=0; KAFKA_BROKERS=$$brokers SG_TESTKAFKA_REPORT="$$report" \
		$(GO) test -count=1 -timeout 8m $(PKGS) || rc=$$?; \
	echo "test-kafka: which broker each suite ran against:"; sort "$$report"; \
	if [ $$rc -ne 0 ]; then \
		echo "test-kafka: go test failed (exit $$rc); the broker's log:"; \
		scripts/kafka-local.sh logs 60; \
	fi; \
	exit $$rc

# --- chaos: kill roles under load and check every reply -------------------
# `scattergather chaos` runs each role as its own process, kills them with
# SIGKILL at random moments and checks every reply (docs/guarantees.md).
# CHAOS_FLAGS go to the command (e.g. --guarantee at-least-once --seed 7);
# CHAOS_BROKERS=host:port runs against that broker instead of kfake started
# as a process of its own.
CHAOS_FLAGS   ?= --requests 2000 --kills 6
CHAOS_BROKERS ?=

.PHONY: chaos-kafka

chaos: build ## kill roles under load on kfake (its own process) and check every reply
	$(BIN) chaos $(if $(CHAOS_BROKERS),--brokers $(CHAOS_BROKERS)) $(CHAOS_FLAGS)

# chaos-availability: deploys and scaling must be invisible to callers
# (issue #16), on kfake, exactly-once, no stragglers, 1,500 requests at
# 50/s each (about 40s a run): a rolling restart (6 SIGTERMs, every role
# restarted) must keep 100% of the replies COMPLETE, and scaling the
# processors 2 -> 4 -> 2 under load at least 99.9%. Deadlines are 6s: a
# restarted aggregator's partitions move twice (to the other instance and
# back), which stalled a partition for 3.0-4.2s even on an idle machine,
# so with 3s deadlines a run got 97.7% (docs/guarantees.md). A third run
# loses a processor for good (SIGKILL, never restarted) on a hedged route
# with 3s deadlines: the hedges must find the live processor's partitions,
# at least 99% COMPLETE (the issue's target; 71% with hedges sent to the
# next partition; 98.9% once in CI before hedges skipped partitions with
# tasks pending, aggregator/hedge.go hedgePartition; 100% in 5 of 5 runs
# since, on a loaded machine).
chaos-availability: build ## rolling restarts, scaling and a lost processor (hedged) under load on kfake: 100%, 99.9% and 99% COMPLETE or fail
	$(BIN) chaos --kills 0 --terms 6 --straggler-rate 0 --requests 1500 --rate 50 --timeout 6s --min-complete-pct 100 --progress 10s
	$(BIN) chaos --kills 0 --processors 2 --scale-processors 2 --straggler-rate 0 --requests 1500 --rate 50 --timeout 6s --min-complete-pct 99.9 --progress 10s
	$(BIN) chaos --kills 0 --processors 2 --lose-processor --hedge-delay 500ms --straggler-rate 0 --requests 1500 --rate 50 --timeout 3s --min-complete-pct 99 --progress 10s

# chaos-kafka is chaos on a real Apache Kafka: the running one
# (scripts/kafka-local.sh status), or one started for the run and stopped
# after it, even on failure.
chaos-kafka: build ## the chaos run on a real Apache Kafka (started for the run unless one is running)
	@if scripts/kafka-local.sh status >/dev/null 2>&1; then \
		echo "chaos-kafka: using the broker that is already running (left running)"; \
	else \
		trap 'scripts/kafka-local.sh stop' EXIT; trap 'exit 130' INT TERM; \
		scripts/kafka-local.sh start --brokers $(KAFKA_NODES) || exit 1; \
	fi; \
	brokers=$$(scripts/kafka-local.sh env | sed -n 's/^KAFKA_BROKERS=//p'); \
	$(BIN) chaos --brokers $$brokers $(CHAOS_FLAGS)

# chaos-kafka-brokers crashes Kafka nodes too: a 3-node cluster with a
# dedicated controller (started for the run and stopped after it, even on
# failure; a running one is used and left running), topics with replication factor 3 (min.insync.replicas 2),
# and a short run that kills roles and a node (SIGKILL, restarted 5-15s
# later with its own config and data by kafka-local.sh start-node).
# CHAOS_BROKER_FLAGS go to the command; SG_KAFKA_PORT and SG_KAFKA_HOME move
# the cluster as for kafka-local.sh. 600 requests at 15/s (40s) keep the load on
# while the node is down and comes back.
CHAOS_BROKER_FLAGS ?= --requests 600 --rate 15 --kills 2 --broker-kills 1 --guarantee exactly-once --progress 10s

.PHONY: chaos-kafka-brokers

chaos-kafka-brokers: build ## chaos on a 3-node Apache Kafka that also kills a node (started for the run unless one is running)
	@if scripts/kafka-local.sh status >/dev/null 2>&1; then \
		echo "chaos-kafka-brokers: using the cluster that is already running (left running)"; \
	else \
		trap 'scripts/kafka-local.sh stop' EXIT; trap 'exit 130' INT TERM; \
		scripts/kafka-local.sh start --brokers 3 --controllers 1 || exit 1; \
	fi; \
	brokers=$$(scripts/kafka-local.sh env | sed -n 's/^KAFKA_BROKERS=//p'); \
	$(BIN) chaos --brokers $$brokers --kafka-local scripts/kafka-local.sh --replication-factor 3 $(CHAOS_BROKER_FLAGS)
