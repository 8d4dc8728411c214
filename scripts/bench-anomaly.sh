#!/usr/bin/env bash
# End-to-end anomaly benchmark (issue 16): StreamGuard events as NDJSON over HTTP → the log →
# one stage → the `store` sink.
#
#   [DURATION=15s] [USERS=10000] [CONNECTIONS=2] [BIN=path/to/colloquium] \
#     scripts/bench-anomaly.sh streamguard|robust|schema
#
# streamguard / robust: `{type: anomaly, model: …, min_events: 20}` (20 so that most of a
# short run is scored: 10,000 users learn in the first 200,000 events); schema: the shipped
# StreamGuard event schema alone. The workload (`bench http --streamguard-users`): users chosen
# uniformly, each with its own IP and place, office hours; 1 % from a new IP and country at
# 3 AM. Batches of 1,000. Reports events/s from the first request until the stage has taken
# every stored event, scored events and anomalies, and the node's peak RSS.
set -euo pipefail
kind=${1:?streamguard, robust or schema}
bin=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/colloquium-target}/release/colloquium}
work=$(mktemp -d /tmp/colloquium-bench.XXXXXX)
trap 'kill $node 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
schema="$(cd "$(dirname "$0")/.." && pwd)/examples/streamguard/event-schema.json"
case $kind in
  streamguard | robust) stage="{type: anomaly, model: $kind, min_events: 20, max_entities: 1000000}" ;;
  schema) stage="{type: schema, file: $schema}" ;;
  *) echo "streamguard, robust or schema"; exit 2 ;;
esac
cat > "$work/config.yaml" <<YAML
storage: {retention: null}
sinks: {archive: {type: store}}
pipelines:
  - name: a
    stages:
      - $stage
    sinks: [archive]
YAML
source "$(dirname "$0")/bench-node.sh"
start_node
stage_id=$([ "$kind" = schema ] && echo schema || echo anomaly)
start=$(date +%s.%N)
"$bin" bench http --addr "$http" --connections "${CONNECTIONS:-2}" --batch 1000 \
  --streamguard-users "${USERS:-10000}" --warmup 0s --duration "${DURATION:-15s}" --pid $node
caught_up a "$stage_id"
end=$(date +%s.%N)
scored=$(metric 'colloquium_pipeline_stage_total{pipeline="a",stage="anomaly",name="scored"}')
anomalies=$(metric 'colloquium_pipeline_stage_total{pipeline="a",stage="anomaly",name="anomalies"}')
failed=$(metric "colloquium_pipeline_events_total{pipeline=\"a\",stage=\"$stage_id\",outcome=\"failed\"}")
python3 -c "s=$stored; t=$end-$start; print(f'$kind e2e: {s} events in {t:.1f} s = {s/t:,.0f} events/s (first request to the stage caught up); {$scored} scored, {$anomalies} anomalies, {$failed} failed')"
grep VmHWM /proc/$node/status | awk '{printf "node peak RSS: %.0f MiB\n", $2/1024}'
