#!/usr/bin/env python3
"""Summarise `embtune gpu-bench --json-out` and `torch_embedding_bag.py --json-out` reports.

Usage: summarize.py DIR   (reads DIR/gpu_<label>.json and DIR/torch_<label>.json pairs)
Prints a Markdown table: per workload label, every embtune variant's ms/batch, its ratio to
PyTorch (PyTorch ms / embtune ms: above 1 is faster than PyTorch; for `_f16` / `_int8` runs,
against PyTorch's f32 run of the same workload), row bytes/s (of the stored rows) and their
share of the measured device-to-device copy bandwidth.
"""

import json
import sys
from pathlib import Path


def main() -> int:
    d = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    labels = sorted(p.name[len("gpu_"):-len(".json")] for p in d.glob("gpu_*.json"))
    rows = []
    device = None
    for label in labels:
        g = json.loads((d / f"gpu_{label}.json").read_text())
        device = device or g["device"]
        tp = d / f"torch_{label}.json"
        # f16 / int8 runs have no PyTorch run of their own: their ratio is to PyTorch's f32.
        base = label.rsplit("_", 1)[0] if label.endswith(("_f16", "_int8")) else None
        t = json.loads(tp.read_text()) if tp.exists() else None
        if t is None and base and (d / f"torch_{base}.json").exists():
            t = json.loads((d / f"torch_{base}.json").read_text())
            t["_borrowed"] = True
        copy = g.get("copy_bytes_per_s")
        if t and not t.get("_borrowed"):
            rows.append((label, "pytorch embedding_bag x%d" % t["tables"], t["ms"]["median"], 1.0,
                         t["row_bytes_per_s"], t["row_bytes_per_s"] / copy if copy else None, "-", "-"))
        best = min(g["runs"], key=lambda r: r["ms"]["median"])
        for r in g["runs"]:
            ratio = t["ms"]["median"] / r["ms"]["median"] if t else None
            ver = {True: "yes", False: "NO", None: "-"}[r.get("verified")]
            mark = " **best**" if r is best else ""
            rows.append((label, r["name"] + mark, r["ms"]["median"], ratio, r["row_bytes_per_s"],
                         r.get("of_copy_bandwidth"), ver,
                         "%d%s" % (r["layout"]["registers"], " spills" if r["layout"]["local_bytes"] else "")))
    if device:
        print(f"device: {device['name']}, {device['sms']} SMs, L2 {device['l2_bytes'] >> 20} MiB, "
              f"persisting L2 max {device['max_persisting_l2'] / 2**20:.1f} MiB, driver {device['driver_version']}, "
              f"NVRTC {device['nvrtc_version'][0]}.{device['nvrtc_version'][1]}")
    print()
    print("| workload | variant | ms/batch | x PyTorch | row GB/s | of copy BW | verified | regs |")
    print("|---|---|---:|---:|---:|---:|---|---|")
    for label, name, ms, ratio, bps, frac, ver, regs in rows:
        print(f"| {label} | {name} | {ms:.3f} | {'-' if ratio is None else f'{ratio:.2f}'} | {bps / 1e9:.0f} | "
              f"{'-' if frac is None else f'{frac * 100:.0f}%'} | {ver} | {regs} |")
    for label in labels:
        g = json.loads((d / f"gpu_{label}.json").read_text())
        if g.get("copy_bytes_per_s"):
            print(f"\n{label}: device-to-device copy {g['copy_bytes_per_s'] / 1e9:.0f} GB/s (read+write), "
                  f"{g['lookups_per_batch']:.0f} look-ups and {g['row_bytes_per_batch'] / 1e9:.3f} GB of rows per batch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
