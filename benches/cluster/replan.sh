#!/usr/bin/env bash
# Live re-planning, measured (BENCHMARKS.md, "Live re-planning"). Usage:
#   EMBTUNE=path/to/embtune OUT=dir bash benches/cluster/replan.sh
#
# A local cluster (`embtune up`, WORKERS x CORES on loopback) serves a synthetic model whose
# plan (greedy-cost: every table owned by one core, balanced for the planned traffic) was made
# for ten ids per sample in every table. Traffic then drifts: table T1 pools DRIFT ids, so the
# core that owns it does most of the work. The load is `embtune bench --keep-plan` from one
# client process: BEFORE_S seconds of planned traffic, then AFTER_S seconds drifted, each second
# a row of $OUT/timeline.csv (bench --timeline), once with `--replan off` and once with
# `--replan auto`, in alternating rounds. Each run is verified against the reference and counts
# its errors ($OUT/runs.csv).
#
# Then the cost of watching: the planned traffic on a cluster whose workers count nothing into
# hot-row summaries and whose coordinator does not drain them (EMBTUNE_TRAFFIC_SAMPLE=0,
# --replan off) against one that does (the default sampling, --replan suggest), in
# alternating rounds of WATCH_SLICES slices each; $OUT/watch.csv.
set -uo pipefail
E=${EMBTUNE:-embtune}
OUT=${OUT:-replan-out}
WORKERS=${WORKERS:-2}
CORES=${CORES:-1}
SLICE=${SLICE:-2}
BEFORE_S=${BEFORE_S:-10}
AFTER_S=${AFTER_S:-50}
INTERVAL=${INTERVAL:-4}
ROUNDS=${ROUNDS:-1}
DRIFT=${DRIFT:-120}
WATCH_SLICES=${WATCH_SLICES:-6}
WATCH_ROUNDS=${WATCH_ROUNDS:-2}
SYNTH=${SYNTH:-"--preset synthetic --tables 8 --rows 200000 --dim 64 --pooling 10 --dist zipf:1.05"}
mkdir -p "$OUT"
"$E" workload show $SYNTH --json >"$OUT/planned.json"
python3 - "$OUT" "$DRIFT" <<'PY'
import json, sys
out, drift = sys.argv[1], int(sys.argv[2])
s = json.load(open(f"{out}/planned.json"))
s["tables"][0]["pooling"] = drift
json.dump(s, open(f"{out}/drifted.json", "w"), indent=1)
PY

# Starts `embtune up` in the background with the given flags; sets UP_PID and ADDR.
start() {
    local dir=$1
    shift
    rm -rf "$dir"
    "$E" up --model "$OUT/planned.json" --workers "$WORKERS" --cores-per-worker "$CORES" \
        --strategy greedy-cost --loadgens 0 --client-memory 0 --data-dir "$dir" "$@" >"$dir.up.log" 2>&1 &
    UP_PID=$!
    for _ in $(seq 1 120); do
        ADDR=$(awk '/^coordinator:/{print $2}' "$dir.up.log" 2>/dev/null)
        grep -q '^serving' "$dir.up.log" 2>/dev/null && [ -n "$ADDR" ] && return 0
        sleep 0.5
    done
    echo "embtune up did not start: $(cat "$dir.up.log")" >&2
    exit 1
}
stop() {
    kill -INT "$UP_PID" 2>/dev/null
    wait "$UP_PID" 2>/dev/null
}
# One stretch of load from one client process, `secs` seconds of workload `phase`: its
# seconds go to $OUT/timeline.csv (`mode,round,t_s,phase,queries_per_s`, t_s counted from
# `offset`), its totals to $OUT/runs.csv.
load() {
    local mode=$1 r=$2 phase=$3 secs=$4 offset=$5 dir=$6
    local json
    json=$("$E" bench --coordinator "$ADDR" --cluster "$dir/cluster" --model "$OUT/$phase.json" --keep-plan \
        --duration "$secs" --warmup 0.5 --verify --json --timeline "$OUT/seconds.tmp" 2>>"$OUT/bench.err")
    python3 - "$OUT" "$mode" "$r" "$phase" "$offset" "$json" <<'PY'
import csv, json, sys
out, mode, r, phase, offset, raw = sys.argv[1:]
with open(f"{out}/seconds.tmp") as f, open(f"{out}/timeline.csv", "a") as t:
    for row in csv.DictReader(f):
        t.write(f"{mode},{r},{float(row['t_s']) + float(offset):.1f},{phase},{row['queries_per_s']}\n")
try:
    d = json.loads(raw)
    line = [mode, r, phase, round(d["batches_per_s"], 1), round(d["p99_us"]), d["errors"], d.get("verified")]
except ValueError:
    line = [mode, r, phase, "", "", "", "no report"]
with open(f"{out}/runs.csv", "a") as f:
    f.write(",".join(map(str, line)) + "\n")
PY
}
# One slice of the watching comparison: appends `label,slice,phase,batches_per_s,p99_us,errors,verified`.
slice() {
    local csv=$1 label=$2 n=$3 phase=$4 dir=$5
    local json
    json=$("$E" bench --coordinator "$ADDR" --cluster "$dir/cluster" --model "$OUT/$phase.json" --keep-plan \
        --duration "$SLICE" --warmup 0.2 --verify --json 2>>"$OUT/bench.err")
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(",".join(map(str,[sys.argv[2],sys.argv[3],sys.argv[4],round(d["batches_per_s"],1),round(d["p99_us"]),d["errors"],d.get("verified")])))' \
        "$json" "$label" "$n" "$phase" >>"$csv" 2>>"$OUT/bench.err" || echo "$label,$n,$phase,,,," >>"$csv"
}

echo "mode,round,t_s,phase,queries_per_s" >"$OUT/timeline.csv"
echo "mode,round,phase,batches_per_s,p99_us,errors,verified" >"$OUT/runs.csv"
for r in $(seq 1 "$ROUNDS"); do
    for mode in off auto; do
        dir="$OUT/$mode-$r"
        start "$dir" --replan "$mode" --replan-interval "$INTERVAL"
        load "$mode" "$r" planned "$BEFORE_S" 0 "$dir"
        load "$mode" "$r" drifted "$AFTER_S" "$BEFORE_S" "$dir"
        [ "$mode" = auto ] && "$E" plan live --coordinator "$ADDR" --cluster "$dir/cluster" --json >"$OUT/live-$r.json"
        stop
    done
done

echo "mode,round,slice,phase,batches_per_s,p99_us,errors,verified" >"$OUT/watch.csv"
for r in $(seq 1 "$WATCH_ROUNDS"); do
    for mode in off on; do
        dir="$OUT/watch-$mode-$r"
        if [ "$mode" = off ]; then
            EMBTUNE_TRAFFIC_SAMPLE=0 start "$dir" --replan off
        else
            start "$dir" --replan suggest --replan-interval "$INTERVAL"
        fi
        for i in $(seq 1 "$WATCH_SLICES"); do slice "$OUT/watch.tmp" "$mode" "$i" planned "$dir"; done
        sed "s/^\([a-z]*\),/\1,$r,/" "$OUT/watch.tmp" >>"$OUT/watch.csv"
        rm -f "$OUT/watch.tmp"
        stop
    done
done
python3 "$(dirname "$0")/plot_replan.py" "$OUT"
