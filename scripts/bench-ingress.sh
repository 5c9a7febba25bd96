#!/usr/bin/env bash
# Ingress proxy benchmark (as root): weft's Ingress proxy against nginx on the same routes
# and the same backends, loaded by wrk; then the time for one change to take effect with
# 5000 Ingresses (weft: compile + swap; nginx: rewrite + `nginx -s reload`).
#
# Everything runs inside network namespaces the bench creates (weft-bench-<pid>-ingress)
# and deletes on exit, failure and Ctrl-C included; the host's own network is not touched.
# nginx is Debian's package, started by the bench with its own config in a temp dir
# (`nginx -c ... -g 'daemon off;'`); the package's system service is never left running.
#
# Knobs (environment, passed through to the bench): WEFT_INGRESS_BENCH_ROUNDS (5),
# WEFT_INGRESS_BENCH_SECONDS (10, per wrk run), WEFT_INGRESS_BENCH_CONNS (64, wrk -c),
# WEFT_INGRESS_BENCH_INGRESSES (5000), WEFT_INGRESS_BENCH_RELOADS (5),
# WEFT_INGRESS_BENCH_THREADS (1: weft's workers = nginx's worker_processes),
# WEFT_INGRESS_BENCH_FLAVOUR=multi (weft on one multi-thread runtime, as before its workers),
# WEFT_INGRESS_BENCH_HTTP1=hyper (weft's HTTP/1.1 served by hyper, as before its own path;
# run once with each to compare the two, each against nginx in its own run),
# WEFT_INGRESS_BENCH_FULL=0 (skip the bench's own client, which by default times each
# new-connection mode's connect + TLS handshake + request + response beside wrk, whose clock
# starts only after the handshake), WEFT_INGRESS_BENCH_THINK_MS (25: the paced TLS mode's
# think time per connection), WEFT_INGRESS_BENCH_NO_HALT=0 (let idle CPUs halt: by default a
# SCHED_IDLE spinner per CPU keeps them from it, for both proxies), WEFT_INGRESS_BENCH_WIRE=0
# (skip timing the new-connection modes on the wire with tcpdump after the rounds), WEFT_INGRESS_BENCH_KEEP=1 keeps the work directory; the full list is in
# crates/weft-ingress/benches/ingress/main.rs.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
[ "$(id -u)" = 0 ] || { echo "bench-ingress: run as root (network namespaces)" >&2; exit 1; }
cd "$(dirname "$0")/.."

need=()
for pkg in nginx wrk tcpdump iproute2 util-linux procps; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  # No service may start from the install: a policy-rc.d that says no, unless one exists.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  # If the package's service started anyway (systemd ignores policy-rc.d on some setups),
  # stop it: the bench starts its own nginx with its own config.
  if [ -f /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
    echo "stopping the nginx service the package started"
    if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
      systemctl stop nginx
      systemctl disable --quiet nginx 2>/dev/null || true
    else
      nginx -s quit 2>/dev/null || kill -QUIT "$(cat /run/nginx.pid)" 2>/dev/null || true
    fi
  fi
fi

echo "== building (release)"
cargo bench -p weft-ingress --bench ingress --no-run
echo "== running"
exec cargo bench -p weft-ingress --bench ingress
