#!/usr/bin/env bash
# One call on the GPU machine: check the driver, run the GPU tests and the correctness checks,
# then time embtune's kernels beside PyTorch's embedding_bag on MICRO'24 (uniform, hot-set,
# the real trace) and Criteo Kaggle. Logs and JSON under $OUT; a short table printed last.
#
# Run from the repository root with the binaries built here and carried:
#   cargo build --release --features gpu -p embtune && cp target/release/embtune .devbin/ && strip .devbin/embtune
#   cp ../shared/traces/reuse_low_table_500K.txt .devdata/
#   bash benches/gpu/device.sh                 # every phase
#   PHASES="micro" DISTS="uniform" bash benches/gpu/device.sh
# Variables: PHASES (env tests verify micro rowtypes criteo, and cluster: not in the default), DISTS (uniform hotset trace onerow),
# SWEEP (gpu-bench variant flags for micro24; SWEEP_<dist> overrides it for one distribution),
# REPS, ROUNDS, BIN, TESTBIN.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/embtune-gpu-out}
LOG=/tmp/embtune-gpu-logs
rm -rf "$LOG"; mkdir -p "$OUT" "$LOG"
BIN=${BIN:-.devbin/embtune}
TESTBIN=${TESTBIN:-.devbin/gpu_tests}
PHASES=${PHASES:-env tests verify micro rowtypes criteo}
DISTS=${DISTS:-uniform hotset trace onerow}
REPS=${REPS:-100}
ROUNDS=${ROUNDS:-3}
SWEEP=${SWEEP:---variant all --prefetch 4,8,16 --hot-prefetch 8 --split 1,4,8 --l2 both,none}
SWEEP_trace=${SWEEP_trace:---variant all --prefetch 4,8 --hot-prefetch 8 --split 4,8 --hot-rows auto,2048,512 --l2 both,window,hint,none}
TRACE=.devdata/reuse_low_table_500K.txt
has() { [[ " $PHASES " == *" $1 "* ]]; }
step() { echo "=== $* ($(date +%T))"; }

# --- the driver, NVRTC and the tools --------------------------------------------------------
nvdirs=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64; do
  [ -e "$d/libnvrtc.so" ] || ls "$d"/libnvrtc.so.* >/dev/null 2>&1 && nvdirs="$nvdirs:$d"
done
pyn=$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]) + "/nvidia")' 2>/dev/null)
for d in "$pyn"/cu13/lib "$pyn"/cuda_nvrtc/lib; do ls "$d"/libnvrtc.so* >/dev/null 2>&1 && nvdirs="$nvdirs:$d"; done
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}$nvdirs"
if has env; then
  step env
  { nvidia-smi; nvidia-smi -q | grep -iE "driver version|cuda version|product name|persistence|clocks|l2" ;
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; ldconfig -p | grep -E "libcuda|nvrtc";
    python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'; nproc; } > "$LOG/env.txt" 2>&1
  grep -E "Driver Version|Product Name|torch" "$LOG/env.txt" | head -4
fi
chmod +x "$BIN" "$TESTBIN" 2>/dev/null

# --- the GPU tests (the same binary CI builds, where they skip) -------------------------------
if has tests && [ -x "$TESTBIN" ]; then
  step tests
  timeout 240 "$TESTBIN" gpu:: --nocapture --test-threads 1 > "$LOG/tests.txt" 2>&1; echo "tests rc=$?"
  tail -4 "$LOG/tests.txt"
fi

# --- correctness: every variant and row type, small shapes, on fresh batches ------------------
if has verify; then
  step verify
  for rt in f32 f16 int8; do
    for dim in 13 16 64 128 256; do
      timeout 120 "$BIN" gpu-bench --preset synthetic --tables 3 --rows 20000 --dim $dim --pooling uniform:0:60 \
        --dist zipf:1.05 --batch 64 --row-type $rt --variant all --prefetch 2,8 --split 1,2 --hot-rows 500 \
        --verify --verify-batches 3 --reps 3 --rounds 1 --warmup 1 --copy-mib 0 --e2e-reps 0 \
        --json-out "$LOG/verify_${rt}_${dim}.json" > "$LOG/verify_${rt}_${dim}.txt" 2>&1
      echo "verify $rt dim $dim rc=$? $(grep -c ' yes (' "$LOG/verify_${rt}_${dim}.txt") variants verified, $(grep -c ' NO ' "$LOG/verify_${rt}_${dim}.txt") failed"
    done
  done
fi

# --- MICRO'24: 12 tables x 500K rows x dim 128, pooling 150, batch 2048 ------------------------
# onerow: every look-up of a table reads the same row (PyTorch's 0.75 ms in the issue).
dist_of() { case $1 in uniform) echo uniform;; hotset) echo hotset:0.99:0.001;; trace) echo "trace:$TRACE";; onerow) echo hotset:1:0.000002;; *) echo "$1";; esac; }
if has micro; then
  for d in $DISTS; do
    dist=$(dist_of "$d")
    sweep_var="SWEEP_$d"; sweep=${!sweep_var:-$SWEEP}
    step "micro24 $d: embtune ($sweep)"
    timeout 300 "$BIN" gpu-bench --preset micro24 --dist "$dist" $sweep --verify --reps "$REPS" --rounds "$ROUNDS" \
      --json-out "$LOG/gpu_micro24_$d.json" > "$LOG/gpu_micro24_$d.txt" 2>&1; echo "rc=$?"
    grep -E "copy|error" "$LOG/gpu_micro24_$d.txt" | head -3
    step "micro24 $d: pytorch"
    rm -rf /tmp/dump && "$BIN" workload dump --preset micro24 --dist "$dist" --batches 8 --out /tmp/dump > /dev/null
    timeout 200 python3 benches/gpu/torch_embedding_bag.py --dump /tmp/dump --reps "$REPS" --rounds "$ROUNDS" --label "micro24_$d" \
      --json-out "$LOG/torch_micro24_$d.json" > /dev/null 2> "$LOG/torch_micro24_$d.txt"; echo "rc=$?"
    tail -n 2 "$LOG/torch_micro24_$d.txt"
  done
fi

# --- MICRO'24 with f16 and int8 rows (PyTorch's peer stays f32: compare with its f32 figure) ---
if has rowtypes; then
  for rt in f16 int8; do
    for d in uniform trace; do
      dist=$(dist_of "$d")
      step "micro24 $d $rt: embtune"
      timeout 200 "$BIN" gpu-bench --preset micro24 --dist "$dist" --row-type $rt --variant baseline,prefetch,hot \
        --prefetch 4,8 --hot-prefetch 8 --split 1,4 --l2 none --verify --reps "$REPS" --rounds "$ROUNDS" --copy-mib 0 \
        --json-out "$LOG/gpu_micro24_${d}_$rt.json" > "$LOG/gpu_micro24_${d}_$rt.txt" 2>&1; echo "rc=$?"
    done
  done
fi

# --- Criteo Kaggle at full scale (26 tables, 33.8M rows, dim 16; 2.2 GB) ----------------------
if has criteo; then
  for b in 256 16384; do
    step "criteo-kaggle batch $b: embtune"
    timeout 240 "$BIN" gpu-bench --preset criteo-kaggle --scale 1 --batch $b --variant baseline,prefetch,hot --prefetch 4 \
      --verify --reps "$REPS" --rounds "$ROUNDS" --copy-mib 0 --json-out "$LOG/gpu_criteo_b$b.json" > "$LOG/gpu_criteo_b$b.txt" 2>&1
    echo "rc=$?"; grep -E "error" "$LOG/gpu_criteo_b$b.txt" | head -3
    step "criteo-kaggle batch $b: pytorch"
    rm -rf /tmp/dump && "$BIN" workload dump --preset criteo-kaggle --scale 1 --batch $b --batches 8 --out /tmp/dump > /dev/null
    timeout 200 python3 benches/gpu/torch_embedding_bag.py --dump /tmp/dump --reps "$REPS" --rounds "$ROUNDS" --copy-mib 0 \
      --label "criteo_b$b" --json-out "$LOG/torch_criteo_b$b.json" > /dev/null 2> "$LOG/torch_criteo_b$b.txt"; echo "rc=$?"
  done
fi

# --- a GPU worker in a cluster (PHASES=cluster): `up --gpu 0` beside two CPU workers ----------
# Queries go through the coordinator to the device and the CPU workers, checked against the
# reference (--verify), under three plans; then a short tuning job on that cluster.
if has cluster; then
  step "cluster: up --gpu 0"
  D=/tmp/embtune-up-gpu; rm -rf "$D"
  W=(--preset criteo-kaggle --scale "${CLUSTER_SCALE:-0.05}")
  "$BIN" up --workers 2 --cores-per-worker 4 --gpu 0 "${W[@]}" --data-dir "$D" > "$LOG/up.txt" 2> "$LOG/up.err" &
  UP=$!
  for _ in $(seq 120); do grep -q '^dashboard:' "$LOG/up.txt" && break; sleep 1; done
  C=$(sed -n 's/^coordinator: //p' "$LOG/up.txt")
  cat "$LOG/up.err"
  "$BIN" cluster status --coordinator "$C" --cluster "$D/cluster" --json > "$OUT/gpu_cluster_status.json"
  python3 -c 'import json,sys; [print("worker", w["id"], w["name"], w["cores"], "cores", w.get("gpu")) for w in json.load(open(sys.argv[1]))["workers"]]' "$OUT/gpu_cluster_status.json" 2>/dev/null || cat "$OUT/gpu_cluster_status.json"
  for s in auto round-robin all-shard; do
    timeout 120 "$BIN" bench --coordinator "$C" --cluster "$D/cluster" "${W[@]}" --strategy $s --verify --duration 3 --json \
      > "$OUT/gpu_cluster_$s.json" 2> "$LOG/gpu_cluster_$s.err"
    echo "bench $s rc=$? $(grep -oE '"(lookups_per_s|p50_us|verified)":[^,]*' "$OUT/gpu_cluster_$s.json" | head -3 | tr '\n' ' ')"
  done
  timeout 240 "$BIN" tune --coordinator "$C" --cluster "$D/cluster" "${W[@]}" --trials 4 --data-dir "$D/tune-copy" --json \
    > "$OUT/gpu_tune.json" 2> "$LOG/gpu_tune.err"; echo "tune rc=$?"; head -c 600 "$OUT/gpu_tune.json"; echo
  kill -INT $UP; wait $UP; echo "up stopped rc=$?"
  cp "$D"/logs/*.log "$LOG/" 2>/dev/null
  # The same cluster without the GPU, for comparison in the same run.
  step "cluster: up without a GPU"
  rm -rf "$D"
  "$BIN" up --workers 2 --cores-per-worker 4 "${W[@]}" --data-dir "$D" > "$LOG/up-cpu.txt" 2> "$LOG/up-cpu.err" &
  UP=$!
  for _ in $(seq 120); do grep -q '^dashboard:' "$LOG/up-cpu.txt" && break; sleep 1; done
  C=$(sed -n 's/^coordinator: //p' "$LOG/up-cpu.txt")
  timeout 120 "$BIN" bench --coordinator "$C" --cluster "$D/cluster" "${W[@]}" --strategy auto --verify --duration 3 --json \
    > "$OUT/cpu_cluster_auto.json" 2> "$LOG/cpu_cluster_auto.err"
  echo "bench auto (CPU only) rc=$? $(grep -oE '"(lookups_per_s|p50_us|verified)":[^,]*' "$OUT/cpu_cluster_auto.json" | head -3 | tr '\n' ' ')"
  kill -INT $UP; wait $UP
  step "bench --gpu 0 (local)"
  timeout 120 "$BIN" bench --gpu 0 --preset micro24 --scale 0.2 --verify --json > "$OUT/gpu_bench_local.json" 2> "$LOG/gpu_bench_local.err"
  echo "bench --gpu rc=$?"; tail -3 "$LOG/gpu_bench_local.err"
fi

step summary
python3 benches/gpu/summarize.py "$LOG" > "$LOG/summary.md" 2>&1
cp "$LOG/summary.md" "$OUT/summary.md"
tar czf "$OUT/logs.tar.gz" -C "$LOG" .
cat "$LOG/summary.md"
