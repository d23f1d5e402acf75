# kive — the two entry points are `make run` and `make test` (see README.md).
CARGO ?= cargo
KIVE := target/release/kive

.PHONY: setup build run test lint bench clean

setup:
	@./scripts/setup.sh

build: setup
	$(CARGO) build --release --workspace

# Arms the embedded example host policy (a decoy at /tmp/kive-secret.txt)
# and prints alerts as they happen. Fire it from another shell with:
#   cat /tmp/kive-secret.txt
run: build
	$(KIVE) run --format text

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The whole suite: lint, unit tests, kernel tests on this machine's kernel,
# the VM tests of the LSM/trampoline tiers, the plugin ABI tests.
test: lint
	$(CARGO) test --workspace

bench: setup
	$(CARGO) bench --workspace

clean:
	$(CARGO) clean
