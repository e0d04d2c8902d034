"""torch.compile over the ops: a smoke test that the fake kernels and autograd compose with Dynamo."""
import torch

from fastsde import ops


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
