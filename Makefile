# usepod-edge: everyday targets. `make help` lists them.
CARGO ?= cargo

.PHONY: help build test test-unit demo lint fmt llama clean

help:
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## release build for this machine
	$(CARGO) build --release

# With a prepared llama-server (`make llama`) the demo's backend is real.
demo: ## the agent against a local TLS coordinator and backend (no account needed)
	$(CARGO) build --bin usepod-edge --example demo
	if [ -x tests/.cache/llama-server ] && [ -f tests/.cache/tiny.gguf ]; then \
	  export USEPOD_EDGE_DEMO_LLAMA=tests/.cache/llama-server USEPOD_EDGE_DEMO_MODEL=tests/.cache/tiny.gguf; fi; \
	./target/debug/examples/demo ./target/debug/usepod-edge

llama: ## prepare the real llama-server + tiny models the tests use
	bash tests/real/setup_llama.sh

# The real-backend tests report SKIPPED when llama-server cannot be prepared.
test: ## unit and integration tests, real llama-server included (what CI runs)
	-bash tests/real/setup_llama.sh
	$(CARGO) test --all-targets

test-unit: ## unit tests only
	$(CARGO) test --bins

lint: ## rustfmt check and clippy with warnings denied
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf tests/.cache
