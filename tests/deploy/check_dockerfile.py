#!/usr/bin/python3
"""Offline checks of deploy/docker/Dockerfile (no hadolint, no network, no docker build).

- Every instruction is a known Dockerfile instruction; continuation lines join up.
- Two stages: `build` FROM debian:12, the final stage FROM debian:12-slim (pinned tags).
- Every `apt-get install` uses -y and --no-install-recommends, runs after `apt-get update`
  in the same RUN, and the RUN cleans /var/lib/apt/lists.
- The build stage installs every build package of scripts/bootstrap.
- The runtime stage installs, for every shared library the real binary links (`ldd` of
  the build, mapped to Debian packages with `dpkg -S`), its package, unless the slim image
  already has it; every runtime package is known to apt (`apt-cache show`, local lists).
- COPY --from names an earlier stage; COPY sources exist in the repository; the final stage
  runs as a non-root USER; ENTRYPOINT/CMD are JSON arrays; the config it copies only uses
  keys documented in app/CONFIG.md.

Usage: check_dockerfile.py REPO_ROOT RINGMAIL_BINARY
"""
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(sys.argv[1])
BINARY = sys.argv[2] if len(sys.argv) > 2 else None
INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
                "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
# In debian:12-slim already (Priority: required, or apt's own dependencies).
IN_SLIM = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}
errors = []


def check(ok, msg):
    if not ok:
        errors.append(msg)


def parse(path):
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        if not current and (raw.strip().startswith("#") or not raw.strip()):
            continue
        if raw.strip().startswith("#"):
            continue
        current += raw.rstrip("\\").rstrip() + " " if raw.endswith("\\") else raw
        if not raw.endswith("\\"):
            lines.append(current.strip())
            current = ""
    check(current == "", "a continuation line runs off the end of the file")
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        check(word.upper() == word and word in INSTRUCTIONS, f"unknown instruction: {word}")
        out.append((word, rest.strip()))
    return out


def packages_of(run):
    pkgs = []
    for m in re.finditer(r"apt-get install ([^&;|]+)", run):
        words = m.group(1).split()
        check("-y" in words, f"apt-get install without -y: {m.group(0)[:60]}")
        check("--no-install-recommends" in words, "apt-get install without --no-install-recommends")
        pkgs += [w for w in words if not w.startswith("-")]
    if pkgs:
        check(run.find("apt-get update") != -1 and run.find("apt-get update") < run.find("apt-get install"),
              "apt-get install without apt-get update before it in the same RUN")
        check("rm -rf /var/lib/apt/lists" in run, "RUN with apt-get install does not clean the lists")
    return pkgs


def bootstrap_build_packages():
    text = (ROOT / "scripts/bootstrap").read_text()
    block = text[text.index("# build"):text.index("# tests")]
    return {w for line in block.splitlines() for w in line.split("#")[0].split()}


def linked_packages(binary):
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    pkgs = {}
    for line in out.splitlines():
        m = re.search(r"=> (/\S+)", line)
        if not m:
            continue
        lib = Path(m.group(1))
        for candidate in (str(lib), str(lib.resolve())):
            r = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if r.returncode == 0:
                pkgs[r.stdout.split(":")[0]] = lib.name
                break
        else:
            errors.append(f"{lib}: no Debian package owns it")
    return pkgs


def main():
    ins = parse(ROOT / "deploy/docker/Dockerfile")
    stages = []  # (name, base, instructions)
    for word, rest in ins:
        if word == "FROM":
            m = re.fullmatch(r"(\S+)(?: AS (\S+))?", rest, re.I)
            check(m is not None, f"FROM {rest}")
            stages.append((m.group(2), m.group(1), []))
        else:
            check(bool(stages) or word == "ARG", f"{word} before the first FROM")
            if stages:
                stages[-1][2].append((word, rest))
    check(len(stages) == 2, f"{len(stages)} stages, expected build and runtime")
    names = [s[0] for s in stages]
    check(stages[0][:2] == ("build", "debian:12"), f"first stage is {stages[0][:2]}")
    check(stages[-1][1] == "debian:12-slim", f"final stage FROM {stages[-1][1]}")
    for _, base, _ in stages:
        check(":" in base and not base.endswith(":latest"), f"unpinned base image {base}")

    build_pkgs, runtime_pkgs = set(), set()
    for i, (name, _, body) in enumerate(stages):
        for word, rest in body:
            if word == "RUN":
                (build_pkgs if i == 0 else runtime_pkgs).update(packages_of(rest))
            if word in ("COPY", "ADD"):
                args = rest.split()
                frm = [a for a in args if a.startswith("--from=")]
                srcs = [a for a in args if not a.startswith("--")][:-1]
                if frm:
                    check(frm[0][7:] in names[:i], f"COPY {frm[0]}: no earlier stage of that name")
                else:
                    for s in srcs:
                        check(s == "." or (ROOT / s).exists(), f"COPY source {s} missing")
            if word in ("CMD", "ENTRYPOINT"):
                try:
                    check(isinstance(json.loads(rest), list), f"{word} is not a JSON array")
                except json.JSONDecodeError:
                    errors.append(f"{word} is not a JSON array (exec form)")
    final = stages[-1][2]
    users = [rest for word, rest in final if word == "USER"]
    check(users and users[-1] not in ("root", "0"), "the final stage runs as root")

    missing = bootstrap_build_packages() - build_pkgs
    check(not missing, f"build stage lacks bootstrap's build packages: {sorted(missing)}")

    if BINARY and shutil.which("ldd") and shutil.which("dpkg"):
        for pkg, lib in sorted(linked_packages(BINARY).items()):
            if re.fullmatch(r"lib(asan|ubsan|lsan|tsan)\d*", pkg):
                continue  # a sanitizer build (scripts/test's asan variant), never shipped
            check(pkg in runtime_pkgs or pkg in IN_SLIM,
                  f"runtime stage lacks {pkg} (the binary links {lib})")
        print(f"checked runtime libraries of {BINARY}")
    if shutil.which("apt-cache"):
        # One call for all: each apt-cache start loads the package lists (~1 s).
        wanted = sorted(runtime_pkgs | build_pkgs)
        r = subprocess.run(["apt-cache", "policy", *wanted], capture_output=True, text=True)
        known = set(re.findall(r"^(\S+?)(?::\w+)?:\n\s+Installed: .*\n\s+Candidate: (?!\(none\))",
                               r.stdout, re.M))
        for pkg in wanted:
            check(pkg in known, f"apt-cache knows no package {pkg}")

    config = tomllib.loads((ROOT / "deploy/docker/ringmail.toml").read_text())
    documented = (ROOT / "app/CONFIG.md").read_text()
    for table, keys in config.items():
        for key in keys:
            check(f"| `{table}.{key}` |" in documented, f"deploy/docker/ringmail.toml: {table}.{key} undocumented")

    if errors:
        for e in errors:
            print("FAIL:", e)
        sys.exit(1)
    print(f"OK: Dockerfile ({len(ins)} instructions, {len(stages)} stages, "
          f"{len(build_pkgs)} build and {len(runtime_pkgs)} runtime packages)")


main()
