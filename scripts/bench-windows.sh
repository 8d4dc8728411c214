#!/usr/bin/env bash
# End-to-end window benchmark (issue 15): NDJSON over HTTP → the log → one `window` stage →
# the `store` sink, on issue 15's workload (10,000 keys chosen uniformly, values uniform in
# [0, 1000), event time = the event's index in ms minus up to 500 ms, watermark = max − 1 s).
#
#   [DURATION=15s] [BIN=path/to/colloquium] scripts/bench-windows.sh tumbling|sliding|plain
#
# tumbling: 1 s windows with count + avg + p95; sliding: 10 s / 1 s with count + avg; plain:
# the same events through a pipeline with no stage, to the same sink (the ratio's base). One
# connection (concurrent requests would add disorder beyond the workload's), batches of 2,000.
# Reports events/s from the first request until the stage has taken every stored event, the
# node's peak RSS and open keys, and the emission delay (the watermark passing a window's end
# to its result) from colloquium_pipeline_stage_seconds.
set -euo pipefail
kind=${1:?tumbling or sliding}
bin=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/colloquium-target}/release/colloquium}
work=$(mktemp -d /tmp/colloquium-bench.XXXXXX)
trap 'kill $node 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
case $kind in
  tumbling) window="window: tumbling, size: 1s"; aggregates="{n: count, mean: {avg: /v}, p95: {p95: /v}}" ;;
  sliding) window="window: sliding, size: 10s, slide: 1s"; aggregates="{n: count, mean: {avg: /v}}" ;;
  plain) ;;
  *) echo "tumbling, sliding or plain"; exit 2 ;;
esac
if [ "$kind" = plain ]; then
  stages="stages: []"
else
  stages="stages: [{type: window, $window, key: /k, time: /t, max_out_of_orderness: 1s, aggregates: $aggregates}]"
fi
cat > "$work/config.yaml" <<YAML
storage: {retention: null}
sinks: {archive: {type: store}}
pipelines:
  - name: w
    $stages
    sinks: [archive]
YAML
source "$(dirname "$0")/bench-node.sh"
start_node
start=$(date +%s.%N)
"$bin" bench http --addr "$http" --connections 1 --batch 2000 --window-keys 10000 \
  --warmup 0s --duration "${DURATION:-15s}" --pid $node
if [ "$kind" = plain ]; then
  # No stage to count: caught up when the sink has delivered every stored event.
  stored=$(metric "colloquium_storage_events_stored_total")
  until [ "$(metric 'colloquium_sink_events_total{sink="archive"')" -ge "$stored" ]; do
    kill -0 $node || exit 1; sleep 0.05
  done
else
  caught_up w "window"
fi
end=$(date +%s.%N)
results=$(metric 'colloquium_pipeline_events_total{pipeline="w",stage="window",outcome="out"}')
late=$(metric 'colloquium_pipeline_stage_total{pipeline="w",stage="window",name="late"}')
keys=$(metric 'colloquium_pipeline_stage_value{pipeline="w",stage="window",name="open_keys"}')
python3 -c "s=$stored; t=$end-$start; print(f'window e2e ($kind): {s} events in {t:.1f} s = {s/t:,.0f} events/s (first request to the stage caught up); {$results} results, {$late} late, {$keys} open keys')"
curl -s "$http/metrics" | METRIC=colloquium_pipeline_stage_seconds "$(dirname "$0")/latency.py" ""
grep VmHWM /proc/$node/status | awk '{printf "node peak RSS: %.0f MiB\n", $2/1024}'
