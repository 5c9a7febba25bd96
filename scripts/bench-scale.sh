#!/usr/bin/env bash
# The control plane at kube-proxy scale, in a lab (as root; project issue 11): endpoint
# pods, 30k Services over them (ten endpoints each) and 10k pods no node runs, created
# through the API with kube-rs; then the time until every node's weft-proxy table (read
# from the kernel) holds every Service with its endpoints, the control plane's memory and
# store size, and a restart of the control plane at that size. The measuring program is
# crates/weft/benches/scale (its header says what is timed); it runs inside the lab's root
# network namespace (`weft lab exec --host control-plane`) against the API server's own
# address, so the loopback relay is not in the figures.
#
# Everything runs in a temporary WEFT_STATE_DIR and a lab named scale-<pid>, taken down
# on exit, failure and Ctrl-C included.
#
# Knobs (environment): WEFT_SCALE_NODES (3), WEFT_SCALE_SERVICES (30000),
# WEFT_SCALE_ENDPOINT_PODS (300), WEFT_SCALE_IDLE_PODS (10000), WEFT_SCALE_INFLIGHT (1),
# WEFT_SCALE_SYNC_LIMIT (600 s); WEFT_SCALE_NO_BUILD=1 with WEFT_SCALE_WEFT and
# WEFT_SCALE_BIN naming already built binaries (weft, and the bench's executable).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "bench-scale: run as root (network namespaces)" >&2; exit 1; }
cd "$(dirname "$0")/.."

nodes=${WEFT_SCALE_NODES:-3}
if [ "${WEFT_SCALE_NO_BUILD:-0}" != 1 ]; then
  echo "== building (release)"
  cargo build --release -q -p weft
  bin=$(cargo bench -q -p weft --bench scale --no-run --message-format=json |
    jq -r 'select(.target.name == "scale" and .executable != null) | .executable' | tail -1)
  weft=$PWD/target/release/weft
else
  weft=${WEFT_SCALE_WEFT:-$PWD/target/release/weft}
  bin=${WEFT_SCALE_BIN:?WEFT_SCALE_BIN names the scale bench executable}
fi
[ -x "$bin" ] || { echo "bench-scale: no bench executable ($bin)" >&2; exit 1; }

name=scale-$$
work=$(mktemp -d /tmp/weft-bench-scale.XXXXXX)
export WEFT_STATE_DIR=$work/state
cleanup() {
  "$weft" lab down --name "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== machine: nproc $(nproc), kernel $(uname -r), $(date -u '+%F %T UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== lab up ($nodes nodes)"
"$weft" lab up --name "$name" --nodes "$nodes" >/dev/null
export WEFT_SCALE_LAB=$name
"$weft" lab exec --name "$name" --host control-plane -- "$bin"
echo "== done $(date -u '+%T UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
