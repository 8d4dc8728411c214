#!/usr/bin/env bash
# Seeds fuzz/corpus/computo with every script of the shared conformance suite (script on the
# first line, inputs on the next), without copying the suite into the repository.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
suite="${COLLOQUIUM_SHARED_DIR:-$here/../../shared}/conformance/computo"
mkdir -p "$here/corpus/computo"
python3 - "$suite" "$here/corpus/computo" <<'PY'
import json, pathlib, sys
suite, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
n = 0
for f in sorted(suite.glob("*.jsonl")):
    for line in f.read_text().splitlines():
        case = json.loads(line)
        text = "\n".join([json.dumps(case["script"])] + [json.dumps(i) for i in case["inputs"]])
        (out / f"seed-{n:04}").write_text(text)
        n += 1
print(f"seeded {n} cases into {out}")
PY
