"""torch.compile over the ops: a smoke test that the fake kernels and autograd compose with Dynamo."""

import torch

from fastsde import ops

from conftest import require


def block(x, k, w, b):
    h = ops.group_norm(x, 4, w, b, act="silu", backend="cpp")
    h = ops.upfirdn2d(h, k, down=2, pad=(1, 1), backend="cpp")
    x_new, x_mean = ops.predictor_step(h, h, 1.0, 0.5, 0.1, noise=torch.ones_like(h), backend="cpp")
    return x_new + x_mean


def test_compiled_matches_eager():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    k, w, b = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8, torch.randn(8), torch.randn(8)
    compiled = torch.compile(block, fullgraph=True)
    y, y_ref = compiled(x, k, w, b), block(x, k, w, b)
    torch.testing.assert_close(y, y_ref)
    (g,) = torch.autograd.grad(y.sum(), x)
    (g_ref,) = torch.autograd.grad(y_ref.sum(), x)
    torch.testing.assert_close(g, g_ref)


def test_compiled_inference_matches_eager():
    # Without gradients the ops skip their autograd wrapper; under torch.compile they must not.
    torch.manual_seed(1)
    x = torch.randn(2, 8, 8, 8)
    k, w, b = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8, torch.randn(8), torch.randn(8)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(block, fullgraph=True)(x, k, w, b), block(x, k, w, b))


def test_compiled_triton_steps_match_eager():
    # The Triton ops are custom ops with fake kernels: Dynamo traces them (interpreted without a GPU).
    device = "cuda" if torch.cuda.is_available() else "cpu"
    require("triton", device)
    torch.manual_seed(2)
    x, s, z = (torch.randn(3, 4, 5, 5, device=device) for _ in range(3))
    a = torch.rand(3, device=device) + 0.5

    def step(x, s, z, a):
        x, _ = ops.langevin_step(x, s, a, 0.16, noise=z, per_sample=True, backend="triton")
        return ops.predictor_step(x, s, a, 0.1, 0.2, noise=z, backend="triton")

    for got, want in zip(torch.compile(step, fullgraph=True)(x, s, z, a), step(x, s, z, a)):
        torch.testing.assert_close(got, want)
