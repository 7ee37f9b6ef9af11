#!/usr/bin/env bash
# systemd-analyze verify on deploy/systemd/ringmail.service. The unit's ExecStart names the
# installed path, so a copy pointing at the binary just built is verified (same name, so
# the unit's own name is what systemd checks). Exit 77 (skipped) without systemd-analyze.
set -euo pipefail
root=$1
binary=$2
if ! command -v systemd-analyze >/dev/null; then
  echo "SKIP: systemd-analyze missing"
  exit 77
fi
unit=$root/deploy/systemd/ringmail.service
grep -q '^ExecStart=/usr/local/bin/ringmail run ' "$unit"
for key in NoNewPrivileges=yes ProtectSystem=strict User=ringmail LogsDirectory=ringmail StateDirectoryMode=2770 StateDirectory=ringmail \
           CapabilityBoundingSet= PrivateTmp=yes SystemCallFilter=@system-service; do
  grep -qx "$key" "$unit" || { echo "FAIL: $unit lacks $key"; exit 1; }
done
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed "s#^ExecStart=/usr/local/bin/ringmail #ExecStart=$binary #" "$unit" > "$dir/ringmail.service"
out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify "$dir/ringmail.service" 2>&1) || {
  echo "$out"
  echo "FAIL: systemd-analyze verify"
  exit 1
}
# verify exits 0 on some warnings; treat any line about our unit as a failure.
if grep -i "ringmail.service" <<<"$out"; then
  echo "FAIL: systemd-analyze verify reported the lines above"
  exit 1
fi
echo "OK: systemd-analyze verify ringmail.service"
