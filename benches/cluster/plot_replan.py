#!/usr/bin/env python3
"""Summarises and draws `benches/cluster/replan.sh`'s output, with the standard library only.

Usage: plot_replan.py OUT_DIR

Reads OUT_DIR/timeline.csv (throughput per slice, `--replan off` and `auto`, before and after
the traffic drifts), OUT_DIR/watch.csv (the cost of watching) and OUT_DIR/live-*.json (the
re-planner's switches); prints medians and ratios and writes OUT_DIR/timeline.svg.
"""
import csv
import glob
import json
import os
import statistics
import sys

W, H, L, R, T, B = 760, 360, 80, 130, 20, 45
COLORS = {"off": "#d62728", "auto": "#1f77b4"}


def rows(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [r for r in csv.DictReader(f) if r["batches_per_s"]]


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    out = sys.argv[1]
    timeline = rows(f"{out}/timeline.csv")
    lives = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/live-*.json"))]
    switches = [s for live in lives for s in live.get("switches", [])]
    errors = sum(int(r["errors"]) for r in timeline)
    unverified = sum(1 for r in timeline if r["verified"] != "True")
    print(f"slices: {len(timeline)}, errors: {errors}, slices not verified: {unverified}")
    by = {}
    for r in timeline:
        by.setdefault((r["mode"], r["phase"]), []).append(r)
    summary = {}
    for (mode, phase), rs in sorted(by.items()):
        if phase == "drifted":
            # The last half: after the re-planner has had time to judge, switch and measure.
            rs = sorted(rs, key=lambda r: int(r["slice"]))[len(rs) // 2:]
        bps = median([float(r["batches_per_s"]) for r in rs])
        p99 = median([float(r["p99_us"]) for r in rs])
        summary[(mode, phase)] = (bps, p99)
        print(f"{mode:5} {phase:8} median {bps:8.1f} batches/s, p99 {p99:8.0f} us over {len(rs)} slices")
    if ("off", "drifted") in summary and ("auto", "drifted") in summary:
        a, o = summary[("auto", "drifted")], summary[("off", "drifted")]
        print(f"drifted traffic, auto / off: {a[0] / o[0]:.2f}x batches/s, p99 {a[1] / o[1]:.2f}x")
    for s in switches:
        ratio = s["capacity_after"] / s["capacity_before"] if s["capacity_before"] else float("nan")
        print(f"switch: predicted {s['predicted_gain']:.2f}x, measured capacity "
              f"{s['capacity_before']:.0f} -> {s['capacity_after']:.0f} batches/s ({ratio:.2f}x), "
              f"deployed in {s['deploy_s']:.2f}s, {s['outcome']}")
    watch = rows(f"{out}/watch.csv")
    if watch:
        off = [float(r["batches_per_s"]) for r in watch if r["mode"] == "off"]
        on = [float(r["batches_per_s"]) for r in watch if r["mode"] == "on"]
        print(f"watching: off {median(off):.1f}, on {median(on):.1f} batches/s "
              f"(on / off {median(on) / median(off):.3f}; {len(off)} and {len(on)} slices)")
    draw(f"{out}/timeline.svg", timeline, by)


def draw(path, timeline, by):
    if not timeline:
        return
    n = max(int(r["slice"]) for r in timeline)
    top = max(float(r["batches_per_s"]) for r in timeline) * 1.1
    x = lambda i: L + (i - 1) / max(n - 1, 1) * (W - L - R)
    y = lambda v: T + (1 - v / top) * (H - T - B)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>']
    for k in range(5):
        v = top * k / 4
        svg.append(f'<line x1="{L}" x2="{W - R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
        svg.append(f'<text x="{L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
    drift = min((int(r["slice"]) for r in timeline if r["phase"] == "drifted"), default=None)
    if drift:
        xd = (x(drift - 1) + x(drift)) / 2
        svg.append(f'<line x1="{xd:.1f}" x2="{xd:.1f}" y1="{T}" y2="{H - B}" stroke="#999" stroke-dasharray="4 3"/>')
        svg.append(f'<text x="{xd + 4:.1f}" y="{T + 12}" fill="#666">traffic drifts</text>')
    for mode, color in COLORS.items():
        pts = sorted((int(r["slice"]), float(r["batches_per_s"])) for r in timeline if r["mode"] == mode)
        if not pts:
            continue
        path_d = " ".join(f"{'M' if i == 0 else 'L'}{x(s):.1f},{y(v):.1f}" for i, (s, v) in enumerate(pts))
        svg.append(f'<path d="{path_d}" fill="none" stroke="{color}" stroke-width="2"/>')
        svg.append(f'<text x="{W - R + 8}" y="{y(pts[-1][1]) + 4:.1f}" fill="{color}">--replan {mode}</text>')
    svg.append(f'<text x="{(L + W - R) / 2}" y="{H - 10}" text-anchor="middle">slice of load (each a few seconds)</text>')
    svg.append(f'<text x="16" y="{(T + H - B) / 2}" transform="rotate(-90 16 {(T + H - B) / 2})" '
               f'text-anchor="middle">batches/s (client-measured)</text>')
    svg.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(svg))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
