#!/usr/bin/env python3
"""TorchRec's real planner beside embtune: its plans for embtune's presets, and its planning time.

Runs in a venv with TorchRec (see benches/peers/README.md, "TorchRec"):

    /work/venv-torchrec/bin/python benches/peers/torchrec_planner.py plans --embtune target/release/embtune
    /work/venv-torchrec/bin/python benches/peers/torchrec_planner.py timing --tables 100,200,1000
    /work/venv-torchrec/bin/python benches/peers/torchrec_planner.py compare --preset avazu --cores 2

`plans`: for every workload and topology (default: criteo-terabyte@0.02, criteo-kaggle@0.05,
avazu and taobao on 1 worker x 8 cores and 2 workers x 4 cores) it takes the model from
`embtune workload show --torchrec`, builds TorchRec's `EmbeddingBagCollection` of those tables
on the meta device, and plans it with `EmbeddingShardingPlanner(topology=Topology(world_size=W*C,
local_world_size=C, compute_device="cpu"), constraints=...)` (each table's pooling factor as
`ParameterConstraints.pooling_factors`: TorchRec's planner cannot be told about access skew).
It saves each plan as `results/MODEL-WxC.torchrec.json` (`ShardingPlan._serialize()` with the
topology and the embtune workload flags beside it), checks that embtune imports it
(`embtune plan import`), and prints per table TorchRec's choice beside embtune's `auto`.

`timing`: TorchRec's planner and embtune's planning of the same N tables (a Criteo-like spread
of sizes, pooling and skew) on 64 ranks (8 hosts x 8), wall and CPU seconds.

`compare`: measures, in one `embtune compare` run on this machine, embtune's `auto` plan, a
tuned plan (`embtune tune --local`, one worker of --cores cores) and TorchRec's planner's plan
for the same workload and cores, in alternating rounds; and the tune job's own head-to-head
through the local cluster, TorchRec's plan raced as a named baseline (--baseline-plan).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
WORKLOADS = ["criteo-terabyte@0.02", "criteo-kaggle@0.05", "avazu", "taobao"]
TOPOLOGIES = ["1x8", "2x4"]


def workload_flags(w):
    preset, _, scale = w.partition("@")
    return ["--preset", preset] + (["--scale", scale] if scale else [])


def embtune(exe, args, **kw):
    r = subprocess.run([exe] + args, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"embtune {' '.join(args)} failed:\n{r.stderr}")
    return r


def mean_pooling(p):
    """embtune's pooling_factor (a number, or poisson:M / uniform:A:B) as the mean TorchRec takes."""
    if isinstance(p, (int, float)):
        return float(p)
    parts = p.split(":")
    if parts[0] == "poisson":
        return float(parts[1])
    if parts[0] == "uniform":
        return (float(parts[1]) + float(parts[2])) / 2
    return float(p)


def plan_with_torchrec(configs, world, local, batch):
    """TorchRec's planner on these configs; returns (ShardingPlan, wall s, CPU s)."""
    import torch
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
    from torchrec.modules.embedding_configs import DataType, EmbeddingBagConfig, PoolingType
    from torchrec.modules.embedding_modules import EmbeddingBagCollection

    tables = configs["tables"] if isinstance(configs, dict) else configs
    ebcs = [
        EmbeddingBagConfig(
            name=t["name"],
            num_embeddings=t["num_embeddings"],
            embedding_dim=t["embedding_dim"],
            feature_names=t.get("feature_names", [t["name"]]),
            pooling=PoolingType[t.get("pooling", "SUM")],
            data_type=DataType[t.get("data_type", "FP32")],
        )
        for t in tables
    ]
    def factors(t):
        if "pooling_factors" in t:
            return [float(x) for x in t["pooling_factors"]]
        return [mean_pooling(t.get("pooling_factor", 1))]

    constraints = {t["name"]: ParameterConstraints(pooling_factors=factors(t)) for t in tables}
    ebc = EmbeddingBagCollection(tables=ebcs, device=torch.device("meta"))
    topology = Topology(world_size=world, local_world_size=local, compute_device="cpu")
    planner = EmbeddingShardingPlanner(topology=topology, batch_size=batch, constraints=constraints, debug=False)
    w0, c0 = time.perf_counter(), time.process_time()
    plan = planner.plan(ebc, [EmbeddingBagCollectionSharder()])
    return plan, time.perf_counter() - w0, time.process_time() - c0


def versions():
    import torch
    import torchrec

    return {"torch": torch.__version__, "torchrec": getattr(torchrec, "__version__", "unknown")}


def cmd_plans(a):
    os.makedirs(a.out, exist_ok=True)
    sys.path.insert(0, HERE)
    import torchrec_plan

    for w in a.workloads.split(","):
        flags = workload_flags(w)
        configs = json.loads(embtune(a.embtune, ["workload", "show", "--torchrec"] + flags).stdout)
        cfg_file = os.path.join(a.out, f"{w}.configs.json")
        with open(cfg_file, "w") as f:
            json.dump(configs, f, indent=1)
            f.write("\n")
        for topo in a.topologies.split(","):
            workers, cores = (int(x) for x in topo.split("x"))
            doc, wall, cpu = plan_doc(configs, workers, cores, flags)
            path = os.path.join(a.out, f"{w}-{topo}.torchrec.json")
            with open(path, "w") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
            loaded = torchrec_plan.load(path, cfg_file)
            if loaded["problems"]:
                sys.exit(f"{path} does not load back into TorchRec's types: {loaded['problems']}")
            imported = embtune(a.embtune, ["plan", "import", "--torchrec", path] + flags).stdout
            imp = json.loads(imported)
            auto = json.loads(
                embtune(
                    a.embtune,
                    ["plan", "show", "--json", "--strategy", "auto", "--workers", str(workers), "--cores", str(cores)]
                    + flags,
                ).stdout
            )
            print(f"\n{w} on {topo}: TorchRec planned in {wall:.2f} s ({cpu:.2f} s CPU) -> {path}")
            print(f"  {'table':10} {'rows':>10} {'pool':>5}  {'TorchRec':26} {'embtune import':22} {'embtune auto'}")
            for t, it, at in zip(configs["tables"], imp["tables"], auto["tables"]):
                p = doc["plan"][""][t["name"]]
                print(
                    f"  {t['name']:10} {t['num_embeddings']:>10} {mean_pooling(t['pooling_factor']):>5g}  "
                    f"{p['sharding_type'] + ' ' + str(p['ranks'] if len(p['ranks']) < 4 else '[all]'):26} "
                    f"{place(it['placement']):22} {place(at['placement'])}"
                )


def plan_doc(configs, workers, cores, flags):
    """TorchRec's plan for `configs` on workers x cores, as the file this script saves."""
    plan, wall, cpu = plan_with_torchrec(configs, workers * cores, cores, configs.get("batch_size", 256))
    doc = {
        "format": "torchrec-sharding-plan",
        "format_version": 1,
        "model": configs["name"],
        "workload": flags,
        "world_size": workers * cores,
        "local_world_size": cores,
        "compute_device": "cpu",
        "planner": dict(
            versions(),
            seconds=round(wall, 3),
            cpu_seconds=round(cpu, 3),
            planner="EmbeddingShardingPlanner, default enumerator, estimators, partitioner and proposers",
            constraints="pooling_factors per table from the embtune spec; nothing else",
        ),
        "plan": plan._serialize()["plan"],
    }
    return doc, wall, cpu


def cmd_plan_file(a):
    """TorchRec's plan for a file of configs (the import format), for fixtures."""
    with open(a.configs) as f:
        configs = json.load(f)
    workers, cores = (int(x) for x in a.topology.split("x"))
    doc, _, _ = plan_doc(configs, workers, cores, ["--model", a.configs])
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {a.out}")


def place(p):
    if p == "replicated":
        return "replicated"
    (k, v), = p.items()
    if k == "owned":
        return f"owned w{v['worker']}c{v['core']}"
    return f"{k} x{len(v['owners'])}"


def big_configs(n):
    """N tables with the Criteo-like spread of tuner/benches/planning.rs (sizes, pooling, skew)."""
    tables = []
    for i in range(n):
        tables.append(
            {
                "name": f"t{i}",
                "num_embeddings": [100, 5_000, 200_000, 2_000_000][i % 4] + i,
                "embedding_dim": 64,
                "feature_names": [f"f{i}"],
                "pooling": "SUM",
                "data_type": "FP32",
                "pooling_factor": [1, 2, 5, 20][i % 4 if i % 8 < 4 else (i + 1) % 4],
                "access": "uniform" if i % 3 == 0 else "zipf:1.05",
            }
        )
    return {"name": f"big-{n}", "batch_size": 256, "seed": 1, "tables": tables}


def timed(args):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{r.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cmd_timing(a):
    workers, cores = 8, 8
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(x) for x in a.tables.split(",")]:
            configs = big_configs(n)
            path = os.path.join(tmp, f"big-{n}.json")
            with open(path, "w") as f:
                json.dump(configs, f)
            _, wall, cpu = plan_with_torchrec(configs, workers * cores, cores, 256)
            row = {"tables": n, "ranks": workers * cores, "torchrec_s": round(wall, 2), "torchrec_cpu_s": round(cpu, 2)}
            for strategy in ["auto", "greedy-cost"]:
                w, c = timed(
                    [a.embtune, "plan", "export", "--model", path, "--strategy", strategy]
                    + ["--workers", str(workers), "--cores", str(cores), "--out", os.devnull]
                )
                row[f"embtune_{strategy}_s"] = round(w, 2)
                row[f"embtune_{strategy}_cpu_s"] = round(c, 2)
            print(json.dumps(row), flush=True)
            rows.append(row)
    doc = dict(versions(), machine=f"{os.cpu_count()} CPUs", rows=rows)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")


def cmd_compare(a):
    """Same run: auto, tuned and TorchRec's plan in-process; and the tune job's head-to-head."""
    flags = workload_flags(a.preset)
    topo = f"1x{a.cores}"
    tr = os.path.join(a.out, f"{a.preset}-{topo}.torchrec.json")
    if not os.path.exists(tr):
        sys.exit(f"{tr} is missing: run `plans --topologies {topo}` first")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        tune = [a.embtune, "tune", "--local", "--workers", "1", "--cores-per-worker", str(a.cores)] + flags
        tune += ["--trials", str(a.trials), "--round-secs", str(a.round_secs), "--max-rounds", "2"]
        tune += ["--baseline-plan", f"torchrec={tr}", "--data-dir", data, "--json"]
        print("$", " ".join(tune), flush=True)
        job = json.loads(embtune(a.embtune, tune[1:]).stdout)
        tuned = os.path.join(tmp, "tuned.json")
        embtune(a.embtune, ["plan", "export", "--job", job["job"], "--data-dir", data, "--out", tuned])
        cmp_ = ["compare", "--cores", str(a.cores), "--rounds", str(a.rounds), "--round-secs", str(a.round_secs)]
        cmp_ += ["--variants", f"auto,tuned={tuned},torchrec={tr}", "--json"] + flags
        print("$ embtune", " ".join(cmp_), flush=True)
        report = json.loads(embtune(a.embtune, cmp_).stdout)
    out = {"tune": job, "compare": report}
    print(json.dumps({"speedup_vs": job["speedup_vs"], "head_to_head_baselines": job["baselines"]}, indent=1))
    for v in report["variants"]:
        print(f"  {v['label']:10} {v['lookups_per_s'] / 1e6:8.1f} M look-ups/s  {v['speedup_vs_first']:.2f}x auto")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embtune", default=os.environ.get("EMBTUNE", "target/release/embtune"))
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plans", help="TorchRec's plans for the presets, saved under results/")
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--topologies", default=",".join(TOPOLOGIES), help="WORKERSxCORES, comma-separated")
    p.add_argument("--out", default=RESULTS)
    t = sub.add_parser("timing", help="planning time, TorchRec's and embtune's, on 64 ranks")
    t.add_argument("--tables", default="100,200,1000")
    t.add_argument("--out", help="write the figures here as JSON")
    c = sub.add_parser("compare", help="auto, tuned and TorchRec's plan measured in one run here")
    c.add_argument("--preset", default="taobao", help="a workload of `plans`, e.g. criteo-kaggle@0.05")
    c.add_argument("--cores", type=int, default=2)
    c.add_argument("--trials", type=int, default=4)
    c.add_argument("--rounds", type=int, default=5)
    c.add_argument("--round-secs", type=float, default=1.0)
    c.add_argument("--out", default=RESULTS, help="where `plans` saved TorchRec's plans")
    c.add_argument("--json-out", help="write the tune job and the comparison here")
    f = sub.add_parser("plan-file", help="TorchRec's plan for a file of configs")
    f.add_argument("configs")
    f.add_argument("--topology", default="2x1", help="WORKERSxCORES")
    f.add_argument("--out", required=True)
    a = ap.parse_args()
    try:
        import torchrec  # noqa: F401
    except ImportError:
        print("SKIPPED: torchrec is not installed; see benches/peers/README.md, TorchRec", file=sys.stderr)
        return 0
    {"plans": cmd_plans, "timing": cmd_timing, "compare": cmd_compare, "plan-file": cmd_plan_file}[a.cmd](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
