#!/usr/bin/env bash
# Kafka, side by side in one run on one broker (tansu, memory storage, on 127.0.0.1):
#   1. fill a 4-partition topic with COUNT messages of 200 bytes;
#   2. a plain rdkafka consumer loop reads the whole topic and drops it (the limit here);
#   3. a node with a kafka source (fresh group) stores the same topic, durable: events/s and
#      the lag each second, and its peak RSS;
#   4. a node whose pipeline sends every event to a kafka sink: events/s acknowledged, with the
#      HTTP load beside it, then draining a log already stored (the sink alone);
#   5. WAIT_COUNT messages of 1,000 bytes (1 GB by default) waiting behind a held sink and a
#      blocking lane: the node's peak RSS once its source paused.
#   [BIN=path/to/colloquium] [COUNT=1000000] [WAIT_COUNT=1000000] [SOURCE_ONLY=1] scripts/bench-kafka.sh
# SOURCE_ONLY=1 stops after 3 (to compare builds of the source, alternating BIN).
set -euo pipefail
bin=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/colloquium-target}/release/colloquium}
# The load generator and meter (default: the node's binary); set it to compare nodes of two
# builds with the same meter.
tool=${TOOL:-$bin}
tansu=${COLLOQUIUM_TANSU:-$HOME/.cache/colloquium-tools/bin/tansu}
count=${COUNT:-1000000}
work=$(mktemp -d /tmp/colloquium-bench.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
brokers=127.0.0.1:$port
"$tansu" broker --listener-url "tcp://$brokers" --advertised-listener-url "tcp://$brokers" \
  --storage-engine memory://tansu/ > "$work/tansu.log" 2>&1 &
broker=$!
trap 'kill $node $broker 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
node=""
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.1; done
"$tansu" topic create bench --partitions 4 --broker "tcp://$brokers" > /dev/null
"$tansu" topic create out --partitions 4 --broker "tcp://$brokers" > /dev/null
source "$(dirname "$0")/bench-node.sh"

echo "== fill"
"$tool" bench kafka produce --brokers "$brokers" --topic bench --count "$count" --size 200
echo "== plain rdkafka consumer loop"
"$tool" bench kafka consume --brokers "$brokers" --topic bench --count "$count"

echo "== node: kafka source -> store (durable)"
cat > "$work/config.yaml" <<EOF
sources:
  k:
    type: kafka
    brokers: $brokers
    topics: [bench]
    group_id: bench-node
EOF
start_node
"$tool" bench kafka source --http "$http" --count "$count" --pid "$node"
kill $node; wait $node 2>/dev/null || true
rm -rf "$work/data"
[ -n "${SOURCE_ONLY:-}" ] && exit 0

# A pipeline that sends every event it reads (from the start of the log) to a kafka sink.
sink_config() {
  cat > "$work/config.yaml" <<EOF
sinks:
  out:
    type: kafka
    brokers: $brokers
    topic: out
pipelines:
  - name: forward
    start_from: earliest
    stages: []
    sinks: [out]
EOF
}

echo "== node: pipeline -> kafka sink (200-byte events)"
sink_config
start_node
"$tool" bench http --addr "$http" --connections 8 --batch 1000 --duration 15s > "$work/http.log" &
load=$!
"$tool" bench kafka sink --http "$http" --count "${SINK_COUNT:-1000000}" --pid "$node" || true
wait $load || true
tail -5 "$work/http.log"
kill $node; wait $node 2>/dev/null || true
rm -rf "$work/data"

echo "== node: a stored log drained through a kafka sink (no ingest beside it)"
# The same pipeline, started on a log already written, so the sink has the cores to itself.
printf 'sinks: {}\n' > "$work/config.yaml"
start_node
"$tool" bench http --addr "$http" --connections 4 --batch 1000 --duration 4s > /dev/null
stored=$(metric colloquium_storage_events_stored_total)
kill $node; wait $node 2>/dev/null || true
sink_config
start_node
"$tool" bench kafka sink --http "$http" --count "$stored" --pid "$node" || true
kill $node; wait $node 2>/dev/null || true
rm -rf "$work/data"

echo "== node: ${WAIT_COUNT:=1000000} messages of 1,000 bytes waiting behind a held sink: peak RSS"
# A sink that never answers and a lane of 1,000 that blocks: the source pauses its partitions.
"$tansu" topic create backlog --partitions 4 --broker "tcp://$brokers" > /dev/null
"$tool" bench kafka produce --brokers "$brokers" --topic backlog --count "$WAIT_COUNT" --size 1000
hole=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
held = []
while True:
    held.append(s.accept()[0])
' "$hole" &
hole_pid=$!
trap 'kill $node $broker $hole_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/config.yaml" <<EOF2
lanes: {transactional: {capacity: 1000, overflow: block}}
sources:
  k:
    type: kafka
    brokers: $brokers
    topics: [backlog]
    group_id: bench-held
sinks:
  hole: {type: http, url: "http://127.0.0.1:$hole/", timeout: 600s}
pipelines:
  - {name: held, sinks: [hole]}
EOF2
start_node
until curl -s "$http/health" | grep -q '"paused":true'; do kill -0 $node || exit 1; sleep 0.5; done
sleep 10
lag=$(metric colloquium_kafka_consumer_lag)
echo "paused with $lag messages ($((lag * 1000 / 1048576)) MiB) waiting in the topic"
grep -E 'VmHWM|VmRSS' "/proc/$node/status"
