#!/usr/bin/env python3
"""Draws tuning curves as one SVG, with the standard library only.

Usage: plot_tune.py OUT.svg LABEL=FILE.csv [LABEL=FILE.csv ...]

Each CSV is `embtune results export JOB --format csv`. Per job: every measured trial as a dot,
the best so far as a step line, and the job's best baseline as a dashed line. Higher is better
(the throughput objective).
"""
import csv
import sys

W, H, L, R, T, B = 760, 360, 70, 150, 20, 45
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def load(path):
    trials, baselines = [], {}
    with open(path) as f:
        for row in csv.DictReader(f):
            if not row["value"]:
                continue
            n, v = int(row["trial"]), float(row["value"])
            if row["kind"].startswith("baseline:"):
                baselines[row["kind"].split(":", 1)[1]] = v
            trials.append((n, v))
    return trials, baselines


def main():
    out, jobs = sys.argv[1], [a.split("=", 1) for a in sys.argv[2:]]
    data = [(label, *load(path)) for label, path in jobs]
    n_max = max(n for _, tr, _ in data for n, _ in tr)
    v_max = max(v for _, tr, _ in data for _, v in tr) * 1.05
    x = lambda n: L + (W - L - R) * n / max(n_max, 1)
    y = lambda v: T + (H - T - B) * (1 - v / v_max)
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
         f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>',
         f'<text x="{(L + W - R) / 2}" y="{H - 8}" text-anchor="middle">trial (0-4: the baselines)</text>',
         f'<text x="14" y="{(T + H - B) / 2}" transform="rotate(-90 14 {(T + H - B) / 2})" text-anchor="middle">batches/s</text>']
    for k in range(6):
        v = v_max * k / 5
        s.append(f'<text x="{L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
        s.append(f'<line x1="{L}" y1="{y(v):.1f}" x2="{W - R}" y2="{y(v):.1f}" stroke="#eee"/>')
    for n in range(0, n_max + 1, 5):
        s.append(f'<text x="{x(n):.1f}" y="{H - B + 16}" text-anchor="middle">{n}</text>')
    for i, (label, trials, baselines) in enumerate(data):
        c = COLORS[i % len(COLORS)]
        best, pts = 0.0, []
        for n, v in trials:
            s.append(f'<circle cx="{x(n):.1f}" cy="{y(v):.1f}" r="3" fill="{c}" fill-opacity="0.5"/>')
            best = max(best, v)
            pts.append(f"{x(n):.1f},{y(best):.1f}")
        s.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{c}" stroke-width="2"/>')
        if baselines:
            name, bv = max(baselines.items(), key=lambda kv: kv[1])
            s.append(f'<line x1="{L}" y1="{y(bv):.1f}" x2="{W - R}" y2="{y(bv):.1f}" stroke="{c}" stroke-dasharray="5,4"/>')
        ly = T + 20 + 40 * i
        s.append(f'<line x1="{W - R + 10}" y1="{ly}" x2="{W - R + 30}" y2="{ly}" stroke="{c}" stroke-width="2"/>')
        s.append(f'<text x="{W - R + 35}" y="{ly + 4}">{label}: best so far</text>')
        s.append(f'<text x="{W - R + 35}" y="{ly + 18}" fill="#555">dashed: best baseline</text>')
    s.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(s) + "\n")


if __name__ == "__main__":
    main()
