"""The sampling engine: a network made ready to sample fast, and a step loop that runs eagerly or as a
CUDA graph captured once and replayed.

fast_score_fn runs a copy of the network with its constants folded, in channels_last, in the
chosen precision with the sampler's state kept in float32, and optionally compiled. run_steps
drives the samplers of fastsde.sampling: each sampler writes one step as body(i, *state) -> state,
free of host syncs, and run_steps either calls it step by step or captures it in a CUDA graph, so
that a whole step (network and fused update, noise included) costs one launch.
"""

import copy

import torch
from torch import nn

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def with_precision(score_fn, precision, device):
    """score_fn evaluated in `precision`: fp32; tf32 (TF32 matmuls and convolutions on GPUs);
    bf16 / fp16 under autocast, returning float32 so that the sampler's state stays fp32; None:
    under torch's global settings, as the official code runs (by default on GPUs: TF32
    convolutions, float32 matmuls)."""
    if precision is None:
        return score_fn
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision in ("fp32", "tf32"):
        if device.type != "cuda":
            return score_fn
        tf32 = precision == "tf32"

        def tf32_score_fn(x, t):
            # torch's TF32 switches are global: set for this call only, so that score functions of
            # different precisions (side by side in a benchmark) do not change each other.
            saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            try:
                return score_fn(x, t)
            finally:
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

        return tf32_score_fn
    dtype = HALF[precision]

    def autocast_score_fn(x, t):
        # No weight-cast cache: it only helps within one autocast region, and a cache filled during
        # a CUDA graph capture would hold the graph's private memory.
        with torch.autocast(device.type, dtype=dtype, cache_enabled=False):
            return score_fn(x, t).float()

    return autocast_score_fn


def fast_score_fn(model, sde, continuous, device, precision="fp32", channels_last=True, compile=False, fold=True):
    """score_fn(x, t) of a copy of `model` made ready for sampling; `model` is unchanged.

    fold: constants folded (models.fold_constants): fewer kernels a call, the same function up to rounding.
    channels_last: weights and inputs in that layout, which convolutions run faster in on GPUs and CPUs.
    precision: fp32, tf32, bf16 or fp16 (see with_precision), or None: as torch is set.
    compile: the network under torch.compile.
    fold=False, channels_last=False and precision=None leave the official code's path.
    x: [B, C, H, W] float32 in any layout; t: [B]. Returns the score, float32, [B, C, H, W].
    """
    from .models import fold_constants, get_score_fn

    device = torch.device(device)
    # An inference copy: a gradient through it (the likelihood's vector-Jacobian product) is one
    # with respect to x, for which autograd then keeps and computes nothing of the weights'.
    net = copy.deepcopy(model).requires_grad_(False)
    if fold:
        fold_constants(net)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if precision in HALF:
        half_weights(net, HALF[precision])
    if compile:
        net = torch.compile(net)
    base = get_score_fn(sde, net, train=False, continuous=continuous)
    if channels_last:
        inner = base
        base = lambda x, t: inner(x.contiguous(memory_format=torch.channels_last), t)  # noqa: E731
    return with_precision(base, precision, device)


def half_weights(model, dtype):
    """Casts, in place, the parameters of `model`'s convolutions, linear layers and GroupNorms to
    `dtype` (bf16 / fp16), for running under autocast to that dtype: autocast would cast them from
    float32 at every call, a kernel and a read of each weight, which at small batches is a large part
    of a call. The results are the same: the values are those autocast makes. Buffers (the FIR
    taps, which the op reads in float32) and other modules' parameters (the Fourier features' W, the
    noise levels) keep their dtype. Returns `model`."""
    from .models.layers import NIN, FIRConv2d, GroupNorm

    # Modules whose parameters only autocast's half-precision ops read (GroupNorm casts its
    # affine parameters to x's dtype itself).
    casts = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, NIN, FIRConv2d, GroupNorm)
    for m in model.modules():
        if isinstance(m, casts):
            for p in m.parameters(recurse=False):
                p.data = p.data.to(dtype)
    return model


def check_finite(x, what):
    """Raises FloatingPointError naming `what` if the tensor x holds NaN or Inf (one host sync)."""
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError(f"{what}: NaN or Inf in the result")


def run_steps(body, state, steps, cuda_graph=False, generators=(), name="run_steps", times=None):
    """Runs state = body(i, *state) for the consecutive step numbers in `steps` (an iterable of ints;
    i reaches body as a 0-dim long tensor on the state's device) and returns the final state.

    Every step's state[0] (the sampler's x) is checked for NaN and Inf on the device, and the first
    bad step, if any, raises FloatingPointError at the end, naming `name`, the step and times[step]
    (the sampler's time, if given): a diverged sampler never passes for a finished one.

    cuda_graph (CUDA only; ignored elsewhere): the first step runs eagerly on a side stream (it
    builds cached tables and picks kernels), the second is captured into a CUDA graph with the
    state and the step number in fixed buffers, and every later step is one replay. body must then
    be free of host syncs and of host-to-device copies. `generators`: the CUDA generators that body
    draws noise from (the device's default generator is always followed).
    """
    state = tuple(state)
    device = state[0].device
    index = lambda k: torch.full((), k, dtype=torch.long, device=device)  # noqa: E731  (a fill, no copy)
    first_bad = index(-1)

    def watched(i, *state):
        state = tuple(body(i, *state))
        bad = ~torch.isfinite(state[0]).all()
        first_bad.copy_(torch.where(bad & (first_bad < 0), i, first_bad))  # in place: a CUDA graph keeps it
        return state

    state = _loop(watched, state, steps, cuda_graph, generators, index)
    k = int(first_bad)
    if k >= 0:
        when = f" (t = {float(times[k]):.6g})" if times is not None else ""
        raise FloatingPointError(f"{name}: NaN or Inf in the state at step {k}{when}")
    return state


def _loop(body, state, steps, cuda_graph, generators, index):
    device = state[0].device
    steps = iter(steps)
    if not (cuda_graph and device.type == "cuda"):
        for k in steps:
            state = tuple(body(index(k), *state))
        return state
    first = next(steps, None)
    if first is None:
        return state
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        state = tuple(body(index(first), *state))
    torch.cuda.current_stream(device).wait_stream(side)
    second = next(steps, None)
    if second is None:
        return state
    static, i = tuple(s.clone() for s in state), index(second)
    graph = torch.cuda.CUDAGraph()
    default = torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    for g in {id(g): g for g in generators if g is not default}.values():
        graph.register_generator_state(g)
    with torch.cuda.graph(graph):
        for s, new in zip(static, body(i, *static)):
            s.copy_(new)
        i.add_(1)
    graph.replay()
    for _ in steps:
        graph.replay()
    return tuple(s.clone() for s in static)
