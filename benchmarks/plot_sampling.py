"""Plots a bench_sampling.py report: images per second against batch size, one panel per model and
sampler, one line per path. Needs matplotlib (pip install -e '.[bench]').

    python benchmarks/plot_sampling.py REPORT.json PLOT.png
"""

import json
import sys
from collections import defaultdict


def main(report, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(report) as fh:
        rep = json.load(fh)
    panels = defaultdict(lambda: defaultdict(list))  # (model, sampler) -> path -> [(batch, img/s)]
    for r in rep["rows"]:
        panels[(r["model"], r["sampler"])][r["path"]].append((r["batch"], r["images_per_s"]))
    panels = {k: v for k, v in panels.items() if any(len(p) > 1 for p in v.values())}  # lines need two batches
    if not panels:
        raise SystemExit(f"{report}: no case was run at more than one batch size")
    names = sorted({path for paths in panels.values() for path in paths})
    colour = {name: f"C{i}" for i, name in enumerate(names)}  # one colour per path in every panel
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, ((model, sampler), paths) in zip(axes[0], sorted(panels.items())):
        batches = sorted({b for points in paths.values() for b, _ in points})
        for path, points in sorted(paths.items()):
            points.sort()
            ax.plot([b for b, _ in points], [v for _, v in points], marker="o", label=path, color=colour[path])
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="images / s", title=f"{model}\n{sampler}")
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    m = rep["machine"]
    fig.suptitle(
        f"{m.get('gpu') or m['cpu']} ({m['threads']} threads), torch {m['torch']}, {m['date'][:10]}", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
