#!/usr/bin/env python3
"""Load a sharding plan file into TorchRec's own types, to prove that TorchRec can use it.

The file is `embtune plan export --format torchrec`'s output, or a plan that
torchrec_planner.py saved from TorchRec's planner: TorchRec's `ShardingPlan._serialize()` form,
{"plan": {MODULE_PATH: {TABLE: {sharding_type, compute_kernel, ranks, shards}}}}, with
`world_size`, `local_world_size` and `compute_device` beside it.

For every table this builds `torchrec.distributed.types.ParameterSharding` (an
`EnumerableShardingSpec` of `ShardMetadata`, as TorchRec's planner does in `to_sharding_plan`),
then an `EmbeddingModuleShardingPlan` per module and the `ShardingPlan`. With --configs (the
model as TorchRec EmbeddingBagConfigs, `embtune workload show --torchrec`) it also checks with
torch's own `build_metadata` that the shards tile each table exactly, and that an
`EmbeddingBagCollection` of those tables (on the meta device) has a parameter for every table
of the plan.

It writes --out: the versions of torch and TorchRec, `ShardingPlan._serialize()` of what was
built (which must equal the input's `plan`: the CI test compares embtune's export against it),
and TorchRec's own rendering of the plan. Exit status 1 if anything does not load or check.

    /work/venv-torchrec/bin/python benches/peers/torchrec_plan.py PLAN.json \
        --configs MODEL.torchrec.json --out benches/peers/fixtures/NAME.loaded.json
"""

import argparse
import json
import sys


def load(plan_file, configs_file=None):
    import torch
    import torchrec
    from torch.distributed._shard.metadata import ShardMetadata
    from torch.distributed._shard.sharded_tensor.metadata import TensorProperties
    from torch.distributed._shard.sharding_spec import EnumerableShardingSpec
    from torchrec.distributed.embedding_types import EmbeddingComputeKernel
    from torchrec.distributed.types import (
        EmbeddingModuleShardingPlan,
        ParameterSharding,
        ShardingPlan,
        ShardingType,
    )

    with open(plan_file) as f:
        doc = json.load(f)
    world = doc.get("world_size")
    device = doc.get("compute_device", "cpu")
    sharding_types = {t.value for t in ShardingType}
    kernels = {k.value for k in EmbeddingComputeKernel}
    sizes = {}
    if configs_file:
        with open(configs_file) as f:
            cfg = json.load(f)
        tables = cfg["tables"] if isinstance(cfg, dict) else cfg
        sizes = {t["name"]: (t["num_embeddings"], t["embedding_dim"]) for t in tables}

    problems = []
    modules = {}
    for path, params in doc["plan"].items():
        module_plan = EmbeddingModuleShardingPlan()
        for name, p in params.items():
            if p["sharding_type"] not in sharding_types:
                problems.append(f"{name}: sharding type {p['sharding_type']!r} is not a ShardingType")
            if p["compute_kernel"] not in kernels:
                problems.append(f"{name}: compute kernel {p['compute_kernel']!r} is not an EmbeddingComputeKernel")
            ranks = p.get("ranks")
            if world is not None and ranks and max(ranks) >= world:
                problems.append(f"{name}: rank {max(ranks)} is beyond world_size {world}")
            spec = None
            if "shards" in p:
                spec = EnumerableShardingSpec(
                    [
                        ShardMetadata(
                            shard_offsets=list(s["shard_offsets"]),
                            shard_sizes=list(s["shard_sizes"]),
                            placement=s["placement"],
                        )
                        for s in p["shards"]
                    ]
                )
                if name in sizes:
                    # torch's own check: the shards tile the whole table, with no overlap.
                    try:
                        spec.build_metadata(torch.Size(sizes[name]), TensorProperties(dtype=torch.float32))
                    except Exception as e:  # noqa: BLE001 - report every table's failure
                        problems.append(f"{name}: the shards do not tile a {sizes[name]} table: {e}")
            elif p["sharding_type"] != ShardingType.DATA_PARALLEL.value:
                problems.append(f"{name}: {p['sharding_type']} needs shards")
            module_plan[name] = ParameterSharding(
                sharding_type=p["sharding_type"],
                compute_kernel=p["compute_kernel"],
                ranks=ranks,
                sharding_spec=spec,
            )
        modules[path] = module_plan
    plan = ShardingPlan(modules)

    if sizes:
        from torchrec.modules.embedding_configs import EmbeddingBagConfig
        from torchrec.modules.embedding_modules import EmbeddingBagCollection

        ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(name=n, num_embeddings=r, embedding_dim=d, feature_names=[n])
                for n, (r, d) in sizes.items()
            ],
            device=torch.device("meta"),
        )
        params = {k.split(".")[-2] for k in ebc.state_dict().keys()}
        planned = {n for m in modules.values() for n in m}
        if params != planned:
            problems.append(
                f"the EmbeddingBagCollection's tables and the plan's differ: "
                f"{sorted(params ^ planned)[:6]}"
            )

    serialized = plan._serialize()
    if serialized["plan"] != doc["plan"]:
        problems.append("ShardingPlan._serialize() of the loaded plan differs from the file's `plan`")
    return {
        "torch": torch.__version__,
        "torchrec": getattr(torchrec, "__version__", "unknown"),
        "source": plan_file,
        "world_size": world,
        "local_world_size": doc.get("local_world_size"),
        "compute_device": device,
        "tables": sum(len(m) for m in modules.values()),
        "sharding_types": sorted({p.sharding_type for m in modules.values() for p in m.values()}),
        "plan": serialized["plan"],
        "rendered": str(plan).splitlines(),
        "problems": problems,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("plan", help="a plan in TorchRec's ShardingPlan JSON form")
    ap.add_argument("--configs", help="the model as TorchRec EmbeddingBagConfigs (embtune workload show --torchrec)")
    ap.add_argument("--out", help="write what was loaded (the fixture) here")
    a = ap.parse_args()
    try:
        import torchrec  # noqa: F401
    except ImportError:
        print(
            "SKIPPED: torchrec is not installed; install it in a venv (see benches/peers/README.md, TorchRec)",
            file=sys.stderr,
        )
        return 0
    r = load(a.plan, a.configs)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(r, f, indent=1, sort_keys=True)
            f.write("\n")
    print(
        f"{a.plan}: {r['tables']} tables loaded into torchrec {r['torchrec']} ShardingPlan "
        f"({', '.join(r['sharding_types'])}), world_size {r['world_size']}"
    )
    for p in r["problems"]:
        print(f"PROBLEM: {p}", file=sys.stderr)
    return 1 if r["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
