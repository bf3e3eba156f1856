# Stevedore's Makefile: every target has a "## description"; `make help`
# lists them.

GO      ?= go
export GOFLAGS ?= -buildvcs=false

# Every module of the workspace, as package patterns.
MODULES  := $(shell $(GO) list -m -f '{{.Path}}/...')
# The conformance module builds BuildKit (some 600 packages): its tests run
# without the race detector, which would double that build for code that
# only parses and marshals.
CONFORMANCE := github.com/stevedore-dev/stevedore/conformance/...
RACE_MODULES := $(filter-out $(CONFORMANCE),$(MODULES))
MODDIRS  := $(shell $(GO) list -m -f '{{.Dir}}')
BIN      := bin
SERVICES := resolver puller snapshotter exporter
# What bin/stevedore --version prints.
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# make run's address and data dir (empty: stevedore up's defaults,
# 127.0.0.1:4222 and ~/.local/share/stevedore).
LISTEN   ?=
DATA     ?=

.PHONY: help build test security test-short vet lint fuzz bench bench-warm bench-pull bench-export bench-deps bench-builder builders builder-deps builder-image run gowork-off clean images stand-ins up e2e

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/stevedore and one binary per service (static, CGO_ENABLED=0)
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/stevedore ./cmd/stevedore
	@for s in $(SERVICES); do \
		echo "CGO_ENABLED=0 $(GO) build -o $(BIN)/stevedore-$$s ./services/$$s/cmd/$$s"; \
		CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/stevedore-$$s ./services/$$s/cmd/$$s || exit 1; \
	done

test: vet builders ## run every module's tests with the race detector (embedded NATS and registry, no Docker; the builder tests need root, buildkitd, runc and containerd)
	$(GO) test -race -count=1 -timeout 15m $(RACE_MODULES)
	$(GO) test -count=1 -timeout 10m $(CONFORMANCE)

security: ## run the attacks of the threat model (docs/dev/threat-model.md): every TestSecurity… test of every module but conformance
	$(GO) test -count=1 -timeout 10m -run '^TestSecurity' $(RACE_MODULES)

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

bench: bench-warm bench-pull bench-export ## bench-warm, bench-pull, then bench-export

BENCHN ?= 3000
bench-warm: ## warm-path latency and throughput next to the bus floor, with ratios (stores on tmpfs)
	cd bench && TMPDIR=$${BENCH_TMPDIR:-/dev/shm} $(GO) test -run '^$$' -bench '^Benchmark(WarmPath|Throughput)$$' -benchtime $(BENCHN)x -timeout 30m .

PULLN      ?= 3
PULLIMAGES ?= a|b|c
bench-pull: bench-deps ## cold pull of images (a) (b) (c): stevedore vs containerd's ctr vs curl|tar, PULLN runs each (root, containerd, tmpfs)
	cd bench && TMPDIR=$${BENCH_TMPDIR:-/dev/shm} BENCH_PULL_RUNS=$(PULLN) $(GO) test -run '^$$' -bench '^BenchmarkPull$$/^($(PULLIMAGES))$$' -benchtime 1x -timeout 60m .

EXPORTN ?= 5
bench-export: bench-deps ## cache export of image (a) to a local layout: stevedore vs skopeo copy, EXPORTN runs each; then a registry export twice (skopeo, tmpfs)
	cd bench && TMPDIR=$${BENCH_TMPDIR:-/dev/shm} BENCH_EXPORT_RUNS=$(EXPORTN) $(GO) test -run '^$$' -bench '^BenchmarkExport$$' -benchtime 1x -timeout 30m .

BUILDERIMAGES ?= a|b|c
BUILDERN ?= 1
bench-builder: builders ## BuildKit FROM image + COPY on Stevedore's snapshots (cold, warm) vs its own overlayfs, images (a) (b) (c), BUILDERN rounds (default 1) alternating, medians; fails on a missed target (root, tmpfs)
	cd bench && TMPDIR=$${BENCH_TMPDIR:-/dev/shm} BENCH_BUILDER_RUNS=$(BUILDERN) $(GO) test -run '^$$' -bench '^BenchmarkBuilder$$/^($(BUILDERIMAGES))$$' -benchtime 1x -timeout 60m .

# apt-install NAME,COMMAND:PACKAGE…,WHAT-FAILS: install, with apt-get as root
# on Debian, the packages whose command is missing; elsewhere say which are.
define apt-install
	@missing=""; \
	for d in $(2); do \
		command -v $${d%%:*} >/dev/null 2>&1 && continue; \
		case " $$missing " in *" $${d##*:} "*) ;; *) missing="$$missing $${d##*:}";; esac; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; then \
		echo "apt-get install -y$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing; \
	else \
		echo "$(1): missing$$missing (install them; as root on Debian, make $(1) does); $(3)"; \
	fi
endef

comma := ,
# What the benchmarks compare with, as command:Debian package.
BENCHDEPS := containerd:containerd ctr:containerd skopeo:skopeo curl:curl unpigz:pigz
bench-deps: ## install what the benchmarks compare with (containerd, skopeo, curl, pigz) when missing: apt-get, as root on Debian
	$(call apt-install,bench-deps,$(BENCHDEPS),the benchmarks that need them fail)

# The real builders the builder tests and bench-builder run: buildkitd and
# buildctl built from github.com/moby/buildkit at the version
# tools/buildkit/go.mod pins (conformance/'s), outside the workspace; runc
# and containerd (with ctr) from the distribution's packages.
BUILDERDEPS := runc:runc containerd:containerd ctr:containerd
builders: builder-deps ## build bin/buildkitd and bin/buildctl (BuildKit, pinned in tools/buildkit), and install runc and containerd when missing
	cd tools/buildkit && GOWORK=off CGO_ENABLED=0 $(GO) build -trimpath -o $(CURDIR)/$(BIN)/ github.com/moby/buildkit/cmd/buildkitd github.com/moby/buildkit/cmd/buildctl

builder-deps: ## install runc and containerd (the builder tests' runtime) when missing: apt-get, as root on Debian
	$(call apt-install,builder-deps,$(BUILDERDEPS),the builder tests skip without them$(comma) and fail when CI is set)

run: build ## run the whole fleet in one process on an embedded NATS (bin/stevedore up; LISTEN=host:port, DATA=dir)
	$(BIN)/stevedore up $(if $(LISTEN),--listen $(LISTEN)) $(if $(DATA),--data-dir $(DATA))

# Containers (deploy/). COMPOSE is the docker compose plugin, or the
# standalone docker-compose where only that is installed.
COMPOSE  ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
TAG      ?= dev
CA_CERTS ?= /etc/ssl/certs/ca-certificates.crt
IMAGES   := $(BIN)/images
# The upstream images deploy/compose.yaml names: nats at the nats-server
# version pkg/go.mod pins, and distribution's registry 3.
NATS_VERSION     := $(shell awk '$$1 == "github.com/nats-io/nats-server/v2" { sub(/^v/, "", $$2); print $$2 }' pkg/go.mod)
REGISTRY_VERSION := v3.1.2

images: build ## build stevedore/<service>:TAG (default dev) for every service FROM scratch (deploy/Dockerfile) from the binaries make build made
	@rm -rf $(IMAGES)/services && mkdir -p $(IMAGES)/services/caches $(IMAGES)/services/http-downloads
	cp $(CA_CERTS) $(IMAGES)/services/ca-certificates.crt
	@printf 'root:x:0:0:root:/root:/sbin/nologin\nstevedore:x:65532:65532:stevedore:/nonexistent:/sbin/nologin\n' >$(IMAGES)/services/passwd
	@printf 'root:x:0:\nstevedore:x:65532:\n' >$(IMAGES)/services/group
	@for s in $(SERVICES); do cp $(BIN)/stevedore-$$s $(IMAGES)/services/ || exit 1; done
	@for s in $(SERVICES); do \
		echo "docker build -f deploy/Dockerfile --target $$s -t stevedore/$$s:$(TAG) $(IMAGES)/services"; \
		docker build -q -f deploy/Dockerfile --target $$s -t stevedore/$$s:$(TAG) $(IMAGES)/services >/dev/null || exit 1; \
	done

stand-ins: ## build FROM scratch stand-ins for the nats and registry images compose names (Go module proxy only), unless the upstream images are here
	@mkdir -p $(IMAGES)/nats $(IMAGES)/registry
	GOBIN=$(CURDIR)/$(IMAGES)/nats CGO_ENABLED=0 GOWORK=off $(GO) install -trimpath github.com/nats-io/nats-server/v2@v$(NATS_VERSION)
	GOBIN=$(CURDIR)/$(IMAGES)/registry CGO_ENABLED=0 GOWORK=off $(GO) install -trimpath github.com/distribution/distribution/v3/cmd/registry@$(REGISTRY_VERSION)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(IMAGES)/wget ./e2e/cmd/wget
	@for i in nats:$(NATS_VERSION)-alpine=nats registry:3=registry; do \
		img=$${i%%=*}; name=$${i##*=}; \
		if docker image inspect $$img >/dev/null 2>&1 && \
			[ -z "$$(docker image inspect -f '{{ index .Config.Labels "dev.stevedore.stand-in" }}' $$img)" ]; then \
			echo "$$img: the upstream image is here; no stand-in"; continue; \
		fi; \
		cp $(CA_CERTS) $(IMAGES)/$$name/ca-certificates.crt && cp $(IMAGES)/wget $(IMAGES)/$$name/wget || exit 1; \
		echo "docker build -f e2e/images/$$name.Dockerfile -t $$img $(IMAGES)/$$name"; \
		docker build -q -f e2e/images/$$name.Dockerfile -t $$img $(IMAGES)/$$name >/dev/null || exit 1; \
	done

builder-image: builders ## build stevedore/buildkitd:TAG FROM scratch (deploy/buildkitd.Dockerfile): bin/buildkitd, bin/buildctl, and the host's runc with its shared libraries
	@rm -rf $(IMAGES)/buildkitd && mkdir -p $(IMAGES)/buildkitd/rootfs/usr/bin $(IMAGES)/buildkitd/rootfs/usr/sbin $(IMAGES)/buildkitd/rootfs/etc/ssl/certs $(IMAGES)/buildkitd/rootfs/tmp
	cp $(BIN)/buildkitd $(BIN)/buildctl $(IMAGES)/buildkitd/rootfs/usr/bin/
	cp $(CA_CERTS) $(IMAGES)/buildkitd/rootfs/etc/ssl/certs/ca-certificates.crt
	@runc=$$(command -v runc) || { echo "builder-image: no runc (make builder-deps installs it)"; exit 1; }; \
	cp -L $$runc $(IMAGES)/buildkitd/rootfs/usr/sbin/runc && \
	for lib in $$(ldd $$runc | awk '$$2 == "=>" { print $$3 } $$1 ~ /^\// { print $$1 }'); do \
		mkdir -p $(IMAGES)/buildkitd/rootfs$$(dirname $$lib) && cp -L $$lib $(IMAGES)/buildkitd/rootfs$$lib || exit 1; \
	done
	docker build -q -f deploy/buildkitd.Dockerfile -t stevedore/buildkitd:$(TAG) $(IMAGES)/buildkitd >/dev/null

up: ## run the stack in the foreground: docker compose -f deploy/compose.yaml up (make images first; COMPOSE_PROFILES=demo adds the registry)
	$(COMPOSE) -f deploy/compose.yaml up

E2EFLAGS ?= -v
e2e: images stand-ins builder-image ## the compose stack end to end (Docker): 50-pull waves at 3 and 1 replicas, kills mid-pull, a NATS restart, poison, watcher rights; a build node (buildkitd on the snapshots socket)
	STEVEDORE_COMPOSE="$(COMPOSE)" $(GO) test -tags e2e -count=1 -timeout 20m $(E2EFLAGS) ./e2e/...

clean: ## remove build output
	rm -rf $(BIN)
