#!/usr/bin/env bash
# TCP ingest benchmark (issue 14): EventStream frames to a `tcp` source with `ack: true` and
# `storage.sync: true`, counted from the node's acks (frames durable in RocksDB), on this
# machine.
#
#   [DURATION=10s] [BIN=path/to/colloquium] scripts/bench-tcp.sh SIZE CONNECTIONS
set -euo pipefail
size=${1:?payload bytes}
connections=${2:?connections}
bin=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/colloquium-target}/release/colloquium}
work=$(mktemp -d /tmp/colloquium-bench-tcp.XXXXXX)
trap 'kill $node 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/config.yaml" <<YAML
storage: {sync: true, retention: null}
sources:
  frames: {type: tcp, address: '127.0.0.1:0', ack: true}
YAML
. "$(dirname "$0")/bench-node.sh"
start_node frames
"$bin" bench tcp --addr "$addr" --size "$size" --connections "$connections" --duration "${DURATION:-10s}" --pid $node
# Read back: what the store holds (the acks said durable; this counts what a query sees).
stored=$(curl -s "$http/metrics" | awk '/^colloquium_storage_events_stored_total/ { print $NF }')
echo "stored:     $stored events in the log (warm-up included)"
