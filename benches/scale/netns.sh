#!/usr/bin/env bash
# Issue 19, item 5: more worker hosts. Runs the network-namespace cluster test
# (cli/tests/cluster_netns.rs) with WORKERS worker namespaces (default 8), each link delayed
# 2 ms +- 0.5 ms with 1% loss each way where the kernel has netem, and benches of SECS seconds
# (default 5). The test deploys size-threshold (small tables replicated, large ones sharded
# over every worker), benches it verified, SIGKILLs a worker that holds shards (detection time),
# checks that replicated tables are still served and full batches refused with a typed error,
# restarts it and benches again, direct and through the coordinator's relay.
# Needs root and iproute2. Prints the test's lines and writes them to $OUT/netns.txt.
#
# Usage: sudo OUT=dir bash benches/scale/netns.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-netns-out}
mkdir -p "$OUT"
export EMBTUNE_NETNS_REQUIRED=1 EMBTUNE_NETNS_WORKERS=${WORKERS:-8} EMBTUNE_NETNS_BENCH_SECS=${SECS:-5}
cargo test --locked -p embtune --test cluster_netns -- --nocapture 2>&1 | tee "$OUT/netns.log"
grep -E '^\[|links:|SKIPPED|warning' "$OUT/netns.log" | tee "$OUT/netns.txt"
