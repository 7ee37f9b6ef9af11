#!/usr/bin/python3
"""Checks deploy/grafana/ringmail.json and the metric names used in deploy/.

- The dashboard is valid JSON; its data source is the variable ${DS_PROMETHEUS} in every
  panel and target; the templating defines that variable.
- Every PromQL expression of the dashboard, with Grafana's variables replaced by values,
  is written into a rules file as a recording rule, and `promtool check rules` parses it.
- Every ringmail_* metric named in the dashboard and the alert rules is one that
  metrics/README.md lists as exported (so a renamed metric cannot leave a dead panel).

Usage: check_dashboard.py REPO_ROOT. Exit 77 (skipped) when promtool is missing.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(sys.argv[1])
PROMTOOL = os.environ.get("PROMTOOL", "/usr/bin/promtool")
GRAFANA_VARS = {
    "$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
    "${DS_PROMETHEUS}": "prometheus", "$job": ".*", "$instance": ".*",
}


def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def main():
    dash = json.loads((ROOT / "deploy/grafana/ringmail.json").read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    if variables.get("DS_PROMETHEUS", {}).get("type") != "datasource":
        fail("templating lacks the datasource variable DS_PROMETHEUS")
    exprs = []
    for p in panels(dash["panels"]):
        for t in p.get("targets", []):
            for where in (p, t):
                uid = where.get("datasource", {}).get("uid")
                if uid != "${DS_PROMETHEUS}":
                    fail(f"panel '{p.get('title')}': datasource uid {uid!r}, not ${{DS_PROMETHEUS}}")
            exprs.append((p["title"], t["expr"]))
    for v in variables.values():
        if v.get("type") == "query":
            exprs.append((f"variable {v['name']}", None))
    if len(exprs) < 10:
        fail(f"only {len(exprs)} expressions found")

    used = set()
    rules = []
    for i, (title, expr) in enumerate(e for e in exprs if e[1]):
        concrete = expr
        for k, v in GRAFANA_VARS.items():
            concrete = concrete.replace(k, v)
        if "$" in concrete:
            fail(f"panel '{title}': unknown variable in {expr}")
        rules.append({"record": f"dashboard:expr_{i}", "expr": concrete})
        used.update(re.findall(r"\bringmail_[a-z0-9_]+", concrete))

    for line in (ROOT / "deploy/prometheus/ringmail.rules.yml").read_text().splitlines():
        if "expr:" in line or line.startswith("            "):
            used.update(re.findall(r"\bringmail_[a-z0-9_]+", line))

    readme = (ROOT / "metrics/README.md").read_text()
    exported = set(re.findall(r"^\| `(ringmail_[a-z0-9_]+)", readme, re.M))
    for name in sorted(used):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in exported and base not in exported:
            fail(f"{name} is used in deploy/ but not listed as exported in metrics/README.md")
    print(f"OK: {len(rules)} dashboard expressions, {len(used)} metric names, all exported")

    if not os.access(PROMTOOL, os.X_OK):
        print(f"SKIP: {PROMTOOL} missing; expressions not parsed")
        sys.exit(77)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "dashboard.rules.yml"
        # JSON is YAML: no YAML library needed.
        path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}, indent=1))
        r = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
        print(r.stdout, r.stderr)
        if r.returncode != 0:
            fail("promtool check rules on the dashboard's expressions")
    print("OK: promtool parses every dashboard expression")


main()
