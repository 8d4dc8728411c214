#!/usr/bin/env bash
# What watching a node costs (issue 27): `scripts/bench-pipelines.sh 1` run alternately without
# and with WATCH=1 (the web dashboard open in headless Chromium, `colloquium tap` printing the
# pipeline's every output), round after round. Reports, per mode, the ingest rate (the load
# generator's events/s) and the pipeline's throughput, and the median of each round's ratio
# watched / unwatched for both. Then the dashboard's page weight and time to first render
# (fresh browser, empty cache) against a node with a few pipelines.
#
#   [ROUNDS=5] [DURATION=10s] [PIN=1] [TAP_SAMPLE=N] [LOADS=5] [BIN=...] scripts/bench-watched.sh
#
# PIN=1 runs the node on core 0 and the load generator, the browser and the tap on core 1: the
# figures are then the node's own cost of being watched (a dashboard usually runs on another
# machine), not the browser's CPU. TAP_SAMPLE=N has the tap print one event in N (the node then
# serializes and sends only those).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/colloquium-target}/release/colloquium}
rounds=${ROUNDS:-5}
export DURATION=${DURATION:-10s} BIN=$bin
pin=()
if [ "${PIN:-0}" = 1 ]; then pin=(taskset -c 0); export WATCH_CPU=1; fi
root=$(mktemp -d /tmp/colloquium-bench-watched.XXXXXX)
trap 'rm -rf "$root"' EXIT

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# One bench-pipelines run; appends "ingest pipeline" to $root/MODE.
run() {
  local mode=$1 out
  if [ "$mode" = watched ]; then
    out=$(WATCH=1 "${pin[@]}" "$here/bench-pipelines.sh" 1)
  else
    out=$(WATCH= "${pin[@]}" "$here/bench-pipelines.sh" 1)
  fi
  local ingest pipeline
  ingest=$(awk '/^events\/s:/ { print $2 }' <<< "$out")
  pipeline=$(sed -n 's/.* = \([0-9,]*\) events\/s per pipeline.*/\1/p' <<< "$out" | tr -d ,)
  echo "$ingest $pipeline" >> "$root/$mode"
  grep '^watched:' <<< "$out" || true
  echo "$mode: ingest $ingest events/s, pipeline $pipeline events/s"
}

: > "$root/plain"; : > "$root/watched"
for round in $(seq "$rounds"); do
  echo "round $round"
  if (( round % 2 )); then run plain; run watched; else run watched; run plain; fi
done
for col in 1 2; do
  name=$([ $col = 1 ] && echo ingest || echo pipeline)
  p=$(cut -d' ' -f$col "$root/plain" | median); w=$(cut -d' ' -f$col "$root/watched" | median)
  r=$(paste -d' ' <(cut -d' ' -f$col "$root/watched") <(cut -d' ' -f$col "$root/plain") | awk '{ print $1 / $2 }' | median)
  awk -v n="$name" -v p="$p" -v w="$w" -v r="$r" 'BEGIN { printf "%s medians: unwatched %d, watched %d events/s; median of per-round ratios %.3f\n", n, p, w, r }'
done

# Page weight and time to first render, on a node with three pipelines and no load.
dir="$root/page"; mkdir -p "$dir"
cat > "$dir/config.yaml" <<'YAML'
sinks: {db: {type: store}}
pipelines:
  - {name: checkout, stages: [{type: window, window: tumbling, size: 1s, key: /user, aggregates: {n: count}}], sinks: [db]}
  - {name: risk, stages: [{type: anomaly, min_events: 5}], sinks: [db]}
  - {name: all, sinks: [db]}
YAML
"$bin" run -c "$dir/config.yaml" --data-dir "$dir/data" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 > "$dir/node.log" 2>&1 &
node=$!
trap 'kill $node 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$root"' EXIT
until grep -q "colloquium ready" "$dir/node.log"; do sleep 0.1; done
addr=$(sed -n 's/^colloquium ready http=\([^ ]*\).*/\1/p' "$dir/node.log")
tools=${COLLOQUIUM_TOOLS_DIR:-$HOME/.cache/colloquium-tools}
"$tools/venv/bin/python" "$here/../crates/colloquium/tests/dashboard.py" measure \
  "{\"url\": \"http://$addr/\", \"chromium\": \"/usr/bin/chromium\", \"chromedriver\": \"/usr/bin/chromedriver\", \"loads\": ${LOADS:-5}}"
