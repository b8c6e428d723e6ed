#!/usr/bin/env bash
# How much faster could any data flow make the extreme hot set? The hot set beside a table of
# only as many rows as its hot part, contiguous (every look-up a cache hit, no TLB misses, no
# DRAM), 1 core, alternated twice (BENCHMARKS.md, "Engine: every flow on skewed tables").
#   EMBTUNE=.devbin/embtune OUT=out bash benches/cluster/flow-bound.sh
set -u
E=${EMBTUNE:-.devbin/embtune}
OUT=${OUT:-out}
mkdir -p "$OUT"
W="--preset synthetic --dim 64 --pooling 20 --cores 1 --rounds 3 --json"
for r in 1 2; do
    "$E" compare $W --tables 8 --rows 1000000 --dist hotset:0.99:0.001 \
        --variants round-robin:direct,round-robin:direct:pf0,round-robin:hot >"$OUT/hot99-$r.json" 2>/dev/null
    "$E" compare $W --tables 8 --rows 1000000 --dist hotset:1.0:0.001 \
        --variants round-robin:direct,round-robin:direct:pf0 >"$OUT/hot100-$r.json" 2>/dev/null
    "$E" compare $W --tables 8 --rows 1000 --dist uniform \
        --variants round-robin:direct,round-robin:direct:pf0 >"$OUT/small-$r.json" 2>/dev/null
    for f in hot99 hot100 small; do
        python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print('$f run $r', [(v['label'], round(v['lookups_per_s']/1e6,1)) for v in d['variants']])" "$OUT/$f-$r.json"
    done
done
