"""Results tables: one CSV per benchmark and machine kind in benchmarks/results/, updated in place.

Each row is one number: case, path, metric, value, then machine, torch and date. A new measurement
replaces the row of the same case, path, metric, machine and torch; git history keeps the old ones.

    python benchmarks/table.py FILE.csv [--where k=v ...]         # print a table, one row a case and path
    python benchmarks/table.py --from-pytest-benchmark OPS.json    # record bench_ops.py's results
"""

import argparse
import csv
import io
import json
import os
import sys

import torch

from fastsde.checkpoint import atomic_write_bytes
from fastsde.timing import machine

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
KEY = ("case", "path", "metric", "machine", "torch")
COLUMNS = ("case", "path", "metric", "value", "machine", "torch", "date")


def kind(device):
    """The machine kind of a table's file name: the GPU's name ('nvidia-h200') or 'cpu-<cores>core'."""
    device = torch.device(device)
    if device.type == "cuda":
        return "-".join(torch.cuda.get_device_name(device).lower().split()[:2])
    return f"cpu-{os.cpu_count()}core"


def case(**fields):
    """A case name from its fields, 'model=digits sampler=pc batch=8'; fields() reads it back."""
    for k, v in fields.items():
        if " " in f"{k}{v}" or "=" in f"{k}{v}":
            raise ValueError(f"case field {k}={v!r}: no spaces or '=' allowed")
    return " ".join(f"{k}={v}" for k, v in fields.items())


def fields(name):
    """The fields of a case name made by case(), as strings."""
    return dict(part.split("=", 1) for part in name.split())


def rows_of(results, measure, keys, path="path"):
    """Rows for record() from result dicts: the case from `measure` and the fields `keys`, the path
    from the field `path`, the other fields as metrics."""
    out = []
    for r in results:
        metrics = {k: v for k, v in r.items() if k not in (*keys, path)}
        out.append(dict(metrics, case=case(measure=measure, **{k: r[k] for k in keys}), path=r[path]))
    return out


def path_of(benchmark, device, folder=RESULTS):
    return os.path.join(folder, f"{benchmark}-{kind(device)}.csv")


def read(path):
    """The rows of a table, values as floats; [] if there is none yet."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as fh:
        return [dict(r, value=float(r["value"])) for r in csv.DictReader(fh)]


def melt(rows):
    """One row a number (case, path, metric, value) of dicts with 'case', 'path' and metrics; None,
    text and lists are left out."""
    out = []
    for r in rows:
        for metric, value in r.items():
            if metric not in ("case", "path") and isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append(dict(case=r["case"], path=r["path"], metric=metric, value=value))
    return out


def record(benchmark, device, rows, folder=RESULTS):
    """Writes `rows` (dicts with 'case', 'path' and metrics, see melt) into the table of `benchmark`
    on this machine kind, in place, and returns the table's path."""
    info = machine(device)
    where = info.get("gpu") or f"{info['cpu']} ({info['threads']} threads)"
    path = path_of(benchmark, device, folder)
    table = {tuple(r[k] for k in KEY): r for r in read(path)}
    for r in melt(rows):
        r.update(machine=where, torch=info["torch"], date=info["date"])
        table[tuple(r[k] for k in KEY)] = r  # in place: a key keeps its position
    write(path, list(table.values()))
    return path


def write(path, rows):
    """Writes a table's rows to `path` atomically."""
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(dict(r, value=f"{r['value']:.6g}"))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, out.getvalue().encode())


def newest(rows):
    """The rows measured on the machine and torch of the newest row: one run's figures, not a mix."""
    if not rows:
        return []
    last = max(rows, key=lambda r: r["date"])
    return [r for r in rows if (r["machine"], r["torch"]) == (last["machine"], last["torch"])]


def wide(rows):
    """{(case, path): {metric: value}} of a table's rows."""
    out = {}
    for r in rows:
        out.setdefault((r["case"], r["path"]), {})[r["metric"]] = r["value"]
    return out


def records(rows):
    """One dict a case and path: the case's fields (whole numbers as ints), 'case', 'path' and the
    metrics, from a table's rows."""
    out = []
    for (c, p), metrics in wide(rows).items():
        f = {k: int(v) if v.isdigit() else v for k, v in fields(c).items()}
        out.append(dict(metrics, **f, case=c, path=p))
    return out


def text(rows, metrics=None):
    """The rows as text, one line a case and path, one column a metric."""
    by = wide(rows)
    metrics = metrics or list(dict.fromkeys(r["metric"] for r in rows))
    width = max([len(c) for c, _ in by] + [4])
    pw = max([len(p) for _, p in by] + [4])
    lines = [f"{'case':{width}s} {'path':{pw}s} " + " ".join(f"{m[:16]:>16s}" for m in metrics)]
    for (c, p), values in by.items():
        cells = (f"{values[m]:16.5g}" if m in values else f"{'-':>16s}" for m in metrics)
        lines.append(f"{c:{width}s} {p:{pw}s} " + " ".join(cells))
    return "\n".join(lines)


def from_pytest_benchmark(report):
    """Rows of bench_ops.py's pytest-benchmark JSON: each candidate's median per call, its speed over
    the case's baseline, its bandwidth and its fraction of a plain copy's of the same bytes."""
    medians, info = {}, {}
    for b in report["benchmarks"]:
        x = b["extra_info"]
        medians[x["case"], x["candidate"]] = b["stats"]["median"] / x["inner"]
        info[x["case"]] = x
    rows = []
    for (c, candidate), t in medians.items():
        x = info[c]
        base, copy = medians.get((c, x["baseline"])), medians.get((c, x["copy"]))
        row = dict(case=c, path=candidate, median_ms=t * 1e3, GB_per_s=x["bytes"] / t / 1e9)
        if base:
            row["vs_baseline"] = base / t
        if copy:
            row["of_copy"] = copy / t
        rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("table", nargs="?", help="a results CSV to print")
    p.add_argument("--where", nargs="*", default=[], help="keep the cases with these fields, k=v")
    p.add_argument("--from-pytest-benchmark", metavar="JSON", help="record bench_ops.py's results")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.from_pytest_benchmark:
        with open(args.from_pytest_benchmark) as fh:
            rows = from_pytest_benchmark(json.load(fh))
        print(record("ops", args.device, rows))
        return
    if not args.table:
        p.error("name a table, or --from-pytest-benchmark")
    want = fields(" ".join(args.where))
    rows = [r for r in read(args.table) if want.items() <= fields(r["case"]).items()]
    print(text(rows))


if __name__ == "__main__":
    sys.exit(main())
