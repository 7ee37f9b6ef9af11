#!/usr/bin/python3
"""The command lines deploy/ runs ringmail with (systemd ExecStart, Dockerfile CMD,
Kubernetes args) use a subcommand and flags the real binary accepts: each --flag must
appear in `ringmail SUBCOMMAND --help`. Exit 77 (skipped) while the binary lacks the
subcommand. Usage: check_command_lines.py REPO_ROOT RINGMAIL_BINARY
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import importlib.util

ROOT, BINARY = Path(sys.argv[1]), sys.argv[2]
lines = {}
unit = (ROOT / "deploy/systemd/ringmail.service").read_text()
lines["systemd ExecStart"] = re.search(r"^ExecStart=\S+ (.*)$", unit, re.M).group(1).split()
docker = (ROOT / "deploy/docker/Dockerfile").read_text()
lines["Dockerfile CMD"] = json.loads(re.search(r"^CMD (\[.*\])$", docker, re.M).group(1))
k8s = (ROOT / "deploy/kubernetes/deployment.yaml").read_text()
lines["Deployment args"] = json.loads(re.search(r"^\s+args: (\[.*\])$", k8s, re.M).group(1))

errors, skipped = [], []
for where, argv in lines.items():
    sub = argv[0]
    r = subprocess.run([BINARY, sub, "--help"], capture_output=True, text=True)
    if r.returncode != 0:
        skipped.append(f"{where}: `ringmail {sub}` not available yet")
        continue
    for flag in (a for a in argv if a.startswith("--")):
        if not re.search(rf"(^|\s){re.escape(flag)}\b", r.stdout):
            errors.append(f"{where}: `ringmail {sub}` has no {flag}")
for e in errors:
    print("FAIL:", e)
for s in skipped:
    print("SKIP:", s)
if errors:
    sys.exit(1)
if skipped and len(skipped) == len(lines):
    sys.exit(77)
print("OK: deploy command lines use flags the binary accepts")
