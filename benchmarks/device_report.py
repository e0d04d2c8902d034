"""The device check's report (benchmarks/device_check.sh calls it last): the outcome of each step, the
GPU tests' results, the results tables, and a verdict on each performance target, judged from the
rows this check measured. Writes OUTDIR/report.json; the tables print, the verdicts last.

    python benchmarks/device_report.py OUTDIR SECONDS STEP:OUTCOME ...
    python benchmarks/device_report.py --targets results/ops-nvidia-h200.csv ...   # a table's newest run

A target whose rows are absent (another device, a run cut short) is left out, not failed.
"""

import collections
import datetime
import glob
import json
import os
import platform
import re
import sys

import table

# The fraction of copy bandwidth each op's kernels aim at.
COPY_TARGETS = (("group_norm", 0.75), ("predictor_step", 0.75), ("langevin_step", 0.75), ("upfirdn2d", 0.60))
NCSNPP = "ve/cifar10_ncsnpp_continuous"
FIXTURE = "ncsnpp_ve_cifar_small"
KERNELS, SAMPLING = "fused kernels", "sampling engine"


def _verdict(area, target, measured, ok):
    return {"area": area, "target": target, "measured": measured, "ok": bool(ok)}


def op_verdicts(rows):
    """Verdicts of the op benchmark's rows (table.records) on a GPU: per case and kernel backend (the
    fastest of its variants: layout, separable filter, tiled or direct), its fraction of copy
    bandwidth against the op's target, its speed against torch.compile of the reference, and the
    CUDA kernel's against its Triton twin."""
    cases = collections.defaultdict(dict)
    for r in rows:
        cases[r["case"]][r["path"]] = r
    out = []
    for case, cands in cases.items():
        op = table.fields(case)["op"]
        target = next((t for prefix, t in COPY_TARGETS if op.startswith(prefix)), None)
        if target is None:
            continue
        pc = op.startswith(("predictor_step", "langevin_step"))
        best = {}
        for backend in ("cuda", "triton"):
            # The PC steps' other variants draw their noise (in the kernel, or with torch first): their
            # bytes differ from those the copy moved.
            mine = [r for name, r in cands.items() if name == backend or (not pc and name.startswith(backend + " "))]
            if not mine:
                continue
            r = best[backend] = min(mine, key=lambda r: r["median_ms"])
            name = f"{case}: {r['path']}"
            out.append(
                _verdict(
                    KERNELS,
                    f"{name} at >= {target:.0%} of copy bandwidth",
                    f"{r['of_copy']:.0%} ({r['GB_per_s']:.0f} GB/s)",
                    r["of_copy"] >= target,
                )
            )
            compiled = cands.get("torch.compile(reference)")
            if compiled:
                ratio = compiled["median_ms"] / r["median_ms"]
                out.append(
                    _verdict(KERNELS, f"{name} faster than torch.compile of the reference", f"{ratio:.2f}x", ratio > 1)
                )
        if "cuda" in best and "triton" in best:
            ratio = best["triton"]["median_ms"] / best["cuda"]["median_ms"]
            out.append(_verdict(KERNELS, f"{case}: cuda no slower than triton", f"{ratio:.2f}x", ratio >= 1))
    return out


def sampling_verdicts(rows, gpu):
    """Verdicts of the sampling benchmark's rows (table.records): the CIFAR-10 NCSN++ PC sampler's
    targets on a GPU, the NCSN++ fixture's on a CPU."""
    pc = [r for r in rows if r["measure"] == "throughput" and r["sampler"] == "pc"]
    at = lambda model, batch: {r["path"]: r for r in pc if r["model"] == model and r["batch"] == batch}  # noqa: E731
    out = []
    if not gpu:
        for batch in sorted({r["batch"] for r in pc if r["model"] == FIXTURE}):
            r = at(FIXTURE, batch).get("fastsde fp32")
            if r:
                out.append(
                    _verdict(
                        SAMPLING,
                        f"{FIXTURE} PC batch {batch} on the CPU: >= 1.5x the official loop",
                        f"{r['vs_official_loop']:.2f}x",
                        r["vs_official_loop"] >= 1.5,
                    )
                )
        return out

    def fastest(paths, pred):
        chosen = [r for name, r in paths.items() if pred(name)]
        return max(chosen, key=lambda r: r["vs_official_loop"]) if chosen else None

    big = at(NCSNPP, 512)
    tf32 = fastest(big, lambda p: p.startswith("fastsde tf32"))
    bf16 = fastest(big, lambda p: p.startswith("fastsde bf16 + graph"))
    for r, what, need in (
        (tf32, "tf32 (the official loop's precision: TF32 convolutions)", 1.5),
        (bf16, "bf16 + CUDA graph", 4.0),
    ):
        if r:
            out.append(
                _verdict(
                    SAMPLING,
                    f"{NCSNPP} PC batch 512, {what}: >= {need}x the official loop",
                    f"{r['vs_official_loop']:.2f}x ({r['path']}, {r['images_per_s']:.3g} img/s)",
                    r["vs_official_loop"] >= need,
                )
            )
    if bf16:
        out.append(
            _verdict(
                SAMPLING,
                f"{NCSNPP} PC batch 512, bf16 + CUDA graph: half the arithmetic floor (an aim)",
                f"{bf16['of_floor']:.0%} of the floor",
                bf16["of_floor"] >= 0.5,
            )
        )
    for batch in (1, 64):
        r = fastest(at(NCSNPP, batch), lambda p: "+ graph" in p)
        if r:
            out.append(
                _verdict(
                    SAMPLING,
                    f"{NCSNPP} PC batch {batch}, CUDA graph: >= 5x the official loop",
                    f"{r['vs_official_loop']:.2f}x ({r['path']})",
                    r["vs_official_loop"] >= 5,
                )
            )
    r = fastest(at(NCSNPP, 1), lambda p: p.startswith("fastsde"))
    if r:
        out.append(
            _verdict(
                SAMPLING,
                f"{NCSNPP} PC batch 1: under 1 s an image",
                f"{r['seconds_per_batch']:.2f} s ({r['path']})",
                r["seconds_per_batch"] < 1,
            )
        )
    base = big.get("official loop")
    if base and base.get("peak_memory_MiB"):
        for name, r in big.items():
            if name.startswith("fastsde") and r.get("peak_memory_MiB"):
                out.append(
                    _verdict(
                        SAMPLING,
                        f"{NCSNPP} PC batch 512, {name}: peak memory <= the official loop's",
                        f"{r['peak_memory_MiB']:.0f} / {base['peak_memory_MiB']:.0f} MiB",
                        r["peak_memory_MiB"] <= base["peak_memory_MiB"],
                    )
                )
    train = {r["path"]: r for r in rows if r["measure"] == "train_memory" and r["model"] == NCSNPP}
    if "official loop" in train and "fastsde fp32" in train and train["official loop"].get("train_step_peak_MiB"):
        ours, theirs = train["fastsde fp32"]["train_step_peak_MiB"], train["official loop"]["train_step_peak_MiB"]
        out.append(
            _verdict(
                SAMPLING,
                f"{NCSNPP} training step (batch {train['official loop']['batch']}): peak memory "
                "<= 0.8x the official loop's",
                f"{ours / theirs:.2f}x ({ours:.0f} / {theirs:.0f} MiB)",
                ours <= 0.8 * theirs,
            )
        )
    return out


def verdicts_of(name, rows):
    """The verdicts of the rows of a results table named `name` (ops-<kind>.csv or sampling-<kind>.csv)."""
    benchmark, kind = os.path.basename(name)[: -len(".csv")].split("-", 1)
    rows = table.records(rows)
    if benchmark == "ops":
        return op_verdicts(rows) if not kind.startswith("cpu") else []
    return sampling_verdicts(rows, gpu=not kind.startswith("cpu")) if benchmark == "sampling" else []


def verdict_table(verdicts):
    """The verdicts as text, one a line, with a count of those met."""
    lines = [f"{'area':15s} {'':4s} {'target':96s} measured"]
    lines += [
        f"{v['area']:15s} {'ok' if v['ok'] else 'MISS':4s} {v['target'][:96]:96s} {v['measured']}" for v in verdicts
    ]
    lines.append(f"targets met: {sum(v['ok'] for v in verdicts)} of {len(verdicts)}")
    return "\n".join(lines)


def outcomes(log):
    """{outcome: count, 'failed_or_error': the first 20 failing tests} from a `pytest -v` log, which a
    run cut short keeps too (with or without pytest-xdist's line format)."""
    outcome = re.compile(
        r"(?:(tests/\S+) +(PASSED|FAILED|ERROR|SKIPPED))"
        r"|(?:(PASSED|FAILED|ERROR|SKIPPED) +(tests/\S+))"
    )
    seen = {}  # test -> outcome (the closing summary names failures again)
    with open(log, errors="replace") as fh:
        for line in fh:
            m = outcome.search(line)
            if m:
                test, what = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
                seen[test] = what
    bad = [t for t, what in seen.items() if what in ("FAILED", "ERROR")]
    return dict(collections.Counter(seen.values()), failed_or_error=bad[:20])


def report(out, seconds, steps):
    """Writes OUTDIR/report.json from what the device check left in `out` (its logs and its copies of
    the results tables), prints this check's rows and the verdicts last; returns the report."""
    rep = {"seconds": seconds, "steps": dict(s.split(":", 1) for s in steps), "python": platform.python_version()}
    path = lambda name: os.path.join(out, name)  # noqa: E731
    rep["gpu"] = open(path("gpu.txt")).read().strip() if os.path.exists(path("gpu.txt")) else None
    try:
        import torch
        import triton

        rep.update(torch=torch.__version__, cuda=torch.version.cuda, triton=triton.__version__)
    except ImportError as e:
        rep["versions_error"] = str(e)
    if os.path.exists(path("gpu_tests.log")):
        rep["gpu_tests"] = outcomes(path("gpu_tests.log"))
    # This check's rows: those dated since it started.
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds + 1)
    since = start.isoformat(timespec="seconds")
    tables = {
        os.path.basename(t): [r for r in table.read(t) if r["date"] >= since] for t in sorted(glob.glob(path("*.csv")))
    }
    rep["rows"] = {name: len(rows) for name, rows in tables.items()}
    # Judged first, report.json written, then the tables printed: a table that fails to print loses nothing.
    verdicts = rep["targets"] = [v for name, rows in tables.items() for v in verdicts_of(name, rows)]
    with open(path("report.json"), "w") as fh:
        json.dump(rep, fh, indent=1)
    for name, rows in tables.items():
        print(f"# {name}")
        print(table.text(rows))
    print(json.dumps({k: v for k, v in rep.items() if k != "targets"}))
    print(verdict_table(verdicts))
    return rep


def main(argv):
    if argv[:1] == ["--targets"]:
        print(verdict_table([v for t in argv[1:] for v in verdicts_of(t, table.newest(table.read(t)))]))
        return
    if len(argv) < 2:
        sys.exit(__doc__)
    report(argv[0], int(argv[1]), argv[2:])


if __name__ == "__main__":
    main(sys.argv[1:])
