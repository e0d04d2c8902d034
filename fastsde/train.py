"""Training with the official loop (score_sde_pytorch run_lib.train), resumable and multi-process.

A workdir holds config.json, checkpoints/checkpoint_<k>.pth every snapshot_freq steps and
checkpoints-meta/checkpoint.pth every snapshot_freq_for_preemption steps, all in the official
layout. The meta checkpoint also carries fastsde's resume state (each rank's RNG state and the data
stream's position) under a key the official code ignores, so a resumed run continues the same loss
curve. SIGTERM and SIGINT make the trainer save and return; after a hard kill it resumes from the
last meta checkpoint. A run whose loss or weights stop being finite raises FloatingPointError and
writes nothing more. Under torchrun it trains with DistributedDataParallel (NCCL on GPUs, gloo on
CPUs), training.batch_size split over the processes, and only rank 0 writes.
"""

import contextlib
import json
import math
import os
import signal
import time

import torch
import torch.distributed as dist

from . import checkpoint, data, losses, runs
from . import configs as configs_lib
from .models import create_model, get_score_fn
from .sde import VESDE, VPSDE, subVPSDE

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def distributed():
    """(rank, world size), initialising torch.distributed from torchrun's environment when
    WORLD_SIZE > 1 (NCCL on GPUs, gloo on CPUs)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def default_device(rank=0):
    """cuda:LOCAL_RANK when a GPU is present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    return torch.device("cpu")


def objective(config, sde):
    """loss(model, x) -> [] for the config: the continuous DSM loss, or SMLD (VE) / DDPM (VP) for
    discrete models, as the official get_step_fn picks them."""
    t = config.training
    if t.continuous:
        return lambda model, x: losses.sde_loss(
            get_score_fn(sde, model, train=True, continuous=True),
            sde,
            x,
            reduce_mean=t.reduce_mean,
            likelihood_weighting=t.likelihood_weighting,
        )
    if isinstance(sde, VESDE):
        return lambda model, x: losses.smld_loss(model.train(), sde, x, reduce_mean=t.reduce_mean)
    if isinstance(sde, VPSDE) and not isinstance(sde, subVPSDE):
        return lambda model, x: losses.ddpm_loss(model.train(), sde, x, reduce_mean=t.reduce_mean)
    raise ValueError("discrete training (training.continuous = False) needs a VE or VP SDE, not sub-VP")


def train_step(net, opt, ema, loss_of, x, step, optim, dtype=None):
    """One optimisation step, as the official step_fn(train=True): the loss of `net` on the batch x
    (loss_of from `objective`; under autocast to `dtype` if given), its gradients, Adam at `step` with
    the config's warmup and clipping (`optim`: config.optim), then the EMA update. Returns the loss."""
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = loss_of(net, x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    params = list(net.parameters())  # the model's, also through DistributedDataParallel
    losses.optimize_step(opt, params, step, lr=optim.lr, warmup=optim.warmup, grad_clip=optim.grad_clip)
    ema.update(params)
    return loss


class _StopSignals:
    """Turns SIGTERM and SIGINT into a flag for the duration of a `with` block: `caught`, the
    signal's number (0: none yet)."""

    def __init__(self):
        self.caught = 0

    def __enter__(self):
        self.saved = {}
        with contextlib.suppress(ValueError):  # signal handlers can only be set in the main thread
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.saved[sig] = signal.signal(sig, self._catch)
        return self

    def _catch(self, signum, frame):
        self.caught = signum

    def __exit__(self, *exc):
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def _rng_states(world):
    state = torch.get_rng_state()
    if world == 1:
        return [state]
    states = [None] * world
    dist.all_gather_object(states, state)
    return states


def max_over_ranks(value, world, device):
    """The largest of the numbers `value` that the `world` processes pass, on every process (each
    calls it; `device` is where this process's collectives run)."""
    if world == 1:
        return value
    v = torch.tensor([float(value)], device=device)
    dist.all_reduce(v, op=dist.ReduceOp.MAX)
    return v.item()


def on_rank_zero(fn, rank, world, device):
    """fn() on rank 0 only, every process calling this; a ValueError or OSError that fn raises is raised
    on every process, so that none is left waiting for rank 0. Returns fn's result on rank 0, None elsewhere."""
    result, refused = None, None
    if rank == 0:
        try:
            result = fn()
        except (ValueError, OSError) as e:
            refused = e
    if max_over_ranks(refused is not None, world, device):
        raise refused or ValueError("rank 0 refused to go on (its message says why)")
    return result


def _mean(value, world):
    if world > 1:
        dist.all_reduce(value)
        value = value / world
    return value


def train(config, workdir, n_iters=None, seed=None, device=None, precision="fp32", log=print):
    """Trains the config's model in `workdir`, resuming from its meta checkpoint if there is one,
    until n_iters (default training.n_iters) steps or a stop signal. One run at a time holds a
    workdir, and a run resumes only with the config it started with. Returns {'step', 'loss' (the
    mean over the last log interval), 'stopped' (the name of the signal that any of the processes
    caught, or None), 'seconds', 'model' (the raw weights), 'ema' (losses.EMA)}."""
    config = configs_lib.load(config)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} for training, got {precision!r}")
    rank, world = distributed()
    device = torch.device(device) if device is not None else default_device(rank)
    if config.training.batch_size % world:
        raise ValueError(f"training.batch_size {config.training.batch_size} is not divisible by the {world} processes")
    held = on_rank_zero(lambda: runs.claim(workdir, "train"), rank, world, device)
    try:
        _check_resume(config, workdir)
        return _train(config, workdir, n_iters, seed, device, precision, log, rank, world)
    finally:
        if held is not None:
            held.close()


def _check_resume(config, workdir):
    """Refuses to resume the run in `workdir` with another config than its config.json."""
    saved = os.path.join(workdir, "config.json")
    if not (os.path.exists(os.path.join(workdir, "checkpoints-meta", "checkpoint.pth")) and os.path.exists(saved)):
        return
    # Keys that config.json lacks (added to the configs by a later fastsde) do not stop a resume.
    differ = runs.differences(configs_lib.load(saved), json.loads(json.dumps(config)), known_only=True)
    if differ:
        raise ValueError(
            f"{workdir} holds a run of another config ({'; '.join(differ[:5])}"
            f"{' ...' if len(differ) > 5 else ''}): resume it with its own ({saved}), "
            "or use another workdir"
        )


def _train(config, workdir, n_iters, seed, device, precision, log, rank, world):
    t, o = config.training, config.optim
    n_iters = t.n_iters if n_iters is None else n_iters
    seed = config.get("seed", 0) if seed is None else seed

    torch.manual_seed(seed)  # the same initial weights on every rank
    sde = checkpoint.sde_from_config(config)
    images = data.dataset(config, "train")
    model = create_model(config).to(device)
    ema = losses.EMA(model.parameters(), config.model.ema_rate)
    opt = losses.optimizer(model.parameters(), lr=o.lr, beta1=o.beta1, eps=o.eps, weight_decay=o.weight_decay)
    batches = data.Batches(len(images), t.batch_size // world, seed, rank, world)
    torch.manual_seed(seed + 7919 * rank)  # different noise and dropout on each rank

    meta = os.path.join(workdir, "checkpoints-meta", "checkpoint.pth")
    step = 0
    if os.path.exists(meta):
        step = _restore(meta, model, ema, opt, batches, rank, world, device)
        if rank == 0:
            log(f"resumed from {meta} at step {step}")
    elif rank == 0:
        checkpoint.atomic_write_bytes(os.path.join(workdir, "config.json"), json.dumps(config, indent=2))

    def save(path):
        # Diverged weights never replace a snapshot: the loss is checked only every log_freq steps.
        # Every rank holds the same weights, so every rank raises alike, before the collective below.
        if not torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all():
            raise FloatingPointError(
                f"the weights are not finite at step {step} (training diverged); {path} keeps the last finite ones"
            )
        states = _rng_states(world)  # collective: every rank takes part
        if rank == 0:
            extra = {"rng": states, "data": batches.state_dict(), "seed": seed, "world": world}
            checkpoint.save_checkpoint(path, model, ema.shadow_params, opt, step, ema.decay, ema.num_updates, extra)

    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    loss_of = objective(config, sde)
    dtype = PRECISIONS[precision]
    total, count, last, start, since = torch.zeros((), device=device), 0, float("nan"), time.time(), time.time()
    stopped = None
    with _StopSignals() as signals:
        while step < n_iters:
            # A scheduler's signal reaches the processes at different times: all stop after the same step.
            caught = max_over_ranks(signals.caught, world, device)
            if caught:
                stopped = signal.Signals(int(caught)).name
                break
            x = data.to_model(
                images[next(batches)], config.data.centered, config.data.uniform_dequantization, config.data.random_flip
            ).to(device)
            loss = train_step(net, opt, ema, loss_of, x, step, o, dtype)
            step += 1
            total, count = total + loss.detach().float(), count + 1
            if step % t.log_freq == 0 or step == n_iters:
                last = float(_mean(total / count, world))
                if not math.isfinite(last):
                    raise FloatingPointError(f"training loss is {last} at step {step}")
                if rank == 0:
                    rate = count * t.batch_size / (time.time() - since)
                    log(f"step {step}  loss {last:.5f}  {rate:.0f} img/s")
                total, count, since = torch.zeros((), device=device), 0, time.time()
            if step % t.snapshot_freq_for_preemption == 0:
                save(meta)
            if step % t.snapshot_freq == 0 or step == n_iters:
                save(os.path.join(workdir, "checkpoints", f"checkpoint_{step // t.snapshot_freq}.pth"))
        save(meta)
    if stopped and rank == 0:
        log(f"{stopped}: saved step {step} to {meta}")
    return {"step": step, "loss": last, "stopped": stopped, "seconds": time.time() - start, "model": model, "ema": ema}


def _restore(path, model, ema, opt, batches, rank, world, device):
    state = checkpoint.read(path)
    checkpoint.load_state(model, checkpoint.strip_prefix(state["model"]))
    ema.load_state_dict({**state["ema"], "shadow_params": [s.to(device) for s in state["ema"]["shadow_params"]]})
    opt.load_state_dict(state["optimizer"])
    extra = state.get("fastsde")
    if extra is None:  # written by the official code: no RNG or data position to restore
        return int(state["step"])
    batches.load_state_dict(extra["data"])
    if int(extra["world"]) == world:
        torch.set_rng_state(extra["rng"][rank])
    return int(state["step"])
