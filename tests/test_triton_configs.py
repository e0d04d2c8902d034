"""Every GPU autotuning config of each Triton kernel against the reference backend. The other tests
run one config per kernel (the interpreter's, or on a GPU the first: conftest.py), and a config's
tile shape decides which code paths run (rows of several samples or images, several tiles a
group, one tile for everything), so a bug of some configs only would pass them."""

import os

import pytest
import torch
import triton

from fastsde import ops
from fastsde.ops import _backend

from conftest import KERNEL_BACKENDS, assert_close_scaled, laid_out, poison, require

TRITON = [p for p in KERNEL_BACKENDS if p.values[0] == "triton"]
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
LAYOUTS = ("nchw", "channels_last")


def randn(*shape, device, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)


def tuners(op):
    """The autotuned kernels of kernels/<op>.py."""
    return [t for t in vars(_backend.triton_kernels(op)).values() if isinstance(t, triton.runtime.Autotuner)]


def config(tuner, i):
    """Config i of a kernel's GPU configs (its last, where it has fewer)."""
    return tuner.gpu_configs[min(i, len(tuner.gpu_configs) - 1)]


def distinct_configs(op):
    """The indices i of the GPU configs that each make a different setting of the op's kernels; the
    interpreter ignores num_warps, so there configs that differ only in it count once."""
    seen, out = set(), []
    for i in range(max(len(t.gpu_configs) for t in tuners(op))):
        key = repr(
            [(sorted(config(t, i).kwargs.items()), None if INTERPRET else config(t, i).num_warps) for t in tuners(op)]
        )
        if key not in seen:
            seen.add(key)
            out.append(i)
    return out


def hold(op, i, monkeypatch):
    """The op's kernels run their config i, untimed."""
    for t in tuners(op):
        monkeypatch.setattr(t, "configs", [config(t, i)])


def check(got, want, what):
    try:
        assert_close_scaled(got, want, torch.float32)
    except AssertionError as e:
        raise AssertionError(f"{what}: {e}") from None


def run_group_norm(x, G, w, b, o, backend):
    leaves = [t.detach().requires_grad_() for t in (x, w, b) + ((o,) if o is not None else ())]
    y = ops.group_norm(
        leaves[0], G, leaves[1], leaves[2], 1e-6, "silu", offset=o if o is None else leaves[3], backend=backend
    )
    return (y, *torch.autograd.grad(y, leaves, randn(*y.shape, device=y.device, seed=1)))


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("i", distinct_configs("group_norm"))
def test_group_norm_every_config(backend, device, i, monkeypatch):
    # Groups of one tile, of two channel tiles (96 channels), and 4 groups of 2304 pixels, which the
    # kernels split along their pixels (the real split sizes: 4 groups are too few); in channels_last
    # (the sampling engine's layout) of x + an offset, as a residual block's second GroupNorm.
    require(backend, device)
    hold("group_norm", i, monkeypatch)
    for shape, G in [((2, 32, 6, 5), 8), ((1, 96, 4, 4), 1), ((1, 16, 48, 48), 4)]:
        x, w, b = randn(*shape, device=device), randn(shape[1], device=device), randn(shape[1], device=device)
        for layout in LAYOUTS:
            xl = laid_out(x, layout)
            o = randn(shape[0], shape[1], device=device, seed=2) if layout == "channels_last" else None
            want = run_group_norm(xl, G, w, b, o, "reference")
            poison(want[0])
            names = ("y", "dx", "dw", "db", "doffset")
            for name, g, r in zip(names, run_group_norm(xl, G, w, b, o, backend), want):
                check(g, r, f"{shape} G={G} {layout}: {name}")


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("i", distinct_configs("upfirdn2d"))
def test_upfirdn2d_every_config(backend, device, i, monkeypatch):
    # NCSN++'s three resamplings with the separable and the 2-D filter, forward and backward (the
    # adjoint runs the kernel too), on images of several rows per tile and of one tile per row part.
    require(backend, device)
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0], device=device) / 8
    hold("upfirdn2d", i, monkeypatch)
    for shape in [(2, 3, 5, 6), (1, 2, 9, 70)]:
        x = randn(*shape, device=device)
        for up, down, pad in [(2, 1, (2, 1)), (1, 2, (1, 1)), (1, 1, (2, 2))]:
            for k in (taps * up, torch.outer(taps, taps) * up * up):
                for layout in LAYOUTS:
                    xs = laid_out(x, layout).detach().requires_grad_()
                    want = ops.upfirdn2d(xs, k, up, down, pad, backend="reference")
                    dy = randn(*want.shape, device=device, seed=2)
                    (dx_want,) = torch.autograd.grad(want, xs, dy)
                    poison(want)
                    got = ops.upfirdn2d(xs, k, up, down, pad, backend=backend)
                    (dx,) = torch.autograd.grad(got, xs, dy)
                    what = f"{shape} up {up} down {down} pad {pad} k {tuple(k.shape)} {layout}"
                    check(got, want.detach(), what)
                    check(dx, dx_want, what + ": dx")


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("i", distinct_configs("pc_update"))
def test_pc_update_every_config(backend, device, i, monkeypatch):
    # Samples of 1 to 4 tiles of the smallest config, and a batch of several samples a tile.
    require(backend, device)
    hold("pc_update", i, monkeypatch)
    for shape in [(3, 3, 9, 7), (5, 1, 4, 4), (2, 3, 40, 60)]:
        x, s, z = (randn(*shape, device=device, seed=k) for k in range(3))
        a, b, c = (torch.rand(shape[0], generator=torch.Generator().manual_seed(k)).to(device) + 0.1 for k in range(3))
        key = torch.stack([torch.arange(shape[0]), torch.full((shape[0],), 7)], 1).to(device)
        for layout in LAYOUTS:
            xl, sl, zl = (laid_out(t, layout) for t in (x, s, z))
            for noise in ({"noise": zl}, {"noise_key": key}):
                want = ops.predictor_step(xl, sl, a, b, c, backend="reference", **noise)
                poison(want[0])
                for g, r in zip(ops.predictor_step(xl, sl, a, b, c, backend=backend, **noise), want):
                    check(g, r, f"{shape} {layout} predictor {list(noise)}")
                want = ops.langevin_step(xl, sl, a, 0.16, backend="reference", **noise)
                poison(want[0])
                for g, r in zip(ops.langevin_step(xl, sl, a, 0.16, backend=backend, **noise), want):
                    check(g, r, f"{shape} {layout} langevin {list(noise)}")
