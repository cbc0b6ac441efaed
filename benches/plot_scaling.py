#!/usr/bin/env python3
"""Plots the cost table of `benches/harness.py --scaling` against the
upstream count: time to all healthy, engine CPU seconds, peak RSS and RSS
per upstream, log x axis. One line per JSON file given (its `label` in the
legend), so a run before and after a change can share the plot.

    bash scripts/setup-bench-deps.sh          # matplotlib, pinned, in .deps/bench-plot
    python3 benches/harness.py --scaling 100,1000,10000 --tools 10 --runs 3 \\
        --farm-base-port 12000 --json-out docs/scaling.json
    .deps/bench-plot/bin/python benches/plot_scaling.py docs/scaling.json -o docs/scaling.png

docs/scaling.png as committed compares four runs (the first two with
`--farm-procs 3` and `MALLOC_ARENA_MAX=2`, the first with `--push-streams`):

    .deps/bench-plot/bin/python benches/plot_scaling.py docs/scaling.json \
        docs/scaling-no-push.json docs/scaling-gate.json \
        docs/scaling-before-gate.json -o docs/scaling.png \
        --label "now, push streams open" --label "now, no push" \
        --label "gate (c91d478), no push" --label "before gate (5fef5ff)"

The dashed lines are issue 13's goals at 10,000 upstreams (all healthy
within 5 s, peak RSS under 300 MiB); the dotted one in the time and CPU
panels is linear growth from 1,000 upstreams (or the first count) of the
first file.
"""

import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib import ticker  # noqa: E402

PANELS = [
    # key, title, y label, log y, goal (count, value) or None, linear guide
    ("seconds_to_all_healthy", "time to all healthy", "seconds", True, (10000, 5.0), True),
    ("cpu_s_to_all_healthy", "engine CPU to all healthy", "CPU seconds", True, None, True),
    ("peak_rss_mib", "engine peak RSS", "MiB", True, (10000, 300.0), False),
    ("rss_kib_per_upstream", "peak RSS per upstream", "KiB", False, None, False),
]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", nargs="+", help="output(s) of harness.py --scaling --json-out")
    p.add_argument("-o", "--out", default="docs/scaling.png")
    p.add_argument("--label", action="append", default=[],
                   help="legend label of the next JSON file, in order (repeat; default: each file's label)")
    args = p.parse_args()
    labels = args.label
    docs = []
    for path in args.json:
        with open(path) as f:
            docs.append(json.load(f))
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), constrained_layout=True)
    for ax, (key, title, ylabel, logy, goal, linear) in zip(axes.flat, PANELS):
        for i, doc in enumerate(docs):
            rows = [r for r in doc["rows"] if r.get(key) is not None]
            if not rows:
                continue
            xs = [r["count"] for r in rows]
            ys = [r[key] for r in rows]
            label = labels[i] if i < len(labels) else doc.get("label") or doc.get("commit") or "run"
            line, = ax.plot(xs, ys, marker="o", label=label)
            for x, y in zip(xs, ys):
                ax.annotate(f"{y:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8,
                            color=line.get_color())
            if linear and i == 0 and len(rows) > 1:
                # Linear from 1,000 (the yardstick), else the first count.
                x0, y0 = next(((x, y) for x, y in zip(xs, ys) if x == 1000), (xs[0], ys[0]))
                ax.plot(xs, [y0 * x / x0 for x in xs], linestyle=":", color="grey",
                        label=f"linear from {x0:,}")
        if goal:
            ax.axhline(goal[1], linestyle="--", color="red", linewidth=1,
                       label=f"goal at {goal[0]:,}: {goal[1]:g}")
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_title(title)
        ax.set_xlabel("upstreams")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    first = docs[0]
    fig.suptitle(f"mcp-discovery start-up cost, {first.get('tools')} tools per upstream, "
                 f"{first.get('cpus')} CPUs, medians of {first.get('runs')} runs ({first.get('date', '')[:10]})",
                 fontsize=10)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
