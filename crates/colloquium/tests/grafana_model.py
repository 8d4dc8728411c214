"""Loads a dashboard JSON file into Grafana's own dashboard model (grafana-foundation-sdk,
generated from Grafana's schemas) and back; prints every key the model does not know and every
value that does not survive, and exits 1 if there is one. Run by
crates/colloquium/tests/it/grafana.rs."""

import json
import sys

from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.models.dashboard import Dashboard


def differences(written, loaded, path="$"):
    if isinstance(written, dict):
        if not isinstance(loaded, dict):
            return [f"{path}: not an object once loaded"]
        found = []
        for key, value in written.items():
            if key not in loaded:
                found.append(f"{path}.{key}: unknown to Grafana's dashboard model")
            else:
                found += differences(value, loaded[key], f"{path}.{key}")
        return found
    if isinstance(written, list):
        if not isinstance(loaded, list) or len(written) != len(loaded):
            return [f"{path}: the list changed once loaded"]
        found = []
        for i, (w, l) in enumerate(zip(written, loaded)):
            found += differences(w, l, f"{path}[{i}]")
        return found
    return [] if written == loaded else [f"{path}: {written!r} became {loaded!r}"]


def main():
    plugins.register_default_plugins()
    with open(sys.argv[1]) as f:
        written = json.load(f)
    model = Dashboard.from_json(written)
    loaded = json.loads(json.dumps(model.to_json(), default=lambda o: o.to_json()))
    problems = differences(written, loaded)
    print("\n".join(problems) or "ok")
    sys.exit(1 if problems else 0)


main()
