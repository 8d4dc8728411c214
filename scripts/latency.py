#!/usr/bin/env python3
"""Ingest-to-sink latency percentiles from colloquium_pipeline_latency_seconds (Prometheus text
on stdin), estimated within its histogram buckets. Used by the bench-*.sh scripts.

    curl -s $node/metrics | scripts/latency.py [LANE]

With METRIC=colloquium_pipeline_stage_seconds (and LANE empty) it reads that histogram instead:
a window stage's emission delay.
"""
import os
import re
import sys

lane = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None
metric = os.environ.get("METRIC", "colloquium_pipeline_latency_seconds")
buckets = {}
for line in sys.stdin:
    m = re.match(metric + r"_bucket\{([^}]*)\} (\d+)", line)
    if not m:
        continue
    labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
    if lane and labels.get("lane") != lane:
        continue
    le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
    buckets[le] = buckets.get(le, 0) + int(m.group(2))
bounds = sorted(buckets)
total = buckets[bounds[-1]] if bounds else 0


def quantile(q):
    rank, lower, below = q * total, 0.0, 0
    for le in bounds:
        if buckets[le] >= rank:
            inside = buckets[le] - below
            frac = (rank - below) / inside if inside else 1
            return lower + (le - lower) * frac if le != float("inf") else lower
        lower, below = le, buckets[le]
    return lower


what = f"{lane} ingest-to-sink" if lane else "ingest-to-sink latency"
if "METRIC" in os.environ:
    what = metric
if total and "METRIC" in os.environ:
    print(
        f"{what} over {total}: p50 {quantile(0.5)*1000:.3f} ms, "
        f"p99 {quantile(0.99)*1000:.3f} ms (histogram estimate), "
        f"{100*buckets.get(0.001, 0)/total:.2f}% within 1 ms"
    )
elif total:
    print(
        f"{what} over {total} events: p50 {quantile(0.5)*1000:.1f} ms, "
        f"p99 {quantile(0.99)*1000:.1f} ms (histogram estimate), "
        f"{100*buckets.get(0.02, 0)/total:.2f}% within 20 ms"
    )
else:
    print(f"{what}: no events recorded")
