# Stevedore's Makefile: every target has a "## description"; `make help`
# lists them.

GO      ?= go
export GOPROXY ?= https://proxy.golang.org
export GOFLAGS ?= -buildvcs=false

# Every module of the workspace, as package patterns.
MODULES  := $(shell $(GO) list -m -f '{{.Path}}/...')
MODDIRS  := $(shell $(GO) list -m -f '{{.Dir}}')
BIN      := bin
SERVICES := resolver puller snapshotter

.PHONY: help build test test-short vet lint fuzz bench bench-warm bench-pull run gowork-off clean

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/stevedore and one binary per service (static, CGO_ENABLED=0)
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/stevedore ./cmd/stevedore
	@for s in $(SERVICES); do \
		echo "CGO_ENABLED=0 $(GO) build -o $(BIN)/stevedore-$$s ./services/$$s/cmd/$$s"; \
		CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/stevedore-$$s ./services/$$s/cmd/$$s || exit 1; \
	done

test: vet ## run every module's tests with the race detector (embedded NATS and registry, no Docker, no root)
	$(GO) test -race -count=1 -timeout 15m $(MODULES)

test-short: ## run every module's tests without the race detector
	$(GO) test -count=1 $(MODULES)

vet: ## go vet every module
	$(GO) vet $(MODULES)

lint: ## golangci-lint (version pinned in tools/go.mod, config .golangci.yml) over every module
	cd tools && GOWORK=off $(GO) build -o ../$(BIN)/golangci-lint github.com/golangci/golangci-lint/v2/cmd/golangci-lint
	@for d in $(MODDIRS); do echo "== $$d"; (cd $$d && $(CURDIR)/$(BIN)/golangci-lint run --config $(CURDIR)/.golangci.yml ./...) || exit 1; done

gowork-off: ## build each module on its own (GOWORK=off), as a Dockerfile would
	@for d in $(MODDIRS); do echo "== $$d"; (cd $$d && GOWORK=off $(GO) build ./...) || exit 1; done

FUZZTIME ?= 20s
fuzz: ## run every fuzz target for FUZZTIME each
	@for pkg in ./pkg/events ./pkg/source; do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

bench: bench-warm bench-pull ## bench-warm, then bench-pull

BENCHN ?= 3000
bench-warm: ## warm-path latency and throughput next to the bus floor, with ratios (stores on tmpfs)
	cd bench && TMPDIR=$${BENCH_TMPDIR:-/dev/shm} $(GO) test -run '^$$' -bench '^Benchmark(WarmPath|Throughput)$$' -benchtime $(BENCHN)x -timeout 30m .

PULLN      ?= 3
PULLIMAGES ?= a|b|c
bench-pull: ## cold pull of images (a) (b) (c): stevedore vs containerd's ctr vs curl|tar, PULLN runs each (root, containerd, tmpfs)
	cd bench && TMPDIR=$${BENCH_TMPDIR:-/dev/shm} BENCH_PULL_RUNS=$(PULLN) $(GO) test -run '^$$' -bench '^BenchmarkPull$$/^($(PULLIMAGES))$$' -benchtime 1x -timeout 60m .

run: build ## run the whole fleet in one process on an embedded NATS (bin/stevedore up)
	$(BIN)/stevedore up

clean: ## remove build output
	rm -rf $(BIN)
