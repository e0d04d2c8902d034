"""Run by test_distributed.py under torchrun (two gloo processes): trains the tiny model
data-parallel, then checks that every rank ends with the same weights and EMA.

    dist_worker.py WORKDIR STEPS [K]: with K, rank 1 alone gets SIGTERM during step K."""

import os
import signal
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))
from fastsde import losses, train  # noqa: E402

from tiny import tiny_config  # noqa: E402

if len(sys.argv) > 3:
    optimize_step, stop_at = losses.optimize_step, int(sys.argv[3])

    def signalled_step(opt, params, step, **kwargs):
        if dist.get_rank() == 1 and step + 1 == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        optimize_step(opt, params, step, **kwargs)

    losses.optimize_step = signalled_step

result = train.train(tiny_config(), sys.argv[1], n_iters=int(sys.argv[2]), log=print)
flat = torch.cat(
    [p.detach().flatten() for p in result["model"].parameters()] + [s.flatten() for s in result["ema"].shadow_params]
)
gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, flat)
assert all(torch.equal(g, gathered[0]) for g in gathered), "the ranks' weights differ"
print(f"rank {dist.get_rank()}: weights agree at step {result['step']}, stopped by {result['stopped']}", flush=True)
dist.destroy_process_group()
# Everything is checked; leave without the interpreter's teardown, where the torch 2.14.1 CUDA build
# (no GPU) aborted one rank with "terminate called without an active exception" in two CI runs,
# after both ranks had finished and agreed (not reproduced outside CI; see the issue notes).
os._exit(0)
