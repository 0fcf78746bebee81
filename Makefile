# usepod-edge: everyday targets. `make help` lists them.
CARGO ?= cargo

.PHONY: help build test demo lint fmt clean

help:
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## release build for this machine
	$(CARGO) build --release

test: ## unit and integration tests (what CI runs)
	$(CARGO) test --all-targets

lint: ## rustfmt check and clippy with warnings denied
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
