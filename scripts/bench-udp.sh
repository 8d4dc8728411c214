#!/usr/bin/env bash
# UDP ingest benchmark (issue 14): EventStream frames as datagrams to a `udp` source
# (`storage.sync: true`); sent, stored (the node's own counter) and lost, on this machine.
#
#   [DURATION=10s] [RATE=datagrams/s] [BIN=path/to/colloquium] scripts/bench-udp.sh SIZE SOCKETS
set -euo pipefail
size=${1:?payload bytes}
sockets=${2:?sending sockets}
bin=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/colloquium-target}/release/colloquium}
work=$(mktemp -d /tmp/colloquium-bench-udp.XXXXXX)
trap 'kill $node 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/config.yaml" <<YAML
storage: {sync: true, retention: null}
sources:
  dgrams: {type: udp, address: '127.0.0.1:0'}
YAML
. "$(dirname "$0")/bench-node.sh"
start_node dgrams
"$bin" bench udp --addr "$addr" --http "$http" --size "$size" --sockets "$sockets" --duration "${DURATION:-10s}" ${RATE:+--rate "$RATE"}
sleep 1.5 # the node reads the kernel's drop count every second
curl -s "$http/metrics" | awk '/^colloquium_ingest_events_rejected_total/ && /socket_buffer_full/ { s += $NF } END { printf "node counted %d datagrams dropped by the kernel (socket buffer full)\n", s }'
