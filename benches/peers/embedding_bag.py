#!/usr/bin/env python3
"""Measure embtune's engine beside its CPU peers on the same workload and the same ids.

Contenders, measured in one run in alternating rounds (A, B, C, A, B, C, ...):

  torch        torch.nn.functional.embedding_bag(mode="sum"), offsets form, one call per
               table, under torch.inference_mode(), at each --threads count
               (torch.set_num_threads).
  torch-py     (N >= 2 only) N Python threads, each with its own batch, torch at one
               intra-op thread: the throughput form of the same kernel, closer to
               embtune's closed loop that keeps cores + 1 batches in flight.
  fbgemm       fbgemm_gpu's SplitTableBatchedEmbeddingBagsCodegen (EmbeddingLocation.HOST,
               ComputeDevice.CPU, PoolingMode.SUM, FP32 weights), one call per batch over
               all tables with the flat TBE layout, under torch.no_grad(). Skipped cleanly
               when fbgemm_gpu does not import.
  fbgemm-py    (N >= 2 only) as torch-py, for fbgemm.
  embtune      `embtune bench ... --cores N --strategy round-robin --flows F --json`, for
               each F in --flows (default auto and direct).

The ids: `embtune workload dump` with the same workload flags writes the batches that
`embtune bench` generates (both take batches 0..K-1 of the same seeded generator). By
default K is the number `embtune bench` itself rotates through (enough batches that the
rows they touch are 4x the last-level cache), so the peers replay exactly the ids embtune's
engine replays. The peers share one copy of the tables: torch's per-table weights are views
into fbgemm's flat host buffer. That buffer is allocated with madvise(MADV_HUGEPAGE), as
embtune's engine asks for transparent huge pages (--no-huge-pages turns both off).

Timing: per contender and round, --warmup seconds excluded, then --duration seconds of
batches back to back (rotating through the K batches, continuing where the last round
stopped). Figures: median over rounds of look-ups per second, and per thread count the
median over rounds of the per-round ratio embtune / peer.

Example:
  python3 benches/peers/embedding_bag.py --preset synthetic --tables 8 --rows 1000000 \\
      --dim 64 --pooling 20 --dist zipf:1.05
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import mmap
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

# Workload flags passed through to `embtune workload dump` and `embtune bench` unchanged.
WORKLOAD_FLAGS = [
    ("--preset", "dataset preset (criteo-kaggle, ..., synthetic)"),
    ("--model", "a model spec file (TOML or JSON)"),
    ("--scale", "multiply every table's rows by X in (0, 1]"),
    ("--tables", "synthetic: number of tables"),
    ("--rows", "synthetic: rows per table"),
    ("--dim", "embedding dimension of every table"),
    ("--pooling", "ids per sample and table: N, uniform:MIN:MAX or poisson:MEAN"),
    ("--dist", "access distribution: uniform, zipf:S, hotset:P:H, trace:FILE, profile:FILE"),
    ("--batch", "samples per batch"),
    ("--row-type", "row type (the peers need f32)"),
    ("--seed", "seed of the tables and the queries"),
]
DEFAULT_WORKLOAD = [
    "--preset", "synthetic", "--tables", "8", "--rows", "1000000", "--dim", "64",
    "--pooling", "20", "--dist", "zipf:1.05",
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def default_embtune() -> str:
    env = os.environ.get("EMBTUNE")
    if env:
        return env
    repo = Path(__file__).resolve().parents[2]
    cand = repo / "target" / "release" / "embtune"
    if cand.exists():
        return str(cand)
    return shutil.which("embtune") or str(cand)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Workload flags are passed to embtune unchanged; with none, the default is: "
        + " ".join(DEFAULT_WORKLOAD),
    )
    w = p.add_argument_group("workload (passed through to embtune)")
    for flag, help_ in WORKLOAD_FLAGS:
        w.add_argument(flag, dest="wl_" + flag[2:].replace("-", "_"), metavar="X", help=help_)
    p.add_argument("--embtune", default=default_embtune(), help="the embtune binary (default: target/release/embtune or $EMBTUNE)")
    p.add_argument("--threads", default="1,2", help="thread/core counts to compare (default 1,2)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--duration", type=float, default=2.0, help="seconds measured per contender and round (default 2)")
    p.add_argument("--warmup", type=float, default=0.5, help="seconds of warm-up per contender and round, excluded (default 0.5)")
    p.add_argument("--batches", type=int, default=0, help="batches K to dump and rotate through (default: as many as embtune bench uses, >= 4x LLC of rows)")
    p.add_argument("--flows", default="auto,direct", help="embtune --flows values to measure (default auto,direct)")
    p.add_argument("--strategy", default="round-robin", help="embtune --strategy (default round-robin)")
    p.add_argument("--retry-busy", type=float, default=0.3, metavar="CPUS", help="measure again (at most twice) when other processes kept more than this many CPUs busy meanwhile (default 0.3; 0 = never)")
    p.add_argument("--quiet-wait", type=float, default=15.0, metavar="S", help="before each measurement wait at most S seconds for the machine to be quiet (foreign load <= --retry-busy; default 15)")
    p.add_argument("--pin-embtune", action="store_true", help="run embtune with its CPU affinity limited to N CPUs, its driver thread included (by default only its N engine threads are pinned, and with a spare CPU the driver thread keeps one more CPU busy)")
    p.add_argument("--index-dtype", choices=["int64", "int32"], default="int64", help="id and offset dtype handed to the peers (default int64)")
    p.add_argument("--no-fbgemm", action="store_true", help="leave fbgemm_gpu out")
    p.add_argument("--no-py-threads", action="store_true", help="leave out the N-Python-threads forms of the peers")
    p.add_argument("--no-huge-pages", action="store_true", help="no transparent huge pages for the peers' tables, and --no-huge-pages for embtune")
    p.add_argument("--dump-dir", help="where to write the dumped batches (default: a temporary folder, removed)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON object to FILE")
    args = p.parse_args(argv)
    wl = []
    for flag, _ in WORKLOAD_FLAGS:
        v = getattr(args, "wl_" + flag[2:].replace("-", "_"))
        if v is not None:
            wl += [flag, v]
    args.workload = wl or list(DEFAULT_WORKLOAD)
    args.thread_counts = [int(x) for x in args.threads.split(",") if x.strip()]
    args.flow_list = [x.strip() for x in args.flows.split(",") if x.strip()]
    return args


# ---------------------------------------------------------------------------------------
# The machine


def llc_bytes() -> int:
    """The last-level data cache, read the way embtune's MachineInfo reads it."""
    best = (0, 0)
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for d in sorted(base.glob("index*")):
        try:
            level = int((d / "level").read_text())
            kind = (d / "type").read_text().strip()
            size = (d / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1], 1)
        n = int(size.rstrip("KMG")) * mult
        if level >= best[0]:
            best = (level, n)
    return best[1] or (32 << 20)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def anon_huge_bytes() -> int:
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_busy_s() -> float:
    """Seconds of CPU time every CPU of the machine has spent busy (steal included)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class ForeignLoad:
    """CPUs kept busy by other processes while a measurement ran (0 = the machine was ours)."""

    def __enter__(self):
        self.t, self.busy, self.own = time.perf_counter(), cpu_busy_s(), own_cpu_s()
        return self

    def __exit__(self, *exc):
        dt = time.perf_counter() - self.t
        self.cpus = max(0.0, (cpu_busy_s() - self.busy) - (own_cpu_s() - self.own)) / max(dt, 1e-9)
        return False


def wait_quiet(threshold: float, max_wait: float) -> float:
    """Wait (at most max_wait seconds) until other processes keep no more than `threshold`
    CPUs busy over half a second. Returns the seconds waited."""
    t0 = time.perf_counter()
    if threshold <= 0 or max_wait <= 0:
        return 0.0
    while time.perf_counter() - t0 < max_wait:
        with ForeignLoad() as load:
            time.sleep(0.5)
        if load.cpus <= threshold:
            break
    return time.perf_counter() - t0


def peak_rss() -> int:
    """Peak resident bytes of this process."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---------------------------------------------------------------------------------------
# The workload


def pooling_mean(p) -> float:
    if isinstance(p, (int, float)):
        return float(p)
    s = str(p)
    if s.startswith("uniform:"):
        a, b = s.split(":")[1:3]
        return (float(a) + float(b)) / 2
    if s.startswith("poisson:"):
        return float(s.split(":")[1])
    return float(s)


def row_bytes(t) -> int:
    rt = t.get("row_type", "f32")
    d = int(t["dim"])
    return {"f32": 4 * d, "f16": 2 * d, "int8": d + 8}[rt]


def embtune_pool_size(spec, llc: int) -> int:
    """`BatchGenerator::pool_size_for(llc, 1 GiB)`: the batches `embtune bench` rotates through."""
    b = int(spec["batch_size"])
    lookups = sum(pooling_mean(t["pooling"]) for t in spec["tables"]) * b
    rbytes = sum(pooling_mean(t["pooling"]) * row_bytes(t) for t in spec["tables"]) * b
    want = math.ceil(4.0 * llc / max(rbytes, 1.0))
    cap = math.floor((1 << 30) / (max(lookups, 1.0) * 4.0))
    return min(max(want, 8), max(cap, 8))


def binary_id(path: str) -> dict:
    """What identifies the embtune binary: its sha256 and modification time."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    st = os.stat(path)
    mtime = datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc)
    return {"path": os.path.realpath(path), "sha256": h.hexdigest()[:16], "mtime": mtime.strftime("%Y-%m-%d %H:%M:%S UTC"), "bytes": st.st_size}


def run_checked(cmd: list[str], cpus=None, hwm: dict | None = None) -> str:
    """Run cmd, return its stdout; with `hwm`, record the child's peak resident bytes
    (VmHWM, polled: getrusage's figure for children includes this process's own size,
    inherited at fork)."""
    pre = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    if hwm is None:
        r = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=pre)
        out, err, rc = r.stdout, r.stderr, r.returncode
    else:
        with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
            proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, text=True, preexec_fn=pre)
            peak = 0
            while proc.poll() is None:
                try:
                    with open(f"/proc/{proc.pid}/status") as f:
                        for line in f:
                            if line.startswith("VmHWM:"):
                                peak = max(peak, int(line.split()[1]) * 1024)
                except OSError:
                    pass
                time.sleep(0.1)
            hwm["bytes"] = max(hwm.get("bytes", 0), peak)
            fo.seek(0)
            fe.seek(0)
            out, err, rc = fo.read(), fe.read(), proc.returncode
    if rc != 0:
        raise SystemExit(f"failed ({rc}): {' '.join(cmd)}\n{err.strip()}")
    return out


def dump(embtune: str, workload: list[str], k: int, out: Path) -> dict:
    if out.exists():
        if any(out.iterdir()) and not (out / "index.json").exists():
            raise SystemExit(f"{out} exists and is not a dump folder: pass an empty or new --dump-dir")
        # An earlier dump: remove its files only.
        for f in list(out.glob("b*.offsets")) + list(out.glob("b*.ids")) + [out / "index.json"]:
            f.unlink(missing_ok=True)
    run_checked([embtune, "workload", "dump", *workload, "--batches", str(k), "--out", str(out)])
    with open(out / "index.json") as f:
        return json.load(f)


def load_batches(index: dict, folder: Path, torch, dtype):
    """Every batch as flat TBE tensors plus per-table (ids, offsets) views for torch."""
    T, B = int(index["num_tables"]), int(index["batch_size"])
    batches = []
    for b in index["batches"]:
        offs = np.fromfile(folder / b["offsets"], dtype="<u4").astype(np.int64)
        ids = np.fromfile(folder / b["ids"], dtype="<u4").astype(np.int64)
        assert offs.shape[0] == T * B + 1 and offs[-1] == ids.shape[0], "unexpected dump layout"
        ids_t = torch.from_numpy(ids).to(dtype)
        offs_t = torch.from_numpy(offs).to(dtype)
        per_table = []
        for t in range(T):
            lo, hi = int(offs[t * B]), int(offs[(t + 1) * B])
            # Offsets of length B, relative to this table's ids (include_last_offset=False).
            rel = torch.from_numpy(offs[t * B:(t + 1) * B] - lo).to(dtype).contiguous()
            per_table.append((ids_t[lo:hi].contiguous(), rel))
        batches.append({"ids": ids_t, "offsets": offs_t, "tables": per_table, "lookups": int(ids.shape[0])})
    return batches


# ---------------------------------------------------------------------------------------
# The peers


class HostTables:
    """All tables in one flat f32 buffer (fbgemm's host layout, table after table), in an
    anonymous mapping that asks for transparent huge pages before it is touched."""

    def __init__(self, torch, tables, huge_pages: bool, seed: int):
        self.shapes = [(int(t["rows"]), int(t["dim"])) for t in tables]
        n = sum(r * d for r, d in self.shapes)
        self.nbytes = n * 4
        self.map = mmap.mmap(-1, max(self.nbytes, mmap.PAGESIZE), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.huge_pages = False
        if huge_pages and hasattr(mmap, "MADV_HUGEPAGE"):
            try:
                self.map.madvise(mmap.MADV_HUGEPAGE)
                self.huge_pages = True
            except OSError:
                pass
        self.flat = torch.frombuffer(self.map, dtype=torch.float32, count=n)
        g = torch.Generator().manual_seed(seed)
        chunk = 1 << 24
        for lo in range(0, n, chunk):
            self.flat[lo:lo + chunk].uniform_(-1.0, 1.0, generator=g)
        self.views = []
        pos = 0
        for r, d in self.shapes:
            self.views.append(self.flat[pos:pos + r * d].view(r, d))
            pos += r * d


def make_fbgemm(torch, host: HostTables, mode: str):
    """fbgemm's CPU TBE over the shared host buffer, or (None, reason)."""
    try:
        import fbgemm_gpu  # noqa: F401
        from fbgemm_gpu.split_embedding_configs import SparseType
        from fbgemm_gpu.split_table_batched_embeddings_ops_common import (
            BoundsCheckMode,
            EmbeddingLocation,
            PoolingMode,
        )
        from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
            ComputeDevice,
            SplitTableBatchedEmbeddingBagsCodegen,
        )
    except Exception as e:  # ImportError, or an undefined symbol from a torch mismatch
        return None, f"fbgemm_gpu does not import: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    try:
        tbe = SplitTableBatchedEmbeddingBagsCodegen(
            [(r, d, EmbeddingLocation.HOST, ComputeDevice.CPU) for r, d in host.shapes],
            weights_precision=SparseType.FP32,
            output_dtype=SparseType.FP32,
            pooling_mode=PoolingMode.SUM if mode == "sum" else PoolingMode.MEAN,
            device="cpu",
            # The ids come from embtune's generator and are in range; no per-call check.
            bounds_check_mode=BoundsCheckMode.NONE,
            preallocated_host_buffers={"weights": host.flat},
        )
        assert tbe.weights_host.data_ptr() == host.flat.data_ptr(), "fbgemm copied the weights"
        return tbe, fbgemm_gpu.__version__
    except Exception as e:
        return None, f"fbgemm_gpu TBE failed to build: {type(e).__name__}: {str(e).splitlines()[0][:200]}"


def timed_loop(run_batch, batches, state, warmup: float, duration: float, ctx):
    """Run batches back to back: `warmup` seconds unmeasured, then `duration` measured."""
    lat = []
    lookups = 0
    n = len(batches)
    with ctx():
        end = time.perf_counter() + warmup
        while time.perf_counter() < end:
            run_batch(batches[state["next"] % n])
            state["next"] += 1
        t0 = time.perf_counter()
        end = t0 + duration
        while True:
            b = batches[state["next"] % n]
            state["next"] += 1
            s = time.perf_counter_ns()
            run_batch(b)
            lat.append(time.perf_counter_ns() - s)
            lookups += b["lookups"]
            now = time.perf_counter()
            if now >= end:
                break
        elapsed = now - t0
    return lookups, elapsed, lat


def measure_peer(torch, run_batch, batches, state, threads: int, py_threads: int, warmup, duration, ctx):
    """One measurement: `threads` intra-op threads in one Python thread, or `py_threads`
    Python threads each running its own batches with one intra-op thread."""
    if py_threads <= 1:
        torch.set_num_threads(threads)
        lookups, elapsed, lat = timed_loop(run_batch, batches, state, warmup, duration, ctx)
    else:
        torch.set_num_threads(1)
        results = [None] * py_threads
        barrier = threading.Barrier(py_threads)
        n = len(batches)
        stride = max(n // py_threads, 1)

        def worker(i):
            st = {"next": state["next"] + i * stride}
            barrier.wait()
            results[i] = timed_loop(run_batch, batches, st, warmup, duration, ctx)

        ths = [threading.Thread(target=worker, args=(i,)) for i in range(py_threads)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        state["next"] += sum(len(r[2]) for r in results)
        lookups = sum(r[0] for r in results)
        elapsed = max(r[1] for r in results)
        lat = [x for r in results for x in r[2]]
    lat.sort()
    return {
        "lookups_per_s": lookups / elapsed,
        "p50_us": lat[len(lat) // 2] / 1e3,
        "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e3,
        "batches": len(lat),
    }


EMBTUNE_HWM: dict = {}


def measure_embtune(args, cores: int, flows: str):
    cmd = [
        args.embtune, "bench", *args.workload, "--cores", str(cores), "--strategy", args.strategy,
        "--flows", flows, "--duration", str(args.duration), "--warmup", str(args.warmup), "--json",
    ]
    if args.no_huge_pages:
        cmd.append("--no-huge-pages")
    cpus = sorted(os.sched_getaffinity(0))[:cores] if args.pin_embtune else None
    r = json.loads(run_checked(cmd, cpus, EMBTUNE_HWM))
    return {
        "lookups_per_s": r["lookups_per_s"],
        "p50_us": r["p50_us"],
        "p99_us": r["p99_us"],
        "batches": r["batches"],
        "plan": r.get("plan"),
        "huge_pages": r.get("huge_pages"),
        "isa": r.get("isa"),
        "concurrency": r.get("concurrency"),
    }


# ---------------------------------------------------------------------------------------
# Main


def si(x: float) -> str:
    for unit, f in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= f:
            return f"{x / f:.2f}{unit}"
    return f"{x:.1f}"


def gib(x: int) -> str:
    return f"{x / (1 << 30):.2f} GiB"


def main(argv=None) -> int:
    args = parse_args(argv)
    if not Path(args.embtune).exists():
        raise SystemExit(f"embtune binary not found at {args.embtune} (build it or pass --embtune)")
    import torch

    started = datetime.datetime.now(datetime.timezone.utc)
    binary = binary_id(args.embtune)
    llc = llc_bytes()
    tmp = None
    if args.dump_dir:
        folder = Path(args.dump_dir)
    else:
        tmp = tempfile.mkdtemp(prefix="embtune-peers-")
        folder = Path(tmp) / "dump"
    try:
        # The spec first (one batch), then K batches.
        index = dump(args.embtune, args.workload, 1, folder)
        spec = index["spec"]
        tables = spec["tables"]
        k_embtune = embtune_pool_size(spec, llc)
        k = args.batches or k_embtune
        bad = [t["name"] for t in tables if t.get("row_type", "f32") != "f32"]
        if bad:
            raise SystemExit(f"the peers compare f32 tables; these are not: {', '.join(bad)}")
        modes = {t.get("mode", "sum") for t in tables}
        if len(modes) != 1:
            raise SystemExit(f"mixed pooling modes {sorted(modes)}: the script needs one")
        mode = modes.pop()
        table_bytes = sum(int(t["rows"]) * row_bytes(t) for t in tables)
        avail = mem_available()
        log(f"model: {len(tables)} tables, {gib(table_bytes)} of f32 rows; peak memory about "
            f"{gib(2 * table_bytes)} (one copy here, one in embtune), {gib(avail)} available")
        if 2 * table_bytes > 0.8 * avail:
            raise SystemExit("not enough memory for two copies of the tables: lower --rows or --scale")
        index = dump(args.embtune, args.workload, k, folder)
        dtype = torch.int64 if args.index_dtype == "int64" else torch.int32
        batches = load_batches(index, folder, torch, dtype)
        total_ids = sum(b["lookups"] for b in batches)
        uniq = 0
        for t in range(len(tables)):
            cat = np.concatenate([b["tables"][t][0].numpy() for b in batches])
            uniq += np.unique(cat).shape[0] * row_bytes(tables[t])
        log(f"{k} batches ({'= embtune bench pool' if k == k_embtune else f'embtune bench uses {k_embtune}'}), "
            f"{total_ids} ids, distinct rows touched {uniq / (1 << 20):.1f} MiB (LLC {llc >> 20} MiB)")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    log("filling the peers' tables ...")
    t0 = time.perf_counter()
    host = HostTables(torch, tables, not args.no_huge_pages, int(spec.get("seed", 0)))
    log(f"  {gib(host.nbytes)} in {time.perf_counter() - t0:.1f}s, huge pages {gib(anon_huge_bytes())}")

    # Contenders.
    F = torch.nn.functional
    T = len(tables)
    contenders = []  # (name, threads, kind, fn)

    def torch_batch(b):
        for t in range(T):
            ids, offs = b["tables"][t]
            F.embedding_bag(ids, host.views[t], offs, mode=mode)

    fbgemm_note = None
    tbe = None
    if args.no_fbgemm:
        fbgemm_note = "left out (--no-fbgemm)"
    else:
        tbe, info = make_fbgemm(torch, host, mode)
        if tbe is None:
            fbgemm_note = info
            log(f"fbgemm: skipped: {info}")
        else:
            fbgemm_version = info

    def fbgemm_batch(b):
        tbe(b["ids"], b["offsets"])

    # Check the two peers agree on the first batch (both read the same rows).
    with torch.no_grad():
        b = batches[0]
        ref = torch.cat([F.embedding_bag(b["tables"][t][0], host.views[t], b["tables"][t][1], mode=mode) for t in range(T)], 1)
        check = {"torch_vs_f64_max_abs": None, "fbgemm_vs_torch_max_abs": None}
        # A naive f64 reference for table 0's first bags.
        ids0, offs0 = b["tables"][0]
        nb = min(16, offs0.shape[0])
        ends = list(offs0[1:nb].tolist()) + [int(offs0[nb]) if nb < offs0.shape[0] else ids0.shape[0]]
        naive = torch.stack([host.views[0][ids0[int(offs0[i]):ends[i]]].double().sum(0) for i in range(nb)])
        check["torch_vs_f64_max_abs"] = float((ref[:nb, : host.shapes[0][1]].double() - naive).abs().max())
        if tbe is not None:
            out = tbe(b["ids"], b["offsets"])
            check["fbgemm_vs_torch_max_abs"] = float((out - ref).abs().max())
            if check["fbgemm_vs_torch_max_abs"] > 1e-3:
                log(f"warning: fbgemm and torch differ by {check['fbgemm_vs_torch_max_abs']}")
    log(f"check: {check}")

    for n in args.thread_counts:
        contenders.append((f"torch x{n}", n, "torch", 1))
        if n >= 2 and not args.no_py_threads:
            contenders.append((f"torch {n} py-threads", n, "torch", n))
        if tbe is not None:
            contenders.append((f"fbgemm x{n}", n, "fbgemm", 1))
            if n >= 2 and not args.no_py_threads:
                contenders.append((f"fbgemm {n} py-threads", n, "fbgemm", n))
        for f in args.flow_list:
            contenders.append((f"embtune {f} x{n}", n, "embtune:" + f, 0))

    rounds = {c[0]: [] for c in contenders}
    states = {c[0]: {"next": 0} for c in contenders}
    for r in range(args.rounds):
        for name, n, kind, pyt in contenders:
            best = None
            for attempt in range(3 if args.retry_busy > 0 else 1):
                waited = wait_quiet(args.retry_busy, args.quiet_wait)
                with ForeignLoad() as load:
                    if kind == "torch":
                        m = measure_peer(torch, torch_batch, batches, states[name], n, pyt, args.warmup, args.duration, torch.inference_mode)
                    elif kind == "fbgemm":
                        m = measure_peer(torch, fbgemm_batch, batches, states[name], n, pyt, args.warmup, args.duration, torch.no_grad)
                    else:
                        m = measure_embtune(args, n, kind.split(":", 1)[1])
                m["foreign_cpus"] = load.cpus
                m["attempts"] = attempt + 1
                m["waited_s"] = waited
                log(f"round {r + 1}/{args.rounds}  {name:<22} {si(m['lookups_per_s']):>8} look-ups/s  "
                    f"p50 {m['p50_us']:.0f} us  p99 {m['p99_us']:.0f} us  foreign load {load.cpus:.2f} CPUs"
                    + (f" (waited {waited:.0f}s for a quiet machine)" if waited >= 1 else ""))
                if best is None or m["foreign_cpus"] < best["foreign_cpus"]:
                    best = m
                best["attempts"] = attempt + 1
                if args.retry_busy <= 0 or load.cpus <= args.retry_busy:
                    break
                if attempt < 2:
                    log("  (busy machine: measuring again; the least disturbed attempt is kept)")
            m = best
            rounds[name].append(m)

    # Summaries.
    summary = []
    for name, n, kind, pyt in contenders:
        ms = rounds[name]
        lps = [m["lookups_per_s"] for m in ms]
        summary.append({
            "contender": name,
            "kind": kind.split(":")[0],
            "flows": kind.split(":", 1)[1] if kind.startswith("embtune") else None,
            "threads": n,
            "python_threads": pyt if kind != "embtune" and not kind.startswith("embtune") else None,
            "lookups_per_s": statistics.median(lps),
            "lookups_per_s_min": min(lps),
            "lookups_per_s_max": max(lps),
            "p50_us": statistics.median(m["p50_us"] for m in ms),
            "p99_us": statistics.median(m["p99_us"] for m in ms),
            "foreign_cpus": statistics.median(m["foreign_cpus"] for m in ms),
            "retries": sum(m["attempts"] - 1 for m in ms),
            "busy_rounds": sum(m["foreign_cpus"] > args.retry_busy for m in ms) if args.retry_busy > 0 else None,
            "rounds": lps,
            "plan": ms[0].get("plan"),
        })
    ratios = []
    for n in args.thread_counts:
        ours = [c for c in contenders if c[1] == n and c[2].startswith("embtune")]
        peers = [c for c in contenders if c[1] == n and not c[2].startswith("embtune")]
        for o in ours:
            for p in peers:
                per = [a["lookups_per_s"] / b["lookups_per_s"] for a, b in zip(rounds[o[0]], rounds[p[0]])]
                ratios.append({
                    "threads": n, "embtune": o[0], "peer": p[0],
                    "ratio_median": statistics.median(per), "ratio_min": min(per), "ratio_max": max(per),
                    "per_round": per,
                })
    self_rss, child_rss = peak_rss(), EMBTUNE_HWM.get("bytes", 0)
    binary_after = binary_id(args.embtune)
    binary_changed = binary_after["sha256"] != binary["sha256"]
    if binary_changed:
        log(f"warning: {args.embtune} changed during the run ({binary['sha256']} -> {binary_after['sha256']}): "
            "embtune's figures mix two builds; copy the binary aside and pass --embtune")
    eplan = {s["contender"]: s["plan"] for s in summary if s["plan"]}
    result = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([os.path.basename(sys.argv[0])] + (sys.argv[1:] if argv is None else list(argv))),
        "workload": args.workload,
        "spec": {"tables": len(tables), "rows": [int(t["rows"]) for t in tables][:1] if len({t["rows"] for t in tables}) == 1 else [int(t["rows"]) for t in tables],
                 "dims": sorted({int(t["dim"]) for t in tables}), "batch_size": int(spec["batch_size"]),
                 "mode": mode, "table_bytes": table_bytes},
        "batches": k, "embtune_pool_batches": k_embtune, "ids": total_ids, "distinct_row_bytes": uniq,
        "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "llc_bytes": llc},
        "versions": {
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "fbgemm_gpu": fbgemm_version if tbe is not None else None,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "embtune": run_checked([args.embtune, "--version"]).strip(),
            "embtune_binary": binary,
            "embtune_binary_changed_during_run": binary_changed,
        },
        "fbgemm": "measured" if tbe is not None else f"skipped: {fbgemm_note}",
        "settings": {"rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
                     "retry_busy_cpus": args.retry_busy, "quiet_wait_s": args.quiet_wait,
                     "strategy": args.strategy, "pin_embtune": args.pin_embtune, "index_dtype": args.index_dtype,
                     "huge_pages_peers": host.huge_pages, "peer_huge_page_bytes": anon_huge_bytes()},
        "check": check,
        "contenders": summary,
        "ratios": ratios,
        "peak_rss_bytes": {"python": self_rss, "embtune": child_rss},
    }
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0

    print(f"{result['date']}  {result['machine']['cpu']} ({result['machine']['cpus']} CPUs, LLC {llc >> 20} MiB)")
    print(f"workload  {' '.join(args.workload)}")
    print(f"          {len(tables)} tables, {gib(table_bytes)} f32, batch {spec['batch_size']}, "
          f"{k} batches rotated ({total_ids} ids, {uniq / (1 << 20):.0f} MiB of distinct rows)")
    v = result["versions"]
    print(f"versions  torch {v['torch']} ({v['torch_cpu_capability']}), fbgemm_gpu {v['fbgemm_gpu'] or '-'}, {v['embtune']}")
    print(f"binary    {binary['path']} sha256 {binary['sha256']}.., built {binary['mtime']}"
          + ("  CHANGED DURING THE RUN" if binary_changed else ""))
    print(f"fbgemm    {result['fbgemm']}")
    print(f"settings  {args.rounds} rounds x {args.duration}s (+{args.warmup}s warm-up) per contender; ids {args.index_dtype}; "
          + ("embtune confined to N CPUs; " if args.pin_embtune else "")
          + f"peers' huge pages {gib(result['settings']['peer_huge_page_bytes'])}")
    for name, plan in eplan.items():
        if name.endswith("x" + str(args.thread_counts[-1])):
            print(f"plan      {name}: {plan}")
    print()
    hdr = f"{'contender':<24}{'threads':>8}{'look-ups/s':>13}{'min':>10}{'max':>10}{'p50 us':>10}{'p99 us':>10}{'foreign':>9}"
    print(hdr)
    print("-" * len(hdr))
    for s in summary:
        print(f"{s['contender']:<24}{s['threads']:>8}{si(s['lookups_per_s']):>13}{si(s['lookups_per_s_min']):>10}"
              f"{si(s['lookups_per_s_max']):>10}{s['p50_us']:>10.0f}{s['p99_us']:>10.0f}{s['foreign_cpus']:>9.2f}")
    print()
    hdr = f"{'threads':>7}  {'embtune':<20}{'peer':<24}{'ratio (median)':>15}{'min':>7}{'max':>7}"
    print(hdr)
    print("-" * len(hdr))
    for r in ratios:
        print(f"{r['threads']:>7}  {r['embtune']:<20}{r['peer']:<24}{r['ratio_median']:>14.2f}x{r['ratio_min']:>7.2f}{r['ratio_max']:>7.2f}")
    print()
    print("p50/p99: per batch; embtune's under its closed loop of cores+1 batches in flight, the peers' one batch at a time "
          "(py-threads: one per Python thread).")
    busy = sum(x["busy_rounds"] or 0 for x in summary)
    print("foreign: median CPUs kept busy by other processes during the contender's measurements; "
          f"{sum(x['retries'] for x in summary)} measurement(s) repeated for load > {args.retry_busy} CPUs, "
          f"{busy} kept although still disturbed")
    print(f"peak RSS  python {gib(self_rss)}, embtune {gib(child_rss)} (they overlap while embtune runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
