"""predictor_step and langevin_step: kernel backends against the reference; the reference against
the official update formulas; noise from generators; per-sample independence."""

import math

import pytest
import torch

from fastsde import ops
from fastsde.ops.pc_update import langevin_step_reference, predictor_step_reference

from conftest import KERNEL_BACKENDS, assert_close, ops_namespace, poison, require

# The last: samples whose norms the CUDA Langevin step reduces in two chunks (in the emulation).
SHAPES = [(3, 2, 5, 7), (1, 10), (4, 3, 8, 8), (2, 1, 1, 1), (2, 3, 50, 61)]


def tensors(shape, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    x, s, z = (torch.randn(shape, generator=g).to(dtype=dtype, device=device) for _ in range(3))
    a, b, c = (torch.rand(shape[0], generator=g, dtype=torch.float64).to(device) + 0.1 for _ in range(3))
    return x, s, z, a, b, c


def test_reverse_diffusion_ve_formula():
    # Official VE reverse diffusion: x_mean = x + (sigma_i^2 - sigma_{i-1}^2) s; x = x_mean + sqrt(...) z.
    x, s, z, *_ = tensors((2, 3, 4, 4))
    sig, sig_prev = torch.tensor([5.0, 2.0]), torch.tensor([4.0, 1.5])
    d = sig**2 - sig_prev**2
    x_new, x_mean = ops.predictor_step(x, s, 1.0, d, d.sqrt(), noise=z, backend="reference")
    want_mean = x + d.view(-1, 1, 1, 1) * s
    torch.testing.assert_close(x_mean, want_mean)
    torch.testing.assert_close(x_new, want_mean + d.sqrt().view(-1, 1, 1, 1) * z)


def test_langevin_formula_official():
    # Official LangevinCorrector: norms averaged over the batch, eps = 2 alpha (snr |z| / |g|)^2.
    x, s, z, *_ = tensors((3, 2, 4, 4))
    alpha, snr = torch.tensor([0.9, 0.8, 0.7]), 0.16
    grad_norm = s.reshape(3, -1).norm(dim=-1).mean()
    noise_norm = z.reshape(3, -1).norm(dim=-1).mean()
    eps = (snr * noise_norm / grad_norm) ** 2 * 2 * alpha
    x_new, x_mean = ops.langevin_step(x, s, alpha, snr, noise=z, backend="reference")
    want_mean = x + eps.view(-1, 1, 1, 1) * s
    torch.testing.assert_close(x_mean, want_mean)
    torch.testing.assert_close(x_new, want_mean + (2 * eps).sqrt().view(-1, 1, 1, 1) * z)


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_noise", [True, False])
def test_predictor_matches_reference(backend, device, dtype, shape, with_noise):
    require(backend, device)
    x, s, z, a, b, c = tensors(shape, dtype, device)
    c_arg, noise = (c, z) if with_noise else (None, None)
    expected = predictor_step_reference(x, s, noise, a, b, c if with_noise else torch.zeros_like(c))
    poison(expected[0])
    got = ops.predictor_step(x, s, a, b, c_arg, noise=noise, backend=backend)
    for g, e in zip(got, expected):
        assert_close(g, e)


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("per_sample", [False, True])
def test_langevin_matches_reference(backend, device, dtype, shape, per_sample):
    require(backend, device)
    x, s, z, a, *_ = tensors(shape, dtype, device)
    expected = langevin_step_reference(x, s, z, a, 0.16, per_sample)
    poison(expected[0])
    got = ops.langevin_step(x, s, a, 0.16, noise=z, per_sample=per_sample, backend=backend)
    for g, e in zip(got, expected):
        assert_close(g, e)


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_unaligned_inputs(backend, device, dtype):
    # Tensors that start one element into their storage: no 16-byte access of them is aligned.
    require(backend, device)
    x, s, z, a, b, c = (
        t if t.dim() == 1 else torch.cat([t.new_zeros(1), t.flatten()])[1:].view(t.shape)
        for t in tensors((2, 3, 8, 8), dtype, device)
    )
    assert x.storage_offset() == 1
    for got, want in [
        (ops.predictor_step(x, s, a, b, c, noise=z, backend=backend), predictor_step_reference(x, s, z, a, b, c)),
        (ops.langevin_step(x, s, a, 0.16, noise=z, backend=backend), langevin_step_reference(x, s, z, a, 0.16, False)),
    ]:
        for g, e in zip(got, want):
            assert_close(g, e)


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
def test_layouts(backend, device):
    require(backend, device)
    x, s, z, a, b, c = tensors((2, 3, 6, 5), device=device)
    xc, sc, zc = (t.contiguous(memory_format=torch.channels_last) for t in (x, s, z))
    xn, xm = ops.predictor_step(xc, sc.transpose(2, 3).contiguous().transpose(2, 3), a, b, c, noise=zc, backend=backend)
    assert xn.is_contiguous(memory_format=torch.channels_last)
    expected = predictor_step_reference(x, s, z, a, b, c)
    assert_close(xn, expected[0])
    assert_close(xm, expected[1])


@pytest.mark.parametrize("backend,device", [("reference", "cpu")] + KERNEL_BACKENDS)
def test_seeded_noise_reproducible(backend, device):
    require(backend, device)
    x, s, _, a, b, c = tensors((3, 4, 4), device=device)
    gen = lambda seed: torch.Generator(device).manual_seed(seed)  # noqa: E731
    first = ops.predictor_step(x, s, a, b, c, generator=gen(7), backend=backend)
    second = ops.predictor_step(x, s, a, b, c, generator=gen(7), backend=backend)
    third = ops.predictor_step(x, s, a, b, c, generator=gen(8), backend=backend)
    assert torch.equal(first[0], second[0])
    assert not torch.equal(first[0], third[0])


@pytest.mark.parametrize("backend,device", [("reference", "cpu")] + KERNEL_BACKENDS)
def test_per_sample_generators_make_samples_batch_independent(backend, device):
    require(backend, device)
    x, s, _, a, *_ = tensors((4, 3, 5), device=device)
    gens = lambda seeds: [torch.Generator(device).manual_seed(k) for k in seeds]  # noqa: E731
    batch = ops.langevin_step(x, s, a, 0.2, generator=gens([10, 11, 12, 13]), per_sample=True, backend=backend)
    alone = ops.langevin_step(x[2:3], s[2:3], a[2:3], 0.2, generator=gens([12]), per_sample=True, backend=backend)
    torch.testing.assert_close(batch[0][2:3], alone[0])
    # The official batch-averaged step size couples the samples: the same sample differs.
    coupled = ops.langevin_step(x, s, a, 0.2, generator=gens([10, 11, 12, 13]), backend=backend)
    assert not torch.allclose(coupled[0][2:3], alone[0])


def test_noise_statistics():
    x = torch.zeros(4000, 10)
    x_new, x_mean = ops.predictor_step(x, x, 1.0, 0.0, 2.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x_mean, x)
    assert abs(x_new.mean().item()) < 0.05 and abs(x_new.std().item() - 2.0) < 0.05
    assert math.isclose(float(x_new.var(0).mean()), 4.0, rel_tol=0.05)


@pytest.mark.parametrize("backend,device", [("reference", "cpu")] + KERNEL_BACKENDS)
def test_predictor_gradcheck(backend, device):
    require(backend, device)
    args = [t.requires_grad_() for t in tensors((2, 3, 2), torch.float64, device)]
    fn = lambda x, s, z, a, b, c: ops.predictor_step(x, s, a, b, c, noise=z, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args)


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
def test_langevin_backward_refuses(backend, device):
    require(backend, device)
    x, s, z, a, *_ = tensors((2, 3), device=device)
    x.requires_grad_()
    x_new, _ = ops.langevin_step(x, s, a, 0.1, noise=z, backend=backend)
    with pytest.raises(NotImplementedError, match="backend='reference'"):
        x_new.sum().backward()


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
def test_opcheck(backend, device):
    require(backend, device)
    x, s, z, a, b, c = tensors((3, 2, 4, 4), device=device)
    ops_ = ops_namespace(backend)
    torch.library.opcheck(ops_.predictor_step.default, [t.detach().requires_grad_() for t in (x, s, z, a, b, c)])
    torch.library.opcheck(ops_.predictor_step.default, (x, s, None, a, b, c))
    for per_sample in (False, True):
        torch.library.opcheck(ops_.langevin_step.default, (x, s, z, a, 0.16, per_sample))
