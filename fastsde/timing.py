"""Timing on any device: interleaved medians, and where they were measured."""

import contextlib
import datetime
import platform
import statistics
import time

import torch


def sync(device):
    """Waits for `device`'s queued work (CUDA); returns at once elsewhere."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_runs(runs, batch, rounds, device):
    """Times each of `runs`, a dict name -> run(batch, seed) -> (output, nfe), over `rounds`.

    The runs take turns in each round, so machine noise hits them alike. The first call of each is
    untimed (kernels chosen, graphs captured, torch.compile). Returns name -> {'seconds': median,
    'first': seconds of the first call, 'nfe': its network evaluations, 'peak': peak bytes
    allocated (CUDA; None elsewhere)}.
    """
    cuda = torch.device(device).type == "cuda"
    out = {k: {"times": [], "peak": None} for k in runs}
    for k, run in runs.items():
        sync(device)
        start = time.perf_counter()
        out[k]["nfe"] = run(batch, 0)[1]
        sync(device)
        out[k]["first"] = time.perf_counter() - start
    for r in range(rounds):
        for k, run in runs.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            start = time.perf_counter()
            run(batch, r + 1)
            sync(device)
            out[k]["times"].append(time.perf_counter() - start)
            if cuda:
                out[k]["peak"] = max(out[k]["peak"] or 0, torch.cuda.max_memory_allocated(device))
    for v in out.values():
        v["seconds"] = statistics.median(v.pop("times"))
    return out


def machine(device):
    """Where a measurement ran: device, CPU model, threads, GPU, versions and the UTC date."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    import fastsde

    info = {
        "device": str(device),
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "fastsde": fastsde.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if torch.device(device).type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
        with contextlib.suppress(ImportError):
            import triton

            info["triton"] = triton.__version__
    return info
