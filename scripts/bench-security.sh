#!/usr/bin/env bash
# Auth and TLS overhead on ingest (issue 26): three nodes of the same binary side by side —
# plain, bearer tokens, TLS — benched in turn, round after round, so all three see the same
# machine state. Prints events/s per round, the ratios of the medians to plain, and the median
# of each round's ratio.
#
#   [ROUNDS=5] [DURATION=5s] [PIN=1] [SETTLE=0] [LOADS="single batch"] [BIN=...] scripts/bench-security.sh
#
# PIN=1 runs the nodes on core 0 and the load generator on core 1 (`taskset`), so they do not
# trade cores from run to run: less noise, one core's throughput. SETTLE=N waits N seconds
# after each run (the node just benched flushes and compacts meanwhile, not during the next).
set -euo pipefail
bin=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/colloquium-target}/release/colloquium}
node_cpu=() load_cpu=()
if [ "${PIN:-0}" = 1 ]; then node_cpu=(taskset -c 0); load_cpu=(taskset -c 1); fi
rounds=${ROUNDS:-5}
duration=${DURATION:-5s}
root=$(mktemp -d /tmp/colloquium-bench-security.XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$root"' EXIT
token=$("$bin" token | sed -n 's/^token: *//p')
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
  -keyout "$root/node.key" -out "$root/node.crt" 2>/dev/null

# start NAME SERVER_SECTION: a node in $root/NAME; sets addr_NAME.
start() {
  local dir="$root/$1"
  mkdir -p "$dir"
  printf 'storage: {sync: true, retention: null}\nserver: %s\n' "$2" > "$dir/config.yaml"
  "${node_cpu[@]}" "$bin" run -c "$dir/config.yaml" --data-dir "$dir/data" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 > "$dir/node.log" 2>&1 &
  pids+=($!)
  until grep -q "colloquium ready" "$dir/node.log"; do kill -0 "${pids[-1]}" || { tail -3 "$dir/node.log"; exit 1; }; sleep 0.1; done
  printf -v "addr_$1" '%s' "$(sed -n 's/^colloquium ready http=\([^ ]*\).*/\1/p' "$dir/node.log")"
}
start plain '{}'
start auth "{auth: {tokens: [{name: bench, token: $token, scopes: [ingest]}]}}"
start tls "{tls: {cert: $root/node.crt, key: $root/node.key}}"

# events/s of one run against NAME with BENCH_ARGS.
run() {
  local name=$1; shift
  local addr_var="addr_$name" extra=()
  case $name in
    auth) extra=(--token "$token") ;;
    tls) extra=(--tls-ca "$root/node.crt") ;;
  esac
  "${load_cpu[@]}" "$bin" bench http --addr "${!addr_var}" --duration "$duration" --warmup 1s "${extra[@]}" "$@" |
    awk '/^events\/s:/ { print $2 }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

for load in "single:--connections 64 --batch 1" "batch:--connections 4 --batch 1000"; do
  label=${load%%:*}
  [[ " ${LOADS:-single batch} " == *" $label "* ]] || continue
  read -r -a flags <<< "${load#*:}"
  for name in plain auth tls; do : > "$root/$label.$name"; done
  for round in $(seq "$rounds"); do
    line="$label round $round:"
    order="plain auth tls"
    (( round % 2 == 0 )) && order="tls auth plain" # no mode always runs first
    for name in $order; do
      value=$(run "$name" "${flags[@]}")
      echo "$value" >> "$root/$label.$name"
      sleep "${SETTLE:-0}"
      line="$line $name $value"
    done
    echo "$line"
  done
  p=$(median < "$root/$label.plain"); a=$(median < "$root/$label.auth"); t=$(median < "$root/$label.tls")
  awk -v l="$label" -v p="$p" -v a="$a" -v t="$t" 'BEGIN { printf "%s medians: plain %d, auth %d (%.3f), tls %d (%.3f) events/s\n", l, p, a, a / p, t, t / p }'
  # Each round's own ratio (runs seconds apart) cancels drift across rounds.
  ra=$(paste "$root/$label.auth" "$root/$label.plain" | awk '{ print $1 / $2 }' | median)
  rt=$(paste "$root/$label.tls" "$root/$label.plain" | awk '{ print $1 / $2 }' | median)
  awk -v l="$label" -v a="$ra" -v t="$rt" 'BEGIN { printf "%s median of per-round ratios: auth %.3f, tls %.3f\n", l, a, t }'
done
