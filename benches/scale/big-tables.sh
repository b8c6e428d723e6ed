#!/usr/bin/env bash
# Issue 19, item 3: big tables on one node (made for the 16-core, 128 GiB device host).
#
# Three single-table models, each deployed with `embtune up` on one worker and measured with
# `embtune bench --coordinator ... --verify` from this host's spare CPUs:
#   f16  100M rows x dim 128 (25.6 GB of rows)
#   int8 100M rows x dim 128 (12.8 GB of rows plus a scale and bias per row)
#   f32   50M rows x dim 128 (25.6 GB of rows)
# Per run it records the deploy time (`up`'s "deployed in" line), the worker's resident memory
# against the table's bytes, and look-ups/s; results go to $OUT as files (summary.tsv, one
# JSON report and the logs per run). The whole script stays under 8 minutes: every step has a
# timeout, and a run whose deployment does not finish in DEPLOY_S is recorded as such.
# Last, unless INTERRUPT=0, it starts the f16 deployment again and sends `up` SIGINT a few
# seconds into it: the time until every process is gone, and the worker's log of the cancel,
# go to interrupt.txt (a deployment of tens of gigabytes must not have to finish first).
#
# Usage: EMBTUNE=path/to/embtune OUT=dir bash benches/scale/big-tables.sh
# Knobs: CORES (worker cores, default 8), SECS (bench seconds, default 15), DEPLOY_S (default 130),
#        RUNS (default "f16:100000000 int8:100000000 f32:50000000").
set -uo pipefail
E=${EMBTUNE:-embtune}
OUT=${OUT:-big-tables-out}
CORES=${CORES:-8}
SECS=${SECS:-15}
DEPLOY_S=${DEPLOY_S:-130}
RUNS=${RUNS-"f16:100000000 int8:100000000 f32:50000000"}
mkdir -p "$OUT"
ncpu=$(nproc)
start=$(date +%s)
{ lscpu; free -g; cat /sys/kernel/mm/transparent_hugepage/enabled; uname -a; "$E" --version; } >"$OUT/env.txt" 2>&1
printf 'row_type\trows\tdim\ttable_bytes\tdeploy_s\tworker_rss_bytes\trss_over_table\tlookups_per_s\tbatches_per_s\tp50_us\tp99_us\tverified\n' >"$OUT/summary.tsv"

# Starts `embtune up` in the background; sets UP_PID, COORD and CLUSTER once the plan is deployed
# (up prints the coordinator's address after the first deployment).
up() {
    local data=$1; shift
    rm -rf "$data"
    "$E" up --data-dir "$data" "$@" >"$data.stdout" 2>"$data.stderr" &
    UP_PID=$!
    local t=0
    COORD=
    while [ $t -lt $((DEPLOY_S * 5)) ]; do
        COORD=$(sed -n 's/^coordinator: //p' "$data.stdout" 2>/dev/null)
        [ -n "$COORD" ] && break
        kill -0 $UP_PID 2>/dev/null || break
        sleep 0.2; t=$((t + 1))
    done
    CLUSTER=$data/cluster
    [ -n "$COORD" ]
}
down() { kill -INT $UP_PID 2>/dev/null; timeout 30 tail --pid=$UP_PID -f /dev/null; kill -KILL $UP_PID 2>/dev/null; wait $UP_PID 2>/dev/null; }

for run in $RUNS; do
    rt=${run%%:*}; rows=${run##*:}
    left=$((${BUDGET_S:-480} - ($(date +%s) - start)))
    if [ $left -lt $((DEPLOY_S + SECS + 40)) ]; then
        echo "### $rt: skipped, $left s left of the 8-minute budget" | tee -a "$OUT/notes.txt"
        continue
    fi
    W="--preset synthetic --tables 1 --rows $rows --dim 128 --pooling 20 --batch 512 --dist zipf:1.05 --row-type $rt"
    echo "### $rt: $rows rows x dim 128" | tee -a "$OUT/notes.txt"
    d=$OUT/up-$rt
    t0=$(date +%s.%N)
    # One worker on CPUs 0..CORES-1 (up deals CPUs in turn), no load generator; the bench client
    # runs on the CPUs above.
    if ! up "$d" --workers 1 --cores-per-worker "$CORES" --loadgens 0 --client-memory 0 --strategy all-replicate $W; then
        echo "$rt: no deployment within ${DEPLOY_S}s; see $d.stderr" | tee -a "$OUT/notes.txt"
        tail -5 "$d.stderr" >>"$OUT/notes.txt"
        down; continue
    fi
    t1=$(date +%s.%N)
    deploy=$(sed -n 's/.* deployed in \([0-9.]*\)s).*/\1/p' "$d.stderr" | head -1)
    bytes=$(sed -n 's/.*: .* (\(.*\) of tables deployed in.*/\1/p' "$d.stderr" | head -1)
    # The worker is up's child running `embtune worker`; its resident memory after the deploy.
    wpid=$(ps -o pid=,args= --ppid $UP_PID | awk '/ worker /{print $1; exit}')
    rss=$( [ -n "$wpid" ] && awk '/^VmRSS:/{printf "%d\n", $2 * 1024}' /proc/$wpid/status 2>/dev/null || echo "")
    echo "$rt: up took $(awk "BEGIN{printf \"%.1f\", $t1 - $t0}") s, deploy ${deploy}s of $bytes, worker $wpid RSS $rss bytes" | tee -a "$OUT/notes.txt"
    timeout $((SECS + 60)) taskset -c "$CORES-$((ncpu - 1))" "$E" bench --coordinator "$COORD" --cluster "$CLUSTER" $W \
        --duration "$SECS" --warmup 2 --verify --json >"$OUT/bench-$rt.json" 2>"$OUT/bench-$rt.err"
    rc=$?
    [ $rc -ne 0 ] && { echo "$rt: bench exited $rc" | tee -a "$OUT/notes.txt"; tail -5 "$OUT/bench-$rt.err" >>"$OUT/notes.txt"; }
    python3 - "$OUT/bench-$rt.json" "$rt" "$rows" "${deploy:-}" "${rss:-}" >>"$OUT/summary.tsv" <<'PY'
import json, sys
path, rt, rows, deploy, rss = sys.argv[1:]
rows = int(rows)
row_bytes = {"f32": 512, "f16": 256, "int8": 136}[rt]
table = rows * row_bytes
try:
    d = json.load(open(path))
except Exception:
    d = {}
ratio = f"{int(rss) / table:.3f}" if rss else ""
print("\t".join(str(x) for x in [rt, rows, 128, table, deploy, rss, ratio, d.get("lookups_per_s", ""),
      d.get("batches_per_s", ""), d.get("p50_us", ""), d.get("p99_us", ""), d.get("verified_batches", "")]))
PY
    cp "$d.stderr" "$OUT/up-$rt.log" 2>/dev/null
    down
    rm -rf "$d"
done
if [ "${INTERRUPT:-1}" = 1 ]; then
    rt=f16; rows=${INTERRUPT_ROWS:-100000000}
    d=$OUT/up-interrupt
    rm -rf "$d"
    "$E" up --data-dir "$d" --workers 1 --cores-per-worker "$CORES" --loadgens 0 --client-memory 0 \
        --strategy all-replicate --preset synthetic --tables 1 --rows "$rows" --dim 128 --pooling 20 \
        --batch 512 --dist zipf:1.05 --row-type "$rt" >"$d.stdout" 2>"$d.stderr" &
    UP_PID=$!
    # Until the worker has begun filling (its heartbeat shows progress; `up` draws it), then 3 s more.
    for _ in $(seq 1 300); do
        grep -q "deploying" "$d.stderr" 2>/dev/null && break
        sleep 0.2
    done
    sleep 3
    wpid=$(ps -o pid=,args= --ppid $UP_PID | awk '/ worker /{print $1; exit}')
    t0=$(date +%s.%N)
    kill -INT $UP_PID
    timeout 60 tail --pid=$UP_PID -f /dev/null
    t1=$(date +%s.%N)
    alive=$( [ -n "$wpid" ] && kill -0 "$wpid" 2>/dev/null && echo yes || echo no)
    {
        echo "SIGINT to up; its last progress line: $(grep deploying "$d.stderr" | tail -1)"
        echo "up exited after $(awk "BEGIN{printf \"%.2f\", $t1 - $t0}") s; worker still alive: $alive"
        echo "worker log:"; grep -h -i "deploying plan\|cancel" "$d"/logs/*worker* 2>/dev/null | tail -5
        echo "up's last lines:"; tail -4 "$d.stderr"
    } | tee "$OUT/interrupt.txt"
    kill -KILL $UP_PID 2>/dev/null; [ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null
    rm -rf "$d"
fi
echo "total $(( $(date +%s) - start )) s" | tee -a "$OUT/notes.txt"
python3 -c 'import sys; rows=[l.rstrip("\n").split("\t") for l in open(sys.argv[1])]; w=[max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(len(rows[0]))]; [print("  ".join(c.ljust(w[i]) for i, c in enumerate(r))) for r in rows]' "$OUT/summary.tsv" | tee "$OUT/summary.txt"
