"""Plots a sampling results table: images per second against batch size, one panel per model and
sampler, one line per path, for the machine and torch of the newest row. Needs matplotlib
(pip install -e '.[bench]').

    python benchmarks/plot_sampling.py benchmarks/results/sampling-cpu-2core.csv PLOT.png
"""

import sys
from collections import defaultdict

import table


def main(csv, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table.newest([r for r in table.read(csv) if r["metric"] == "images_per_s"])
    if not rows:
        raise SystemExit(f"{csv}: no throughput rows")
    newest = max(rows, key=lambda r: r["date"])
    panels = defaultdict(lambda: defaultdict(list))  # (model, sampler) -> path -> [(batch, img/s)]
    for r in rows:
        f = table.fields(r["case"])
        panels[f["model"], f["sampler"]][r["path"]].append((int(f["batch"]), r["value"]))
    panels = {k: v for k, v in panels.items() if any(len(p) > 1 for p in v.values())}  # lines need two batches
    if not panels:
        raise SystemExit(f"{csv}: no case was run at more than one batch size")
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
    fig.suptitle(f"{newest['machine']}, torch {newest['torch']}, {newest['date'][:10]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
