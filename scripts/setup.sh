#!/usr/bin/env bash
# Installs everything pilotfish and its test suite need on a fresh Debian machine.
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the real peers the tests talk to (nginx, Prometheus), load tools
# for the benchmark (wrk, h2load), and the kernel tools for transparent capture.
DEBS=(nginx wrk nghttp2-client iptables iproute2 prometheus procps curl util-linux)
missing=()
for pkg in "${DEBS[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The packaged services must not hold the ports the tests use.
    for svc in nginx prometheus prometheus-node-exporter; do
      service "$svc" stop >/dev/null 2>&1 || true
    done
  else
    echo "setup: not root; these Debian packages are missing and tests needing them will skip: ${missing[*]}" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "Running pip as the 'root' user" || true
"$PYTHON" -c "import proxy, injector, httptools, h11, h2, uvloop, prometheus_client" \
  || { echo "setup: the Python install failed" >&2; exit 1; }
echo "setup: ready"
