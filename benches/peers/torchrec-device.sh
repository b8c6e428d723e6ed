#!/usr/bin/env bash
# TorchRec's planner's plans beside embtune's auto and tuned plans, measured in the same runs, for
# BENCHMARKS.md ("TorchRec's planner beside embtune"). Made for the 16-core device machine, which
# cannot install TorchRec: the plans were made here by torchrec_planner.py and are read from
# $PLANS (benches/peers/results: WORKLOAD-WxC.torchrec.json). Needs only a prebuilt embtune and
# python3 (for the summary).
#
# Usage, from the repository root:
#   EMBTUNE=path/to/embtune OUT=dir bash benches/peers/torchrec-device.sh
# Knobs (environment): WORKLOADS (default the four below), SINGLE (one worker's shape, default
# 1x8), CLUSTER (default 2x4), TRIALS (search trials per job, default 12), ROUNDS and ROUND_SECS
# (of the in-process comparison, default 5 and 2), H2H (head-to-head rounds, default 5), PLANS,
# TUNE_EXTRA (more flags for the tune jobs, e.g. "--round-secs 1 --max-rounds 3").
#
# Per workload:
#  1. SINGLE, through a local cluster of one worker: `embtune tune --local --workers 1
#     --cores-per-worker C --baseline-plan torchrec=... --baseline-plan auto=...`; its head-to-head
#     races the tuned plan, the five strategies, TorchRec's plan and auto, side by side.
#  2. SINGLE, in-process: `embtune compare --cores C --variants auto,tuned=FILE,torchrec=FILE`,
#     the tuned plan being job 1's best: the three plans on the local engine, alternating rounds.
#  3. CLUSTER: `embtune tune --local --workers W --cores-per-worker C` with TorchRec's plan for
#     W x C and auto as named baselines.
# Output: OUT/WORKLOAD-SHAPE.tune.json (tune --json), OUT/WORKLOAD-SHAPE.compare.json (compare
# --json), OUT/summary.json (the speed-ups over TorchRec's plan), logs beside them.
set -uo pipefail
E=${EMBTUNE:-embtune}
OUT=${OUT:-torchrec-out}
HERE=$(cd "$(dirname "$0")" && pwd)
PLANS=${PLANS:-$HERE/results}
WORKLOADS=${WORKLOADS:-criteo-terabyte@0.02 criteo-kaggle@0.05 avazu taobao}
SINGLE=${SINGLE:-1x8}
CLUSTER=${CLUSTER:-2x4}
TRIALS=${TRIALS:-12}
ROUNDS=${ROUNDS:-5}
ROUND_SECS=${ROUND_SECS:-2}
H2H=${H2H:-5}
mkdir -p "$OUT"
log() { echo "### $*" | tee -a "$OUT/summary.txt"; }
flags() { local p=${1%@*} s=${1#*@}; if [ "$p" = "$1" ]; then echo "--preset $p"; else echo "--preset $p --scale $s"; fi; }

"$E" --version | tee "$OUT/version.txt"
{ nproc; lscpu 2>/dev/null | head -20; free -g 2>/dev/null; } >"$OUT/env.txt"

tune_job() { # WORKLOAD SHAPE
    local w=$1 shape=$2 workers=${2%x*} cores=${2#*x}
    local tr="$PLANS/$w-$shape.torchrec.json" auto="$OUT/$w-$shape.auto.json" data="$OUT/data-$w-$shape"
    [ -f "$tr" ] || { echo "missing $tr: run torchrec_planner.py plans --topologies $shape" >&2; return 1; }
    # auto as this machine makes it for this shape (it depends on the workers' memory).
    "$E" plan export $(flags "$w") --strategy auto --workers "$workers" --cores "$cores" --out "$auto" 2>>"$OUT/$w-$shape.err"
    log "tune $w on $workers x $cores, TorchRec's plan and auto raced as baselines"
    rm -rf "$data"
    "$E" tune --local --workers "$workers" --cores-per-worker "$cores" $(flags "$w") --trials "$TRIALS" \
        --head-to-head-rounds "$H2H" ${TUNE_EXTRA:-} --baseline-plan "torchrec=$tr" --baseline-plan "auto=$auto" \
        --data-dir "$data" --json >"$OUT/$w-$shape.tune.json" 2>>"$OUT/$w-$shape.err"
    python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print({k:d.get(k) for k in ('best','best_plan','speedup_vs')})" \
        "$OUT/$w-$shape.tune.json" | tee -a "$OUT/summary.txt"
}

for w in $WORKLOADS; do
    tune_job "$w" "$SINGLE" || continue
    job=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['job'])" "$OUT/$w-$SINGLE.tune.json")
    tuned="$OUT/$w-$SINGLE.tuned.json"
    "$E" plan export --job "$job" --data-dir "$OUT/data-$w-$SINGLE" --out "$tuned" 2>>"$OUT/$w-$SINGLE.err"
    # The plans side by side in the engine: on the device this is one worker of ${SINGLE#*x} cores.
    log "compare $w in-process, ${SINGLE#*x} cores: auto, tuned, torchrec"
    "$E" compare --cores "${SINGLE#*x}" $(flags "$w") --rounds "$ROUNDS" --round-secs "$ROUND_SECS" \
        --variants "auto,tuned=$tuned,torchrec=$PLANS/$w-$SINGLE.torchrec.json" --json \
        >"$OUT/$w-$SINGLE.compare.json" 2>>"$OUT/$w-$SINGLE.err"
    python3 -c "import json,sys;[print(' ',v['label'],round(v['lookups_per_s']/1e6,1),'M/s',round(v['speedup_vs_first'],2),'x auto') for v in json.load(open(sys.argv[1]))['variants']]" \
        "$OUT/$w-$SINGLE.compare.json" | tee -a "$OUT/summary.txt"
    tune_job "$w" "$CLUSTER"
    rm -rf "$OUT/data-$w-$CLUSTER"
done

python3 - "$OUT" "$SINGLE" "$CLUSTER" $WORKLOADS <<'PY' | tee "$OUT/summary.json"
import json, os, sys
out, single, cluster, workloads = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
rows = []
for w in workloads:
    row = {"workload": w}
    for shape in (single, cluster):
        p = os.path.join(out, f"{w}-{shape}.tune.json")
        if os.path.exists(p):
            d = json.load(open(p))
            h = d.get("head_to_head") or {}
            row[f"cluster_{shape}"] = {
                "best_plan": d.get("best_plan"),
                "best": d.get("best"),
                "torchrec": (h.get("baselines") or {}).get("torchrec"),
                "auto": (h.get("baselines") or {}).get("auto"),
                "best_vs_torchrec": d["speedup_vs"].get("torchrec"),
                "best_vs_auto": d["speedup_vs"].get("auto"),
            }
    p = os.path.join(out, f"{w}-{single}.compare.json")
    if os.path.exists(p):
        v = {x["label"]: x for x in json.load(open(p))["variants"]}
        row[f"engine_{single}"] = {
            k: {"lookups_per_s": x["lookups_per_s"], "vs_auto": x["speedup_vs_first"]} for k, x in v.items()
        }
        if "torchrec" in v:
            row[f"engine_{single}"]["auto_vs_torchrec"] = 1 / v["torchrec"]["speedup_vs_first"]
    rows.append(row)
print(json.dumps(rows, indent=1))
PY
