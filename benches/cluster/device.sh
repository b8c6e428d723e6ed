#!/usr/bin/env bash
# CPU scaling and cluster runs for BENCHMARKS.md, made on the 16-core device machine.
# Usage: EMBTUNE=path/to/embtune OUT=dir [PHASES="..."] bash benches/cluster/device.sh
# Phases: env limit scaling flows scaleout overhead netbench (default: all), and tune, ceiling and
# memtune (not in the default: model-driven against random search on criteo-kaggle and extreme
# skew; the cluster's throughput ceiling for extreme skew; tuning under a memory limit per
# worker, one workload a line in MEMTUNE_W).
set -uo pipefail
E=${EMBTUNE:-embtune}
OUT=${OUT:-bench-out}
PHASES=${PHASES:-env limit scaling flows scaleout overhead netbench}
SECS=${SECS:-4}
mkdir -p "$OUT"
has() { [[ " $PHASES " == *" $1 "* ]]; }
log() { echo "### $*" | tee -a "$OUT/summary.txt"; }
ncpu=$(nproc)

# Starts `embtune up` with the given flags in the background and sets COORD and CLUSTER.
up() {
    local data=$1; shift
    rm -rf "$data"
    "$E" up --data-dir "$data" "$@" >"$data.stdout" 2>"$data.stderr" &
    UP_PID=$!
    for _ in $(seq 1 600); do
        COORD=$(sed -n 's/^coordinator: //p' "$data.stdout" 2>/dev/null)
        [ -n "$COORD" ] && break
        if ! kill -0 $UP_PID 2>/dev/null; then cat "$data.stderr"; return 1; fi
        sleep 0.2
    done
    CLUSTER=$data/cluster
    [ -n "$COORD" ]
}
down() { kill -INT $UP_PID 2>/dev/null; wait $UP_PID 2>/dev/null; }

if has env; then
    log env
    { lscpu; free -g; cat /sys/kernel/mm/transparent_hugepage/enabled; uname -a; } >"$OUT/env.txt" 2>&1
    head -20 "$OUT/env.txt"
fi

if has limit; then
    for t in ${LIMIT_THREADS:-1 $((ncpu / 2)) $ncpu}; do
        log "limit --threads $t"
        "$E" limit --threads $t --table-gib 4 --rounds 3 --round-secs 1 --json >"$OUT/limit-$t.json" 2>"$OUT/limit-$t.err"
        tail -c 600 "$OUT/limit-$t.json"; echo
    done
fi

if has scaling; then
    # Engine throughput as cores grow, on two large-table presets (sharded and replicated by auto).
    for p in ${SCALING_PRESETS:-"criteo-terabyte --scale 0.05" "micro24"}; do
        for c in 1 2 4 8 $ncpu; do
            log "bench --preset $p --cores $c"
            "$E" bench --preset $p --cores $c --duration $SECS --json >"$OUT/scale-${p%% *}-$c.json" 2>/dev/null
            python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print({k:d.get(k) for k in ('lookups_per_s','batches_per_s','p50_us','p99_us','huge_pages')})" "$OUT/scale-${p%% *}-$c.json"
        done
    done
fi

if has flows; then
    log "compare flows on hotset, 1 core"
    "$E" compare --preset synthetic --tables 1 --rows 4000000 --dim 64 --pooling 20 --dist hotset:0.99:0.001 --cores 1 \
        --variants round-robin:direct,round-robin:direct:pf0,round-robin:hot,round-robin:blocked 2>&1 | tail -12 | tee "$OUT/flows-hotset.txt"
    log "compare strategies on criteo-terabyte, all cores"
    "$E" compare --preset criteo-terabyte --scale 0.05 --variants round-robin,all-replicate,all-shard,size-threshold,greedy-cost,auto 2>&1 | tail -12 | tee "$OUT/strategies-terabyte.txt"
    log "compare strategies on criteo-kaggle, all cores"
    "$E" compare --preset criteo-kaggle --scale 0.2 --variants round-robin,all-replicate,all-shard,size-threshold,greedy-cost,auto 2>&1 | tail -12 | tee "$OUT/strategies-kaggle.txt"
fi

if has scaleout; then
    # 1 worker x 4 cores against 3 workers x 4 cores; coordinator and load generator on the spare CPUs.
    # The workload reads many wide rows per sample (pooling 300, dim 256) so that the engine, not
    # ids and pooled rows crossing the coordinator's QUIC connections (~0.6 GB/s each), bounds
    # throughput: with dim 32 one worker already filled them (BENCHMARKS.md, "Cluster: scale-out on one 16-core host").
    spare=$((ncpu - 4))-$((ncpu - 1))
    W=${SCALEOUT_W:-"--preset synthetic --tables 12 --rows 1000000 --dim 256 --pooling 300 --batch 256 --dist zipf:0.8"}
    for s in ${SCALEOUT_STRATEGIES:-all-shard greedy-cost auto}; do
        for w in 1 3; do
            log "scale-out: $w workers x 4 cores, $s, $W"
            up "$OUT/up$w" --workers $w --cores-per-worker 4 $W --strategy $s || continue
            taskset -c $spare "$E" bench --coordinator "$COORD" --cluster "$CLUSTER" $W \
                --concurrency 16 --duration $SECS --json >"$OUT/scaleout-$s-$w.json" 2>"$OUT/scaleout-$s-$w.err"
            python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print({k:d.get(k) for k in ('batches_per_s','lookups_per_s','p50_us','p99_us','workers')})" "$OUT/scaleout-$s-$w.json"
            down
        done
    done
fi

if has overhead; then
    # Batch 256 on criteo-kaggle: the in-process engine on 4 cores, then the same plan behind a coordinator.
    for c in 1 4; do
        log "overhead: local engine, $c cores, batch 256, concurrency 1"
        "$E" bench --preset criteo-kaggle --scale 0.05 --batch 256 --cores $c --concurrency 1 --duration $SECS --json >"$OUT/overhead-local-$c.json" 2>/dev/null
        python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print({k:d.get(k) for k in ('batches_per_s','p50_us','p99_us')})" "$OUT/overhead-local-$c.json"
        log "overhead: cluster 1 worker x $c cores, batch 256, concurrency 1"
        up "$OUT/upo$c" --workers 1 --cores-per-worker $c --preset criteo-kaggle --scale 0.05 --batch 256 || continue
        taskset -c $((ncpu - 2))-$((ncpu - 1)) "$E" bench --coordinator "$COORD" --cluster "$CLUSTER" --preset criteo-kaggle --scale 0.05 --batch 256 \
            --concurrency 1 --duration $SECS --json >"$OUT/overhead-cluster-$c.json" 2>"$OUT/overhead-cluster-$c.err"
        python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print({k:d.get(k) for k in ('batches_per_s','p50_us','p99_us','network_fraction')})" "$OUT/overhead-cluster-$c.json"
        down
    done
fi

if has netbench; then
    for s in 460000 4194304; do
        log "netbench --size $s"
        "$E" cluster netbench --size $s --rounds 3 2>&1 | tail -8 | tee "$OUT/netbench-$s.txt"
    done
fi
if has tune; then
    # Trials to the best plan: the model-driven search against random search, same budget.
    TW="--preset criteo-kaggle --scale 0.05"
    for s in model random; do
        log "tune --search $s, $TW, 2 workers x 4 cores"
        "$E" tune --local --workers 2 --cores-per-worker 4 $TW --trials ${TUNE_TRIALS:-30} --search $s \
            --data-dir "$OUT/tune-$s" --json >"$OUT/tune-$s.json" 2>"$OUT/tune-$s.err"
        job=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['job'])" "$OUT/tune-$s.json")
        "$E" results export "$job" --format csv --data-dir "$OUT/tune-$s" >"$OUT/tune-$s.csv"
        python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print({k:d.get(k) for k in ('best','best_trial','trials','speedup_vs','model_error')})" "$OUT/tune-$s.json"
    done
    python3 "$(dirname "$0")/plot_tune.py" "$OUT/tune-curves.svg" model="$OUT/tune-model.csv" random="$OUT/tune-random.csv"
    # Extreme skew: 99% of look-ups on 0.1% of rows.
    XW="--preset synthetic --tables 8 --rows 2000000 --dim 64 --pooling 20 --dist hotset:0.99:0.001"
    log "tune extreme skew, $XW"
    "$E" tune --local --workers 2 --cores-per-worker 4 $XW --trials ${TUNE_TRIALS_X:-12} \
        --data-dir "$OUT/tune-extreme" --json >"$OUT/tune-extreme.json" 2>"$OUT/tune-extreme.err"
    python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print({k:d.get(k) for k in ('best','best_trial','trials','speedup_vs','best_plan')})" "$OUT/tune-extreme.json"
    rm -rf "$OUT"/tune-*/
fi
if has ceiling; then
    # How fast could any plan of the extreme-skew workload be on this cluster? The workload beside
    # the same shape (8 tables, dim 64, pooling 20, batch 256: the same pooled replies) with tables
    # of 2,000 rows, where every row stays in cache and the engine is nearly free. Both behind one
    # coordinator of 2 workers x 4 cores, alternated; the small tables' best bounds what any
    # placement of the real tables can reach through this coordinator.
    spare=$((ncpu - 4))-$((ncpu - 1))
    CW="--preset synthetic --tables 8 --dim 64 --pooling 20 --batch 256"
    up "$OUT/upc" --workers 2 --cores-per-worker 4 $CW --rows 2000000 --dist hotset:0.99:0.001 || true
    for r in 1 2; do
        for rd in 2000000:hotset:0.99:0.001 2000:uniform; do
            for s in round-robin all-replicate; do
                f="$OUT/ceiling-${rd%%:*}-$s-$r.json"
                log "ceiling round $r: $s, --rows ${rd%%:*} --dist ${rd#*:}"
                taskset -c $spare "$E" bench --coordinator "$COORD" --cluster "$CLUSTER" $CW --rows ${rd%%:*} --dist ${rd#*:} --strategy $s \
                    --concurrency 16 --duration $SECS --json >"$f" 2>"$f.err"
                python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print({k:d.get(k) for k in ('batches_per_s','lookups_per_s','p50_us','plan')})" "$f"
            done
        done
    done
    down
fi

if has memtune; then
    # Tuning where every worker cannot hold every table (all-replicate does not fit): placement
    # has to split the model, which is where plans differ most.
    n=0
    while read -r w; do
        [ -z "$w" ] && continue
        n=$((n + 1))
        log "memtune $n: $w"
        "$E" tune --local --workers 2 --cores-per-worker 4 $w --trials ${TUNE_TRIALS_M:-12} --time-limit ${TUNE_LIMIT_M:-150} \
            --data-dir "$OUT/memtune-$n" --json >"$OUT/memtune-$n.json" 2>"$OUT/memtune-$n.err"
        python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print({k:d.get(k) for k in ('best','best_trial','trials','baselines','speedup_vs','best_plan','model_error')})" "$OUT/memtune-$n.json"
    done <<<"${MEMTUNE_W:-"--preset synthetic --tables 8 --rows 2000000 --dim 64 --pooling 20 --dist hotset:0.99:0.001 --worker-memory 3G"}"
    rm -rf "$OUT"/memtune-*/
fi
rm -rf "$OUT"/up*/ "$OUT"/upo*/
log done
