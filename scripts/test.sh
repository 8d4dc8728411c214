#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (one debug profile).
# Builds go to $CARGO_TARGET_DIR (default: a cache outside the clone, reused across clones,
# since RocksDB's C++ build takes minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --test
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/colloquium-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# cargo's last line is the doc-test runner's; end with the total over every test binary.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
