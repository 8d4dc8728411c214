#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (one debug profile).
# Builds go to $CARGO_TARGET_DIR (default: a cache outside the clone, reused across clones,
# since RocksDB's C++ build takes minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/colloquium-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
