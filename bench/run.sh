#!/usr/bin/env bash
# Runs the load scenarios against a release build of `assent serve`, three times each on a
# fresh data directory, and prints every run and the median. Usage:
#   bench/run.sh [ingest|single|reads|ids|big|raw|parse|all]
# Results go to bench/results/<scenario>.jsonl (not committed); bench/RESULTS.md holds the
# numbers we report.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p assent -p assent-bench >&2
ASSENT=target/release/assent
BENCH=target/release/assent-bench
PORT=${PORT:-18080}
URL="http://127.0.0.1:$PORT"
WORK=${WORK:-$(mktemp -d /tmp/assent-bench.XXXXXX)}
mkdir -p bench/results
SERVER_PID=

start_server() {
    rm -rf "$WORK/data"
    "$ASSENT" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >"$WORK/out.txt" 2>"$WORK/err.txt" &
    SERVER_PID=$!
    for _ in $(seq 100); do grep -q "listening" "$WORK/out.txt" 2>/dev/null && break; sleep 0.1; done
    read -r KEY SECRET < <(grep '"key"' "$WORK/out.txt" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["key"], d["secret"])')
    export ASSENT_BENCH_KEY=$KEY ASSENT_BENCH_SECRET=$SECRET
}

stop_server() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    SERVER_PID=
}
trap stop_server EXIT

# The server's resident memory in MiB.
rss_mib() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$SERVER_PID/status"; }

median() {
    python3 - "$1" "$2" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()][-int(sys.argv[2]):]
keys = [k for k in runs[0] if isinstance(runs[0][k], (int, float))]
print(json.dumps({"median_of": len(runs), **{k: statistics.median(r[k] for r in runs) for k in keys}}))
PY
}

run3() {  # name, then the command that prints one JSON line per run
    local name=$1; shift
    local file="bench/results/$name.jsonl"
    : >"$file"
    for i in 1 2 3; do
        start_server
        "$@" | tee -a "$file"
        stop_server
    done
    echo "median $name: $(median "$file" 3)"
}

ingest() { run3 ingest "$BENCH" ingest --url "$URL" --users 10000 --clients 8 --batch 100 --seconds 20; }
single() { run3 single "$BENCH" single --url "$URL" --users 10000 --clients 16 --seconds 20; }
ids()    { run3 ingest-v4-ids "$BENCH" ingest --url "$URL" --users 10000 --clients 8 --batch 100 --seconds 20 --ids v4; }
reads_once() {
    "$BENCH" seed --url "$URL" --users 100000 >&2
    "$BENCH" reads --url "$URL" --users 100000 --clients 32 --seconds 20
}
reads()  { run3 reads reads_once; }
raw_once() { rm -rf "$WORK/raw"; "$BENCH" raw --dir "$WORK/raw" --events 1000000 --users 10000 --writers 8; }
raw()    { run3 raw raw_once; }
parse()  { "$BENCH" parse | tee bench/results/parse.jsonl; }

# A store of 10 million events over 100,000 users: ingest time, bytes per event, RSS, and read
# latency before (100,000 users, one event each) and after.
big() {
    local file=bench/results/big.jsonl
    : >"$file"
    start_server
    "$BENCH" seed --url "$URL" --users 100000 | tee -a "$file"
    "$BENCH" reads --url "$URL" --users 100000 --clients 32 --seconds 20 | sed 's/"reads"/"reads_small_store"/' | tee -a "$file"
    "$BENCH" ingest --url "$URL" --users 100000 --clients 8 --batch 100 --seconds 100000 --total 10000000 | sed 's/"ingest"/"ingest_10m"/' | tee -a "$file"
    sleep 2
    "$BENCH" reads --url "$URL" --users 100000 --clients 32 --seconds 20 | sed 's/"reads"/"reads_10m_store"/' | tee -a "$file"
    local rss; rss=$(rss_mib)
    local bytes; bytes=$(du -sb "$WORK/data" | cut -f1)
    echo "{\"scenario\":\"big_store\",\"events\":10100000,\"bytes\":$bytes,\"bytes_per_event\":$((bytes / 10100000)),\"rss_mib\":$rss}" | tee -a "$file"
    stop_server
}

case "${1:-all}" in
    all) raw; parse; ingest; single; ids; reads ;;
    *) "$1" ;;
esac
