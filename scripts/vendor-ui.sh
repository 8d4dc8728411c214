#!/usr/bin/env bash
# Vendors the dashboard's charting library (uPlot, pinned in crates/api/ui/package.json and its
# lock file) from the npm registry into crates/api/ui/, where rust-embed puts it in the binary.
# The copied files are committed: building and running colloquium needs neither npm nor the
# internet. Run it after changing the pinned version, and commit what it changes.
#
#   scripts/vendor-ui.sh
set -euo pipefail
ui="$(cd "$(dirname "$0")/../crates/api/ui" && pwd)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$ui/package.json" "$tmp/"
[ -f "$ui/package-lock.json" ] && cp "$ui/package-lock.json" "$tmp/"
cd "$tmp"
if [ -f package-lock.json ]; then
  npm ci --ignore-scripts --no-audit --no-fund --silent
else
  npm install --ignore-scripts --no-audit --no-fund --silent
  cp package-lock.json "$ui/"
fi
dist=node_modules/uplot/dist
cp "$dist/uPlot.iife.min.js" "$dist/uPlot.min.css" "$ui/"
cp node_modules/uplot/LICENSE "$ui/uPlot.LICENSE"
echo "vendored uplot $(node -p 'require("./node_modules/uplot/package.json").version') into $ui"
