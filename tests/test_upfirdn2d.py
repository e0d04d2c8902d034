"""upfirdn2d: every kernel backend against the reference over awkward shapes; the reference against
the definition; gradients, opcheck and torch.compile."""

import pytest
import torch

from fastsde import ops
from fastsde.ops import _backend
from fastsde.ops.upfirdn2d import upfirdn2d_reference

from conftest import KERNEL_BACKENDS, assert_close, laid_out, ops_namespace, poison, require

FIR = [1.0, 3.0, 3.0, 1.0]

# (shape, up, down, pad, kernel): NCSN++'s three cases, then the awkward ones.
CASES = [
    ((2, 3, 8, 8), 2, 1, (2, 1), "fir1d"),
    ((2, 3, 8, 8), 1, 2, (1, 1), "fir1d"),
    ((2, 3, 8, 8), 1, 1, (2, 2), "fir1d"),
    ((2, 3, 8, 8), 2, 1, (2, 1), "fir2d"),
    ((1, 1, 1, 1), 2, 1, (2, 1), "fir1d"),
    ((1, 2, 1, 1), 4, 1, (3, 2), "fir2d"),
    ((2, 3, 7, 9), 1, 4, (1, 2), "fir1d"),
    ((2, 3, 7, 9), 4, 2, (-1, 3, 2, -2), "rand3x2"),
    ((1, 5, 11, 6), 2, 2, (1, 0, 3, -1), "rand1d5"),
    ((3, 1, 5, 13), 1, 1, (0, 0), "rand3x2"),
    ((2, 4, 6, 6), 1, 2, (-1, -1), "fir1d"),
    # Rows long enough for the CPU kernel's 8-wide vectors and their tails, in every phase pattern.
    ((1, 2, 19, 37), 1, 2, (2, 1), "fir2d"),
    ((1, 2, 13, 21), 3, 2, (1, 2, 0, 3), "rand1d5"),
    ((1, 2, 9, 35), 2, 4, (5, -3, 1, 1), "rand3x2"),
    ((1, 1, 3, 30), 2, 1, (9, 9, -1, 2), "fir1d"),
    # Channels enough for the channels_last CPU kernel's 8-wide vectors and their tails.
    ((2, 19, 6, 7), 2, 1, (2, 1), "fir1d"),
    ((1, 16, 9, 8), 1, 2, (1, 1), "fir1d"),
    ((1, 11, 5, 6), 2, 2, (1, -1, 2, 0), "rand3x2"),
    # 4 taps with up 2, down 2 or neither (the CUDA tiled kernel's cases): several tiles along each
    # axis, blocks of planes that do not divide N x C, rows that allow 16-byte loads or not,
    # asymmetric taps (NCSN++'s are symmetric, so a filter that is not flipped would pass them).
    ((1, 1, 3, 72), 1, 1, (2, 2), "rand4"),
    ((1, 2, 40, 3), 2, 1, (2, 1), "rand4x4"),
    ((3, 3, 40, 16), 1, 2, (1, 1), "rand4"),
    ((1, 3, 9, 70), 1, 2, (0, 3, 2, -1), "rand4x4"),
    ((1, 2, 17, 36), 2, 1, (0, 2, -2, 1), "rand4"),
    # and channels_last with 32 channels (a warp's worth) or more: partial chunks of 32, vectors or not
    ((2, 40, 9, 10), 2, 1, (2, 1), "rand4"),
    ((1, 33, 5, 6), 1, 2, (1, 1), "fir2d"),
    ((1, 32, 10, 11), 1, 1, (2, 2), "rand4x4"),
    # Several Triton tiles (of 8192 outputs under the interpreter) along rows and along columns.
    ((2, 136, 4, 4), 2, 1, (2, 1), "rand4"),
    ((1, 2, 5, 100), 2, 1, (2, 1), "rand4x4"),
]
# Every case again in channels_last where that is a layout of its own (the kernels have NHWC paths).
LAYOUT_CASES = [(case, "nchw") for case in CASES] + [
    (case, "channels_last") for case in CASES if case[0][1] > 1 and case[0][2] * case[0][3] > 1
]


def make_kernel(name, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(1)
    k = {
        "fir1d": lambda: torch.tensor(FIR) / 8,
        "fir2d": lambda: torch.outer(torch.tensor(FIR), torch.tensor(FIR)) / 64,
        "rand3x2": lambda: torch.rand(3, 2, generator=g),
        "rand4": lambda: torch.rand(4, generator=g),
        "rand4x4": lambda: torch.rand(4, 4, generator=g),
        "rand1d5": lambda: torch.rand(5, generator=g),
    }[name]()
    return k.to(dtype=dtype, device=device)


def test_reference_matches_definition():
    # Zero insertion, padding, true convolution (flipped filter) and decimation, one sample at a time.
    x = torch.randn(1, 1, 3, 4, dtype=torch.float64)
    f = torch.rand(3, 2, dtype=torch.float64)
    up, down, (x0, x1, y0, y1) = 2, 2, (1, -1, 2, 0)
    u = torch.zeros(3 * up, 4 * up, dtype=torch.float64)
    u[::up, ::up] = x[0, 0]
    p = torch.zeros(u.shape[0] + y0 + y1 + 2, u.shape[1] + x0 + x1 + 2, dtype=torch.float64)
    p[y0 : y0 + u.shape[0], x0 : x0 + u.shape[1]] = u  # x1 = -1 crops the last column
    p = p[: u.shape[0] + y0 + y1, : u.shape[1] + x0 + x1]
    kh, kw = f.shape
    out = torch.zeros(p.shape[0] - kh + 1, p.shape[1] - kw + 1, dtype=torch.float64)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = (p[i : i + kh, j : j + kw] * f.flip([0, 1])).sum()
    expected = out[::down, ::down]
    got = ops.upfirdn2d(x, f, up, down, (x0, x1, y0, y1), backend="reference")[0, 0]
    torch.testing.assert_close(got, expected)


def test_official_upsample_border():
    # The official upsample_2d of a constant image: interior kept, corner 0.5625 (zero padding).
    k = torch.tensor(FIR) / 8 * 2  # 1-D taps of gain 4 = factor**2
    y = ops.upfirdn2d(torch.ones(1, 1, 4, 4), k, up=2, pad=(2, 1), backend="reference")
    assert y.shape == (1, 1, 8, 8)
    torch.testing.assert_close(y[0, 0, 3, 3], torch.tensor(1.0))
    torch.testing.assert_close(y[0, 0, 0, 0], torch.tensor(0.5625))


def test_separable_equals_outer():
    x = torch.randn(2, 3, 6, 5)
    k = make_kernel("rand1d5")
    torch.testing.assert_close(
        ops.upfirdn2d(x, k, 2, 1, (2, 2), backend="reference"),
        ops.upfirdn2d(x, torch.outer(k, k), 2, 1, (2, 2), backend="reference"),
    )


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "case,layout",
    LAYOUT_CASES,
    ids=lambda c: f"{c[0]}-up{c[1]}-down{c[2]}-pad{c[3]}-{c[4]}" if isinstance(c, tuple) else c,
)
def test_matches_reference(backend, device, dtype, case, layout):
    require(backend, device)
    shape, up, down, pad, kname = case
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype=dtype, device=device)
    k = make_kernel(kname, device=device)
    expected = upfirdn2d_reference(x, k, up, down, pad if len(pad) == 4 else pad * 2)
    poison(expected)
    y = ops.upfirdn2d(laid_out(x, layout), k, up, down, pad, backend=backend)
    if layout == "channels_last" and y.shape[2] * y.shape[3] > 1:
        assert y.is_contiguous(memory_format=torch.channels_last)
    assert_close(y, expected)


@pytest.mark.parametrize("backend,device", [p for p in KERNEL_BACKENDS if p.values[0] == "triton"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_triton_64bit_indices(backend, device, layout, monkeypatch):
    # The Triton kernel's 64-bit index arithmetic, which only tensors of 2**31 elements take, forced
    # on small ones.
    require(backend, device)
    monkeypatch.setattr(_backend.triton_kernels("upfirdn2d"), "INDEX32_LIMIT", 0)
    for shape, up, down, pad, kname in CASES[:3] + CASES[7:9] + CASES[-2:]:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
        k = make_kernel(kname, device=device)
        expected = upfirdn2d_reference(x, k, up, down, pad if len(pad) == 4 else pad * 2)
        assert_close(ops.upfirdn2d(laid_out(x, layout), k, up, down, pad, backend=backend), expected)


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
@pytest.mark.parametrize("layout", ["channels_last", "transposed", "strided"])
def test_layouts(backend, device, layout):
    require(backend, device)
    base = torch.randn(2, 5, 9, 12, device=device)
    x = {
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "transposed": base.transpose(2, 3),
        "strided": base[:, ::2, :, ::2],
    }[layout]
    k = make_kernel("fir1d", device=device)
    expected = upfirdn2d_reference(x.contiguous(), k, 2, 1, (2, 1, 2, 1))
    y = ops.upfirdn2d(x, k, 2, 1, (2, 1), backend=backend)
    assert_close(y, expected)
    assert y.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_unaligned_input(backend, device, dtype, layout):
    # A tensor whose data starts one element into its storage: no 16-byte access of it is aligned.
    shape = (2, 32, 6, 8) if layout == "nchw" else (2, 6, 8, 32)
    x = torch.randn(2 * 32 * 6 * 8 + 1, dtype=dtype, device=device)[1:].view(shape)
    if layout == "channels_last":
        x = x.permute(0, 3, 1, 2)
    k = make_kernel("rand4", device=device)
    for up, down, pad in [(2, 1, (2, 1)), (1, 2, (1, 1))]:
        expected = upfirdn2d_reference(x, k, up, down, pad * 2)
        poison(expected)
        assert_close(ops.upfirdn2d(x, k, up, down, pad, backend=backend), expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cpp_16bit_conversions_exact(dtype):
    # A 1x1 filter scales: in channels_last the cpp kernel loads the input 8 at a time into float
    # lanes and stores f * x back, which must round as torch's scalar conversion does, for all 65536
    # bit patterns: f = 1 (every value must come back; zeros lose their sign in 0 + x), 1/3
    # (inexact), and 1.5 (x + x/2 falls halfway between two 16-bit values for many x: ties, to even).
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    x = x.view(1, 16, 16, 256).permute(0, 3, 1, 2)
    for f in (1.0, 1 / 3, 1.5):
        y = ops.upfirdn2d(x, torch.full((1, 1), f), backend="cpp")
        expected = (x.float() * torch.tensor(f, dtype=torch.float32)).to(dtype)
        nan = expected.isnan()
        assert torch.equal(y.isnan(), nan)
        assert torch.equal(y[~nan], expected[~nan]), f


@pytest.mark.parametrize("backend,device", [p for p in KERNEL_BACKENDS if p.values[0] == "cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_cuda_direct_kernel_switch(backend, device, dtype, layout, monkeypatch):
    # FASTSDE_UPFIRDN2D_TILED=0 sends the tiled kernel's cases to the direct one (the GPU benchmark
    # compares the two); both must compute the op.
    require(backend, device)
    x = laid_out(torch.randn(2, 40, 9, 10, dtype=dtype, device=device), layout)
    k = make_kernel("rand4", device=device)
    for up, down, pad in [(2, 1, (2, 1)), (1, 2, (1, 1)), (1, 1, (2, 2))]:
        expected = upfirdn2d_reference(x, k, up, down, pad * 2)
        for tiled in ("1", "0"):
            monkeypatch.setenv("FASTSDE_UPFIRDN2D_TILED", tiled)
            poison(expected)
            assert_close(ops.upfirdn2d(x, k, up, down, pad, backend=backend), expected)


@pytest.mark.parametrize("backend,device", [("reference", "cpu")] + KERNEL_BACKENDS)
@pytest.mark.parametrize(
    "kname,up,down,pad", [("fir1d", 2, 1, (2, 1)), ("fir1d", 1, 2, (1, 1)), ("rand3x2", 2, 2, (1, -1, 2, 0))]
)
def test_gradcheck(backend, device, kname, up, down, pad):
    require(backend, device)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, device=device, requires_grad=True)
    k = make_kernel(kname, torch.float64, device)
    fn = lambda x: ops.upfirdn2d(x, k, up, down, pad, backend=backend)  # noqa: E731
    # The interpreter takes ~0.1 s a launch; fast mode checks J v and J^T u for random u, v in a
    # few launches instead of one per element (minutes).
    fast = backend == "triton" and device == "cpu"
    assert torch.autograd.gradcheck(fn, (x,), fast_mode=fast)
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=fast)


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_gradient_matches_reference(backend, device, layout):
    require(backend, device)
    x = laid_out(torch.randn(2, 11, 7, 6, device=device), layout).requires_grad_()
    k = make_kernel("fir1d", device=device)
    g = laid_out(torch.randn(2, 11, 14, 12, device=device), layout)
    (dx,) = torch.autograd.grad(ops.upfirdn2d(x, k, 2, 1, (2, 1), backend=backend), x, g)
    (dx_ref,) = torch.autograd.grad(ops.upfirdn2d(x, k, 2, 1, (2, 1), backend="reference"), x, g)
    assert_close(dx, dx_ref)


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
def test_opcheck(backend, device):
    require(backend, device)
    x = torch.randn(2, 3, 5, 6, device=device, requires_grad=True)
    for k, args in [
        (make_kernel("fir1d", device=device), (2, 1, [2, 1, 2, 1])),
        (make_kernel("rand3x2", device=device), (1, 2, [0, 1, -1, 2])),
    ]:
        torch.library.opcheck(ops_namespace(backend).upfirdn2d.default, (x, k, *args))
    xc = torch.randn(2, 3, 5, 6, device=device).contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(
        ops_namespace(backend).upfirdn2d.default, (xc, make_kernel("fir1d", device=device), 1, 2, [1, 1, 1, 1])
    )
