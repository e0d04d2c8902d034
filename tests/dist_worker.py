"""Run by test_distributed.py under torchrun (two gloo processes): trains the tiny model
data-parallel, then checks that every rank ends with the same weights and EMA."""
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))
from tiny import tiny_config  # noqa: E402

from fastsde import train  # noqa: E402

result = train.train(tiny_config(), sys.argv[1], n_iters=int(sys.argv[2]), log=print)
flat = torch.cat([p.detach().flatten() for p in result["model"].parameters()] +
                 [s.flatten() for s in result["ema"].shadow_params])
gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, flat)
assert all(torch.equal(g, gathered[0]) for g in gathered), "the ranks' weights differ"
print(f"rank {dist.get_rank()}: weights agree at step {result['step']}", flush=True)
dist.destroy_process_group()
# Everything is checked; leave without the interpreter's teardown, where the torch 2.14.1 CUDA build
# (no GPU) aborted one rank with "terminate called without an active exception" in two CI runs,
# after both ranks had finished and agreed (not reproduced outside CI; see the issue notes).
os._exit(0)
