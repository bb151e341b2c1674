#!/usr/bin/env bash
# Installs everything pilotfish and its test suite need on a fresh Debian machine.
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the real peers the tests talk to (nginx, Prometheus, Redis for opaque
# TCP), load tools for the benchmarks (wrk, h2load, redis-benchmark), the kernel tools for
# transparent capture, and a C compiler for the mypyc-compiled hot path (proxy/_compiled.py).
PYTHON=${PYTHON:-python3}
DEBS=(nginx wrk nghttp2-client iptables iproute2 prometheus procps curl util-linux gcc libc6-dev
  redis-server redis-tools)
if ! "$PYTHON" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
  DEBS+=(python3-dev)  # a distribution Python without its C headers
fi
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
    for svc in nginx prometheus prometheus-node-exporter redis-server; do
      service "$svc" stop >/dev/null 2>&1 || true
    done
  else
    echo "setup: not root; these Debian packages are missing and tests needing them will skip: ${missing[*]}" >&2
  fi
fi

pip_install() {
  "$PYTHON" -m pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "Running pip as the 'root' user"
  return "${PIPESTATUS[0]}"
}
# The install compiles the hot path (setup.py); without a working compiler it still
# installs, as pure Python, and says so.
# Skipped when nothing it depends on changed since the last install from this checkout.
stamp=".setup-stamp"
want="$(cat pyproject.toml setup.py | sha256sum | cut -c1-16) $(pwd)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] \
  || [ "$("$PYTHON" -c 'import proxy._compiled as c; print(c.state())' 2>/dev/null)" != compiled ]; then
  if ! pip_install; then
    echo "setup: compiling the hot path failed; installing it as pure Python" >&2
    PILOTFISH_PURE_PYTHON=1 pip_install || true
  fi
  echo "$want" >"$stamp"
fi
"$PYTHON" -c "import proxy, injector, httptools, h11, h2, uvloop, prometheus_client" \
  || { echo "setup: the Python install failed" >&2; exit 1; }
echo "setup: ready (hot path: $("$PYTHON" -c 'import proxy._compiled as c; print(c.state())'))"
