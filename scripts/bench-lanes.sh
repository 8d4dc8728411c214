#!/usr/bin/env bash
# Lanes under overload (issue 14): one pipeline with a deliberately costly transform; a TCP
# client floods the batch lane flat out (about 10× what the pipeline can process) while another
# sends realtime frames at a steady rate. Reports the pipeline's throughput, the batch lane's
# offered load and what it shed, the realtime lane's ingest-to-sink latency (p50/p99 from
# colloquium_pipeline_latency_seconds{lane="realtime"}), and the node's peak RSS.
#
#   [DURATION=20s] [RATE=1000] [BIN=path/to/colloquium] [LANES='{…}'] scripts/bench-lanes.sh
set -euo pipefail
bin=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/colloquium-target}/release/colloquium}
duration=${DURATION:-20s}
rate=${RATE:-1000}
work=$(mktemp -d /tmp/colloquium-bench-lanes.XXXXXX)
trap 'kill $node 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
# About 25 µs of Computo per event: the pipeline processes a few tens of thousands per second.
numbers=$(seq -s, 1 400)
cat > "$work/config.yaml" <<YAML
storage: {sync: ${SYNC:-true}, retention: null}
${LANES:+lanes: $LANES}
sources:
  frames: {type: tcp, address: '127.0.0.1:0', ack: true}
sinks: {db: {type: store}}
pipelines:
  - name: p
    stages:
      - type: transform
        script: [obj, [seq, [get, [\$input], /seq]],
                 [weight, [count, [filter, {array: [$numbers]}, [lambda, [x], [">", [\$, /x], 200]]]]]]
    sinks: [db]
YAML
. "$(dirname "$0")/bench-node.sh"
start_node frames
"$bin" bench tcp --addr "$addr" --priority batch --size 64 --connections 1 --duration "$duration" > "$work/batch.txt" &
batch=$!
"$bin" bench tcp --addr "$addr" --priority high --size 64 --connections 1 --rate "$rate" --duration "$duration" --pid $node > "$work/realtime.txt"
wait $batch
echo "batch lane, flat out:"; sed -n 's/^frames\/s: */  offered and durable (in the log or the DLQ): /p' "$work/batch.txt"
echo "realtime lane, $rate/s:"; sed -n 's/^frames\/s: */  durable: /p' "$work/realtime.txt"
grep "peak" "$work/realtime.txt" || true
curl -s "$http/metrics" > "$work/metrics"
awk '/^colloquium_pipeline_events_total\{pipeline="p",stage="transform",outcome="in"\}/ { print "pipeline: " $NF " events processed (warm-up included)" }' "$work/metrics"
curl -s "$http/api/control" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("control plane: level", s["level"], "transitions", s["transitions"])
for l in s["lanes"]:
    print("  %s: admitted %d, depth %d/%d, shed %s" % (l["lane"], l["admitted"], l["depth"], l["capacity"], l["shed"]))
'
"$(dirname "$0")/latency.py" realtime < "$work/metrics"
grep VmHWM /proc/$node/status | awk '{printf "node peak RSS: %.0f MiB\n", $2/1024}'
