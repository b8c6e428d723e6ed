#!/usr/bin/env bash
# The gather ceiling beside the engine, 16 threads and 1, batches of 256 and 2048 samples,
# alternated twice (BENCHMARKS.md, "Engine: the gather ceiling", the 2026-12-02 third session).
#   EMBTUNE=.devbin/embtune OUT=out bash benches/cluster/limit-pool.sh
set -u
E=${EMBTUNE:-.devbin/embtune}
OUT=${OUT:-out}
mkdir -p "$OUT"
for r in 1 2; do
    for t in 16 1; do
        for b in 256 2048; do
            f="$OUT/limit-t$t-b$b-r$r.json"
            "$E" limit --threads $t --table-gib 4 --rounds 3 --round-secs 1 --prefetch 16,24 --batch $b --json >"$f" 2>/dev/null
            python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print('threads $t batch $b run $r: ceiling', round(d['ceiling_best']/1e6,1), 'M, engine', round(d['engine_best']/1e6,1), 'M, ratio', round(d['ratio'],3), '; rows per pass', d['pool_row_bytes']>>20, 'MiB, LLC', d['llc_bytes']>>20, 'MiB')" "$f"
        done
    done
done
