#!/usr/bin/env bash
# Memory after a burst: eight clients post six batches of eight 1 MB events each to a fresh node
# (default config), then the node's RSS is sampled 0, 1, 5, 10 and 30 s after the last answer.
#   [BIN=path/to/colloquium] scripts/bench-burst.sh
set -euo pipefail
bin=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/colloquium-target}/release/colloquium}
work=$(mktemp -d /tmp/colloquium-bench.XXXXXX)
trap 'kill $node 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
printf '' > "$work/config.yaml"
source "$(dirname "$0")/bench-node.sh"
start_node
python3 - "http://$http/events" "$node" <<'PY'
import json, sys, threading, time, urllib.request, urllib.error
url, pid = sys.argv[1], sys.argv[2]
def rss():
    fields = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status"))
    return int(fields["VmRSS"].split()[0]) >> 10, int(fields["VmHWM"].split()[0]) >> 10
event = json.dumps({"blob": "x" * (1 << 20)})
batch = ("[" + ",".join([event] * 8) + "]").encode()
codes = []
def client():
    for _ in range(6):
        request = urllib.request.Request(url, data=batch, headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                codes.append(answer.status)
        except urllib.error.HTTPError as e:
            codes.append(e.code)
        except OSError as e:
            codes.append(type(e).__name__)
threads = [threading.Thread(target=client) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
done = time.time()
print("answers:", {c: codes.count(c) for c in set(codes)})
for at in (0, 1, 5, 10, 30):
    time.sleep(max(0, done + at - time.time()))
    now, peak = rss()
    print(f"t+{at}s: RSS {now} MiB (peak {peak} MiB)")
PY
