#!/usr/bin/env bash
# End-to-end pipeline benchmark (issue 6): NDJSON batches of 1,000 through HTTP ingest, the log,
# and N pipelines of transform + filter + dedup into the `store` sink, on this machine.
#
#   [DURATION=15s] [BIN=path/to/colloquium] [HELD=1] scripts/bench-pipelines.sh PIPELINES [RATE]
#
# Without RATE: the generator sends as fast as the node acknowledges for DURATION; the script then
# waits until every pipeline has processed every stored event and reports the pipelines'
# throughput (stored events / time from the first request to caught up). With RATE (events/s):
# a steady load for 30 s, then the ingest-to-sink latency percentiles from
# colloquium_pipeline_latency_seconds (estimated within its histogram buckets).
# LANES='{…}' sets the config's `lanes:` (e.g. a transactional capacity large enough that
# ingest is never pushed back, to compare with builds before lanes).
# With WATCH=1 the node is watched for the whole run as an operator would: the web dashboard
# open in headless Chromium (polling the API) and `colloquium tap` attached to the last
# pipeline's output, printing every event (TAP_SAMPLE=N: one in N; WATCH_CPU=N runs both on
# core N).
# With HELD=1 one more pipeline takes every event to an `http` sink whose endpoint (a local
# socket) accepts the request and never answers, for the whole run: the figures are then those
# of the other pipelines while it waits.
set -euo pipefail
pipelines=${1:?number of pipelines}
rate=${2:-}
bin=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/colloquium-target}/release/colloquium}
work=$(mktemp -d /tmp/colloquium-bench.XXXXXX)
trap 'kill $node 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

if [ -n "${HELD:-}" ]; then
  # Accepts connections and reads, never answers.
  python3 -c '
import socket, sys, threading
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
def hold(c):
    while c.recv(65536): pass
while True:
    c, _ = s.accept(); threading.Thread(target=hold, args=(c,), daemon=True).start()
' > "$work/held.port" &
  holder=$!
  until [ -s "$work/held.port" ]; do sleep 0.05; done
  trap 'kill $node $holder 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
fi
{
  echo "storage: {retention: null}"
  if [ -n "${LANES:-}" ]; then echo "lanes: $LANES"; fi
  if [ -n "${HELD:-}" ]; then
    echo "sinks: {archive: {type: store}, held: {type: http, url: 'http://127.0.0.1:$(cat "$work/held.port")/', timeout: 1h}}"
    echo "pipelines:"
    echo "  - {name: held, sinks: [held]}"
  else
    echo "sinks: {archive: {type: store}}"
    echo "pipelines:"
  fi
  for i in $(seq 0 $((pipelines - 1))); do
    cat <<YAML
  - name: p$i
    stages:
      - type: transform
        script: [obj, [user, [get, [\$input], /user]], [amount, [get, [\$input], /amount]],
                 [seq, [get, [\$input], /seq]], [event_id, [get, [\$inputs], /1/event_id]]]
      - {type: filter, when: {gt: [/amount, 10]}}
      - {type: dedup, key: /event_id, ttl: 10m, max_keys: 100000}
    sinks: [archive]
YAML
  done
} > "$work/config.yaml"

"$bin" run -c "$work/config.yaml" --data-dir "$work/data" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 > "$work/node.log" 2>&1 &
node=$!
alive() { kill -0 $node 2>/dev/null || { echo "the node exited:"; tail -3 "$work/node.log"; exit 1; }; }
until grep -q "colloquium ready" "$work/node.log"; do alive; sleep 0.1; done
addr=$(sed -n 's/^colloquium ready http=\([^ ]*\).*/\1/p' "$work/node.log")

if [ -n "${WATCH:-}" ]; then
  watch_cpu=()
  [ -n "${WATCH_CPU:-}" ] && watch_cpu=(taskset -c "$WATCH_CPU")
  tools=${COLLOQUIUM_TOOLS_DIR:-$HOME/.cache/colloquium-tools}
  "${watch_cpu[@]}" "$bin" tap --url "http://$addr" --pipeline "p$((pipelines - 1))" --sample "${TAP_SAMPLE:-1}" --json > "$work/tap.ndjson" 2> "$work/tap.err" &
  tapper=$!
  "${watch_cpu[@]}" "$tools/venv/bin/python" "$(dirname "$0")/../crates/colloquium/tests/dashboard.py" watch \
    "{\"url\": \"http://$addr/\", \"chromium\": \"/usr/bin/chromium\", \"chromedriver\": \"/usr/bin/chromedriver\"}" > "$work/watch.json" &
  watcher=$!
  trap 'kill $node $tapper $watcher 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
  until grep -qs "following live" "$work/tap.err"; do alive; sleep 0.1; done
  until [ "$(curl -s "$addr/metrics" | awk '/^colloquium_http_requests_total[{].*route="\/api\/overview"/ { s += $NF } END { print s + 0 }')" -ge 2 ]; do alive; sleep 0.2; done
fi

metric() { # sum of the samples of one metric line pattern
  curl -s "$addr/metrics" | awk -v m="$1" 'index($0, m) == 1 { s += $NF } END { printf "%d", s }'
}
metric_re() { # sum of the samples of the metric lines matching an awk regex
  curl -s "$addr/metrics" | awk -v m="$1" '$0 ~ m { s += $NF } END { printf "%d", s }'
}

start=$(date +%s.%N)
if [ -z "$rate" ]; then
  "$bin" bench http --addr "$addr" --connections 4 --batch 1000 --duration "${DURATION:-15s}" --pid $node
  stored=$(metric "colloquium_storage_events_stored_total")
  # The stage is `transform` (stable stage ids), `transform#0` in builds before them.
  first_stage="^colloquium_pipeline_events_total[{]pipeline=\"p$((pipelines - 1))\",stage=\"transform(#0)?\",outcome=\"in\"[}]"
  until [ "$(metric_re "$first_stage")" -ge "$stored" ]; do alive; sleep 0.1; done
  end=$(date +%s.%N)
  python3 -c "import sys; s=$stored; t=$end-$start; print(f'pipelines: {s} events through each of $pipelines pipeline(s) in {t:.1f} s = {s/t:,.0f} events/s per pipeline (first request to caught up)')"
else
  "$bin" bench http --addr "$addr" --connections 4 --batch 1000 --rate "$rate" --duration 30s --pid $node
  curl -s "$addr/metrics" | grep -E "_seconds_(sum|count)" | sed "s/^/  /"
  curl -s "$addr/metrics" | "$(dirname "$0")/latency.py"
fi
if [ -n "${WATCH:-}" ]; then
  kill -TERM $watcher; wait $watcher || true
  kill -INT $tapper; wait $tapper || true
  echo "watched: dashboard drew $(python3 -c "import json; print(json.load(open('$work/watch.json'))['renders'])" 2>/dev/null || echo '?') times; tap printed $(wc -l < "$work/tap.ndjson") events; $(tail -1 "$work/tap.err")"
fi
grep VmHWM /proc/$node/status | awk '{printf "node peak RSS: %.0f MiB\n", $2/1024}'
