"""The sampling engine: run_steps (eager and CUDA graph), fast_score_fn (layout, precision, folded
constants)."""

import copy
import itertools
import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastsde import checkpoint, configs, engine, models, sampling, solvers
from fastsde.sde import VESDE, VPSDE

import harness
from conftest import FIXTURES, assert_close
from tiny import perturb, tiny_config

gpu = pytest.mark.gpu


def fixture_model(name="ncsnpp_ve_cifar_small", device="cpu"):
    model, sde, config = checkpoint.load_checkpoint(
        os.path.join(FIXTURES, f"{name}.pth"), os.path.join(FIXTURES, f"{name}.json"), device=device
    )
    return model, sde, configs.load(config)


def test_run_steps_passes_step_numbers_and_state():
    seen = []

    def body(i, x, total):
        seen.append(int(i))
        assert i.dim() == 0 and i.dtype == torch.long
        return x * 2, total + i

    x, total = engine.run_steps(body, (torch.ones(3), torch.zeros((), dtype=torch.long)), range(2, 6))
    assert seen == [2, 3, 4, 5]
    assert torch.equal(x, torch.full((3,), 16.0)) and int(total) == 14
    # cuda_graph is ignored off CUDA: the same result, eagerly.
    x2, total2 = engine.run_steps(
        body, (torch.ones(3), torch.zeros((), dtype=torch.long)), range(2, 6), cuda_graph=True
    )
    assert torch.equal(x2, x) and int(total2) == 14


def test_watch_names_the_first_bad_step_through_run_steps():
    sde = VESDE(0.01, 50.0, N=10)

    def score_fn(x, t):  # finite until t drops below 0.5, then NaN
        return torch.where((t < 0.5)[:, None, None, None], torch.nan, -x / 2)

    with pytest.raises(FloatingPointError, match="step 5 "):
        sampling.pc_sample(
            score_fn, sde, (2, 1, 4, 4), "euler_maruyama", "none", eps=1e-3, generator=torch.Generator().manual_seed(0)
        )


@pytest.mark.parametrize("name", ["ncsnpp_ve_cifar_small", "ddpmpp_vp_cifar_small"])
def test_fast_score_fn_channels_last_matches_the_plain_score(name):
    # channels_last is the default on the CPU too (the cpp kernels take it natively).
    model, sde, config = fixture_model(name)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.3, 0.8])
    before = copy.deepcopy(model.state_dict())
    want = models.get_score_fn(sde, model, continuous=True)(x, t)
    got = engine.fast_score_fn(model, sde, True, "cpu")(x, t)
    # It runs a copy: the caller's network keeps its values and its layout.
    state = model.state_dict()
    assert all(torch.equal(state[k], v) and state[k].stride() == v.stride() for k, v in before.items())
    assert got.dtype == torch.float32
    assert_close(got / want.abs().max(), want / want.abs().max())


def test_fast_score_fn_compiled_matches_eager():
    # The folded network (its stacked projections handed around as a tuple) under torch.compile.
    model, sde, config = _perturbed(fixture_model)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        want = engine.fast_score_fn(model, sde, True, "cpu")(x, t)
        got = engine.fast_score_fn(model, sde, True, "cpu", compile=True)(x, t)
    assert_close(got / want.abs().max(), want / want.abs().max())


def test_fast_score_fn_bf16_is_float32_and_close():
    model, sde, config = fixture_model()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.2, 0.9])
    want = engine.fast_score_fn(model, sde, True, "cpu")(x, t)
    got = engine.fast_score_fn(model, sde, True, "cpu", precision="bf16")(x, t)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    rel = (got - want).norm() / want.norm()
    assert 0 < rel < 0.05  # bf16 arithmetic did run (not fp32), and stays close
    with pytest.raises(ValueError, match="precision must be one of"):
        engine.fast_score_fn(model, sde, True, "cpu", precision="fp8")


def test_tf32_switches_hold_for_one_call_only():
    """torch's TF32 switches are global; each score function sets them only while it runs (the
    wrappers need no GPU: they only read and set the switches)."""
    seen = []

    def score_fn(x, t):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return x

    fp32 = engine.with_precision(score_fn, "fp32", "cuda")
    tf32 = engine.with_precision(score_fn, "tf32", "cuda")
    as_set = engine.with_precision(score_fn, None, "cuda")  # the official code's: torch's settings
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    x, t = torch.zeros(1), torch.zeros(1)
    tf32(x, t), fp32(x, t), as_set(x, t), tf32(x, t)
    assert seen == [(True, True), (False, False), before, (True, True)]
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_fast_solvers_first_and_last_steps():
    """dpmpp_2m's first step is first order and heun's last is plain Euler: one step of each,
    written out by hand, from the same x."""
    sde = VPSDE(0.1, 20.0, N=100)
    score_fn = lambda x, t: -x  # noqa: E731  (the score of N(0, I), exact for the VP prior)
    x = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(3))
    times = torch.tensor([1.0, 0.5])
    alphas, stds = sde.marginal_coef(times)
    got, nfe = solvers.solve(sde, score_fn, x, "dpmpp_2m", times)
    x0 = (x - stds[0] ** 2 * x) / alphas[0]
    h = torch.log(alphas[1] / stds[1]) - torch.log(alphas[0] / stds[0])
    assert_close(got, stds[1] / stds[0] * x - alphas[1] * torch.expm1(-h) * x0)
    assert nfe == 1
    got, nfe = solvers.heun(sde, score_fn, x, times)
    sigmas = stds / alphas
    x_hat = x / alphas[0]
    want = alphas[1] * (x_hat + (sigmas[1] - sigmas[0]) * (-stds[0] * -(alphas[0] * x_hat)))
    assert_close(got, want)
    assert nfe == 1


def tiny_model(device):
    config = tiny_config()
    config.device = device
    model = models.create_model(config).to(device)
    torch.manual_seed(0)
    perturb(model)  # a network whose output depends on its input at every layer
    return model, checkpoint.sde_from_config(config), config


def class_guided(score_fn, sde, device, labels):
    """score_fn guided by a small random noise-conditional classifier of 3 classes towards `labels`
    (made on the host, as the command line makes them)."""
    from fastsde import controllable
    from fastsde.models.classifier import WideResNet

    net = WideResNet(num_classes=3, in_ch=1, blocks_per_group=1, channel_multiplier=1, embedding_size=8)
    return controllable.classifier_score_fn(
        score_fn, controllable.noise_conditional(perturb(net).to(device), sde), torch.tensor(labels)
    )


@gpu
@pytest.mark.parametrize(
    "per_sample,guided", [(False, False), (True, False), (True, True)], ids=["batch", "per_sample", "class_guided"]
)
def test_pc_sample_cuda_graph_equals_eager(per_sample, guided):
    model, sde, config = tiny_model("cuda")
    score_fn = engine.fast_score_fn(model, sde, True, "cuda")
    if guided:  # sample --class: the classifier's backward pass inside the captured step
        score_fn = class_guided(score_fn, sde, "cuda", [0, 2, 1, 0])
    shape = (4, 1, 8, 8)

    def run(cuda_graph):
        gen = (
            [torch.Generator("cuda").manual_seed(i) for i in range(4)]
            if per_sample
            else torch.Generator("cuda").manual_seed(0)
        )
        return sampling.pc_sample(
            score_fn,
            sde,
            shape,
            "reverse_diffusion",
            "langevin",
            snr=0.16,
            generator=gen,
            device="cuda",
            per_sample=per_sample,
            cuda_graph=cuda_graph,
        )

    (eager, nfe), (graphed, nfe_g) = run(False), run(True)
    assert nfe == nfe_g
    assert torch.isfinite(eager).all()
    torch.testing.assert_close(graphed, eager, rtol=1e-5, atol=1e-5)


@gpu
@pytest.mark.parametrize("method", solvers.FIXED_STEP)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fast_solver_cuda_graph_equals_eager(method, precision):
    model, sde, config = tiny_model("cuda")
    score_fn = engine.fast_score_fn(model, sde, True, "cuda", precision=precision)
    z = torch.randn(4, 1, 8, 8, device="cuda", generator=torch.Generator("cuda").manual_seed(5))
    eager, nfe = solvers.sample(score_fn, sde, z.shape, method, steps=8, z=z, generator=[1, 2, 3, 4])
    graphed, nfe_g = solvers.sample(
        score_fn, sde, z.shape, method, steps=8, z=z, generator=[1, 2, 3, 4], cuda_graph=True
    )
    assert nfe == nfe_g and torch.isfinite(eager).all()
    torch.testing.assert_close(graphed, eager, rtol=1e-5, atol=1e-5)


aten = torch.ops.aten
# Ops that make the host wait for the device (a value read: .item(), bool(), int(), float(); a shape
# that depends on values) or copy between host and device. None may run inside a step that
# run_steps captures in a CUDA graph: capture would fail, or a value read once would be replayed.
_WAITS = {
    aten._local_scalar_dense,
    aten.nonzero,
    aten.masked_select,
    aten.equal,
    aten.is_nonzero,
    aten._unique2,
    aten.unique_dim,
    aten.unique_consecutive,
}


def _elsewhere(device, of):
    """Whether `device` is another device than `of` (one without an index, 'cuda', matches any of its type)."""
    return device.type != of.type or None not in (device.index, of.index) and device.index != of.index


class _HostSyncs(TorchDispatchMode):
    """Records the ops dispatched under it that sync with the host or copy across devices."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        masks = [
            a
            for a in (args[1] if func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default) else ())
            if a is not None and a.dtype in (torch.bool, torch.uint8)
        ]
        to = (
            kwargs.get("device")
            if func is aten._to_copy.default
            else args[1].device
            if func is aten.copy_.default
            else None
        )
        crosses = to is not None and _elsewhere(torch.device(to), tensors[0].device)
        if (
            func.overloadpacket in _WAITS
            or masks
            or crosses
            or (func.overloadpacket is aten.repeat_interleave and kwargs.get("output_size") is None)
        ):
            self.seen.append(str(func))
        return func(*args, **kwargs)


@pytest.fixture
def host_syncs(monkeypatch):
    """Runs the step bodies of fastsde.sampling's samplers after each run's first under _HostSyncs
    (the first runs eagerly with a CUDA graph too, and may fill caches); yields the ops it saw and
    the number of bodies checked (with a CUDA graph: the second step under capture, no more, as
    replays run no Python)."""
    seen, run = [], [0]
    steps = engine.run_steps

    def checked(body, state, *args, **kwargs):
        first = [True]

        def guarded(i, *state):
            if first[0]:
                first[0] = False
                return body(i, *state)
            run[0] += 1
            with _HostSyncs() as mode:
                new = body(i, *state)
            seen.extend(mode.seen)
            return new

        return steps(guarded, state, *args, **kwargs)

    monkeypatch.setattr(sampling, "run_steps", checked)
    monkeypatch.setattr(solvers, "run_steps", checked)
    return seen, run


def test_host_syncs_are_seen(host_syncs):
    # What the check below must catch, each of which one sampler step could plausibly do.
    seen, _ = host_syncs
    x = torch.randn(4)
    for op in (
        lambda: x.sum().item(),
        lambda: bool((x > 0).any()),
        lambda: x[x > 0],
        lambda: float(x[0]),
        lambda: x.repeat_interleave(torch.tensor([1, 2, 1, 0])),
        lambda: x.to("meta"),
        lambda: torch.empty(4, device="meta").copy_(x),
    ):
        with _HostSyncs() as mode:
            op()
        assert mode.seen, "a host sync went unseen"
    with _HostSyncs() as mode:  # none of these waits for the device
        torch.where(x > 0, x, 0.5).index_select(0, torch.zeros(1, dtype=torch.long)).to(torch.float64)
    assert not mode.seen and not seen
    assert not _elsewhere(torch.device("cuda"), torch.device("cuda:0")) and _elsewhere(
        torch.device("cuda:1"), torch.device("cuda:0")
    )


DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=gpu)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("noise", ["generator", "per_sample", "philox"])
@pytest.mark.parametrize("sde_name", ["VE", "VP", "subVP"])
def test_pc_steps_are_free_of_host_syncs(host_syncs, sde_name, noise, device):
    # What lets pc_sample(cuda_graph=True) capture a step: no predictor or corrector step, no SDE
    # and no noise source waits for the device, for every combination.
    from fastsde import Philox, subVPSDE

    sde = {"VE": VESDE, "VP": VPSDE, "subVP": subVPSDE}[sde_name](0.1, 1.5, N=3)  # 3 steps (VP: beta_max < N)
    model, _, _ = tiny_model(device)
    score_fn = engine.fast_score_fn(model, sde, True, device)
    seen, run = host_syncs
    for predictor, corrector in itertools.product(sorted(sampling.PREDICTORS), sorted(sampling.CORRECTORS)):
        if predictor == "ancestral_sampling" and sde_name == "subVP":
            continue
        generator = {
            "generator": torch.Generator(device).manual_seed(0),
            "per_sample": [1, 2],
            "philox": Philox([1, 2], device),
        }[noise]
        x, _ = sampling.pc_sample(
            score_fn,
            sde,
            (2, 1, 8, 8),
            predictor,
            corrector,
            generator=generator,
            device=device,
            per_sample=noise != "generator",
            cuda_graph=True,
        )
        assert torch.isfinite(x).all() and not seen, (predictor, corrector, seen)
    assert run[0] == 2 * (
        len(sampling.PREDICTORS) * len(sampling.CORRECTORS) - (sde_name == "subVP") * len(sampling.CORRECTORS)
    )  # 2 steps of 3 checked


@pytest.mark.parametrize("device", DEVICES)
def test_class_guided_steps_are_free_of_host_syncs(host_syncs, device):
    # sample --class: the classifier's gradient inside each step, with the official PC sampler.
    model, _, _ = tiny_model(device)
    sde = VESDE(N=3)
    guided = class_guided(engine.fast_score_fn(model, sde, True, device), sde, device, [0, 2])
    seen, run = host_syncs
    x, _ = sampling.pc_sample(
        guided, sde, (2, 1, 8, 8), generator=[1, 2], device=device, per_sample=True, cuda_graph=True
    )
    assert torch.isfinite(x).all() and not seen and run[0] == 2, seen


# Every config on the CPU; on a GPU, where a copy between host and device shows too, one of each family.
NETWORKS = [pytest.param(name, "cpu", id=f"{name}-cpu") for name in configs.names()] + [
    pytest.param(name, "cuda", id=f"{name}-cuda", marks=gpu)
    for name in (
        "ve/cifar10_ncsnpp_continuous",
        "vp/cifar10_ddpmpp_continuous",
        "vp/ddpm/cifar10",
        "ve/ncsnv2/cifar10",
        "ve/ncsn/cifar10",
    )
]


@pytest.mark.parametrize("name,device", NETWORKS)
def test_network_calls_and_fast_solver_steps_are_free_of_host_syncs(host_syncs, name, device):
    # Each network, on the official path and on fastsde's (folded, channels_last, fp32 and bf16),
    # through the fast solvers both ways (sampling and encoding), at 8x8 pixels.
    config = configs.get(name)
    config.model.nf, config.model.ch_mult, config.model.attn_resolutions = 32, (1, 2), (4,)
    config.model.num_res_blocks, config.data.image_size, config.device = 1, 8, device
    torch.manual_seed(0)
    model = models.create_model(config).to(device).eval()
    sde = checkpoint.sde_from_config(config)
    seen, run = host_syncs
    z = torch.randn(2, config.data.num_channels, 8, 8, generator=torch.Generator().manual_seed(1)).to(device)
    for options in [dict(fold=False, channels_last=False, precision=None), dict(), dict(precision="bf16")]:
        score_fn = engine.fast_score_fn(model, sde, config.training.continuous, device, **options)
        for method in ("heun", "dpmpp_2m"):  # every solver's steps: test_solver_steps_are_free_of_host_syncs
            x, _ = sampling.ode_sample(score_fn, sde, z.shape, method, steps=3, z=z, cuda_graph=True)
            sampling.ode_encode(score_fn, sde, x, method, steps=3, cuda_graph=True)
            assert torch.isfinite(x).all() and not seen, (options, method, seen)
    # Both ways, for each of the 3 score functions, the steps after the first: heun's second of 3
    # (run_steps runs all but its last, an Euler step), dpmpp_2m's second and third.
    assert run[0] == 3 * 2 * (1 + 2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("noise", ["generator", "per_sample", "philox"])
def test_solver_steps_are_free_of_host_syncs(host_syncs, noise, device):
    # What lets every fixed-step solver capture its steps in a CUDA graph, with each kind of noise.
    from fastsde import Philox

    model, sde, _ = tiny_model(device)
    score_fn = engine.fast_score_fn(model, sde, True, device)
    seen, run = host_syncs
    for name in solvers.FIXED_STEP:
        generator = {
            "generator": torch.Generator(device).manual_seed(0),
            "per_sample": [1, 2],
            "philox": Philox([1, 2], device),
        }[noise]
        x, _ = solvers.sample(
            score_fn, sde, (2, 1, 8, 8), name, steps=4, generator=generator, device=device, cuda_graph=True
        )
        assert torch.isfinite(x).all() and not seen, (name, seen)
    # The steps after each run's first: 2 of heun's and edm's 3 in the loop, 3 of the multistep solvers' 4
    # (unipc: 2 of 3, its last step being outside the loop).
    assert run[0] == 2 * 2 + 4 * 3 + 2


def _small(name, nf):
    config = configs.get(name)
    config.model.nf, config.device = nf, "cpu"
    torch.manual_seed(0)
    return models.create_model(config).eval(), checkpoint.sde_from_config(config), config


@pytest.mark.parametrize(
    "make",
    [
        fixture_model,
        lambda: fixture_model("ddpmpp_vp_cifar_small"),
        lambda: _small("vp/ddpm/cifar10_continuous", 32),
        lambda: _small("ve/ncsnv2/cifar10", 16),
    ],
    ids=["ncsnpp", "ddpmpp", "ddpm", "ncsnv2"],
)
def test_half_weights_give_what_autocast_gives(make):
    # The half-precision path runs a copy with its weights cast once: the very numbers of autocast
    # over the float32 network, which casts them at every call; the caller's network stays float32.
    model, sde, config = make()
    size = config.data.image_size
    x = torch.randn(2, config.data.num_channels, size, size, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        net = models.fold_constants(copy.deepcopy(model)).to(memory_format=torch.channels_last)
        score_fn = models.get_score_fn(sde, net, continuous=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
            want = score_fn(x.contiguous(memory_format=torch.channels_last), t).float()
        got = engine.fast_score_fn(model, sde, True, "cpu", precision="bf16")(x, t)
    assert torch.isfinite(want).all() and torch.equal(got, want)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    half = engine.half_weights(net, torch.bfloat16)
    convs = [m.weight for m in half.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.dtype == torch.bfloat16 for w in convs)
    # Nothing the network holds is cast at a call (a cast is a kernel launch on a GPU, at every
    # call): not a weight, not a buffer such as the FIR taps; only activations are.
    held = {t.data_ptr() for t in itertools.chain(half.parameters(), half.buffers())}
    cast = []

    class Casts(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._to_copy.default:
                cast.append(args[0].data_ptr())
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False), Casts():
        models.get_score_fn(sde, half, continuous=True)(x.contiguous(memory_format=torch.channels_last), t)
    assert cast and not held.intersection(cast)


def _perturbed(make, **model_options):
    """A network of `make` with every parameter moved off its initial value (perturb)."""
    model, sde, config = make(**model_options)
    torch.manual_seed(6)
    return perturb(model, 0.1), sde, config


def _ops(model, sde, config, x, t):
    """The score of one call and the ops it dispatched, counted by name (views left out)."""
    with torch.no_grad():
        return harness.op_counts(models.get_score_fn(sde, model, continuous=True), x, t)


@pytest.mark.parametrize(
    "name,options",
    [
        ("ve/cifar10_ncsnpp_continuous", {}),
        ("vp/cifar10_ddpmpp_continuous", {}),
        ("vp/cifar10_ddpmpp_continuous", {"conditional": False}),
        ("vp/ddpm/cifar10_continuous", {}),
    ],
    ids=["ncsnpp", "ddpmpp", "ddpmpp-unconditional", "ddpm"],
)
def test_fold_constants_keeps_the_function_with_fewer_ops(name, options):
    def make(**options):
        config = configs.get(name)
        config.model.nf, config.model.ch_mult, config.device = 32, (1, 2), "cpu"
        config.model.attn_resolutions = (16,)
        for k, v in options.items():
            setattr(config.model, k, v)
        torch.manual_seed(0)
        return models.create_model(config).eval(), checkpoint.sde_from_config(config), config

    # In channels_last, the layout that sampling runs (there NIN's bias is in its GEMM, and the
    # stacked query, key and value are views of one product: no copies).
    model, sde, config = _perturbed(make, **options)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7)).contiguous(
        memory_format=torch.channels_last
    )
    t = torch.tensor([0.3, 0.8])
    want, plain = _ops(model, sde, config, x, t)
    folded = models.fold_constants(copy.deepcopy(model))
    got, ops = _ops(folded, sde, config, x, t)
    assert_close(got / want.abs().max(), want / want.abs().max())
    # Folding twice folds nothing more.
    again, _ = _ops(models.fold_constants(folded), sde, config, x, t)
    assert torch.equal(again, got)
    blocks = [m for m in model.modules() if hasattr(m, "skip_rescale") and m is not model]
    resblocks = [m for m in blocks if hasattr(m, "Conv_0")]  # (not the attention blocks)
    rescaled = sum(m.skip_rescale for m in blocks)
    shortcuts = sum(hasattr(m, "Conv_2") or hasattr(m, "NIN_0") for m in resblocks)
    conditional = config.model.conditional
    assert (rescaled > 0) == ("ddpm/" not in name) and shortcuts > 0  # DDPM sums without 1 / sqrt(2)
    # Each rescaled residual sum lost its division; the others (input pyramid, scale_by_sigma) stay.
    assert ops.get("div", 0) == plain.get("div", 0) - rescaled
    assert ops["add"] == plain["add"] and ops["clone"] == plain["clone"]
    # Biases: Conv_0's (conditional networks) and, beside a shortcut layer, Conv_1's.
    biases = lambda m: sum(c.bias is not None for c in m.modules() if isinstance(c, torch.nn.Conv2d))  # noqa: E731
    assert biases(folded) == biases(model) - shortcuts - len(resblocks) * conditional
    # A conditional network's Dense_0 layers became one GEMM, and so did each attention block's
    # query, key and value layers.
    attention = len(blocks) - len(resblocks)
    assert attention > 0
    assert ops["addmm"] == plain["addmm"] - (len(resblocks) - 1) * conditional - 2 * attention
    assert (folded.temb_projections is not None) == conditional
    if conditional:
        pick = next(m.Dense_0 for m in folded.modules() if hasattr(m, "Dense_0"))
        with pytest.raises(TypeError, match="Pick.*takes a StackedLinear's outputs"):
            pick(torch.zeros(2, 4 * config.model.nf))


def test_fast_score_fn_folds_and_the_official_path_does_not():
    model, sde, config = _perturbed(fixture_model)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    t = torch.tensor([0.4, 0.6])
    with torch.no_grad():
        official = models.get_score_fn(sde, model, continuous=True)(x, t)
        unfolded = engine.fast_score_fn(model, sde, True, "cpu", precision=None, channels_last=False, fold=False)
        folded = engine.fast_score_fn(model, sde, True, "cpu", precision=None, channels_last=False)
        assert torch.equal(unfolded(x, t), official)
        got = folded(x, t)
    assert not torch.equal(got, official)
    assert_close(got / official.abs().max(), official / official.abs().max())


def test_fast_score_fn_records_no_graph_of_the_weights():
    # The likelihood's vector-Jacobian product goes through it: only x may carry a gradient, also
    # through the layers that folding builds anew (the stacked time-embedding and q, k, v maps).
    model, sde, config = fixture_model()
    score_fn = engine.fast_score_fn(model, sde, True, "cpu")
    x, t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(9)), torch.tensor([0.4, 0.6])
    assert not score_fn(x, t).requires_grad
    assert score_fn(x.requires_grad_(True), t).requires_grad
    assert all(p.requires_grad for p in model.parameters() if p is not model.all_modules[0].W)  # left as it was
