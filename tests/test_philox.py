"""Noise drawn inside the kernels from a Philox key: the reference against Philox's published
known answers and against Triton's tl.randn; every kernel backend against the reference (the noise
is float32 whatever x's dtype, so the tolerance is float32's at least); the Philox stream."""

import math
import re

import pytest
import torch
from test_pc_update import tensors
from test_sampling import GMM, N_SAMPLES, assert_is_mixture, sdes

import fastsde
from fastsde import ops
from fastsde.ops.pc_update import langevin_step_reference, predictor_step_reference
from fastsde.ops.philox import philox4x32, philox_normal_reference

from conftest import KERNEL_BACKENDS, TOL, ops_namespace, poison, require

KEY = torch.tensor([[0, 0], [2**40 + 3, 2**33 - 5], [-7, 123456789], [1, 2**62]], dtype=torch.int64)


@pytest.mark.parametrize(
    "counter,key,expected",
    [
        # Random123's kat_vectors for philox4x32_10 (Salmon et al. 2011).
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ],
)
def test_philox_known_answers(counter, key, expected):
    words = philox4x32(*(torch.tensor([v], dtype=torch.int64) for v in counter + key))
    assert tuple(int(w) for w in words) == expected


def test_reference_matches_tl_randn():
    triton = pytest.importorskip("triton")
    tl = pytest.importorskip("triton.language")
    if not torch.cuda.is_available() and ops.unavailable_reason("triton", "cpu"):
        pytest.fail("tl.randn needs the Triton interpreter (TRITON_INTERPRET=1) without a GPU")
    device = "cuda" if torch.cuda.is_available() else "cpu"

    @triton.jit
    def randn_kernel(seed_ptr, offset_ptr, out_ptr, N, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        inside = i < N
        seed = tl.load(seed_ptr + i, mask=inside, other=0)
        tl.store(out_ptr + i, tl.randn(seed, tl.load(offset_ptr + i, mask=inside, other=0)), mask=inside)

    B, D = KEY.shape[0], 3000
    key = KEY.to(device)
    seeds = key[:, :1].expand(B, D).contiguous()
    offsets = (key[:, 1:] + torch.arange(D, device=device)).contiguous()
    out = torch.full((B, D), float("nan"), device=device)
    randn_kernel[(triton.cdiv(B * D, 4096),)](seeds, offsets, out, B * D, BLOCK=4096)
    torch.testing.assert_close(out, philox_normal_reference(key, (B, D)), rtol=1e-5, atol=1e-5)


def test_reference_statistics_and_independence():
    key = torch.tensor([[11, 0], [12, 0], [11, 200_000]], dtype=torch.int64)
    z = philox_normal_reference(key, (3, 200_000))
    for row in z:
        assert abs(float(row.mean())) < 0.01 and abs(float(row.std()) - 1) < 0.01
        assert abs(float((row**4).mean()) - 3) < 0.05  # Gaussian kurtosis
    assert abs(float((z[0] * z[1]).mean())) < 0.01  # other seed: independent
    assert abs(float((z[0] * z[2]).mean())) < 0.01  # same seed, next block: no overlap
    # A sample's numbers depend on its own key only, not on the batch it is drawn in.
    torch.testing.assert_close(philox_normal_reference(key[1:2], (1, 500)), z[1:2, :500])


def _tol(dtype):
    # The noise is float32 in every backend (libm differences of an ulp), whatever x's dtype.
    return max(TOL[dtype], TOL[torch.float32])


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize(
    "shape,layout", [((4, 3, 5, 7), "nchw"), ((4, 3, 5, 7), "channels_last"), ((4, 10), "nchw"), ((4, 1, 1, 1), "nchw")]
)
def test_kernels_draw_the_reference_noise(backend, device, dtype, shape, layout):
    require(backend, device)
    x, s, _, a, b, c = tensors(shape, dtype, device)
    if layout == "channels_last":
        x, s = x.to(memory_format=torch.channels_last), s.to(memory_format=torch.channels_last)
    key = KEY.to(device)
    rtol, atol = _tol(dtype)
    cases = [
        (
            lambda k, bk: ops.predictor_step(x, s, a, b, c, noise_key=k, backend=bk),
            predictor_step_reference(x, s, None, a, b, c, key),
        )
    ]
    cases += [
        (
            lambda k, bk, p=p: ops.langevin_step(x, s, a, 0.16, per_sample=p, noise_key=k, backend=bk),
            langevin_step_reference(x, s, None, a, 0.16, p, key),
        )
        for p in (False, True)
    ]
    for call, expected in cases:
        poison(expected[0])
        got = call(key, backend)
        for g, e in zip(got, expected):
            assert not torch.isnan(g).any()
            assert g.stride() == e.stride()
            torch.testing.assert_close(g, e, rtol=rtol, atol=atol)


def _pc(sde, seeds, device, corrector="langevin"):
    return fastsde.pc_sample(
        GMM.score_fn(sde),
        sde,
        (len(seeds), 2),
        corrector=corrector,
        generator=fastsde.Philox(seeds, device),
        device=device,
    )[0].cpu()


@pytest.mark.parametrize(
    "backend,device", [("reference", "cpu"), ("cpp", "cpu"), pytest.param("cuda", "cuda", marks=pytest.mark.gpu)]
)
def test_philox_stream_samples_the_mixture(backend, device, monkeypatch):
    # fastsde.Philox where a generator goes: PC sampling gives the mixture back, and repeats.
    require(backend, device)
    monkeypatch.setenv("FASTSDE_BACKEND", backend)
    sde = sdes()["VP"]
    x = _pc(sde, range(N_SAMPLES), device)
    assert_is_mixture(x)
    torch.testing.assert_close(_pc(sde, range(N_SAMPLES), device), x)


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
def test_philox_stream_same_on_every_backend_and_batch(backend, device, monkeypatch):
    # Without the batch-coupled Langevin step (whose per-sample form is chaotic in 2-D, so that
    # ulps would grow), a sample is the same in any batch and on any backend.
    require(backend, device)
    sde = sdes(50)["VE"]
    monkeypatch.setenv("FASTSDE_BACKEND", backend)
    three = _pc(sde, [7, 8, 9], device, "none")
    torch.testing.assert_close(_pc(sde, [8, 9], device, "none"), three[1:], rtol=1e-4, atol=1e-4)
    monkeypatch.setenv("FASTSDE_BACKEND", "reference")
    torch.testing.assert_close(_pc(sde, [7, 8, 9], device, "none"), three, rtol=1e-4, atol=1e-4)


def test_philox_stream_moves_on():
    p = fastsde.Philox([3, 4])
    k1, k2 = p.draw((2, 5, 2)), p.draw((2, 1))
    assert k1.tolist() == [[3, 0], [4, 0]] and k2.tolist() == [[3, 10], [4, 10]]
    assert p.key[:, 1].tolist() == [11, 11]
    with pytest.raises(ValueError, match="Philox stream of 2 samples for a batch of 3"):
        p.draw((3, 1))


@pytest.mark.parametrize("backend,device", [("reference", "cpu")] + KERNEL_BACKENDS)
def test_gradient_through_drawn_noise(backend, device):
    require(backend, device)
    x, s, _, a, b, c = (t.requires_grad_() for t in tensors((2, 3, 4), torch.float64, device))
    key = KEY[:2].to(device)
    got = torch.autograd.grad(ops.predictor_step(x, s, a, b, c, noise_key=key, backend=backend)[0].sum(), (x, c))
    want = torch.autograd.grad(predictor_step_reference(x, s, None, a, b, c, key)[0].sum(), (x, c))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
def test_opcheck_with_key(backend, device):
    require(backend, device)
    x, s, _, a, b, c = tensors((3, 2, 4, 4), device=device)
    key = KEY[:3].to(device)
    ops_ = ops_namespace(backend)
    torch.library.opcheck(ops_.predictor_step.default, (x, s, None, a, b, c, key))
    torch.library.opcheck(ops_.langevin_step.default, (x, s, None, a, 0.16, False, key))


WANT_KEY = "noise_key must be a tensor of (seed, offset) pairs of shape [4, 2], dtype int64, on cpu; got "


@pytest.mark.parametrize(
    "key,exc,words",
    [
        (KEY[:3].int(), TypeError, WANT_KEY + "shape [3, 2], dtype int32, on cpu"),
        (KEY[:3], ValueError, WANT_KEY + "shape [3, 2], dtype int64, on cpu"),
        (KEY.to("meta"), ValueError, WANT_KEY + "shape [4, 2], dtype int64, on meta"),
    ],
)
@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_bad_keys(backend, key, exc, words):
    x, s, z, a, b, c = tensors((4, 3))
    with pytest.raises(exc, match=re.escape(words)):
        ops.predictor_step(x, s, a, b, c, noise_key=key, backend=backend)
    with pytest.raises(ValueError, match="pass noise, generator or noise_key, not more than one"):
        ops.langevin_step(x, s, a, 0.1, noise=z, noise_key=KEY, backend=backend)


def test_direct_calls_check_the_key():
    x, s, z, a, b, c = tensors((4, 3))
    with pytest.raises(ValueError, match=re.escape(WANT_KEY + "shape [2, 2], dtype int64, on cpu")):
        torch.ops.fastsde.predictor_step(x, s, None, a, b, c, KEY[:2])
    with pytest.raises(ValueError, match="pass noise or noise_key, not both"):
        torch.ops.fastsde.langevin_step(x, s, z, a, 0.1, False, KEY)
    with pytest.raises(ValueError, match="noise or noise_key is required"):
        torch.ops.fastsde.langevin_step(x, s, None, a, 0.1, False)
    assert math.isfinite(float(torch.ops.fastsde.predictor_step(x, s, None, a, b, c, KEY)[0].sum()))
