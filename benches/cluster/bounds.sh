#!/usr/bin/env bash
# The bounds behind issue 15's unmet targets, measured on the device host (BENCHMARKS.md,
# "Cluster: the direct path"). Usage: EMBTUNE=path/to/embtune OUT=dir bash benches/cluster/bounds.sh
#
# - netbench: the transport's own round trip (QUIC with TLS, and plain TCP beside it, on
#   loopback, no engine work) for replies of the sizes the latency phase moves: 51,332 bytes
#   (criteo-kaggle batch 256, auto, f16) and 479,760 bytes (all tables replicated, f32).
# - engine scaling: the scale-out workloads in the in-process engine on 4 and 12 cores of one
#   host: what 3 workers x 4 cores can reach at most when they share that host's memory system.
set -uo pipefail
E=${EMBTUNE:-embtune}
OUT=${OUT:-bounds-out}
ROUNDS=${ROUNDS:-2}
mkdir -p "$OUT"
log() { echo "### $*" | tee -a "$OUT/summary.txt"; }
for size in 51332 479760; do
    log "netbench --size $size"
    "$E" cluster netbench --size $size --rounds 5 --round-secs 2 --json >"$OUT/netbench-$size.json"
    python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print({k:d[k] for k in ['tcp_rtt_us','quic_rtt_us']})" "$OUT/netbench-$size.json" | tee -a "$OUT/summary.txt"
done
while read -r name w; do
    [ -z "$name" ] && continue
    for r in $(seq 1 "$ROUNDS"); do
        for c in 4 12; do
            log "engine $name round $r: all-shard on $c cores (CPUs 0-$((c - 1)))"
            taskset -c 0-$((c - 1)) "$E" bench $w --strategy all-shard --cores $c --concurrency 16 --duration 3 --json \
                >"$OUT/engine-$name-$c-$r.json" 2>/dev/null
            python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print({k:d[k] for k in ['batches_per_s','lookups_per_s']})" "$OUT/engine-$name-$c-$r.json" | tee -a "$OUT/summary.txt"
        done
    done
done <<<"${SCALE_W:-"dram --preset synthetic --tables 12 --rows 1000000 --dim 256 --pooling 300 --batch 256 --dist zipf:0.8
cache --preset synthetic --tables 12 --rows 20000 --dim 32 --pooling 200 --batch 256"}"
log done
