# Sourced by the bench-*.sh scripts: starts "$bin" on "$work/config.yaml" with its data in
# "$work", waits for its ready line, and sets `node` (its pid), `http` (its API address) and,
# for `start_node SOURCE`, `addr` (that source's address from the ready line). `metric M` sums
# the samples of the node's metric lines starting with M. `caught_up PIPELINE STAGE` sets
# `stored` (events the node stored) and waits until that stage has taken as many.
start_node() {
  "$bin" run -c "$work/config.yaml" --data-dir "$work/data" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 > "$work/node.log" 2>&1 &
  node=$!
  until grep -q "colloquium ready" "$work/node.log"; do kill -0 $node || { tail -3 "$work/node.log"; exit 1; }; sleep 0.1; done
  http=$(sed -n 's/^colloquium ready http=\([^ ]*\).*/\1/p' "$work/node.log")
  if [ -n "${1:-}" ]; then
    addr=$(sed -n "s/^colloquium ready .*$1=\([^ ]*\).*/\1/p" "$work/node.log")
  fi
}

metric() {
  curl -s "$http/metrics" | awk -v m="$1" 'index($0, m) == 1 { s += $NF } END { printf "%d", s }'
}

caught_up() {
  stored=$(metric "colloquium_storage_events_stored_total")
  until [ "$(metric "colloquium_pipeline_events_total{pipeline=\"$1\",stage=\"$2\",outcome=\"in\"}")" -ge "$stored" ]; do
    kill -0 $node || exit 1; sleep 0.05
  done
}
