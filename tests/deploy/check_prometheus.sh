#!/usr/bin/env bash
# promtool on deploy/prometheus: the scrape config, the rules, and the rules' unit tests.
# Exit 77 (ctest: skipped) when promtool is missing.
set -euo pipefail
root=$1
promtool=${PROMTOOL:-/usr/bin/promtool}
if [ ! -x "$promtool" ]; then
  echo "SKIP: $promtool missing (Debian package prometheus; scripts/bootstrap installs it)"
  exit 77
fi
cd "$root/deploy/prometheus"
"$promtool" check config prometheus.yml
"$promtool" check rules ringmail.rules.yml
"$promtool" test rules ringmail.rules.test.yml
