#!/usr/bin/env bash
# The direct data path on the 16-core device host, for BENCHMARKS.md ("Cluster: the direct path").
# Usage: EMBTUNE=path/to/embtune OUT=dir [PHASES="..."] bash benches/cluster/direct.sh
# Phases: engine placement latency loadgens scaleout tune (default: all but tune).
#
# Every cluster phase runs `embtune up` (coordinator and workers on loopback) with no load
# generator of its own and starts load generators itself, each pinned to two CPUs of its own (as
# separate client machines would be), so that adding one adds a client's worth of CPU.
set -uo pipefail
E=${EMBTUNE:-embtune}
OUT=${OUT:-direct-out}
PHASES=${PHASES:-engine placement latency loadgens scaleout}
SECS=${SECS:-3}
ROUNDS=${ROUNDS:-2}
# CPUs: workers take 0..7 (up deals them in turn), the bench process BENCH_CPUS, load generator i
# LG_FIRST+2i and +2i+1. The defaults fit the 16-core device; override them for a smoke run.
BENCH_CPUS=${BENCH_CPUS:-8-9}
LG_FIRST=${LG_FIRST:-10}
mkdir -p "$OUT"
has() { [[ " $PHASES " == *" $1 "* ]]; }
log() { echo "### $*" | tee -a "$OUT/summary.txt"; }
ncpu=$(nproc)
pick() { python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print({k:d.get(k) for k in sys.argv[2:]})" "$@"; }

# `embtune up` in the background with the given flags; sets COORD and CLUSTER.
up() {
    local data=$1; shift
    rm -rf "$data"
    "$E" up --data-dir "$data" --loadgens 0 "$@" >"$data.stdout" 2>"$data.stderr" &
    UP_PID=$!
    COORD=""
    for _ in $(seq 1 900); do
        COORD=$(sed -n 's/^coordinator: //p' "$data.stdout" 2>/dev/null)
        [ -n "$COORD" ] && break
        if ! kill -0 $UP_PID 2>/dev/null; then tail -5 "$data.stderr"; return 1; fi
        sleep 0.2
    done
    CLUSTER=$data/cluster
    [ -n "$COORD" ]
}
LG_PIDS=()
# Starts load generators 0..N-1, generator i on CPUs FIRST+2i and FIRST+2i+1.
loadgens() {
    local n=$1 first=$2
    for i in $(seq 0 $((n - 1))); do
        local a=$(((first + 2 * i) % ncpu)) b=$(((first + 2 * i + 1) % ncpu))
        taskset -c $a,$b "$E" loadgen --coordinator "$COORD" --cluster "$CLUSTER" --threads 2 --name "lg$i" \
            >"$OUT/loadgen-$i.log" 2>&1 &
        LG_PIDS+=($!)
    done
    for _ in $(seq 1 300); do
        local got
        got=$("$E" cluster status --coordinator "$COORD" --cluster "$CLUSTER" --json 2>/dev/null |
            python3 -c "import json,sys;print(len(json.load(sys.stdin).get('loadgens',[])))" 2>/dev/null)
        [ "${got:-0}" -ge "$n" ] && return 0
        sleep 0.2
    done
    echo "load generators did not register" >&2
    return 1
}
down() {
    for p in "${LG_PIDS[@]}"; do kill $p 2>/dev/null; done
    LG_PIDS=()
    kill -INT $UP_PID 2>/dev/null
    wait $UP_PID 2>/dev/null
}

if has engine; then
    # The in-process engine on 8 cores: the placement effect with nothing in between.
    while read -r name w; do
        [ -z "$name" ] && continue
        log "engine: compare $w --cores 8"
        "$E" compare $w --cores 8 --rounds 3 --round-secs 2 --variants round-robin,all-replicate,client-small,auto \
            --json >"$OUT/engine-$name.json" 2>"$OUT/engine-$name.err"
        python3 -c "import json,sys;d=json.load(open(sys.argv[1]));[print(v['label'],round(v['lookups_per_s']/1e6,1),'M/s',round(v['speedup_vs_first'],2),'x') for v in d['variants']]" "$OUT/engine-$name.json"
    done <<<"${ENGINE_W:-"terabyte --preset criteo-terabyte --scale 0.02
kaggle --preset criteo-kaggle --scale 0.05"}"
fi

if has placement; then
    # 2 workers x 4 cores (CPUs 0-7), coordinator on 8-9 ... load generators on 10-15: each plan
    # measured with 3 load generators straight to the workers, then round-robin and the fastest
    # through the coordinator; rounds alternate the plans.
    while read -r name w; do
        [ -z "$name" ] && continue
        up "$OUT/up-$name" --workers 2 --cores-per-worker 4 $w --client-memory 1G || { down; continue; }
        loadgens 3 $LG_FIRST || { down; continue; }
        for r in $(seq 1 $ROUNDS); do
            for s in ${PLACEMENT_S:-round-robin all-replicate client-small auto}; do
                f="$OUT/place-$name-$s-$r.json"
                log "placement $name round $r: $s, 3 load generators, direct"
                taskset -c $BENCH_CPUS "$E" bench --coordinator "$COORD" --cluster "$CLUSTER" $w --strategy $s --client-memory 1G \
                    --loadgens 3 --concurrency 48 --duration $SECS --warmup 1 --verify --json >"$f" 2>"$f.err"
                pick "$f" batches_per_s p50_us wire_bytes_per_batch errors verified plan
            done
            f="$OUT/place-$name-auto-f16-$r.json"
            log "placement $name round $r: auto, f16 on the wire"
            taskset -c $BENCH_CPUS "$E" bench --coordinator "$COORD" --cluster "$CLUSTER" $w --strategy auto --client-memory 1G \
                --loadgens 3 --wire f16 --concurrency 48 --duration $SECS --warmup 1 --verify --json >"$f" 2>"$f.err"
            pick "$f" batches_per_s p50_us wire_bytes_per_batch errors verified
            for s in round-robin all-replicate; do
                f="$OUT/place-$name-$s-relay-$r.json"
                log "placement $name round $r: $s through the coordinator (--via coordinator)"
                taskset -c $LG_FIRST-$((LG_FIRST + 5 < ncpu ? LG_FIRST + 5 : ncpu - 1)) "$E" bench --coordinator "$COORD" --cluster "$CLUSTER" $w --strategy $s --client-memory 0 \
                    --via coordinator --concurrency 32 --duration $SECS --warmup 1 --json >"$f" 2>"$f.err"
                pick "$f" batches_per_s p50_us wire_bytes_per_batch errors
            done
        done
        down
    done <<<"${PLACEMENT_W:-"terabyte --preset criteo-terabyte --scale 0.02
kaggle --preset criteo-kaggle --scale 0.05
micro24 --preset micro24
hotset --preset synthetic --tables 8 --rows 2000000 --dim 64 --pooling 20 --dist hotset:0.99:0.001"}"
fi

if has latency; then
    # Added latency at batch 256 on criteo-kaggle, one query at a time, the same plan in the
    # in-process engine (8 cores) and through the cluster (1 worker x 8 cores, the client on two
    # CPUs of its own): every table replicated with f32 replies, and auto with the small tables
    # in the client (the in-process engine reads those too: one engine is client and worker)
    # with f16 replies.
    K="--preset criteo-kaggle --scale 0.05 --batch 256"
    "$E" plan export $K --workers 1 --cores 8 --strategy all-replicate --out "$OUT/lat-replicated.json" 2>/dev/null
    "$E" plan export $K --workers 1 --cores 8 --strategy auto --client-memory 256M --out "$OUT/lat-auto.json" 2>/dev/null
    for r in $(seq 1 $ROUNDS); do
        up "$OUT/up-lat" --workers 1 --cores-per-worker 8 $K --client-memory 256M || { down; continue; }
        for v in replicated:f32 auto:f16; do
            p=${v%%:*} wire=${v#*:}
            log "latency round $r: $p, in-process engine, 8 cores"
            "$E" bench $K --plan "$OUT/lat-$p.json" --cores 8 --concurrency 1 --duration $SECS --json \
                >"$OUT/latency-local-$p-$r.json" 2>/dev/null
            pick "$OUT/latency-local-$p-$r.json" batches_per_s p50_us p99_us plan
            log "latency round $r: $p, 1 worker x 8 cores, direct, $wire replies"
            taskset -c $BENCH_CPUS "$E" bench --coordinator "$COORD" --cluster "$CLUSTER" $K --plan "$OUT/lat-$p.json" \
                --wire $wire --concurrency 1 --duration $SECS --json >"$OUT/latency-direct-$p-$r.json" 2>"$OUT/latency-direct-$p-$r.err"
            pick "$OUT/latency-direct-$p-$r.json" batches_per_s p50_us p99_us wire_bytes_per_batch plan
        done
        log "latency round $r: replicated, through the coordinator"
        taskset -c $BENCH_CPUS "$E" bench --coordinator "$COORD" --cluster "$CLUSTER" $K --plan "$OUT/lat-replicated.json" \
            --via coordinator --concurrency 1 --duration $SECS --json >"$OUT/latency-relay-$r.json" 2>"$OUT/latency-relay-$r.err"
        pick "$OUT/latency-relay-$r.json" batches_per_s p50_us p99_us
        down
    done
fi

if has loadgens; then
    # Throughput as clients are added, where the workers are not the bound: 26 tables of 1,000
    # rows (every row in cache), dim 128, one look-up a bag: 13 KB of pooled rows per sample for
    # almost no engine work. 1 and 3 load generators of 2 CPUs each, alternated.
    LW="--preset synthetic --tables 26 --rows 1000 --dim 128 --pooling 1 --batch 256"
    up "$OUT/up-lg" --workers 2 --cores-per-worker 4 $LW --strategy all-replicate --client-memory 0 || true
    loadgens 3 $LG_FIRST || true
    for r in $(seq 1 $ROUNDS); do
        for n in 1 3; do
            f="$OUT/loadgens-$n-$r.json"
            log "loadgens round $r: $n load generators"
            taskset -c $BENCH_CPUS "$E" bench --coordinator "$COORD" --cluster "$CLUSTER" $LW --loadgens $n --concurrency $((16 * n)) \
                --duration $SECS --warmup 1 --json >"$f" 2>"$f.err"
            pick "$f" batches_per_s p50_us wire_bytes_per_batch errors per_core
        done
    done
    down
fi

if has scaleout; then
    # 1 worker x 4 cores against 3 workers x 4 cores on a workload heavy in the engine; 2 load
    # generators on the CPUs left.
    W=${SCALEOUT_W:-"--preset synthetic --tables 12 --rows 1000000 --dim 256 --pooling 300 --batch 256 --dist zipf:0.8"}
    for r in $(seq 1 $ROUNDS); do
        for w in 1 3; do
            log "scale-out round $r: $w workers x 4 cores, all-shard, 2 load generators"
            up "$OUT/up-so$w" --workers $w --cores-per-worker 4 $W --strategy all-shard --client-memory 0 || { down; continue; }
            loadgens 2 $((ncpu - 4)) || { down; continue; }
            taskset -c $((ncpu - 5)) "$E" bench --coordinator "$COORD" --cluster "$CLUSTER" $W --loadgens 2 --concurrency 32 \
                --duration $SECS --warmup 1 --json >"$OUT/scaleout-$w-$r.json" 2>"$OUT/scaleout-$w-$r.err"
            pick "$OUT/scaleout-$w-$r.json" batches_per_s lookups_per_s p50_us workers errors
            down
        done
    done
fi

if has tune; then
    # A tuning job through the direct path: 2 workers x 4 cores, 3 load generators (up starts
    # them on the CPUs the workers leave), clients may hold 1 GiB of tables. TUNE_EXTRA adds flags
    # (e.g. "--head-to-head-rounds 2").
    TW=${TUNE_W:-"--preset criteo-terabyte --scale 0.02"}
    log "tune $TW, 2 workers x 4 cores, 3 load generators"
    "$E" tune --local --workers 2 --cores-per-worker 4 --loadgens 3 $TW --trials ${TUNE_TRIALS:-6} --client-memory 1G \
        --round-secs 1 --max-rounds 3 ${TUNE_EXTRA:-} --data-dir "$OUT/tune" --json >"$OUT/tune.json" 2>"$OUT/tune.err"
    pick "$OUT/tune.json" best best_trial best_plan baselines speedup_vs ceiling ceiling_share
    rm -rf "$OUT/tune"
fi
rm -rf "$OUT"/up-*/
log done
