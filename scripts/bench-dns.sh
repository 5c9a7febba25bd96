#!/usr/bin/env bash
# Cluster DNS benchmark (as root): weft-dns against Knot DNS on the same records and against
# Unbound as a forwarding cache, measured with dnsperf. Also: cargo bench -p weft-dns --bench dnsperf
#
# Everything runs inside a network namespace created here (weft-bench-dns-<pid>) and deleted
# on exit, failure included; only its loopback is used. The servers under test (weft, knotd
# for cluster.local, unbound) are started the same way in that namespace and pinned to one
# core (taskset -c 1); dnsperf and the upstream knotd (example.org, for the forwarded mix) run
# on core 0. knotd pins its UDP workers to CPUs itself (worker i on CPU i), which put Knot's
# only UDP worker on dnsperf's core 0 whatever taskset said: once the servers answer, every
# thread of each server under test is pinned again to core 1, and the run stops if any thread
# of theirs is elsewhere, before or after the runs. Throughput runs alternate between the
# servers (weft first on odd runs, the peer first on even ones); the latency runs of a pair
# run at the same time (see latency() below); the tables give medians over the runs.
#
# Knobs: WEFT_DNS_BENCH_RUNS (5), WEFT_DNS_BENCH_SECONDS (10, per dnsperf run),
# WEFT_DNS_BENCH_LATENCY_QPS (20000, the fixed rate of the latency runs),
# WEFT_DNS_BENCH_CLIENTS (4, dnsperf -c), WEFT_DNS_BENCH_OUTSTANDING (100, dnsperf -q),
# WEFT_DNS_BENCH_LATENCY (apart: the two latency runs of a pair one after the other;
# together: at the same time, see latency() below for why that is no longer the default),
# WEFT_DNS_BENCH_WIRE (1: time every reply on the wire too, see wire() below; 0: off),
# WEFT_DNS_BENCH_FORWARD (1; 0 skips the forwarded mix against Unbound),
# WEFT_DNS_BENCH_KEEP=1 keeps the work directory, WEFT_DNS_BENCH_RT=1 runs the three servers
# under test with SCHED_FIFO priority 10 (`chrt -f 10`), all alike, and dnsperf with SCHED_RR
# priority 5, so other work on a shared machine can preempt neither the servers on their core
# nor the client on its own (the client's scheduling delays otherwise dominate the tail).
# Round-robin, not FIFO, for dnsperf: under FIFO one of its threads sometimes spun at the end
# of a run without ever letting another of its threads (same priority, same core) finish it,
# and held core 0 for minutes; each dnsperf is also killed 30 s after its run should end.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
[ "$(id -u)" = 0 ] || { echo "bench-dns: run as root (network namespaces)" >&2; exit 1; }
cd "$(dirname "$0")/.."

RUNS=${WEFT_DNS_BENCH_RUNS:-5}
DUR=${WEFT_DNS_BENCH_SECONDS:-10}
LAT_QPS=${WEFT_DNS_BENCH_LATENCY_QPS:-20000}
CLIENTS=${WEFT_DNS_BENCH_CLIENTS:-4}
OUTSTANDING=${WEFT_DNS_BENCH_OUTSTANDING:-100}
SERVER_CPU=1
RT=""
CLIENT_RT=""
if [ "${WEFT_DNS_BENCH_RT:-0}" = 1 ]; then RT="chrt -f 10"; CLIENT_RT="chrt -r 5"; fi
CLIENT_CPU=0

# Benchmark-only tools, installed the way scripts/test-deps.sh installs the test tools.
need=()
for pkg in iproute2 util-linux dnsperf knot unbound dnsutils jq tcpdump; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

BIN=${WEFT_DNS_BENCH_BIN:-}
if [ -z "$BIN" ]; then
  BIN=$(cargo bench -p weft-dns --bench dnsperf --no-run --message-format=json 2>/dev/null |
    jq -r 'select(.reason == "compiler-artifact" and .target.name == "dnsperf") | .executable' |
    tail -1)
fi
[ -x "$BIN" ] || { echo "bench-dns: no bench binary ($BIN)" >&2; exit 1; }

NS=weft-bench-dns-$$
DIR=$(mktemp -d /tmp/weft-bench-dns.XXXXXX)
PIDS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.2
  done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
  if [ "${WEFT_DNS_BENCH_KEEP:-0}" = 1 ]; then echo "kept $DIR"; else rm -rf "$DIR"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$NS"
ip -n "$NS" link set lo up
nsx() { ip netns exec "$NS" "$@"; }
# Background servers: exec, so that $! is the server itself (ip netns exec and taskset exec too).
nsx_bg() { exec ip netns exec "$NS" "$@" </dev/null >/dev/null; }

WEFT=127.0.0.10
KNOT=127.0.0.11
UNBOUND=127.0.0.12
UPSTREAM=127.0.0.20

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== generating the cluster (10k Services, 50k pods), zone files and query files"
"$BIN" gen "$DIR" | tee "$DIR/gen.txt"

knot_conf() { # name listen zones...
  local name=$1 listen=$2; shift 2
  mkdir -p "$DIR/$name"
  {
    echo "server:"
    echo "    rundir: \"$DIR/$name\""
    echo "    listen: $listen@53"
    echo "    udp-workers: 1"
    echo "    tcp-workers: 1"
    echo "    background-workers: 1"
    echo "log:"
    echo "  - target: stderr"
    echo "    any: warning"
    echo "database:"
    echo "    storage: \"$DIR/$name/db\""
    echo "template:"
    echo "  - id: default"
    echo "    storage: \"$DIR\""
    echo "    zonefile-sync: -1"
    echo "    zonefile-load: whole"
    echo "    journal-content: none"
    echo "zone:"
    for z in "$@"; do
      echo "  - domain: $z"
      echo "    file: $z.zone"
    done
  } >"$DIR/$name/knot.conf"
}
knot_conf knot-cluster $KNOT cluster.local 10.in-addr.arpa
knot_conf knot-upstream $UPSTREAM example.org

cat >"$DIR/unbound.conf" <<EOF
server:
    interface: $UNBOUND
    port: 53
    num-threads: 1
    do-ip6: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$DIR"
    pidfile: "$DIR/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 0
    module-config: "iterator"
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    prefetch: no
forward-zone:
    name: "."
    forward-addr: $UPSTREAM@53
EOF

echo "== starting servers in netns $NS (servers under test on core $SERVER_CPU)"
nsx_bg taskset -c $CLIENT_CPU knotd -c "$DIR/knot-upstream/knot.conf" 2>"$DIR/knot-upstream.log" &
PIDS+=($!)
nsx_bg $RT taskset -c $SERVER_CPU knotd -c "$DIR/knot-cluster/knot.conf" 2>"$DIR/knot-cluster.log" &
KNOT_PID=$!
PIDS+=($KNOT_PID)
nsx_bg $RT taskset -c $SERVER_CPU unbound -d -c "$DIR/unbound.conf" 2>"$DIR/unbound.log" &
UNBOUND_PID=$!
PIDS+=($UNBOUND_PID)
nsx_bg $RT taskset -c $SERVER_CPU "$BIN" serve $WEFT:53 $UPSTREAM:53 2>"$DIR/weft.log" &
WEFT_PID=$!
PIDS+=($WEFT_PID)

wait_for() { # addr name type
  for _ in $(seq 1 300); do
    if nsx dig +time=1 +tries=1 @"$1" "$2" "$3" 2>/dev/null | grep -q 'status: NOERROR'; then return 0; fi
    sleep 0.1
  done
  echo "bench-dns: $1 does not answer $2 $3" >&2
  tail -5 "$DIR"/*.log >&2
  return 1
}
wait_for $UPSTREAM host-0000.example.org A
wait_for $KNOT svc-001.ns-099.svc.cluster.local A
wait_for $KNOT 1.0.244.10.in-addr.arpa PTR
wait_for $WEFT svc-001.ns-099.svc.cluster.local A
wait_for $UNBOUND host-0000.example.org A
cat "$DIR/weft.log"

# Same core for every thread of every server under test (knotd has moved its UDP worker by now).
SERVERS="weft:$WEFT_PID knotd:$KNOT_PID unbound:$UNBOUND_PID"
check_pinned() { # when
  local bad=0 entry name pid t
  for entry in $SERVERS; do
    name=${entry%%:*}; pid=${entry#*:}
    for t in /proc/"$pid"/task/*; do
      if [ "$(awk '/^Cpus_allowed_list/ { print $2 }' "$t/status")" != "$SERVER_CPU" ]; then
        echo "bench-dns: $1: $name thread $(basename "$t") ($(cat "$t/comm")) may run on $(awk '/^Cpus_allowed_list/ { print $2 }' "$t/status"), not core $SERVER_CPU" >&2
        bad=1
      fi
    done
  done
  return $bad
}
for entry in $SERVERS; do taskset -a -p -c $SERVER_CPU "${entry#*:}" >/dev/null; done
check_pinned "after start"
threads() { # pid: thread count, scheduling policy of the first
  echo "$(ls "/proc/$1/task" | wc -l) threads, $(chrt -p "$1" | awk -F': ' 'NR == 1 { print $2 }') $(chrt -p "$1" | awk -F': ' 'NR == 2 { print $2 }')"
}
PINNING="weft $(threads $WEFT_PID); knotd $(threads $KNOT_PID); unbound $(threads $UNBOUND_PID); all on core $SERVER_CPU"
echo "== servers: $PINNING"

# --- the same answers from both ----------------------------------------------------------
# dig each question of a sample as dnsperf asks it (no EDNS, RD set); per question: rcode
# and the answer section, records sorted (servers may order an RRset differently).
SAMPLE=${WEFT_DNS_BENCH_SAMPLE:-400}
normalize() { # drop-ttl
  awk -v dropttl="$1" '
    /->>HEADER<<-/ { q++; match($0, /status: [A-Z]+/); print q, substr($0, RSTART, RLENGTH); next }
    /MSG SIZE/ { size += $NF; n++; next }
    /^;/ || NF == 0 { next }
    { if (dropttl) $2 = ""; print q, $0 }
    END { printf "size %.1f\n", size / n > "/dev/stderr" }' | sort -k1,1n -k2
}
ask() { # server file n drop-ttl
  head -n "$3" "$2" | sed "s/^/@$1 +noedns +nocookie +time=2 +tries=1 +noall +comments +answer +stats /" >"$DIR/dig.in"
  nsx dig -f "$DIR/dig.in" 2>/dev/null | normalize "$4"
}
ask $WEFT "$DIR/queries-cluster.txt" "$SAMPLE" 0 >"$DIR/check-weft.txt" 2>"$DIR/size-weft.txt"
ask $KNOT "$DIR/queries-cluster.txt" "$SAMPLE" 0 >"$DIR/check-knot.txt" 2>"$DIR/size-knot.txt"
ask $WEFT "$DIR/queries-forward.txt" 200 1 >"$DIR/check-weft-fwd.txt" 2>/dev/null
ask $UNBOUND "$DIR/queries-forward.txt" 200 1 >"$DIR/check-unbound-fwd.txt" 2>/dev/null
diff_cluster=$(diff "$DIR/check-weft.txt" "$DIR/check-knot.txt" | grep -c '^[<>]' || true)
diff_fwd=$(diff "$DIR/check-weft-fwd.txt" "$DIR/check-unbound-fwd.txt" | grep -c '^[<>]' || true)
rcodes=$(awk '$2 == "status:" { c[$3]++ } END { for (k in c) printf "%s %d, ", k, c[k] }' "$DIR/check-weft.txt")
echo "== same answers: cluster sample of $SAMPLE questions: $diff_cluster differing lines (weft rcodes: ${rcodes%, }); forwarded sample of 200: $diff_fwd differing lines"
echo "   mean reply size without EDNS: weft $(cut -d' ' -f2 "$DIR/size-weft.txt") B, knot $(cut -d' ' -f2 "$DIR/size-knot.txt") B"
if [ "$diff_cluster" != 0 ] || [ "$diff_fwd" != 0 ]; then
  diff "$DIR/check-weft.txt" "$DIR/check-knot.txt" | head -20 || true
  diff "$DIR/check-weft-fwd.txt" "$DIR/check-unbound-fwd.txt" | head -20 || true
fi

# --- dnsperf -------------------------------------------------------------------------------
perf() { # addr file out [extra dnsperf args]
  local addr=$1 file=$2 out=$3; shift 3
  nsx timeout -k 5 $((DUR + 30)) $CLIENT_RT taskset -c $CLIENT_CPU dnsperf -s "$addr" -d "$file" \
    -l "$DUR" -c "$CLIENTS" -q "$OUTSTANDING" -t 2 "$@" >"$out" 2>&1 ||
    { echo "bench-dns: dnsperf against $addr failed or was killed; its output: $out" >&2; return 1; }
}
qps_of() { awk '/Queries per second:/ { print $4 }' "$1"; }
lost_of() { awk '/Queries lost:/ { print $3 }' "$1"; }
avg_of() { awk '/Average Latency/ { printf "%.3f", $4 * 1000 }' "$1"; }
# dnsperf -v prints one line per reply, its latency (s) last; percentiles are nearest-rank
# over every reply of the run, in ms.
pct_of() { # file p
  grep -E '^> [A-Z]+ ' "$1" | awk '{ print $NF }' | sort -g |
    awk -v p="$2" '{ v[NR] = $1 } END { i = int(NR * p / 100); if (i < NR * p / 100) i++; if (i < 1) i = 1; printf "%.3f", v[i] * 1000 }'
}
wpct_of() { # file p: nearest-rank percentile of a file of latencies in ms ("-" without one)
  [ -s "$1" ] || { echo -; return; }
  sort -g "$1" | awk -v p="$2" '{ v[NR] = $1 } END { i = int(NR * p / 100); if (i < NR * p / 100) i++; if (i < 1) i = 1; printf "%.3f", v[i] }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# One run of a pair: each server's throughput on its own (as fast as dnsperf goes with
# $OUTSTANDING in flight), then both latency runs at a fixed $LAT_QPS with -v, one after the
# other (WEFT_DNS_BENCH_LATENCY=together: started together). Apart is the default because
# together overloads the client's core: one dnsperf at 20,000 QPS with -v costs about 0.58 of
# core 0 (utime+stime, most of it waking and sleeping), two cost more than the 0.95 of a core
# that the kernel lets real-time tasks have per second (kernel.sched_rt_runtime_us 950000 of
# 1000000), so with WEFT_DNS_BENCH_RT the kernel stopped both dnsperfs for up to 50 ms once a
# second (RT throttling: bpftrace saw them preempted by ordinary tasks for 20-52 ms at 1 s
# intervals), the replies in flight then counted 50 ms late and the catch-up bursts after it
# several ms. Without RT the overload is there too, as queueing. (One dnsperf alone at 50,000
# QPS costs about 0.89 of core 0, close to that limit.) Together would let both servers meet the same moments of a shared machine, but
# each also waits behind the other's bursts on the shared core. Output per server and run: <qps> <lost> <avg ms at full load> <p50> <p99> (latency
# run) <lost (latency run)> <server CPU use during the throughput run, cores> <answers per
# server CPU-second> <p99.9> <max> (latency run) <1-min load average after the run> <p50> <p99>
# <p99.9> on the wire (latency run; "-" without WEFT_DNS_BENCH_WIRE). CPU use is
# the server process's utime+stime (all threads) from /proc/<pid>/stat over dnsperf's run time.
LAT_MODE=${WEFT_DNS_BENCH_LATENCY:-apart}
WIRE=${WEFT_DNS_BENCH_WIRE:-1}
# The server's own response time, the same way for both servers: tcpdump on the namespace's
# loopback (on the client's core, 64 bytes per packet) stamps each query as dnsperf sends it
# and each reply as the server sends it; a reply is matched to its query by server address,
# client port and DNS ID. dnsperf's latency adds the client's side (its own scheduling on a
# shared core, the wake-up to read the reply), which is most of the tail at these rates.
# Output: one latency in ms per line, $DIR/<tag>-<run>-wire.txt for each server of the pair.
wire_start() { # pcap
  # Not through nsx: $! must be tcpdump itself (ip netns exec and taskset exec it), not a
  # subshell that would outlive a signal.
  ip netns exec "$NS" taskset -c $CLIENT_CPU tcpdump -i lo -n -s 64 -B 65536 \
    --time-stamp-precision=nano -w "$1" "udp port 53 and (host $WEFT or host $KNOT or host $UNBOUND)" \
    </dev/null >/dev/null 2>"$1.log" &
  WIRE_PID=$!
  for _ in $(seq 1 50); do grep -q listening "$1.log" 2>/dev/null && return 0; sleep 0.1; done
}
wire_stop() { # pcap run tag:addr...
  local pcap=$1 run=$2 entry; shift 2
  sleep 0.2
  kill -INT "$WIRE_PID" 2>/dev/null || true
  wait "$WIRE_PID" 2>/dev/null || true
  grep -E 'dropped by kernel' "$pcap.log" | grep -qv '^0 ' &&
    echo "   (tcpdump: $(grep 'dropped by kernel' "$pcap.log"))"
  tcpdump -r "$pcap" -n -tt --time-stamp-precision=nano 2>/dev/null | awk -v dir="$DIR" -v run="$run" -v tags="$*" '
    BEGIN { n = split(tags, t, " "); for (i = 1; i <= n; i++) { split(t[i], kv, ":"); tag[kv[2]] = kv[1] } }
    $2 != "IP" { next }
    { split($1, ts, "."); if (base == "") base = ts[1]; now = (ts[1] - base) + ("0." ts[2])
      id = $6; sub(/[^0-9].*/, "", id) }
    $5 ~ /\.53:$/ { srv = $5; sub(/\.53:$/, "", srv); cp = $3; sub(/.*\./, "", cp); sent[srv " " cp " " id] = now; next }
    $3 ~ /\.53$/ { srv = $3; sub(/\.53$/, "", srv); cp = $5; sub(/:$/, "", cp); sub(/.*\./, "", cp)
      k = srv " " cp " " id
      if ((k in sent) && (srv in tag)) { printf "%.6f\n", (now - sent[k]) * 1000 > (dir "/" tag[srv] "-" run "-wire.txt"); delete sent[k] } }'
  rm -f "$pcap"
}
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
throughput() { # tag addr file run pid
  local tag=$1 addr=$2 file=$3 run=$4 pid=$5 t0 t1 secs
  t0=$(ticks "$pid")
  perf "$addr" "$file" "$DIR/$tag-$run-tput.txt"
  t1=$(ticks "$pid")
  secs=$(awk '/Run time/ { print $4 }' "$DIR/$tag-$run-tput.txt")
  awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v s="$secs" 'BEGIN { printf "%.2f", d / hz / s }' >"$DIR/$tag-$run.cpu"
}
# weft's own count of each reply's time from the query's arrival at its socket to the reply's
# send (SO_TIMESTAMPNS, see crates/weft-dns/src/delay.rs): SIGUSR1 makes the bench binary log
# the histogram since the previous SIGUSR1, so one before and one after weft's latency run give
# that run's (p50/p99/p99.9 in us, appended to weft's row; "-" for the peers, which have none).
# A weft binary older than the histogram would die of the signal: only one that has it is sent it.
DELAY_SIGNAL=0
grep -aq 'weft-dns reply delay' "$BIN" && DELAY_SIGNAL=1
delay_mark() { # tag
  [ "$DELAY_SIGNAL" = 1 ] || return 0
  case $1 in weft*) kill -USR1 "$WEFT_PID" 2>/dev/null || true ;; esac
}
latency() { # tagA addrA tagB addrB file run
  local a=$1 aa=$2 b=$3 ba=$4 file=$5 run=$6 pa pb
  rm -f "$DIR/$a-$run-wire.txt" "$DIR/$b-$run-wire.txt"
  [ "$WIRE" = 1 ] && wire_start "$DIR/lat-$run.pcap"
  if [ "$LAT_MODE" = apart ]; then
    delay_mark "$a"
    perf "$aa" "$file" "$DIR/$a-$run-lat.txt" -Q "$LAT_QPS" -v
    delay_mark "$a"; delay_mark "$b"
    perf "$ba" "$file" "$DIR/$b-$run-lat.txt" -Q "$LAT_QPS" -v
    delay_mark "$b"
  else
    delay_mark "$a"; delay_mark "$b"
    perf "$aa" "$file" "$DIR/$a-$run-lat.txt" -Q "$LAT_QPS" -v &
    pa=$!
    perf "$ba" "$file" "$DIR/$b-$run-lat.txt" -Q "$LAT_QPS" -v &
    pb=$!
    wait $pa
    wait $pb
    delay_mark "$a"; delay_mark "$b"
  fi
  [ "$WIRE" = 1 ] && wire_stop "$DIR/lat-$run.pcap" "$run" "$a:$aa" "$b:$ba"
  sleep 0.2
  return 0
}
# The last reply-delay line weft logged: "p50 p99 p99.9" in us.
delay_of() { # tag
  case $1 in
    weft*) { grep 'weft-dns reply delay' "$DIR/weft.log" || echo "p50 - p99 - p99.9 -"; } | tail -1 |
      awk '{ for (i = 1; i < NF; i++) if ($i == "p50" || $i == "p99" || $i == "p99.9") printf "%s ", $(i + 1) }' ;;
    *) echo "- - -" ;;
  esac
}
record() { # tag run
  local tag=$1 run=$2 f=$DIR/$1-$2-tput.txt l=$DIR/$1-$2-lat.txt w=$DIR/$1-$2-wire.txt cpu
  cpu=$(cat "$DIR/$tag-$run.cpu")
  echo "$(qps_of "$f") $(lost_of "$f") $(avg_of "$f") $(pct_of "$l" 50) $(pct_of "$l" 99) $(lost_of "$l") $cpu $(awk -v q="$(qps_of "$f")" -v c="$cpu" 'BEGIN { printf "%.0f", (c > 0 ? q / c : 0) }') $(pct_of "$l" 99.9) $(pct_of "$l" 100) $(cut -d' ' -f1 /proc/loadavg) $(wpct_of "$w" 50) $(wpct_of "$w" 99) $(wpct_of "$w" 99.9) $(delay_of "$tag")" >>"$DIR/$tag.res"
  awk '/Average packet size/ { print $NF }' "$f" >"$DIR/$tag.size"
  echo "   $tag run $run: $(tail -1 "$DIR/$tag.res")"
}

series() { # tagA addrA pidA tagB addrB pidB file
  local a=$1 aa=$2 ap=$3 b=$4 ba=$5 bp=$6 file=$7
  # warm-up, untimed (fills forwarding caches, pages in the zone)
  local w
  for w in "$aa" "$ba"; do
    nsx timeout -k 5 40 $CLIENT_RT taskset -c $CLIENT_CPU dnsperf -s "$w" -d "$file" -n 1 -l 10 \
      -c "$CLIENTS" -q "$OUTSTANDING" >/dev/null 2>&1 || true
  done
  : >"$DIR/$a.res"; : >"$DIR/$b.res"
  for run in $(seq 1 "$RUNS"); do
    if [ $((run % 2)) = 1 ]; then
      throughput "$a" "$aa" "$file" "$run" "$ap"; throughput "$b" "$ba" "$file" "$run" "$bp"
      latency "$a" "$aa" "$b" "$ba" "$file" "$run"
    else
      throughput "$b" "$ba" "$file" "$run" "$bp"; throughput "$a" "$aa" "$file" "$run" "$ap"
      latency "$b" "$ba" "$a" "$aa" "$file" "$run"
    fi
    record "$a" "$run"; record "$b" "$run"
  done
}

echo "== cluster mix: weft vs knot, $RUNS runs x ${DUR}s each (throughput, then latency at $LAT_QPS qps, $LAT_MODE)"
echo "   columns: qps lost avg-ms(full load) p50-ms p99-ms(at $LAT_QPS qps) lost(latency run) server-cores answers/cpu-s p99.9-ms max-ms load wire-p50 wire-p99 wire-p99.9 [weft: in-server p50-us p99-us p99.9-us]"
series weft "$WEFT" "$WEFT_PID" knot "$KNOT" "$KNOT_PID" "$DIR/queries-cluster.txt"
FORWARD=${WEFT_DNS_BENCH_FORWARD:-1}
if [ "$FORWARD" = 1 ]; then
  echo "== forwarded mix (1000 example.org names, cache hits): weft vs unbound"
  series weft-fwd "$WEFT" "$WEFT_PID" unbound "$UNBOUND" "$UNBOUND_PID" "$DIR/queries-forward.txt"
fi

check_pinned "after the runs"
rss() { awk -v k="$2:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
WEFT_RSS=$(rss $WEFT_PID VmRSS); WEFT_HWM=$(rss $WEFT_PID VmHWM)
KNOT_RSS=$(rss $KNOT_PID VmRSS); KNOT_HWM=$(rss $KNOT_PID VmHWM)
UNBOUND_RSS=$(rss $UNBOUND_PID VmRSS)

col() { awk -v c="$2" '{ print $c }' "$DIR/$1.res" | median; }
list() { awk -v c="$2" '{ printf "%s%s", (NR > 1 ? " / " : ""), $c }' "$DIR/$1.res"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
# Pair by pair (run i of weft against run i of its peer) for column c: in how many runs weft's
# figure was the higher, and the median of the runs' weft/peer ratios.
pairs() { # tag peer-tag column
  paste -d' ' <(awk -v c="$3" '{ print $c }' "$DIR/$1.res") <(awk -v c="$3" '{ print $c }' "$DIR/$2.res") |
    awk '$1 != "-" && $2 > 0 { n++; if ($1 > $2) h++; print $1 / $2 > "/dev/stderr" } END { printf "weft higher in %d of %d runs", h, n }' 2>"$DIR/pairs.tmp"
  printf ', median ratio %.3f' "$(median <"$DIR/pairs.tmp")"
}
row() { # label tag peer-tag
  local t=$2 p=$3
  echo "| $1 | $(col "$t" 1 | xargs printf '%.0f') | $(col "$p" 1 | xargs printf '%.0f') | **$(ratio "$(col "$t" 1)" "$(col "$p" 1)")** | $(col "$t" 4) | $(col "$p" 4) | $(col "$t" 5) | $(col "$p" 5) | $(ratio "$(col "$t" 5)" "$(col "$p" 5)") | $(col "$t" 3) | $(col "$p" 3) | $(col "$t" 7) | $(col "$p" 7) | $(col "$t" 8) | $(col "$p" 8) | $(ratio "$(col "$t" 8)" "$(col "$p" 8)") |"
}

{
  echo
  echo "Machine: nproc $(nproc), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r); $(date -u '+%Y-%m-%d %H:%M UTC'); repo at $(git rev-parse --short HEAD 2>/dev/null || echo '?'), crates/weft-dns/src last changed in $(git log -1 --format=%h -- crates/weft-dns/src 2>/dev/null || echo '?')$(git diff --quiet HEAD -- crates/weft-dns/src 2>/dev/null || echo ' (plus uncommitted changes)')"
  [ -n "${WEFT_DNS_BENCH_BIN:-}" ] && echo "weft binary given by WEFT_DNS_BENCH_BIN: $BIN, modified $(date -u -r "$BIN" '+%Y-%m-%d %H:%M UTC') (the repo line above need not be its source)"
  echo "Load average (1/5/15 min) at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg); weft runtime workers: ${WEFT_DNS_BENCH_WORKERS:-2}; servers scheduled: ${RT:-normally (SCHED_OTHER)}, dnsperf: ${CLIENT_RT:-normally (SCHED_OTHER)}"
  echo "Servers under test: $PINNING"
  echo "$RUNS runs x ${DUR} s per server and kind, alternating; dnsperf -c $CLIENTS -q $OUTSTANDING on core $CLIENT_CPU, servers on core $SERVER_CPU; latency runs at -Q $LAT_QPS, $LAT_MODE"
  echo
  echo "| mix | weft QPS | peer QPS | weft/peer QPS | weft p50 | peer p50 | weft p99 | peer p99 | weft/peer p99 | weft avg at full load | peer avg at full load | weft server cores used | peer server cores used | weft answers per CPU-s | peer answers per CPU-s | weft/peer per CPU-s |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  row "cluster names, peer Knot $(knotd -V | awk '{ print $NF }')" weft knot
  [ "$FORWARD" = 1 ] && row "forwarded, cache hits, peer Unbound $(unbound -V | awk '/^Version/ { print $2 }')" weft-fwd unbound
  echo
  echo "(latencies in ms; medians over the runs)"
  if [ "$WIRE" = 1 ]; then
    echo
    echo "On the wire (query sent to reply sent, tcpdump on the namespace's loopback; ms, medians over the runs):"
    echo
    echo "| mix | weft p50 | peer p50 | weft p99 | peer p99 | weft/peer p99 | weft p99.9 | peer p99.9 |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    wrow() { echo "| $1 | $(col "$2" 12) | $(col "$3" 12) | $(col "$2" 13) | $(col "$3" 13) | $(ratio "$(col "$2" 13)" "$(col "$3" 13)") | $(col "$2" 14) | $(col "$3" 14) |"; }
    wrow "cluster names, peer Knot" weft knot
    [ "$FORWARD" = 1 ] && wrow "forwarded, cache hits, peer Unbound" weft-fwd unbound
  fi
  echo
  echo "All replies of all latency runs pooled (cluster names; share of replies per latency band, ms):"
  echo
  echo "| measured by | server | replies | < 0.05 | 0.05-0.1 | 0.1-0.2 | 0.2-0.5 | 0.5-1 | 1-2 | 2-5 | >= 5 | p99 | p99.9 |"
  echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for kind in lat wire; do
    for t in weft knot; do
      if [ $kind = lat ]; then
        cat "$DIR"/$t-*-lat.txt | grep -E '^> [A-Z]+ ' | awk '{ print $NF * 1000 }'
      else
        cat "$DIR"/$t-*-wire.txt 2>/dev/null || true
      fi >"$DIR/pool.tmp"
      [ -s "$DIR/pool.tmp" ] || continue
      echo "| $([ $kind = lat ] && echo dnsperf || echo 'the wire') | $t | $(awk '
        BEGIN { n = split("0.05 0.1 0.2 0.5 1 2 5", e, " ") }
        { for (i = 1; i <= n && $1 >= e[i]; i++); c[i]++; all++ }
        END { printf "%d", all; for (i = 1; i <= n + 1; i++) printf " | %.2f %%", 100 * c[i] / all }' "$DIR/pool.tmp") | $(wpct_of "$DIR/pool.tmp" 99) | $(wpct_of "$DIR/pool.tmp" 99.9) |"
    done
  done
  echo
  fwd() { [ "$FORWARD" = 1 ] && echo "; weft forwarded $(list weft-fwd "$1"); unbound $(list unbound "$1")"; }
  echo "Per run (QPS): weft $(list weft 1); knot $(list knot 1)$(fwd 1)"
  echo "Per run (p99 ms): weft $(list weft 5); knot $(list knot 5)$(fwd 5)"
  echo "Pairs, p99 (dnsperf), cluster names: $(pairs weft knot 5)$([ "$FORWARD" = 1 ] && echo "; forwarded: $(pairs weft-fwd unbound 5)")"
  if [ "$WIRE" = 1 ]; then
    echo "Per run (p99 ms on the wire): weft $(list weft 13); knot $(list knot 13)$(fwd 13)"
    echo "Pairs, p99 on the wire, cluster names: $(pairs weft knot 13)$([ "$FORWARD" = 1 ] && echo "; forwarded: $(pairs weft-fwd unbound 13)")"
    echo "Per run (p50 ms on the wire): weft $(list weft 12); knot $(list knot 12)$(fwd 12)"
    echo "Pairs, p99.9 on the wire, cluster names: $(pairs weft knot 14)"
  fi
  echo "Pairs, p99.9 (dnsperf), cluster names: $(pairs weft knot 9)"
  echo "weft's own reply delay per latency run (query's arrival at the socket to the reply's send, us; p50 / p99 / p99.9): $(awk '{ printf "%s%s/%s/%s", (NR > 1 ? ", " : ""), $15, $16, $17 }' "$DIR/weft.res")"
  echo "Per run (p50 ms): weft $(list weft 4); knot $(list knot 4)$(fwd 4)"
  echo "Per run (p99.9 ms / max ms): weft $(list weft 9) / $(list weft 10); knot $(list knot 9) / $(list knot 10)$([ "$FORWARD" = 1 ] && echo "; weft forwarded $(list weft-fwd 9) / $(list weft-fwd 10); unbound $(list unbound 9) / $(list unbound 10)")"
  echo "1-min load average after each round: weft $(list weft 11); knot $(list knot 11)$(fwd 11)"
  echo "Per run (answers per server CPU-second): weft $(list weft 8); knot $(list knot 8)$(fwd 8)"
  echo "Mean response size over the mix (dnsperf, bytes): weft $(cat "$DIR/weft.size"), knot $(cat "$DIR/knot.size")$([ "$FORWARD" = 1 ] && echo "; forwarded: weft $(cat "$DIR/weft-fwd.size"), unbound $(cat "$DIR/unbound.size")")"
  echo "Queries lost (throughput runs): weft $(list weft 2); knot $(list knot 2)$(fwd 2)"
  echo
  echo "| server | RSS after the runs (MiB) | peak RSS (MiB) |"
  echo "| --- | ---: | ---: |"
  echo "| weft-dns (bench process: model + server) | $WEFT_RSS | $WEFT_HWM |"
  echo "| knotd (cluster.local + 10.in-addr.arpa) | $KNOT_RSS | $KNOT_HWM |"
  echo "| unbound (1000 names cached) | $UNBOUND_RSS | - |"
} | tee "$DIR/summary.md"
kill -INT $WEFT_PID 2>/dev/null || true
sleep 0.5
echo
grep 'weft-dns stats' "$DIR/weft.log" || true
