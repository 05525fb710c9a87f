#!/usr/bin/env bash
# Runs the load scenarios against a release build of `assent serve`, three times each on a
# fresh store, and prints every run and the median. Usage:
#   bench/run.sh [ingest|single|reads|ids|big|raw|parse|all]               (SQLite)
#   bench/run.sh [deliveries|ingest-integrations]                           (SQLite, webhooks)
#   bench/run.sh ingest-registry                                            (SQLite, purpose registry)
#   bench/run.sh import-ndjson                                              (assent import)
#   bench/run.sh export-full                                                (assent export)
#   bench/run.sh [pg-ingest|pg-ingest-2|pg-single|pg-reads|pg-raw|pg-ceiling|pg-all]
# The PostgreSQL scenarios use the server at $PG_ADMIN_URL (default: the local one, user
# postgres) and recreate the database `assent_bench` before every run.
# Results go to bench/results/<scenario>.jsonl (not committed); bench/RESULTS.md holds the
# numbers we report. RUNS=1 runs each scenario once instead of three times.
set -euo pipefail
cd "$(dirname "$0")/.."

# NO_BUILD=1 uses the binaries already in target/release.
[ -n "${NO_BUILD:-}" ] || cargo build --release -p assent -p assent-bench >&2
ASSENT=${ASSENT:-target/release/assent}   # another build to compare: ASSENT=/path/to/assent
BENCH=${BENCH:-target/release/assent-bench}
PORT=${PORT:-18080}
URL="http://127.0.0.1:$PORT"
WORK=${WORK:-$(mktemp -d /tmp/assent-bench.XXXXXX)}
mkdir -p bench/results
SERVER_PID=

PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_URL=${PG_ADMIN_URL%/*}/assent_bench
BACKEND=sqlite   # or postgres
NODES=1          # servers sharing the PostgreSQL database
SERVER_PIDS=()

# A checkpoint first, so that every run starts with the same WAL behind it (a checkpoint
# landing inside one 20-s run and not another moved the figures by 10%).
fresh_pg() {
    psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS assent_bench WITH (FORCE)" -c "CREATE DATABASE assent_bench" -c "CHECKPOINT" >/dev/null 2>&1
}

# The servers' URLs, comma-separated (client i talks to the (i mod n)-th).
set_url() {
    local urls=()
    for n in $(seq "$NODES"); do urls+=("http://127.0.0.1:$((PORT + n - 1))"); done
    URL=$(IFS=,; echo "${urls[*]}")
}

# Starts $NODES servers (one for SQLite) on a fresh store, at the URLs of set_url, and sets
# the bootstrap key.
start_server() {
    rm -rf "$WORK"/data* "$WORK"/out*.txt
    local store=()
    [ "$BACKEND" = postgres ] && fresh_pg
    for n in $(seq "$NODES"); do
        local port=$((PORT + n - 1))
        if [ "$BACKEND" = postgres ]; then store=(--database-url "$PG_URL"); else store=(--data-dir "$WORK/data$n"); fi
        "$ASSENT" serve --listen "127.0.0.1:$port" "${store[@]}" >"$WORK/out$n.txt" 2>"$WORK/err$n.txt" &
        SERVER_PIDS+=($!)
        SERVER_PID=$!
        for _ in $(seq 100); do grep -q "listening" "$WORK/out$n.txt" 2>/dev/null && break; sleep 0.1; done
    done
    read -r KEY SECRET < <(cat "$WORK"/out*.txt | grep '"key"' | head -1 | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["key"], d["secret"])')
    export ASSENT_BENCH_KEY=$KEY ASSENT_BENCH_SECRET=$SECRET
}

stop_server() {
    for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    SERVER_PIDS=()
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

RUNS=${RUNS:-3}
run3() {  # name, then the command that prints one JSON line per run
    local name=$1; shift
    local file="bench/results/$name.jsonl"
    : >"$file"
    for _ in $(seq "$RUNS"); do
        start_server
        "$@" | tee -a "$file"
        stop_server
    done
    echo "median $name: $(median "$file" "$RUNS")"
}

# CPU time in clock ticks of the servers, and of the local PostgreSQL's processes (with the
# children they reaped, such as autovacuum workers) when the store is PostgreSQL.
server_ticks() { local t=0; for p in "${SERVER_PIDS[@]}"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo "$t"; }
pg_ticks() {
    local t=0
    [ "$BACKEND" = postgres ] || { echo 0; return; }
    for p in $(pgrep -x postgres); do t=$((t + $(awk '{print $14+$15+$16+$17}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
    echo "$t"
}
# Waits (up to 30 s) until the folders have folded every event the load wrote: folding is
# part of what an event costs.
drain_pg() {
    [ "$BACKEND" = postgres ] || return 0
    for _ in $(seq 300); do
        [ "$(psql -qAt "$PG_URL" -c 'SELECT count(*) FROM pending_folds' 2>/dev/null)" = 0 ] && return 0
        sleep 0.1
    done
}
# Runs a load command and adds to its JSON line the CPU each event cost the servers and
# PostgreSQL (microseconds, the folding of its events included), which varies less from run to
# run than the rate on a shared machine. PostgreSQL's is that of every `postgres` process on
# this machine: run nothing else against it meanwhile.
with_cpu() {
    local s0 p0 out
    s0=$(server_ticks); p0=$(pg_ticks)
    out=$("$@")
    drain_pg
    python3 - "$out" "$s0" "$(server_ticks)" "$p0" "$(pg_ticks)" "$(getconf CLK_TCK)" <<'PY'
import json, sys
d = json.loads(sys.argv[1])
s0, s1, p0, p1, hz = map(int, sys.argv[2:])
events = max(d.get("events", 0), 1)
d["server_cpu_us_per_event"] = round(1e6 * (s1 - s0) / hz / events, 1)
if p1:
    d["pg_cpu_us_per_event"] = round(1e6 * (p1 - p0) / hz / events, 1)
print(json.dumps(d, sort_keys=True))
PY
}

ingest() { run3 ingest with_cpu "$BENCH" ingest --url "$URL" --users 10000 --clients 8 --batch 100 --seconds 20; }
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

# Webhooks. The server may deliver to the bench's receiver on loopback only when told so.
# deliveries: one integration; batches of 100 events over 10,000 users until 100,000 changes
# are expected, then the rate at which the receiver gets them (first to last).
deliveries() {
    local -x ASSENT_DELIVERY_ALLOW_NETWORKS=127.0.0.0/8
    run3 deliveries "$BENCH" deliveries --url "$URL" --users 10000 --clients 8 --batch 100 --changes 100000
}
# ingest-integrations: the ingest scenario without integrations, then with 3 webhook
# integrations pointing at a receiver that answers 200 at once; both medians and the ratio.
ingest-integrations() {
    local -x ASSENT_DELIVERY_ALLOW_NETWORKS=127.0.0.0/8
    local args=(--url "$URL" --users 10000 --clients 8 --batch 100 --seconds "${SECONDS_PER_RUN:-20}")
    run3 ingest-0-integrations "$BENCH" ingest "${args[@]}"
    run3 ingest-3-integrations "$BENCH" ingest "${args[@]}" --integrations 3
    python3 - "$RUNS" <<'PY'
import json, statistics, sys
n = int(sys.argv[1])
def med(name):
    runs = [json.loads(l) for l in open(f"bench/results/{name}.jsonl") if l.strip()][-n:]
    return statistics.median(r["events_per_s"] for r in runs)
none, three = med("ingest-0-integrations"), med("ingest-3-integrations")
print(json.dumps({"scenario": "ingest-integrations", "median_of": n, "events_per_s_0": none,
                  "events_per_s_3": three, "ratio": round(three / none, 3),
                  "drop_pct": round(100 * (1 - three / none), 1)}))
PY
}

# ingest-registry: the ingest scenario on an organization without purpose registry, then with
# 20 registered purposes (every event names some and records their versions); both medians.
ingest-registry() {
    local args=(--url "$URL" --users 10000 --clients 8 --batch 100 --seconds "${SECONDS_PER_RUN:-20}")
    run3 ingest-0-purposes "$BENCH" ingest "${args[@]}"
    run3 ingest-20-purposes "$BENCH" ingest "${args[@]}" --purposes 20
    python3 - "$RUNS" <<'PY'
import json, statistics, sys
n = int(sys.argv[1])
def med(name):
    runs = [json.loads(l) for l in open(f"bench/results/{name}.jsonl") if l.strip()][-n:]
    return statistics.median(r["events_per_s"] for r in runs)
none, twenty = med("ingest-0-purposes"), med("ingest-20-purposes")
print(json.dumps({"scenario": "ingest-registry", "median_of": n, "events_per_s_0": none,
                  "events_per_s_20": twenty, "ratio": round(twenty / none, 3)}))
PY
}

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
    local bytes; bytes=$(du -sb "$WORK/data1" | cut -f1)
    echo "{\"scenario\":\"big_store\",\"events\":10100000,\"bytes\":$bytes,\"bytes_per_event\":$((bytes / 10100000)),\"rss_mib\":$rss}" | tee -a "$file"
    stop_server
}

# assent import: 1,000,000 back-dated events from NDJSON (100,000 users x 10 choices) into a
# fresh server, 8 batches in flight; events/s and the peak RSS of the importer and the server.
import_once() {
    local file="$WORK/import.ndjson"
    [ -s "$file" ] || python3 - "$file" <<'PY'
import json, sys
with open(sys.argv[1], "w") as out:
    for i in range(10):
        for u in range(100000):
            out.write(json.dumps({"user": {"organization_user_id": f"user-{u}"},
                "created_at": f"2024-01-01T00:00:{i:02}Z",
                "consents": {"purposes": [{"id": "newsletter", "enabled": (i + u) % 2 == 0},
                                          {"id": "analytics", "enabled": i % 3 == 0}]}}) + "\n")
PY
    local start end
    start=$(date +%s.%N)
    /usr/bin/time -f '%M' -o "$WORK/import-rss.txt" "$ASSENT" import "$file" --server "$URL" \
        --key "$KEY" --secret "$SECRET" --concurrency 8 >"$WORK/import-out.txt" 2>/dev/null
    end=$(date +%s.%N)
    python3 - "$start" "$end" "$(cat "$WORK/import-rss.txt")" "$(rss_mib)" "$(cat "$WORK/import-out.txt")" <<'PY'
import json, sys
start, end, rss_kib, server_mib, summary = sys.argv[1:6]
seconds = float(end) - float(start)
created = int(summary.split("created ")[1].split(",")[0])
print(json.dumps({"scenario": "import", "events": created, "seconds": round(seconds, 2),
                  "events_per_s": round(created / seconds), "importer_peak_rss_mib": round(int(rss_kib) / 1024),
                  "server_rss_mib": int(server_mib)}))
PY
}
import-ndjson() { run3 import import_once; }

# assent export: the import scenario's 1,000,000 events over 100,000 users, imported once,
# then exported whole (--scope full) from the stopped SQLite store $RUNS times; events/s,
# compressed bytes and the exporter's peak RSS.
export-full() {
    local file=bench/results/export.jsonl
    start_server
    import_once >&2
    stop_server
    for _ in $(seq "$RUNS"); do
        local start end
        start=$(date +%s.%N)
        /usr/bin/time -f '%M' -o "$WORK/export-rss.txt" "$ASSENT" export --organization default \
            --to "$WORK/exports" --scope full --data-dir "$WORK/data1" >"$WORK/export-out.txt" 2>/dev/null
        end=$(date +%s.%N)
        python3 - "$start" "$end" "$(cat "$WORK/export-rss.txt")" "$(cat "$WORK/export-out.txt")" <<'PY' | tee -a "$file"
import json, re, sys
start, end, rss_kib, summary = sys.argv[1:5]
seconds = float(end) - float(start)
m = re.search(r"exported (\d+) users and (\d+) events in (\d+) part\(s\), (\d+) bytes", summary)
users, events, parts, size = (int(g) for g in m.groups())
print(json.dumps({"scenario": "export", "users": users, "events": events, "parts": parts,
                  "bytes": size, "seconds": round(seconds, 2), "events_per_s": round(events / seconds),
                  "exporter_peak_rss_mib": round(int(rss_kib) / 1024)}))
PY
    done
    echo "median export: $(median "$file" "$RUNS")"
}

# The same scenarios on PostgreSQL (one node unless said otherwise), and its raw ceiling: the
# store's write path without HTTP, beside plain multi-row INSERTs of the same rows.
pg-ingest()   { BACKEND=postgres NODES=1; set_url; ingest_as pg-ingest; }
pg-ingest-2() { BACKEND=postgres NODES=2; set_url; ingest_as pg-ingest-2nodes; }
pg-single()   { BACKEND=postgres NODES=1; set_url; run3 pg-single "$BENCH" single --url "$URL" --users 10000 --clients 16 --seconds 20; }
pg-reads()    { BACKEND=postgres NODES=1; set_url; run3 pg-reads reads_once; }
ingest_as()   { run3 "$1" with_cpu "$BENCH" ingest --url "$URL" --users 10000 --clients 8 --batch 100 --seconds 20; }
# The store's write path without HTTP (8 writers, batches of 100).
pg_raw_once() { fresh_pg; "$BENCH" raw --database-url "$PG_URL" --events 1000000 --users 10000 --writers 8; }
pg-raw()      { run3 pg-raw pg_raw_once; }
# Plain multi-row INSERTs of the same rows (bench/pg-ceiling.sql), 8 clients, 20 s.
pg_ceiling_once() {
    fresh_pg
    "$ASSENT" migrate --database-url "$PG_URL" >/dev/null
    pgbench -n -c 8 -j 2 -T 20 -f bench/pg-ceiling.sql "$PG_URL" 2>/dev/null |
        awk '/^tps/ {printf "{\"scenario\":\"pg-ceiling\",\"events_per_s\":%.0f}\n", $3 * 100}'
}
pg-ceiling()  { run3 pg-ceiling pg_ceiling_once; }

case "${1:-all}" in
    all) raw; parse; ingest; single; ids; reads ;;
    pg-all) pg-ceiling; pg-raw; pg-ingest; pg-ingest-2; pg-single; pg-reads ;;
    *) "$1" ;;
esac
