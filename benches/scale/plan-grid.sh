#!/usr/bin/env bash
# Issue 19, item 4: planning at scale, simulated. Plans 1,000, 5,000 and 10,000 tables (the
# dlrm-2021 preset's spreads of rows and pooling) on 8, 100 and 1,000 nodes of 64 cores with
# the cost model and the search only (nothing deployed), and records per cell the time of every
# baseline, of the cost model's set-up and of the model-driven search, and the planner's peak
# memory. Each cell runs in its own process so that its peak memory is its own.
#
# Usage: EMBTUNE=target/release/embtune OUT=dir bash benches/scale/plan-grid.sh
# Knobs: TABLES (default "1000 5000 10000"), NODES (default "8 100 1000"), CORES (64),
#        ITERATIONS (3000, the tuner's default search length), TIMEOUT (seconds per cell, 900),
#        PARALLEL (cells run at once, default 1: each cell plans on one thread, so on a machine
#        with spare cores several can run side by side without slowing each other much).
set -uo pipefail
E=${EMBTUNE:-embtune}
OUT=${OUT:-plan-grid-out}
TABLES=${TABLES:-"1000 5000 10000"}
NODES=${NODES:-"8 100 1000"}
CORES=${CORES:-64}
ITERATIONS=${ITERATIONS:-3000}
TIMEOUT=${TIMEOUT:-900}
PARALLEL=${PARALLEL:-1}
mkdir -p "$OUT"
{ lscpu; free -g; uname -a; } >"$OUT/env.txt" 2>&1
# /usr/bin/time -v gives the peak memory where it is installed; the JSON has it too.
TIMEV=(); [ -x /usr/bin/time ] && TIMEV=(/usr/bin/time -v)
cell() {
    local t=$1 n=$2
    timeout "$TIMEOUT" "${TIMEV[@]}" "$E" plan scale --tables "$t" --nodes "$n" --cores "$CORES" --iterations "$ITERATIONS" \
        --quiet --json "$OUT/cell-$t-$n.json" >"$OUT/cell-$t-$n.txt" 2>"$OUT/cell-$t-$n.err"
    echo $? >"$OUT/cell-$t-$n.rc"
}
for t in $TABLES; do
    for n in $NODES; do
        while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do wait -n; done
        cell "$t" "$n" &
    done
done
wait
for t in $TABLES; do
    for n in $NODES; do
        echo "### $t tables on $n nodes x $CORES cores" | tee -a "$OUT/summary.txt"
        rc=$(cat "$OUT/cell-$t-$n.rc")
        [ "$rc" != 0 ] && echo "cell exited $rc (124: over ${TIMEOUT}s)" | tee -a "$OUT/summary.txt"
        cat "$OUT/cell-$t-$n.txt" | tee -a "$OUT/summary.txt"
        grep -E "Maximum resident|Elapsed" "$OUT/cell-$t-$n.err" | tee -a "$OUT/summary.txt"
    done
done
# One table of every cell, and the growth of the search's time with tables x cores over them.
python3 - "$OUT" <<'PY' | tee -a "$OUT/summary.txt"
import glob, json, math, sys
cells = []
for f in sorted(glob.glob(sys.argv[1] + "/cell-*.json")):
    cells += json.load(open(f))["cells"]
cells.sort(key=lambda c: (c["tables"], c["nodes"]))
names = []
for c in cells:
    for b in c["baselines"]:
        if b["strategy"] not in names:
            names.append(b["strategy"])
print("| tables | nodes | cores | " + " | ".join(names) + " | model | search (moves) | per move | total | peak RSS |")
print("|" + "---|" * (len(names) + 9))
for c in cells:
    row = [str(c["tables"]), str(c["nodes"]), str(c["cores"])]
    for n in names:
        b = next((b for b in c["baselines"] if b["strategy"] == n), None)
        row.append("-" if b is None else ("skipped" if b["note"] else f'{b["plan_s"] + b["predict_s"]:.2f} s'))
    row += [f'{c["model_s"]:.2f} s', f'{c["search_s"]:.1f} s ({c["search_iterations"]})',
            f'{1e3 * c["search_s"] / max(1, c["search_iterations"]):.2f} ms', f'{c["total_s"]:.1f} s',
            "-" if c["peak_rss_mib"] is None else f'{c["peak_rss_mib"]:.0f} MiB']
    print("| " + " | ".join(row) + " |")
pts = [(math.log(c["tables"] * c["cores"]), math.log(c["search_s"])) for c in cells if c["search_s"] > 0]
if len(pts) > 1:
    mx = sum(p[0] for p in pts) / len(pts); my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx > 0:
        print(f"search time ~ (tables x cores)^{sum((p[0]-mx)*(p[1]-my) for p in pts)/sxx:.2f} over {len(pts)} cells")
PY
