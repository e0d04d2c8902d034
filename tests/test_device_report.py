"""The device check's report (benchmarks/device_report.py): the verdicts on the performance targets
from results rows, and the report a device check leaves, on rows made up for the purpose (no GPU
needed)."""

import datetime
import json
import os
import subprocess
import sys

import pytest

import device_report
import table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GN = table.case(op="group_norm+silu", shape="512x128x32x32", dtype="float32")
UP = table.case(op="upfirdn2d_up2", shape="512x256x16x16", dtype="float32")
PRED = table.case(op="predictor_step", shape="512x3x32x32", dtype="float32")


def op_row(case, path, ms, of_copy):
    return {"case": case, "path": path, "median_ms": ms, "of_copy": of_copy, "GB_per_s": 4300 * of_copy}


OPS = [
    op_row(GN, "eager F.silu(F.group_norm)", 10.0, 0.3),
    op_row(GN, "torch.compile(reference)", 4.0, 0.7),
    op_row(GN, "cuda", 3.5, 0.8),
    op_row(GN, "cuda channels_last", 3.0, 0.9),
    op_row(GN, "triton", 3.2, 0.85),
    op_row(GN, "triton channels_last", 3.6, 0.75),
    op_row(GN, "copy (same bytes)", 2.7, 1.0),
    op_row(UP, "reference", 9.0, 0.2),
    op_row(UP, "torch.compile(reference)", 1.8, 0.6),
    op_row(UP, "cuda separable", 2.0, 0.55),
    op_row(UP, "cuda 2-D filter direct kernel", 1.9, 0.58),
    op_row(UP, "triton separable", 1.5, 0.7),
    op_row(UP, "copy (same bytes)", 1.0, 1.0),
    op_row(PRED, "reference", 3.0, 0.3),
    op_row(PRED, "cuda", 1.0, 0.8),
    op_row(PRED, "cuda in-kernel noise", 0.5, 1.6),
    op_row(PRED, "torch.randn + cuda", 2.0, 0.4),
    op_row(PRED, "copy (same bytes)", 0.8, 1.0),
]


def test_op_verdicts_judge_each_backends_fastest_variant():
    got = [(v["target"], v["ok"]) for v in device_report.op_verdicts(OPS)]
    assert got == [
        (f"{GN}: cuda channels_last at >= 75% of copy bandwidth", True),
        (f"{GN}: cuda channels_last faster than torch.compile of the reference", True),
        (f"{GN}: triton at >= 75% of copy bandwidth", True),
        (f"{GN}: triton faster than torch.compile of the reference", True),
        (f"{GN}: cuda no slower than triton", True),
        (f"{UP}: cuda 2-D filter direct kernel at >= 60% of copy bandwidth", False),
        (f"{UP}: cuda 2-D filter direct kernel faster than torch.compile of the reference", False),
        (f"{UP}: triton separable at >= 60% of copy bandwidth", True),
        (f"{UP}: triton separable faster than torch.compile of the reference", True),
        (f"{UP}: cuda no slower than triton", False),
        # the noise drawn in the kernel moves other bytes than the copy: the plain kernel is judged
        (f"{PRED}: cuda at >= 75% of copy bandwidth", True),
    ]
    assert {v["area"] for v in device_report.op_verdicts(OPS)} == {device_report.KERNELS}


def pc_row(model, batch, path, vs, peak=None, seconds=1.0, of_floor=0.1, sampler="pc"):
    return {
        "measure": "throughput",
        "model": model,
        "sampler": sampler,
        "batch": batch,
        "path": path,
        "vs_official_loop": vs,
        "images_per_s": batch / seconds,
        "seconds_per_batch": seconds,
        "of_floor": of_floor,
        "peak_memory_MiB": peak,
    }


def test_sampling_verdicts_on_a_gpu_and_on_a_cpu():
    m = device_report.NCSNPP
    gpu = [
        pc_row(m, 512, "official loop", 1.0, 1000),
        pc_row(m, 512, "fastsde tf32", 1.6, 900),
        pc_row(m, 512, "fastsde tf32 + graph", 1.4, 1100),
        pc_row(m, 512, "fastsde bf16 + graph", 4.5, 800, of_floor=0.3),
        pc_row(m, 512, "fastsde bf16 + graph", 9.0, sampler="dpmpp_2m"),
        pc_row(m, 1, "official loop", 1.0, seconds=3.0),
        pc_row(m, 1, "fastsde bf16", 2.0, seconds=1.5),
        pc_row(m, 1, "fastsde bf16 + graph", 6.0, seconds=0.5),
        pc_row(m, 64, "fastsde tf32 + graph", 4.0),
        {"measure": "train_memory", "model": m, "batch": 128, "path": "official loop", "train_step_peak_MiB": 1000.0},
        {"measure": "train_memory", "model": m, "batch": 128, "path": "fastsde fp32", "train_step_peak_MiB": 790.0},
    ]
    got = [
        (v["target"].split(", ", 1)[-1] if "PC batch 512" in v["target"] else v["target"], v["ok"])
        for v in device_report.sampling_verdicts(gpu, gpu=True)
    ]
    assert got == [
        ("tf32 (the official loop's precision: TF32 convolutions): >= 1.5x the official loop", True),
        ("bf16 + CUDA graph: >= 4.0x the official loop", True),
        ("bf16 + CUDA graph: half the arithmetic floor (an aim)", False),
        (f"{m} PC batch 1, CUDA graph: >= 5x the official loop", True),
        (f"{m} PC batch 64, CUDA graph: >= 5x the official loop", False),
        (f"{m} PC batch 1: under 1 s an image", True),
        ("fastsde tf32: peak memory <= the official loop's", True),
        ("fastsde tf32 + graph: peak memory <= the official loop's", False),
        ("fastsde bf16 + graph: peak memory <= the official loop's", True),
        (f"{m} training step (batch 128): peak memory <= 0.8x the official loop's", True),
    ]
    f = device_report.FIXTURE
    cpu = [
        pc_row(f, 1, "fastsde fp32", 2.0),
        pc_row(f, 8, "fastsde fp32", 1.4),
        pc_row(m, 1, "fastsde fp32", 9.0, seconds=30.0),
    ]
    assert [(v["target"], v["ok"]) for v in device_report.sampling_verdicts(cpu, gpu=False)] == [
        (f"{f} PC batch 1 on the CPU: >= 1.5x the official loop", True),
        (f"{f} PC batch 8 on the CPU: >= 1.5x the official loop", False),
    ]


def table_rows(results, date):
    """Result dicts as results-table rows, every row dated `date`."""
    keys = ("measure", "model", "sampler", "batch")
    rows = table.melt(
        dict({k: v for k, v in r.items() if k not in keys}, case=r.get("case") or table.case(**{k: r[k] for k in keys}))
        for r in results
    )
    return [dict(r, machine="NVIDIA H200", torch="2.11.0", date=date) for r in rows]


def test_the_report_of_a_device_check(tmp_path):
    out = tmp_path / "dc"
    out.mkdir()
    (out / "gpu.txt").write_text("NVIDIA H200, 580.65, 143771 MiB\n")
    (out / "gpu_tests.log").write_text(  # pytest -v lines, plain and pytest-xdist's, cut short
        "tests/test_upfirdn2d.py::test_a[cuda] PASSED [ 1%]\n"
        "[gw1] [ 2%] FAILED tests/test_group_norm.py::test_b[triton]\n"
        "[gw0] [ 3%] SKIPPED tests/test_pc_update.py::test_c\n"
        "FAILED tests/test_group_norm.py::test_b[triton] - AssertionError\n"
    )
    m = device_report.NCSNPP
    sampling = [pc_row(m, 512, "official loop", 1.0, 1000), pc_row(m, 512, "fastsde bf16 + graph", 4.5, 800)]
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    table.write(out / "ops-nvidia-h200.csv", table_rows(OPS, now))
    # An earlier check's row: shown in no table or verdict of this check.
    earlier = table_rows([pc_row(m, 512, "fastsde tf32", 0.5)], "2026-01-01T00:00:00+00:00")
    table.write(out / "sampling-nvidia-h200.csv", table_rows(sampling, now) + earlier)
    run = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "device_report.py"),
            str(out),
            "42",
            "build:ok",
            "gpu_tests:failed(1)",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    report = json.load(open(out / "report.json"))
    assert report["steps"] == {"build": "ok", "gpu_tests": "failed(1)"} and report["seconds"] == 42
    assert report["gpu"] == "NVIDIA H200, 580.65, 143771 MiB"
    assert report["gpu_tests"] == {
        "PASSED": 1,
        "FAILED": 1,
        "SKIPPED": 1,
        "failed_or_error": ["tests/test_group_norm.py::test_b[triton]"],
    }
    assert report["rows"] == {"ops-nvidia-h200.csv": 3 * len(OPS), "sampling-nvidia-h200.csv": 5 * len(sampling)}
    verdicts = device_report.op_verdicts(OPS) + device_report.sampling_verdicts(sampling, gpu=True)
    assert report["targets"] == verdicts and len(verdicts) == 14
    lines = run.stdout.strip().splitlines()
    assert lines[-1] == f"targets met: {sum(v['ok'] for v in verdicts)} of 14"
    assert any(line.startswith(GN) for line in lines) and not any("fastsde tf32" in line for line in lines)


@pytest.mark.parametrize("args", [[], ["only-a-folder"]])
def test_the_report_says_how_to_call_it(args):
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "device_report.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 1 and "device_report.py OUTDIR SECONDS" in run.stderr
