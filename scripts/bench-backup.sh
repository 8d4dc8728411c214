#!/usr/bin/env bash
# Backups (issue 27): fills a node's data directory to SIZE_GB of incompressible-on-disk events
# (1 KiB frames through the `tcp` source, `compression: none`), then measures
#   - a full backup (`colloquium backup`) alone: its time and size;
#   - the same backup while HTTP ingest (NDJSON batches of 100, 4 connections) runs for about
#     as long, and that ingest's rate against the same load alone;
#   - incremental backups: one with nothing written since the last, one after the ingest alone.
#
#   [SIZE_GB=5] [BIN=path/to/colloquium] scripts/bench-backup.sh
set -euo pipefail
bin=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/colloquium-target}/release/colloquium}
size_gb=${SIZE_GB:-5}
root=$(mktemp -d /var/tmp/colloquium-bench-backup.XXXXXX)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$root"' EXIT

cat > "$root/config.yaml" <<EOF
storage: {sync: true, retention: null, compression: none}
sources:
  http: {type: http}
  frames: {type: tcp, address: 127.0.0.1:0, ack: true}
sinks: {db: {type: store}}
pipelines:
  - {name: all, sinks: [db]}
EOF
"$bin" run -c "$root/config.yaml" --data-dir "$root/data" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 > "$root/node.log" 2>&1 &
pid=$!
until grep -q "colloquium ready" "$root/node.log"; do kill -0 "$pid" || { tail -3 "$root/node.log"; exit 1; }; sleep 0.1; done
ready=$(grep "colloquium ready" "$root/node.log")
http=$(sed -n 's/.* http=\([^ ]*\).*/\1/p' <<< "$ready")
admin=$(sed -n 's/.* admin=\([^ ]*\).*/\1/p' <<< "$ready")
frames=$(sed -n 's/.* frames=\([^ ]*\).*/\1/p' <<< "$ready")

bytes() { du -sb "$1" | cut -f1; }
gib() { awk -v b="$1" 'BEGIN { printf "%.2f GiB", b / 1073741824 }'; }

fill_start=$(date +%s)
while [ "$(bytes "$root/data")" -lt $((size_gb * 1073741824)) ]; do
  "$bin" bench tcp --addr "$frames" --size 1024 --connections 4 --duration 15s --warmup 0s > /dev/null
done
echo "filled: $(gib "$(bytes "$root/data")") in $(( $(date +%s) - fill_start )) s"
sleep 10 # let flushes and compactions settle

rate() { awk '/^events\/s:/ { print $2 }'; }
secs() { awk -v s="$1" -v e="$2" 'BEGIN { printf "%.1f", e - s }'; }

# A full backup alone, to size the loaded runs.
start=$(date +%s.%N)
"$bin" backup --to "$root/idle" --admin "http://$admin" > /dev/null
idle=$(secs "$start" "$(date +%s.%N)")
echo "full backup, no load: $idle s, $(gib "$(bytes "$root/idle")") (data directory: $(gib "$(bytes "$root/data")"))"
rm -rf "$root/idle"
load_for=$(awk -v t="$idle" 'BEGIN { printf "%ds", (t < 10) ? 10 : t }')

# The same backup while HTTP ingest runs for about as long, then that ingest alone.
"$bin" bench http --addr "$http" --batch 100 --connections 4 --duration "$load_for" --warmup 1s > "$root/during.txt" &
load=$!
sleep 1 # the warm-up
start=$(date +%s.%N)
"$bin" backup --to "$root/backups" --admin "http://$admin" > /dev/null &
backup=$!
sleep 1
# One backup at a time: a second one meanwhile is refused.
echo "a second backup meanwhile: $(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
  -d "{\"to\": \"$root/other\"}" "http://$admin/admin/backup")"
wait "$backup"
loaded=$(secs "$start" "$(date +%s.%N)")
wait "$load"
during=$(rate < "$root/during.txt")
start=$(date +%s.%N)
"$bin" backup --to "$root/backups" --admin "http://$admin" > /dev/null
quiet=$(secs "$start" "$(date +%s.%N)")
alone=$("$bin" bench http --addr "$http" --batch 100 --connections 4 --duration "$load_for" --warmup 1s | rate)
echo "full backup under load: $loaded s, $(gib "$(bytes "$root/backups")")"
awk -v d="$during" -v a="$alone" -v t="$load_for" 'BEGIN { printf "ingest over %s: %d events/s during the backup, %d alone (%.3f)\n", t, d, a, d / a }'

echo "incremental backup, nothing written since the last: $quiet s"
start=$(date +%s.%N)
"$bin" backup --to "$root/backups" --admin "http://$admin" --keep 1 > /dev/null
echo "incremental backup after that ingest alone: $(secs "$start" "$(date +%s.%N)") s"
