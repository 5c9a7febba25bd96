#!/usr/bin/env bash
# kubectl against a lab (as root): `kubectl create -f` and `kubectl apply -f` of N pods
# (one multi-document YAML file) from the machine, with the kubeconfig `weft lab up`
# gives the user (127.0.0.1:PORT: a listener the lab's supervisor binds on the machine's
# loopback and the control plane accepts on directly), and "direct", from inside the
# lab's root network namespace against the API server's own address (`weft lab exec
# --host control-plane`, labs/NAME/kubeconfig.internal). Same lab, same run, rounds
# alternating which path goes first. Reports medians, pods/s and the ratio
# loopback/direct. Goals: loopback within 1.2x of direct; N=1000 created in under 3 s.
#
# The timed span is kubectl's own run: from start until it exits having printed one
# "created" line per pod (the API accepted them). The pods need not be Running, but the
# lab's agents start them meanwhile (sandbox, veth, sleep process): that load is part of
# a real lab and is in the figures. Between runs (not timed): `kubectl delete pods --all
# --wait=false`, then wait until the lab is settled: the API lists no pod, no node has a
# pod namespace left, and every agent has been idle (under 2 % of a core) for 2 s. Each
# run so starts from the same lab a fresh one would be, not while the agents are still
# tearing down the previous run's pods.
#
# The lab runs its nodes' agents (and their pods) at nice 10, the control plane at 0:
# see NODE_NICE in crates/weft/src/lab.rs. Both paths run against the same lab.
#
# Everything runs in a temporary WEFT_STATE_DIR and a lab named kbench-<pid>, taken down
# on exit, failure and Ctrl-C included.
#
# Knobs (environment): WEFT_KUBECTL_BENCH_ROUNDS (5), WEFT_KUBECTL_BENCH_PODS (1000),
# WEFT_KUBECTL_BENCH_NODES (2), WEFT_KUBECTL_BENCH_NO_BUILD=1 (use target/release/weft
# as it is), WEFT_KUBECTL_BENCH_BIN=PATH (a weft binary to use instead; implies no build).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "bench-kubectl: run as root (network namespaces)" >&2; exit 1; }
cd "$(dirname "$0")/.."
command -v kubectl >/dev/null || { echo "bench-kubectl: kubectl is not installed" >&2; exit 1; }

rounds=${WEFT_KUBECTL_BENCH_ROUNDS:-5}
pods=${WEFT_KUBECTL_BENCH_PODS:-1000}
nodes=${WEFT_KUBECTL_BENCH_NODES:-2}

if [ "${WEFT_KUBECTL_BENCH_NO_BUILD:-0}" != 1 ] && [ -z "${WEFT_KUBECTL_BENCH_BIN:-}" ]; then
  echo "== building (release)"
  cargo build --release -q -p weft
fi
weft=${WEFT_KUBECTL_BENCH_BIN:-$PWD/target/release/weft}
name=kbench-$$
work=$(mktemp -d /tmp/weft-bench-kubectl.XXXXXX)
export WEFT_STATE_DIR=$work/state
cleanup() {
  "$weft" lab down --name "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== lab up ($nodes nodes)"
"$weft" lab up --name "$name" --nodes "$nodes" >/dev/null
loop_kc=$("$weft" lab kubeconfig --name "$name")
direct_kc=$WEFT_STATE_DIR/labs/$name/kubeconfig.internal
[ -r "$direct_kc" ] || { echo "bench-kubectl: no $direct_kc" >&2; exit 1; }

manifest=$work/pods.yaml
for ((i = 0; i < pods; i++)); do
  printf -- '---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: bench-%04d\n  labels: {app: bench}\nspec:\n  containers:\n  - name: c\n    image: sh\n    command: [sleep, "3600"]\n' "$i"
done >"$manifest"

# One timed kubectl run: prints milliseconds. The clock is read in the namespace kubectl
# runs in, so `weft lab exec`'s own start-up is not counted against the direct path.
timer=$work/timed.sh
cat >"$timer" <<'EOF'
#!/usr/bin/env bash
set -euo pipefail
kc=$1 verb=$2 manifest=$3 want=$4 out=$5
t0=$(date +%s%N)
kubectl --kubeconfig "$kc" "$verb" -f "$manifest" >"$out" 2>&1 || { cat "$out" >&2; exit 1; }
t1=$(date +%s%N)
got=$(grep -c ' created$' "$out" || true)
[ "$got" = "$want" ] || { echo "expected $want created, got $got" >&2; tail -5 "$out" >&2; exit 1; }
echo $(((t1 - t0) / 1000000))
EOF
chmod +x "$timer"

timed() { # path verb
  case $1 in
    loopback) "$timer" "$loop_kc" "$2" "$manifest" "$pods" "$work/out" ;;
    direct) "$weft" lab exec --name "$name" --host control-plane -- \
      "$timer" "$direct_kc" "$2" "$manifest" "$pods" "$work/out" ;;
  esac
}

# The agents' pids, from the supervisor's status file.
agent_pids() {
  python3 -c 'import json, sys
for p in json.load(open(sys.argv[1]))["procs"]:
    if p["name"].startswith("agent-") and p.get("pid"): print(p["pid"])' \
    "$WEFT_STATE_DIR/labs/$name/status.json"
}
# CPU ticks (user + system) the agents used so far.
agent_ticks() {
  local t=0 pid f
  for pid in $(agent_pids); do
    f=$(sed 's/.*) //' "/proc/$pid/stat") || continue
    set -- $f
    t=$((t + ${12} + ${13}))
  done
  echo "$t"
}
pod_netns() { ip netns list 2>/dev/null | awk '{print $1}' | grep -c "^weft-$name-node-[0-9]*\\." || true; }

clear_pods() {
  kubectl --kubeconfig "$loop_kc" delete pods --all --wait=false >/dev/null
  local deadline=$((SECONDS + 900)) hz idle=0 t0 t1
  hz=$(getconf CLK_TCK)
  while [ "$(kubectl --kubeconfig "$loop_kc" get pods --no-headers 2>/dev/null | wc -l)" != 0 ]; do
    [ $SECONDS -lt $deadline ] || { echo "bench-kubectl: pods still there after 900 s" >&2; exit 1; }
    sleep 0.5
  done
  # Settled: no pod namespace left on any node, and the agents idle (under 2 % of a core
  # each, i.e. 2 s in a row below nodes * hz / 50 ticks per second).
  while :; do
    [ $SECONDS -lt $deadline ] || { echo "bench-kubectl: lab not settled after 900 s" >&2; exit 1; }
    t0=$(agent_ticks); sleep 1; t1=$(agent_ticks)
    if [ "$(pod_netns)" = 0 ] && [ $(((t1 - t0) * 50)) -le $((nodes * hz)) ]; then
      idle=$((idle + 1))
      [ $idle -ge 2 ] && break
    else
      idle=0
    fi
  done
}

# Discovery and OpenAPI caches warm for both paths (kubectl's disk cache is per server
# address), so no round pays for the first discovery.
for p in loopback direct; do
  case $p in
    loopback) kubectl --kubeconfig "$loop_kc" api-resources >/dev/null ;;
    direct) "$weft" lab exec --name "$name" --host control-plane -- \
      kubectl --kubeconfig "$direct_kc" api-resources >/dev/null ;;
  esac
done

declare -A samples
echo "== $rounds rounds of $pods pods (create, then apply), per path; each from a settled lab"
echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= rounds; r++)); do
  if ((r % 2)); then order="loopback direct"; else order="direct loopback"; fi
  for verb in create apply; do
    for p in $order; do
      clear_pods
      ms=$(timed "$p" "$verb")
      samples[$verb-$p]+="$ms "
      printf '  round %d  %-6s %-8s %6d ms  %6.0f pods/s\n' "$r" "$verb" "$p" "$ms" \
        "$(echo "$pods * 1000 / $ms" | bc -l)"
    done
  done
done
clear_pods

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {
  if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== per round (ms)"
for verb in create apply; do
  for p in loopback direct; do
    printf '  %-6s %-8s %s\n' "$verb" "$p" "${samples[$verb-$p]}"
  done
done
echo "== medians over $rounds rounds ($pods pods, $nodes-node lab, $(nproc) cores)"
printf '  %-8s %12s %12s %8s\n' verb loopback direct ratio
for verb in create apply; do
  rm=$(echo "${samples[$verb-loopback]}" | median)
  dm=$(echo "${samples[$verb-direct]}" | median)
  printf '  %-8s %9.0f ms %9.0f ms %8.2f   (loopback %.0f pods/s, direct %.0f pods/s)\n' \
    "$verb" "$rm" "$dm" "$(echo "$rm / $dm" | bc -l)" \
    "$(echo "$pods * 1000 / $rm" | bc -l)" "$(echo "$pods * 1000 / $dm" | bc -l)"
done
