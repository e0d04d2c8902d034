"""group_norm(+SiLU, of x + offset): every kernel backend against the reference, forward and backward,
over awkward shapes, layouts and dtypes; the reference against the formula; what the backward keeps;
gradcheck, opcheck."""

import pytest
import torch

from fastsde import ops
from fastsde.ops import _backend
from fastsde.ops.group_norm import group_norm_reference

import harness
from conftest import KERNEL_BACKENDS, assert_close, assert_close_scaled, laid_out, ops_namespace, poison, require

# (shape, groups): NCSN++ sizes, a single group, one channel per group, 1x1 images, odd sizes,
# 3-D and 2-D inputs; groups that nearly fill the CUDA fused forward's 8, 16 and 32 registers per
# thread (the last also larger than a CPU chunk); groups too large for it, which the CUDA kernels
# split into chunks (in the emulation's small GPU): for the statistics, chunks that end inside a
# pixel's channels of the group (channels_last), and for the backward's channel sums in either
# layout; a group wider than a Triton tile's 64 channels (two channel tiles, the second partly
# outside the group).
CASES = [
    ((2, 32, 8, 8), 8),
    ((3, 4, 1, 1), 1),
    ((2, 64, 3, 5), 32),
    ((2, 6, 4, 4), 6),
    ((1, 12, 7, 9), 3),
    ((2, 16, 33), 4),
    ((5, 8), 2),
    ((1, 4, 20, 20), 1),
    ((1, 4, 40, 40), 1),
    ((1, 8, 48, 48), 2),
    ((1, 3, 75, 75), 1),
    ((1, 2, 96, 96), 1),
    ((1, 96, 8, 8), 1),
]


# Every 4-D case again in channels_last (the kernels have an NHWC path of their own).
LAYOUT_CASES = [(case, "nchw") for case in CASES] + [
    (case, "channels_last") for case in CASES if len(case[0]) == 4 and case[0][2] * case[0][3] > 1
]


def inputs(shape, groups, dtype, device, affine=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 3 + 1).to(dtype=dtype, device=device)
    C = shape[1]
    w = torch.randn(C, generator=g).to(dtype=dtype, device=device) if affine else None
    b = torch.randn(C, generator=g).to(dtype=dtype, device=device) if affine else None
    return x, w, b


def offset_for(x, seed=7):
    """An offset [N, C] for x, as large as x's own spread, so that it moves each channel's mean."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(x.shape[:2], generator=g) * 3).to(dtype=x.dtype, device=x.device)


# (act, offset): GroupNorm, GroupNorm+SiLU, and GroupNorm+SiLU of x + offset (a residual block's second).
ACT_OFFSET = [(None, False), ("silu", False), ("silu", True)]
ACT_OFFSET_IDS = ["plain", "silu", "silu+offset"]


@pytest.mark.parametrize("act,offset", ACT_OFFSET, ids=ACT_OFFSET_IDS)
@pytest.mark.parametrize("shape", [(2, 16, 5, 5), (3, 8, 7), (4, 6)])
def test_reference_matches_formula(act, offset, shape):
    # The reference is torch's GroupNorm; here it is held to the formula, in float64.
    x, w, b = inputs(shape, 2, torch.float64, "cpu")
    o = offset_for(x) if offset else None
    xg = (x if o is None else x + o.reshape(o.shape + (1,) * (len(shape) - 2))).reshape(shape[0], 2, -1)
    mean = xg.mean(-1, keepdim=True)
    var = ((xg - mean) ** 2).mean(-1, keepdim=True)
    per_channel = (-1,) + (1,) * (len(shape) - 2)
    expected = ((xg - mean) / torch.sqrt(var + 1e-6)).reshape(shape) * w.view(per_channel) + b.view(per_channel)
    if act:
        expected = expected * torch.sigmoid(expected)
    torch.testing.assert_close(ops.group_norm(x, 2, w, b, 1e-6, act, offset=o, backend="reference"), expected)


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("act,offset", ACT_OFFSET, ids=ACT_OFFSET_IDS)
@pytest.mark.parametrize("case,layout", LAYOUT_CASES, ids=lambda c: f"{c[0]}-G{c[1]}" if isinstance(c, tuple) else c)
def test_forward_matches_reference(backend, device, dtype, act, offset, case, layout):
    require(backend, device)
    shape, G = case
    x, w, b = inputs(shape, G, dtype, device)
    o = offset_for(x) if offset else None
    expected = group_norm_reference(x, G, w, b, 1e-6, act == "silu", o)
    poison(expected)
    y = ops.group_norm(laid_out(x, layout), G, w, b, 1e-6, act, offset=o, backend=backend)
    assert y.is_contiguous(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
    assert_close(y, expected)


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
@pytest.mark.parametrize("affine", ["both", "none", "weight", "bias"])
def test_affine_optional(backend, device, affine):
    require(backend, device)
    x, w, b = inputs((2, 8, 5, 3), 2, torch.float32, device)
    w = w if affine in ("both", "weight") else None
    b = b if affine in ("both", "bias") else None
    assert_close(ops.group_norm(x, 2, w, b, act="silu", backend=backend), group_norm_reference(x, 2, w, b, 1e-6, True))


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("act,offset", ACT_OFFSET, ids=ACT_OFFSET_IDS)
@pytest.mark.parametrize("case,layout", LAYOUT_CASES, ids=lambda c: f"{c[0]}-G{c[1]}" if isinstance(c, tuple) else c)
def test_backward_matches_reference(backend, device, dtype, act, offset, case, layout):
    require(backend, device)
    shape, G = case
    x, w, b = inputs(shape, G, dtype, device)
    o = offset_for(x) if offset else None
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(3)).to(dtype=dtype, device=device)

    def grads(bk):
        leaves = [t.detach().requires_grad_() for t in (laid_out(x, layout), w, b) + ((o,) if offset else ())]
        y = ops.group_norm(
            leaves[0], G, leaves[1], leaves[2], 1e-6, act, offset=leaves[3] if offset else None, backend=bk
        )
        return torch.autograd.grad(y, leaves, grad)

    # Parameter gradients sum over N*H*W terms: compare relative to their size.
    for got, want in zip(grads(backend), grads("reference")):
        assert_close_scaled(got, want, dtype)


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
@pytest.mark.parametrize("layout", ["channels_last", "transposed", "strided"])
def test_layouts(backend, device, layout):
    require(backend, device)
    base, w, b = inputs((2, 8, 6, 10), 4, torch.float32, device)
    x = {
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "transposed": base.transpose(2, 3),
        "strided": base[:, :, ::2, 1::3],
    }[layout]
    xs = x.detach().requires_grad_()
    y = ops.group_norm(xs, 4, w, b, act="silu", backend=backend)
    assert y.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    assert_close(y, group_norm_reference(x.contiguous(), 4, w, b, 1e-6, True))
    g = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, xs, g)
    xr = x.detach().requires_grad_()
    (dx_ref,) = torch.autograd.grad(ops.group_norm(xr, 4, w, b, act="silu", backend="reference"), xr, g)
    assert_close(dx, dx_ref)


def strided_offset(x, layout):
    """offset_for(x) at other strides, NaN around its elements: 'slice' (columns of a wider
    [N, 3C + 5] tensor, as fold_constants' stacked time embeddings), 'transposed' (a [C, N] tensor
    seen as [N, C]), 'expanded' (one row for every sample: stride 0)."""
    o = offset_for(x)
    N, C = o.shape
    nan = lambda *shape: torch.full(shape, float("nan"), dtype=o.dtype, device=o.device)  # noqa: E731
    if layout == "expanded":
        view = nan(1, C).copy_(o[:1]).expand(N, C)
    else:
        view = (nan(N, 3 * C + 5)[:, C + 2 : 2 * C + 2] if layout == "slice" else nan(C, N).t()).copy_(o)
    assert not view.is_contiguous()
    return view


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
@pytest.mark.parametrize("x_layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("layout", ["slice", "transposed", "expanded"])
def test_offset_at_any_strides(backend, device, x_layout, layout):
    # The kernels read the offset where it lies (no copy): sampling's offsets are column slices.
    require(backend, device)
    x, w, b = inputs((3, 8, 5, 6), 4, torch.float32, device)
    x = laid_out(x, x_layout)
    o = strided_offset(x, layout)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(5)).to(device)

    def run(bk, offset):
        leaves = [t.detach().requires_grad_() for t in (x, w, b, offset)]
        y = ops.group_norm(leaves[0], 4, leaves[1], leaves[2], act="silu", offset=leaves[3], backend=bk)
        return (y,) + torch.autograd.grad(y, leaves, g)

    for got, want in zip(run(backend, o), run("reference", o.contiguous())):
        assert_close(got, want)


@pytest.mark.parametrize("backend,device", [p for p in KERNEL_BACKENDS if p.values[0] == "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("offset", [False, True])
def test_triton_split_groups(backend, device, dtype, layout, offset, monkeypatch):
    # The Triton kernels' split of groups along their pixels (for few large groups), forced on
    # small ones: ranges of 16 pixels, a last one shorter, with one or two channel tiles.
    require(backend, device)
    monkeypatch.setattr(_backend.triton_kernels("group_norm"), "SPLIT_PIXELS", 16)
    for shape, G in [((2, 32, 8, 8), 8), ((1, 12, 7, 9), 3), ((1, 96, 8, 8), 1)]:
        x, w, b = inputs(shape, G, dtype, device)
        o = offset_for(x) if offset else None
        grad = torch.randn(shape, generator=torch.Generator().manual_seed(3)).to(dtype=dtype, device=device)

        def run(bk):
            leaves = [t.detach().requires_grad_() for t in (laid_out(x, layout), w, b) + ((o,) if offset else ())]
            y = ops.group_norm(
                leaves[0], G, leaves[1], leaves[2], 1e-6, "silu", offset=leaves[3] if offset else None, backend=bk
            )
            return (y, *torch.autograd.grad(y, leaves, grad))

        for got, want in zip(run(backend), run("reference")):
            assert_close_scaled(got, want, dtype)


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("split", [False, True])
def test_a_variance_that_overflows_gives_nan_as_the_reference(backend, device, layout, split, monkeypatch):
    # Inputs near float32's range: the variance overflows to Inf. The reference (torch's group_norm)
    # then gives NaN; the cpp kernel gave each channel's bias, finite and wrong, which hid the overflow.
    require(backend, device)
    if split and backend == "triton":
        monkeypatch.setattr(_backend.triton_kernels("group_norm"), "SPLIT_PIXELS", 16)
    shape, G = ((1, 8, 96, 96) if split and backend != "triton" else (2, 8, 6, 6)), 4
    x, w, b = inputs(shape, G, torch.float32, device)
    x = x.clone()
    x[0, :2] *= 1e30  # the first group of the first sample; the others stay finite
    want = ops.group_norm(laid_out(x, layout), G, w, b, 1e-6, "silu", backend="reference")
    got = ops.group_norm(laid_out(x, layout), G, w, b, 1e-6, "silu", backend=backend)
    assert want[0, :2].isnan().all() and want[:, 2:].isfinite().all()
    torch.testing.assert_close(got, want, equal_nan=True)


def unaligned(shape, dtype, device, layout, seed):
    """Data that starts one element into its storage, so that no 16-byte access of it is aligned."""
    g = torch.Generator().manual_seed(seed)
    dims = shape if layout == "nchw" else (shape[0], *shape[2:], shape[1])
    t = torch.randn(torch.Size(dims).numel() + 1, generator=g).to(dtype=dtype, device=device)[1:].view(dims)
    return t if layout == "nchw" else t.permute(0, 3, 1, 2)


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("offset", [False, True])
@pytest.mark.parametrize(
    "shape,G,layout,aligned",
    [
        ((2, 32, 6, 8), 8, "nchw", False),
        ((2, 32, 6, 8), 8, "channels_last", False),
        ((1, 2, 96, 96), 1, "nchw", False),
        # rows of an odd length in a group of a multiple of 8 elements: vectors must not cross channels
        ((1, 4, 65, 65), 1, "nchw", True),
    ],
)
def test_vector_access(backend, device, dtype, offset, shape, G, layout, aligned):
    # (With an offset, a vector that runs over two channels of an NCHW group adds each its own.)
    require(backend, device)
    _, w, b = inputs(shape, G, dtype, device)
    if aligned:
        x, grad = (
            laid_out(torch.randn(shape, generator=torch.Generator().manual_seed(s)), layout).to(
                dtype=dtype, device=device
            )
            for s in (0, 1)
        )
    else:
        x, grad = (unaligned(shape, dtype, device, layout, s) for s in (0, 1))
    o = offset_for(x) if offset else None
    xs, xr = x.detach().requires_grad_(), x.detach().requires_grad_()
    y = ops.group_norm(xs, G, w, b, act="silu", offset=o, backend=backend)
    y_ref = ops.group_norm(xr, G, w, b, act="silu", offset=o, backend="reference")
    assert_close(y, y_ref)
    (dx,) = torch.autograd.grad(y, xs, grad)
    (dx_ref,) = torch.autograd.grad(y_ref, xr, grad)
    assert_close(dx, dx_ref)


@pytest.mark.parametrize("backend,device", [("reference", "cpu")] + KERNEL_BACKENDS)
@pytest.mark.parametrize("act", [None, "silu"])
def test_gradcheck(backend, device, act):
    require(backend, device)
    x, w, b = inputs((2, 6, 3, 2), 3, torch.float64, device)
    args = [t.requires_grad_() for t in (x, w, b, offset_for(x))]
    # Kernels run in an emulator or interpreter check a random projection of the Jacobian: the full
    # one takes minutes of interpreted launches there; test_backward_matches_reference covers them.
    fast = device == "cpu" and backend in ("cuda", "triton")
    f = lambda x, w, b: ops.group_norm(x, 3, w, b, 1e-5, act, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(f, args[:3], fast_mode=fast)
    f = lambda x, w, b, o: ops.group_norm(x, 3, w, b, 1e-5, act, offset=o, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(f, args, fast_mode=fast)


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_deterministic_parameter_grads(backend, device, layout):
    require(backend, device)
    x, w, b = inputs((8, 32, 16, 16), 8, torch.float32, device)
    x = laid_out(x, layout)
    grad = torch.randn_like(x)

    def once():
        ws, bs = w.detach().requires_grad_(), b.detach().requires_grad_()
        return torch.autograd.grad(ops.group_norm(x, 8, ws, bs, act="silu", backend=backend), (ws, bs), grad)

    first, second = once(), once()
    for a, c in zip(first, second):
        assert torch.equal(a, c)


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_backward_keeps_only_input_and_statistics(backend, device, dtype, layout):
    # Why fused training takes less memory than GroupNorm then SiLU, which keep x and the normalised
    # x (or the statistics) and the SiLU's input: the backward recomputes from x and the statistics.
    require(backend, device)
    x, w, b = inputs((2, 8, 6, 6), 4, dtype, device)
    x, w, b = (t.requires_grad_() for t in (laid_out(x, layout), w, b))
    with harness.saved_for_backward([w, b]) as saved:
        ops.group_norm(x, 4, w, b, act="silu", backend=backend)
    assert sum(saved.values()) == x.numel() * x.element_size() + 2 * (2 * 4) * 4  # x; mean, rstd [N, G] fp32
    # With an offset: x (not x + offset, which is never formed), the offset, the statistics.
    o = offset_for(x).requires_grad_()
    with harness.saved_for_backward([w, b]) as saved:
        ops.group_norm(x, 4, w, b, act="silu", offset=o, backend=backend)
    assert sum(saved.values()) == (x.numel() + o.numel()) * x.element_size() + 2 * (2 * 4) * 4


@pytest.mark.parametrize("backend,device", KERNEL_BACKENDS)
def test_opcheck(backend, device):
    require(backend, device)
    x, w, b = inputs((2, 8, 3, 5), 4, torch.float32, device)
    for silu in (False, True):
        args = (x.requires_grad_(), 4, w.requires_grad_(), b.requires_grad_(), 1e-6, silu)
        torch.library.opcheck(ops_namespace(backend).group_norm.default, args)
        torch.library.opcheck(ops_namespace(backend).group_norm.default, (x.detach(), 4, None, None, 1e-6, silu))
    xc = x.detach().contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(ops_namespace(backend).group_norm.default, (xc, 2, w.detach(), b.detach(), 1e-6, True))
    o = offset_for(x).requires_grad_()
    torch.library.opcheck(ops_namespace(backend).group_norm.default, (x, 4, w, b, 1e-6, True, o))
    torch.library.opcheck(ops_namespace(backend).group_norm.default, (xc, 2, None, None, 1e-6, False, o.detach()))
