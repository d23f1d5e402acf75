# kive — the two entry points are `make run` and `make test` (see README.md).
SHELL := /bin/bash
CARGO ?= cargo
KIVE := target/release/kive

.PHONY: setup build run test test-shared test-falco test-vm lint bench clean fuzz package package-check

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
# the kernel tests and the LSM/trampoline tiers in Debian's 6.1 VM, the
# plugin ABI tests. Needs nothing beside the repo (see test-shared).
test: lint
	@mkdir -p target
	set -o pipefail; $(CARGO) test --workspace 2>&1 | tee target/test.log
	@awk '/^test result:/ {p += $$4; f += $$6} END {printf "summary: %d passed, %d failed\n", p, f}' target/test.log

# The kernel test suite and the tier scenarios in Debian's 6.1 kernel under
# qemu (both are also part of `make test`).
test-vm: setup
	$(CARGO) test -p kive --test vm_suite --test vm_tiers -- --nocapture

# Checks that need the reference directory beside the repo (not in a user's
# clone): the kivebpf peer's sample policies. Fails when SHARED is missing.
SHARED ?= ../shared
test-shared: setup
	@test -d "$(SHARED)/peer/kivebpf-samples" || { echo "test-shared: $(SHARED)/peer/kivebpf-samples is missing (set SHARED=<dir>)" >&2; exit 1; }
	KIVE_SHARED_DIR="$$(cd "$(SHARED)" && pwd)" $(CARGO) test -p kive --test shared_samples

# The decoders of outside input under mutation for FUZZ_SECONDS per target
# (make test runs the same targets for 1 s each). Corpus:
# plugin/fuzz-corpus/<target>/; a panicking input is saved under
# target/tmp/fuzz-crashes/ (ARBTEST_SEED=<seed> replays the case).
FUZZ_SECONDS ?= 300
fuzz: setup
	KIVE_FUZZ_MS=$$(( $(FUZZ_SECONDS) * 1000 )) $(CARGO) test -p kive --test fuzz -- --nocapture

# The plugin in a real Falco (scripts/test-falco.sh): --plugin-info, --list,
# -V of every rules file, replay, live mode and async events with the repo's
# falco.yaml. Fails when it cannot run: FALCO must name a Falco binary.
#   make test-falco FALCO=/path/to/falco
test-falco: setup
	@test -n "$(FALCO)" || { echo "test-falco: set FALCO=/path/to/falco" >&2; exit 1; }
	FALCO="$(FALCO)" ./scripts/test-falco.sh

# dist/: the plugin and rules tarballs, their falcoctl OCI configs, a
# registry.yaml entry and SHA256SUMS, as falcosecurity ships its plugins
# (scripts/package.sh; README "Packaging"). SO=<libkive.so> packages that
# build instead of building one.
package: setup
	./scripts/package.sh

# make package into a temporary directory, then check its layout and
# contents against the .so and the rules (scripts/check-package.sh; CI).
package-check: setup
	@d=$$(mktemp -d) && trap 'rm -rf "$$d"' EXIT && DIST="$$d" ./scripts/package.sh && ./scripts/check-package.sh "$$d"

bench: setup
	$(CARGO) bench --workspace

clean:
	$(CARGO) clean
