#!/usr/bin/env python3
"""PyTorch's embedding_bag on the GPU, on the ids `embtune workload dump` wrote.

The peer of `embtune gpu-bench`: the same tables' shapes (rows x dim, f32) and the same batches
(the dump holds batches 0..K-1 of the seeded generator, which gpu-bench rotates through too).
Per batch: one torch.nn.functional.embedding_bag(ids, W_t, offsets, mode="sum") call per table
(12 for micro24), ids and offsets as int64 CUDA tensors (offsets form, include_last_offset=False),
under torch.inference_mode(). Table VALUES are random (torch.randn), not embtune's: they do not
change the speed of a gather-and-sum. Correctness of the call is checked once against a float64
sum of the same rows.

Timing: CUDA events around the whole batch (all tables), --warmup batches excluded, then --reps
batches per round, rotating through the K batches (rep i reads batch i mod K, so the L2 is not
flattered by replaying one batch), --rounds rounds; the figure is the median of the round
medians. A device-to-device copy (torch, 1 GiB, read + write bytes) is measured in the same run.

Example:
  embtune workload dump --preset micro24 --dist uniform --batches 8 --out /tmp/dump
  python3 benches/gpu/torch_embedding_bag.py --dump /tmp/dump --json-out torch_uniform.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dump", required=True, help="folder written by `embtune workload dump`")
    p.add_argument("--reps", type=int, default=200, help="timed batches per round (default 200)")
    p.add_argument("--warmup", type=int, default=20, help="untimed batches first (default 20)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--index-dtype", choices=["int64", "int32"], default="int64")
    p.add_argument("--copy-mib", type=int, default=1024, help="device-to-device copy size (0: skip)")
    p.add_argument("--label", default="", help="a name for the report (e.g. the distribution)")
    p.add_argument("--json-out", help="write the report here too")
    return p.parse_args(argv)


def copy_bandwidth(mib: int, reps: int = 20) -> float:
    n = mib << 20
    a = torch.empty(n, dtype=torch.uint8, device="cuda").fill_(0x5A)
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    times = []
    for i in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        (b if i % 2 == 0 else a).copy_(a if i % 2 == 0 else b)
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    del a, b
    torch.cuda.empty_cache()
    return 2 * n / (statistics.median(times) / 1e3)


def main(argv=None) -> int:
    args = parse_args(argv)
    dump = Path(args.dump)
    index = json.loads((dump / "index.json").read_text())
    spec = index["spec"]
    B = int(index["batch_size"])
    T = int(index["num_tables"])
    idt = torch.int64 if args.index_dtype == "int64" else torch.int32
    dev = torch.device("cuda")
    tables = spec["tables"]
    for t in tables:
        if t.get("row_type", "f32") != "f32":
            log(f"note: table {t['name']} is {t['row_type']} in the spec; the peer uses f32")
    log(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}; {T} tables, batch {B}")

    g = torch.Generator(device=dev).manual_seed(1)
    weights = [torch.randn(int(t["rows"]), int(t["dim"]), device=dev, dtype=torch.float32, generator=g) for t in tables]
    row_bytes = [4 * int(t["dim"]) for t in tables]

    batches = []
    lookups = []
    bytes_per_batch = []
    for bi in index["batches"]:
        offs = np.fromfile(dump / bi["offsets"], dtype="<u4").astype(np.int64)
        ids = np.fromfile(dump / bi["ids"], dtype="<u4").astype(np.int64)
        assert len(offs) == T * B + 1, "offsets must have tables x batch + 1 entries"
        per = []
        nbytes = 0
        for t in range(T):
            lo, hi = offs[t * B], offs[(t + 1) * B]
            tid = torch.from_numpy(ids[lo:hi]).to(dev, dtype=idt)
            toff = torch.from_numpy(offs[t * B:(t + 1) * B] - lo).to(dev, dtype=idt)
            per.append((tid, toff))
            nbytes += (hi - lo) * row_bytes[t]
        batches.append(per)
        lookups.append(len(ids))
        bytes_per_batch.append(nbytes)
    K = len(batches)
    log(f"{K} batches, {statistics.mean(lookups):.0f} look-ups and {statistics.mean(bytes_per_batch) / 1e9:.3f} GB of rows each")

    def run_batch(per):
        return [F.embedding_bag(tid, weights[t], toff, mode="sum") for t, (tid, toff) in enumerate(per)]

    with torch.inference_mode():
        # Correctness of the call on table 0, first bags of batch 0, against a float64 sum.
        out = run_batch(batches[0])
        tid, toff = batches[0][0]
        ends = torch.cat([toff[1:], torch.tensor([len(tid)], device=dev, dtype=idt)])
        w64 = weights[0].double()
        for b in range(min(B, 8)):
            ref = w64[tid[toff[b]:ends[b]]].sum(0)
            err = (out[0][b].double() - ref).abs().max().item()
            assert err < 1e-3, f"embedding_bag differs from the float64 sum by {err}"
        del out

        for i in range(args.warmup):
            run_batch(batches[i % K])
        torch.cuda.synchronize()
        round_medians = []
        samples = []
        rep = args.warmup
        for r in range(args.rounds):
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(args.reps + 1)]
            ev[0].record()
            for i in range(args.reps):
                run_batch(batches[rep % K])
                rep += 1
                ev[i + 1].record()
            torch.cuda.synchronize()
            ms = [ev[i].elapsed_time(ev[i + 1]) for i in range(args.reps)]
            round_medians.append(statistics.median(ms))
            samples += ms
            log(f"round {r + 1}: median {round_medians[-1]:.3f} ms")

    med = statistics.median(round_medians)
    s = sorted(samples)
    q = lambda f: s[round((len(s) - 1) * f)]
    copy = copy_bandwidth(args.copy_mib) if args.copy_mib > 0 else None
    report = {
        "peer": "torch.nn.functional.embedding_bag",
        "label": args.label,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0),
        "model": spec["name"],
        "tables": T,
        "batch_size": B,
        "index_dtype": args.index_dtype,
        "rotated_batches": K,
        "reps": args.reps,
        "rounds": args.rounds,
        "ms": {"median": med, "p10": q(0.1), "p90": q(0.9), "min": s[0], "n": len(s)},
        "round_medians": round_medians,
        "lookups_per_s": statistics.mean(lookups) / (med / 1e3),
        "row_bytes_per_s": statistics.mean(bytes_per_batch) / (med / 1e3),
        "copy_bytes_per_s": copy,
    }
    text = json.dumps(report, indent=2)
    if args.json_out:
        Path(args.json_out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
