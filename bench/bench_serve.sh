#!/usr/bin/env bash
# Load benchmark of `finch serve`: wrk on loopback against POST /v1/intent
# with varied banking texts (bench/wrk_intent.lua).
#
#   bench/bench_serve.sh [MODEL_FILE]
#
# Without MODEL_FILE the demo's student is built first in a scratch
# FINCH_HOME (`finch demo --sample`, a minute or so). Environment:
#   FINCH_BIN        the finch binary [build/release/finch]
#   BENCH_DURATION   seconds per wrk run [10]
#   BENCH_PORT       [18090]
#   BENCH_OVERLOAD_CONNS   connections of the overload runs [256]
#   BENCH_OVERLOAD_QUEUE   --max-queue of the shedding run [32]
#
# Runs, each printed as one row (requests/s, p50 and p99 in ms from wrk
# --latency, and the statuses seen):
#   1. 1, 8 and 64 connections, server and wrk sharing every core (wrk is
#      itself a heavy process: on a 2-core machine it takes about one);
#   2. the same pinned: server on core 0, wrk on core 1 (taskset);
#   3. batching on (--batch-window-us 200), for comparison with 1.;
#   4. overload: BENCH_OVERLOAD_CONNS connections, first without batching
#      (no queue in the server: latency grows with the connections), then
#      with batching and --max-queue BENCH_OVERLOAD_QUEUE, which answers the
#      excess 503 at once; the latency of the admitted (200) requests comes
#      from the server's access log.
# The machine's load (uptime) is printed before and after: other processes
# change every figure here.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
finch=${FINCH_BIN:-$root/build/release/finch}
lua=$root/bench/wrk_intent.lua
dur=${BENCH_DURATION:-10}
port=${BENCH_PORT:-18090}
ov_conns=${BENCH_OVERLOAD_CONNS:-256}
ov_queue=${BENCH_OVERLOAD_QUEUE:-32}
url=http://127.0.0.1:$port
ncpu=$(nproc)

for tool in wrk curl; do
  command -v $tool >/dev/null || { echo "bench_serve: $tool is not installed (apt-get install $tool)" >&2; exit 1; }
done
[ -x "$finch" ] || { echo "bench_serve: $finch is not built (cmake --build build/release)" >&2; exit 1; }

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

model=${1:-}
if [ -z "$model" ]; then
  echo "building the demo's student model (finch demo --sample) ..."
  export FINCH_HOME=$work/home
  "$finch" demo --sample > "$work/demo.log" 2>&1 || { cat "$work/demo.log" >&2; exit 1; }
  "$finch" db down >/dev/null 2>&1 || true
  unset FINCH_HOME
  model=$work/home/models/sample-student-q8.fnm
fi
[ -f "$model" ] || { echo "bench_serve: no model file $model" >&2; exit 1; }

# start_server PREFIX... -- FINCH_SERVE_ARGS...
start_server() {
  local prefix=()
  while [ "$1" != "--" ]; do prefix+=("$1"); shift; done
  shift
  "${prefix[@]}" "$finch" serve --model "$model" --no-database --port "$port" "$@" \
    > "$work/server.out" 2> "$work/server.err" &
  server_pid=$!
  for _ in $(seq 100); do
    curl -sf "$url/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench_serve: the server did not start:" >&2
  cat "$work/server.err" >&2
  exit 1
}

stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid" || { echo "bench_serve: the server exited with status $?" >&2; exit 1; }
  server_pid=
}

# run LABEL CONNS [PREFIX...]: one wrk run, one row.
run() {
  local label=$1 conns=$2
  shift 2
  local threads=2
  [ "$conns" -lt 2 ] && threads=1
  [ $# -gt 0 ] && threads=1 # pinned to one core: one wrk thread
  "$@" wrk -t"$threads" -c"$conns" -d"${dur}s" --timeout 10s --latency -s "$lua" "$url" > "$work/wrk.out" 2>&1
  local rps p50 p99 max statuses
  read -r rps p50 p99 max < <(awk '/^finch: rps/ {print $3, $5, $7, $9}' "$work/wrk.out")
  statuses=$(sed -n 's/^finch: statuses //p' "$work/wrk.out")
  printf '%-34s %5s %10s %9s %9s %9s  %s\n' "$label" "$conns" "$rps" "$p50" "$p99" "$max" "$statuses"
}

header() {
  printf '\n%s\n' "$1"
  printf '%-34s %5s %10s %9s %9s %9s  %s\n' "run" "conns" "req/s" "p50 ms" "p99 ms" "max ms" "statuses"
}

echo "finch serve load benchmark: $(date -u +%FT%TZ), $ncpu cores, wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
echo "model: $model ($(stat -c %s "$model") bytes)"
echo "load before: $(uptime)"

header "1. shared cores (server --threads 2, wrk -t2; -t1 at 1 connection), access log off"
start_server -- --access-log off
for c in 1 8 64; do run "inline" "$c"; done
stop_server
start_server -- --access-log "$work/access.log"
run "inline, access log to a file" 8
stop_server
rm -f "$work/access.log"

if [ "$ncpu" -ge 2 ] && command -v taskset >/dev/null; then
  header "2. pinned: server on core 0 (--threads 1), wrk -t1 on core 1"
  start_server taskset -c 0 -- --access-log off --threads 1
  for c in 1 8 64; do run "inline, pinned" "$c" taskset -c 1; done
  stop_server
fi

header "3. batching on (--batch-window-us 200), shared cores"
start_server -- --access-log off --batch-window-us 200
for c in 1 8 64; do run "batched" "$c"; done
stop_server

header "4. overload: $ov_conns connections"
start_server -- --access-log off
run "inline, no queue" "$ov_conns"
stop_server
start_server -- --access-log "$work/access.log" --batch-window-us 200 --max-queue "$ov_queue"
run "batched, --max-queue $ov_queue" "$ov_conns"
stop_server
# Server-side latency of the admitted requests (headers in to response sent).
awk -F'"latency_ms":' '/"path":"\/v1\/intent","status":200/ {split($2, a, ","); print a[1]}' "$work/access.log" \
  | sort -n > "$work/ok.txt"
n_ok=$(wc -l < "$work/ok.txt")
n_503=$(grep -c '"path":"/v1/intent","status":503' "$work/access.log" || true)
if [ "$n_ok" -gt 0 ]; then
  p50=$(awk -v n="$n_ok" 'NR == int(n * 0.50) + 1 {print; exit}' "$work/ok.txt")
  p99=$(awk -v n="$n_ok" 'NR == int(n * 0.99) + 1 {print; exit}' "$work/ok.txt")
  mx=$(tail -1 "$work/ok.txt")
  echo "  admitted (200): $n_ok, server-side p50 $p50 ms, p99 $p99 ms, max $mx ms; shed (503): $n_503"
fi

echo
echo "load after: $(uptime)"
