# colibri — a KVM VMM with a microsecond vCPU scheduler.
#
#   make demo    build everything and boot the default guest (in the KVM
#                sandbox when this host has no usable /dev/kvm)
#   make test    install what the tests need, then run every test
#
SHELL := /bin/bash
GO ?= go
BIN := bin
IMAGES := guestimages/out
STATICCHECK_VERSION := v0.8.2
# Test binaries run inside the sandbox are built here.
TESTBIN := $(BIN)/tests

.PHONY: all build deps images demo test unit kvm-test cgroup2-test netbench memstat fuzz lint fmt vet generate clean help

all: build

help:
	@sed -n '2,7p' Makefile

# The binary is built without cgo: nothing in colibri needs the C library
# (net and os/user fall back to Go's resolver and /etc/passwd reader), and a
# static binary maps no libc and ld.so (1.4 MiB of RSS in every colibri
# process) and runs no glibc thread stacks or malloc arenas. -trimpath keeps
# build paths out of it. docs/PERF.md, "VMM memory overhead", has the numbers.
#
# The runtime's disablethp setting is made the binary's default: on a host
# whose transparent_hugepage/enabled is "always" (Debian's kernels) the Go
# heap's first few MiB would otherwise be 2 MiB huge pages however little of
# them is live (2 MiB of RSS in `colibri boot`). It marks only the Go heap
# MADV_NOHUGEPAGE; guest memory keeps its huge pages. //go:debug does not
# take runtime settings, so it goes in with the other build-time GODEBUG
# defaults the go command computes for the module.
BUILD_ENV := CGO_ENABLED=0
GODEBUG_DEFAULT := $(shell $(GO) list -f '{{.DefaultGODEBUG}}' ./cmd/colibri 2>/dev/null)
BUILD_FLAGS := -trimpath -ldflags '-X runtime.godebugDefault=$(if $(GODEBUG_DEFAULT),$(GODEBUG_DEFAULT)$(comma))disablethp=1'
comma := ,
GO_BUILD = $(BUILD_ENV) $(GO) build $(BUILD_FLAGS)

# colibri-vmm is the process `colibri boot` becomes (exec) for a VM without
# a network: it links the VMM alone (docs/PERF.md, "VMM memory overhead").
build:
	@mkdir -p $(BIN)
	$(GO_BUILD) -o $(BIN)/colibri ./cmd/colibri
	$(GO_BUILD) -o $(BIN)/colibri-vmm ./cmd/colibri-vmm

# deps installs the Debian packages the build, images, sandbox and tests use.
deps:
	@scripts/install-deps

# images builds the default guest images; GUEST_PKGS="pkg ..." also builds
# $(IMAGES)/initrd-pkgs.img with those Debian packages and their libraries
# (by default what exp's guests run: its KVM test needs them).
GUEST_PKGS ?= sockperf stress-ng
images:
	@guestimages/build.sh --out $(IMAGES) $(if $(strip $(GUEST_PKGS)),--pkgs "$(strip $(GUEST_PKGS))")

# kvm-run runs a command directly when this host's KVM can boot a stock guest,
# and inside scripts/kvm-sandbox otherwise.
KVM_RUN = scripts/kvm-run

demo: deps build images
	@$(KVM_RUN) $(BIN)/colibri boot --cpus 2 --mem 512M --disk $(IMAGES)/disk.ext4,ro

test: deps images lint unit kvm-test cgroup2-test

# unit runs every package's tests, and again under the race detector
# those whose code is concurrent (the host composition, the scheduler, the
# datapath, the virtio layer).
RACE_PKGS := ./host/... ./agent/... ./sched/... ./netstack/... ./vmm/virtio/... ./internal/...
# The thread-wide credential and filter code runs differently with and
# without cgo (glibc's setxid broadcast, pthreads; Go's AllThreadsSyscall,
# Go's threads): its tests run both ways, bin/colibri being built without.
NOCGO_PKGS := ./internal/privdrop ./internal/seccomp
unit: build
	$(GO) test -count=1 ./...
	$(GO) test -race -count=1 $(RACE_PKGS)
	$(BUILD_ENV) $(GO) test -count=1 $(NOCGO_PKGS)

# kvm-test builds the test binaries of the packages with KVM tests on the host
# and runs their TestKVM* tests on real KVM (in the sandbox if need be).
# The host composition's KVM tests run from a -race binary only (the same
# assertions; a plain run would only repeat them), the agent's from both
# (the plain run has 100 clients, the -race one 20). The hostile guest's attacker (internal/hostile, a static binary
# the test puts in a guest's initrd) is built here too: building it inside
# the sandbox would take minutes of emulated compiler.
KVM_TEST_PKGS := ./kvm ./vmm ./agent ./cmd/colibri ./exp
KVM_RACE_PKGS := ./host ./agent
kvm-test: build
	@mkdir -p $(TESTBIN) $(TESTBIN)/race
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(TESTBIN)/hostile ./internal/hostile
	@for p in $(KVM_TEST_PKGS); do \
		$(GO) test -c -o $(TESTBIN)/$$(echo $$p | tr / _ | sed 's/^\._//').test $$p || exit 1; \
	done
	@for p in $(KVM_RACE_PKGS); do \
		$(GO) test -race -c -o $(TESTBIN)/race/$$(echo $$p | tr / _ | sed 's/^\._//').test $$p || exit 1; \
	done
	$(GO) build -race -o $(TESTBIN)/race/colibri ./cmd/colibri
	@COLIBRI_BIN=$(CURDIR)/$(BIN)/colibri COLIBRI_IMAGES=$(CURDIR)/$(IMAGES) COLIBRI_HOSTILE=$(CURDIR)/$(TESTBIN)/hostile \
		COLIBRI_SANDBOX_RETRIES=3 COLIBRI_SANDBOX_TIMEOUT=900 \
		scripts/run-kvm-tests $(TESTBIN) $(TESTBIN)/race
	@# Two stock guests on one switch, run by a -race build of colibri itself
	@# (a data race makes it exit non-zero, which fails the test). The
	@# race runtime makes calls the seccomp lists do not know: filters off.
	@echo "=== cmd/colibri (TestKVMUpTwoGuests, colibri built with -race)"
	@cd cmd/colibri && COLIBRI_BIN=$(CURDIR)/$(TESTBIN)/race/colibri COLIBRI_SECCOMP=off COLIBRI_IMAGES=$(CURDIR)/$(IMAGES) \
		COLIBRI_REQUIRE_KVM=1 COLIBRI_SANDBOX_RETRIES=3 COLIBRI_SANDBOX_TIMEOUT=900 \
		../../scripts/kvm-run $(CURDIR)/$(TESTBIN)/cmd_colibri.test -test.run '^TestKVMUpTwoGuests$$' -test.v -test.timeout 15m

# cgroup2-test runs sched/cgroup's tests where cgroup v2 is mounted: here
# when this host is v2, otherwise in the sandbox (v2). 'make unit' runs
# them on this host's hierarchy (v1 here). The test timeout turns a hang
# (seen once in TestGroupLifecycle) into a failure with goroutine dumps.
cgroup2-test:
	@mkdir -p $(TESTBIN)
	@$(GO) test -c -o $(TESTBIN)/sched_cgroup.test ./sched/cgroup
	@if [ "$$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then \
		echo "=== sched/cgroup (cgroup v2, on this host)"; \
		cd sched/cgroup && ../../$(TESTBIN)/sched_cgroup.test -test.v -test.timeout 60s; \
	else \
		echo "=== sched/cgroup (cgroup v2, in the KVM sandbox: this host has no unified hierarchy)"; \
		cd sched/cgroup && ../../scripts/kvm-sandbox --quiet --cpus 2 --retries 2 --timeout 300 ../../$(TESTBIN)/sched_cgroup.test -test.v -test.timeout 60s; \
	fi

# netbench compares guest<->guest networking on colibri's datapath with QEMU +
# vhost-net on a Linux bridge, in one run (docs/PERF.md). Not part of 'test':
# it measures, it does not check.
netbench: build images
	$(GO) build -o $(BIN)/netbench ./scripts/netbench
	@$(KVM_RUN) $(BIN)/netbench $(NETBENCH_FLAGS)

# memstat prints where the resident memory of colibri goes, mapping by
# mapping, in each configuration (version, boot, boot --net, up with the
# central scheduler, the agent) beside two Go hello worlds built the same
# way (docs/PERF.md, "VMM memory overhead"). Not part of 'test': it measures.
memstat: build images
	$(GO) build -o $(BIN)/memstat ./scripts/memstat
	$(GO_BUILD) -o $(BIN)/memstat-hello ./scripts/memstat/hello
	$(GO_BUILD) -o $(BIN)/memstat-imports ./scripts/memstat/imports
	@$(KVM_RUN) $(BIN)/memstat -images $(CURDIR)/$(IMAGES) $(MEMSTAT_FLAGS)

# fuzz runs every fuzz target for FUZZTIME (default 30s) each and keeps the
# new corpus entries as seeds in testdata/fuzz (they then run in 'make test').
FUZZTIME ?= 30s
fuzz:
	@scripts/fuzz -t $(FUZZTIME)

lint: fmt vet
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: not formatted: $$out"; exit 1; fi

vet:
	$(GO) vet ./...

generate:
	$(GO) generate ./...

clean:
	rm -rf $(BIN)
