# usepod-edge: everyday targets. `make help` lists them.
CARGO ?= cargo

.PHONY: help build print-hot-first test test-unit demo lint fmt llama clean

help:
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# Release builds for this machine link through cross/link-hot-first.sh too (the cc rustc
# calls, with the functions the idle agent runs placed first when cc links with lld, as
# rustc's does on x86_64 Linux), and with glibc 2.36 or later (which reads RELR) pack
# their relative relocations: docs/building.md, "Layout".
HOST := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
HOST_VAR := CARGO_TARGET_$(shell echo '$(HOST)' | tr 'a-z-' 'A-Z_')
GLIBC_RELR := $(shell getconf GNU_LIBC_VERSION 2>/dev/null | awk '{ split($$2, v, "."); \
  if (v[1] > 2 || (v[1] == 2 && v[2] >= 36)) print "-C link-arg=-Wl,-z,pack-relative-relocs" }')
HOT_FIRST := $(HOST_VAR)_LINKER=$(CURDIR)/cross/link-hot-first.sh USEPOD_LINK_REAL=cc \
  $(HOST_VAR)_RUSTFLAGS="$(GLIBC_RELR)"

build: ## release build for this machine
	$(HOT_FIRST) $(CARGO) build --release

# For cross/hot-functions.sh: the environment above, as shell.
print-hot-first:
	@echo 'export $(HOT_FIRST)'

# With a prepared llama-server (`make llama`) the demo's backend is real.
demo: ## the agent against a local TLS coordinator and backend, paused and resumed (no account needed)
	$(CARGO) build --bin usepod-edge --example demo
	if [ -x tests/.cache/llama-server ] && [ -f tests/.cache/tiny.gguf ]; then \
	  export USEPOD_EDGE_DEMO_LLAMA=tests/.cache/llama-server USEPOD_EDGE_DEMO_MODEL=tests/.cache/tiny.gguf; fi; \
	./target/debug/examples/demo ./target/debug/usepod-edge

llama: ## prepare the real llama-server + tiny models the tests use
	bash tests/real/setup_llama.sh

# Locally, when llama-server cannot be prepared, the real-backend tests report SKIPPED.
# In CI (CI set and not 0/false, as .ci/run sets it) a failed setup fails the target, and
# so would any test that skips (tests/support: skip_or_fail).
test: ## unit and integration tests, real llama-server included (what CI runs)
	@if [ -n "$$CI" ] && [ "$$CI" != 0 ] && [ "$$CI" != false ]; then \
	  bash tests/real/setup_llama.sh; \
	else \
	  bash tests/real/setup_llama.sh || echo "make test: tests/real/setup_llama.sh failed:" \
	    "the real llama-server tests will say SKIPPED (in CI this fails)" >&2; \
	fi
	$(CARGO) test --all-targets

test-unit: ## unit tests only
	$(CARGO) test --lib --bins

lint: ## rustfmt check, clippy with warnings denied, no cycle between modules, no two files using each other
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	python3 .ci/module-cycles
	python3 .ci/file-cycles

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf tests/.cache

# ---------------------------------------------------------------------------------------
# Devices (issue 4): static musl builds without docker, the aarch64 build tested under
# qemu-user, install as a service. cross/dist.sh and cross/musl-env.sh install what they
# lack (rustup targets; clang, llvm, qemu-user-static, file with apt-get when root).
# Never run `cross` on these machines; cross/Cross.toml is for operators with docker.
# ---------------------------------------------------------------------------------------
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
AARCH64 := aarch64-unknown-linux-musl
AARCH64_BIN := dist/usepod-edge-$(VERSION)-$(AARCH64)
BIN ?= target/release/usepod-edge
PREFIX ?= /usr/local
DESTDIR ?=
INIT ?= auto

.PHONY: dist test-aarch64 smoke-aarch64 install

dist: ## static, stripped aarch64 + x86_64 musl binaries in dist/ with SHA256SUMS (no docker)
	bash cross/dist.sh

# Under qemu-user, fork/exec from a multi-threaded process can deadlock inside qemu, so the
# unit tests that spawn programs (named subprocess_*) run natively only; and a hang anywhere
# fails the target after AARCH64_TEST_TIMEOUT seconds instead of stalling CI.
AARCH64_TEST_TIMEOUT ?= 1500
test-aarch64: ## unit tests of the aarch64 build, run under qemu-user (bounded; subprocess tests native only)
	bash cross/musl-env.sh $(CARGO) build --locked --target $(AARCH64) --lib --bins --tests
	bash cross/musl-env.sh timeout -k 10 $(AARCH64_TEST_TIMEOUT) nice -n 10 \
	  $(CARGO) test --locked --target $(AARCH64) --lib --bins -- --skip subprocess_ \
	  || { rc=$$?; [ $$rc -ne 124 ] || echo "test-aarch64: unit tests under qemu did not finish in $(AARCH64_TEST_TIMEOUT) s (a hang)" >&2; exit $$rc; }

smoke-aarch64: dist ## dist's aarch64 binary under qemu: --version, validate, a TLS session + job
	USEPOD_EDGE_BIN=$(AARCH64_BIN) USEPOD_EDGE_RUNNER=qemu-aarch64-static \
	  $(CARGO) test --test smoke_binary -- --nocapture

install: ## BIN (target/release/usepod-edge), init script for this system, config, user; PREFIX, DESTDIR
	BIN='$(BIN)' PREFIX='$(PREFIX)' DESTDIR='$(DESTDIR)' INIT='$(INIT)' sh init/install.sh

# ---- bench / soak / fuzz (issue 5), fleet (issue 16) --------------------------------------
# Not part of `make test`. bench: ~5 min (a third of it idle); soak: ~8 min (reconnect
# backoff bound: the first reconnect is drawn over [0, 4 s)); fuzz: FUZZ_SECONDS per target
# (default 60), see fuzz/README.md. fleet-sim: seconds (its checks also run, quietly, under
# `cargo test --all-targets`); fleet: ~1 min for FLEET_N agents (default 200) plus the
# release build; mind memory (~2-5 MB per agent) and open files (~5 per agent here).
.PHONY: bench bench-usepod soak fuzz fuzz-build fleet-sim fleet
FUZZ_SECONDS ?= 60
FLEET_N ?= 200

# bench also builds the shipped x86_64 musl binary, a baseline revision's (BENCH_BASELINE:
# main when HEAD is elsewhere, else HEAD~1; BENCH_BASELINE=none skips it) in a worktree
# under target/bench-baseline, and the agent with a counting allocator; usepod-agent
# 0.3.5 joins when `make bench-usepod` installed it. BENCH_PEERS_ONLY=1: the comparison only;
# BENCH_FOOTPRINT_ONLY=1: the idle footprint only (BENCH_FOOTPRINT_ROUNDS, _SETTLE_S).
MUSL_X86 := x86_64-unknown-linux-musl
USEPOD_AGENT := tests/.cache/usepod-agent/bin/usepod-agent
BENCH_BASELINE ?= $(shell if [ "$$(git rev-parse -q --verify main 2>/dev/null)" != "$$(git rev-parse HEAD)" ] \
  && git rev-parse -q --verify main >/dev/null; then echo main; else echo HEAD~1; fi)

bench: ## relay overhead vs a same-run baseline; idle footprint and relay cost of musl, glibc, baseline rev, usepod-agent side by side
	MUSL_SHIPPED=1 bash cross/musl-env.sh --no-install $(CARGO) build --release --target $(MUSL_X86) --bin usepod-edge
	if [ "$(BENCH_BASELINE)" != none ]; then \
	  BENCH_BASELINE_BIN=$$(bash benches/baseline.sh "$(BENCH_BASELINE)") || exit 1; \
	  export BENCH_BASELINE_BIN BENCH_BASELINE_REV=$$(git rev-parse --short "$(BENCH_BASELINE)"); fi; \
	if [ -x $(USEPOD_AGENT) ]; then export BENCH_USEPOD_BIN=$(USEPOD_AGENT); fi; \
	BENCH_MUSL_BIN=target/$(MUSL_X86)/release/usepod-edge \
	  $(HOT_FIRST) $(CARGO) bench --features bench-alloc --bench relay

bench-usepod: ## install usepod-agent 0.3.5 into tests/.cache (crates.io) for make bench; never run by test or CI
	[ -x $(USEPOD_AGENT) ] || $(CARGO) install usepod-agent --version 0.3.5 --locked --root tests/.cache/usepod-agent

soak: ## 10,000 jobs over 200 reconnect cycles; RSS/fds/threads end vs after warm-up (±10%)
	$(CARGO) bench --bench soak

fuzz-build: ## build the fuzz targets (stable toolchain, libFuzzer via fuzz/run.sh)
	bash fuzz/run.sh build

fuzz: ## run every fuzz target for FUZZ_SECONDS each
	bash fuzz/run.sh run $(FUZZ_SECONDS)

fleet-sim: ## reconnect arrivals of 100,000 simulated agents (crash, drain, 60 s outage) from src/reconnect.rs
	$(CARGO) bench --bench fleet_sim

fleet: ## FLEET_N (200) release agents vs a loopback coordinator: auth time, RSS, arrivals after drain and crash
	FLEET_N=$(FLEET_N) $(CARGO) bench --bench fleet
