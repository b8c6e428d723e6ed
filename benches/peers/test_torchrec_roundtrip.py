#!/usr/bin/env python3
"""embtune's TorchRec files loaded into TorchRec's own types: the test behind the fixtures.

    EMBTUNE=target/debug/embtune /work/venv-torchrec/bin/python benches/peers/test_torchrec_roundtrip.py
    ... test_torchrec_roundtrip.py --write-fixtures   # remake fixtures/mixed.{torchrec,loaded}.json

With TorchRec installed (benches/peers/README.md, "TorchRec") it checks that
- `embtune plan export --format torchrec` of fixtures/mixed.plan.json (every placement and flow
  embtune has) builds a `torchrec.distributed.types.ShardingPlan` whose shards torch accepts as a
  tiling of each table, and that TorchRec serialises it back to exactly the export's `plan`;
- every plan TorchRec's planner made under results/ loads the same way and imports into embtune;
- `embtune workload show --torchrec` builds TorchRec's `EmbeddingBagConfig`s and an
  `EmbeddingBagCollection` of them.
--write-fixtures stores the export and what TorchRec loaded, which the Rust test
cli/tests/torchrec_interop.rs compares embtune's export against on every CI run (CI has no torch).
Without TorchRec it prints SKIPPED and passes.
"""

import glob
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "fixtures")
EMBTUNE = os.environ.get("EMBTUNE", os.path.join(HERE, "../../target/debug/embtune"))
WRITE = "--write-fixtures" in sys.argv
sys.path.insert(0, HERE)


def embtune(*args):
    r = subprocess.run([EMBTUNE, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"embtune {' '.join(args)}: {r.stderr}")
    return r.stdout


class RoundTrip(unittest.TestCase):
    def test_export_loads_into_torchrec_types(self):
        import torchrec_plan

        model = os.path.join(FIX, "mixed.model.json")
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "mixed.torchrec.json")
            embtune(
                "plan", "export", "--model", model, "--plan", os.path.join(FIX, "mixed.plan.json"),
                "--workers", "2", "--cores", "4", "--format", "torchrec", "--out", out,
            )
            with open(out) as f:
                export = json.load(f)
            r = torchrec_plan.load(out, model)
        self.assertEqual(r["problems"], [])
        self.assertEqual(r["plan"], export["plan"])
        self.assertEqual(
            r["sharding_types"], ["data_parallel", "row_wise", "table_row_wise", "table_wise"]
        )
        if WRITE:
            r["source"] = "fixtures/mixed.torchrec.json"
            for name, doc in [("mixed.torchrec.json", export), ("mixed.loaded.json", r)]:
                with open(os.path.join(FIX, name), "w") as f:
                    json.dump(doc, f, indent=2 if name.endswith("torchrec.json") else 1, sort_keys=True)
                    f.write("\n")

    def test_planner_plans_load_and_import(self):
        import torchrec_plan

        plans = sorted(glob.glob(os.path.join(HERE, "results", "*.torchrec.json")))
        self.assertEqual(len(plans), 8)
        for p in plans:
            with open(p) as f:
                doc = json.load(f)
            w = os.path.basename(p).rsplit("-", 1)[0]
            r = torchrec_plan.load(p, os.path.join(HERE, "results", f"{w}.configs.json"))
            self.assertEqual(r["problems"], [], p)
            plan = json.loads(embtune("plan", "import", "--torchrec", p, *doc["workload"]))
            self.assertEqual(plan["strategy"], "torchrec")

    def test_configs_build_an_embedding_bag_collection(self):
        import torch
        from torchrec.modules.embedding_configs import DataType, EmbeddingBagConfig, PoolingType
        from torchrec.modules.embedding_modules import EmbeddingBagCollection

        cfg = json.loads(embtune("workload", "show", "--torchrec", "--preset", "criteo-kaggle", "--scale", "0.01"))
        ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(
                    name=t["name"], num_embeddings=t["num_embeddings"], embedding_dim=t["embedding_dim"],
                    feature_names=t["feature_names"], pooling=PoolingType[t["pooling"]],
                    data_type=DataType[t["data_type"]],
                )
                for t in cfg["tables"]
            ],
            device=torch.device("meta"),
        )
        self.assertEqual(len(ebc.embedding_bag_configs()), 26)


if __name__ == "__main__":
    try:
        import torchrec  # noqa: F401
    except ImportError:
        print("SKIPPED: torchrec is not installed (see benches/peers/README.md, TorchRec)")
        sys.exit(0)
    unittest.main(argv=[a for a in sys.argv if a != "--write-fixtures"])
