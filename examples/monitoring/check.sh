#!/usr/bin/env bash
# Checks the monitoring kit: the alerting rules and their unit tests
# (promtool, from Debian's `prometheus` package), and that the dashboard is
# JSON whose every PromQL query parses (with Grafana's variables replaced by
# plain values, the queries are checked as recording rules).
set -euo pipefail
cd "$(dirname "$0")"

promtool check rules carpd.rules.yml
promtool test rules carpd.rules.test.yml

python3 -m json.tool carpd.dashboard.json >/dev/null

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - carpd.dashboard.json >"$tmp/dashboard.rules.yml" <<'PY'
import json
import sys

with open(sys.argv[1]) as f:
    dashboard = json.load(f)
exprs = [
    target["expr"]
    for panel in dashboard["panels"]
    for target in panel.get("targets", [])
    if "expr" in target
]
if not exprs:
    sys.exit("no queries in the dashboard")
print("groups:\n  - name: dashboard\n    rules:")
for n, expr in enumerate(exprs):
    expr = expr.replace("$__rate_interval", "1m")
    for var in ("job", "instance", "interface", "vhid"):
        expr = expr.replace("$" + var, ".*")
    print(f"      - record: dashboard_query_{n}\n        expr: {json.dumps(expr)}")
PY
promtool check rules "$tmp/dashboard.rules.yml"
