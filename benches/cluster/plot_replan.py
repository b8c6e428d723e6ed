#!/usr/bin/env python3
"""Summarises and draws `benches/cluster/replan.sh`'s output, with the standard library only.

Usage: plot_replan.py OUT_DIR

Reads OUT_DIR/timeline.csv (queries per second, each second, `--replan off` and `auto`, before
and after the traffic drifts), OUT_DIR/runs.csv (each client run's totals: errors, verified),
OUT_DIR/watch.csv (the cost of watching) and OUT_DIR/live-*.json (the re-planner's switches);
prints medians and ratios and writes OUT_DIR/timeline.svg (round 1).
"""
import csv
import glob
import json
import os
import statistics
import sys

W, H, L, R, T, B = 760, 360, 80, 130, 20, 45
COLORS = {"off": "#d62728", "auto": "#1f77b4"}


def rows(path, key):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [r for r in csv.DictReader(f) if r.get(key)]


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    out = sys.argv[1]
    timeline = rows(f"{out}/timeline.csv", "queries_per_s")
    runs = rows(f"{out}/runs.csv", "mode")
    lives = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/live-*.json"))]
    switches = [s for live in lives for s in live.get("switches", [])]
    errors = sum(int(r["errors"] or 0) for r in runs)
    unverified = [r for r in runs if r["verified"] != "True"]
    print(f"client runs: {len(runs)}, failed queries: {errors}, runs not verified: {len(unverified)}")
    drift_at = min((float(r["t_s"]) for r in timeline if r["phase"] == "drifted"), default=0.0)
    end = max((float(r["t_s"]) for r in timeline), default=0.0)
    # The last half of the drifted phase: after the re-planner has had time to judge, switch
    # and measure.
    late = drift_at + (end - drift_at) / 2
    for mode in COLORS:
        before = [float(r["queries_per_s"]) for r in timeline if r["mode"] == mode and r["phase"] == "planned"]
        after = [float(r["queries_per_s"]) for r in timeline
                 if r["mode"] == mode and r["phase"] == "drifted" and float(r["t_s"]) >= late]
        print(f"{mode:5} planned {median(before):8.1f} q/s; drifted, last half {median(after):8.1f} q/s "
              f"({len(before)} and {len(after)} seconds)")
    for s in switches:
        cap = s["capacity_after"] / s["capacity_before"] if s["capacity_before"] else float("nan")
        srv = s["served_after"] / s["served_before"] if s["served_before"] else float("nan")
        print(f"switch: predicted {s['predicted_gain']:.2f}x; capacity {s['capacity_before']:.0f} -> "
              f"{s['capacity_after']:.0f} ({cap:.2f}x), served {s['served_before']:.0f} -> "
              f"{s['served_after']:.0f} ({srv:.2f}x); deployed in {s['deploy_s']:.2f}s; {s['outcome']}")
    watch = rows(f"{out}/watch.csv", "batches_per_s")
    if watch:
        off = [float(r["batches_per_s"]) for r in watch if r["mode"] == "off"]
        on = [float(r["batches_per_s"]) for r in watch if r["mode"] == "on"]
        print(f"watching: off {median(off):.1f}, on {median(on):.1f} batches/s "
              f"(on / off {median(on) / median(off):.3f}; {len(off)} and {len(on)} slices)")
    draw(f"{out}/timeline.svg", [r for r in timeline if r["round"] == "1"], drift_at, switches)


def draw(path, timeline, drift_at, switches):
    if not timeline:
        return
    end = max(float(r["t_s"]) for r in timeline)
    top = max(float(r["queries_per_s"]) for r in timeline) * 1.1
    x = lambda t: L + t / max(end, 1e-9) * (W - L - R)
    y = lambda v: T + (1 - v / top) * (H - T - B)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>']
    for k in range(5):
        v = top * k / 4
        svg.append(f'<line x1="{L}" x2="{W - R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
        svg.append(f'<text x="{L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
    if drift_at:
        svg.append(f'<line x1="{x(drift_at):.1f}" x2="{x(drift_at):.1f}" y1="{T}" y2="{H - B}" stroke="#999" stroke-dasharray="4 3"/>')
        svg.append(f'<text x="{x(drift_at) + 4:.1f}" y="{T + 12}" fill="#666">traffic drifts</text>')
    for mode, color in COLORS.items():
        pts = sorted((float(r["t_s"]), float(r["queries_per_s"])) for r in timeline if r["mode"] == mode)
        if not pts:
            continue
        d = " ".join(f"{'M' if i == 0 else 'L'}{x(t):.1f},{y(v):.1f}" for i, (t, v) in enumerate(pts))
        svg.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="2"/>')
        svg.append(f'<text x="{W - R + 8}" y="{y(pts[-1][1]) + 4:.1f}" fill="{color}">--replan {mode}</text>')
    for k in range(0, int(end) + 1, 10):
        svg.append(f'<text x="{x(k):.1f}" y="{H - B + 16}" text-anchor="middle">{k}</text>')
    svg.append(f'<text x="{(L + W - R) / 2}" y="{H - 8}" text-anchor="middle">seconds of load (one client process per phase)</text>')
    svg.append(f'<text x="16" y="{(T + H - B) / 2}" transform="rotate(-90 16 {(T + H - B) / 2})" '
               f'text-anchor="middle">queries/s (client-measured, each second)</text>')
    svg.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(svg))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
