// The op schemas of fastsde, defined once: for the library itself (ops.cpp) and for the emulated
// CUDA kernels that tests run on the CPU (tests/cuda_emulation.py).
#pragma once

#include <torch/library.h>

namespace fastsde {

inline void define_ops(torch::Library& m) {
  // Fake kernels and autograd are registered by the op modules of fastsde/ops, which load this.
  // kernel: [kh, kw], or [k] for the separable filter outer(k, k); pad = (x0, x1, y0, y1).
  // See fastsde/ops/upfirdn2d.py for the semantics.
  m.def("upfirdn2d(Tensor x, Tensor kernel, int up, int down, int[4] pad) -> Tensor");
  // GroupNorm of x + offset (offset [N, C], added to every position of its sample and channel
  // before the statistics: NCSN++'s time embedding), then SiLU if silu. Returns y and the
  // per-(sample, group) mean and 1/std of x + offset (float32, float64 for float64 x).
  m.def("group_norm(Tensor x, int num_groups, Tensor? weight, Tensor? bias, float eps, bool silu,"
        " Tensor? offset=None) -> (Tensor, Tensor, Tensor)");
  // Returns grad_x (which is also the gradient of x + offset), grad_weight, grad_bias (the last
  // two always computed, shape [C]).
  m.def("group_norm_backward(Tensor grad_y, Tensor x, Tensor mean, Tensor rstd, Tensor? weight,"
        " Tensor? bias, bool silu, Tensor? offset=None) -> (Tensor, Tensor, Tensor)");
  // x_mean = a x + b score;  x_new = x_mean + c noise  (a, b, c per sample). Returns (x_new, x_mean).
  // The noise is the tensor `noise`, or drawn in the kernel from noise_key, int64 [B, 2] of
  // (seed, offset) per sample (see csrc/philox.h), or absent (no noise term) when both are None.
  m.def("predictor_step(Tensor x, Tensor score, Tensor? noise, Tensor a, Tensor b, Tensor c,"
        " Tensor? noise_key=None) -> (Tensor, Tensor)");
  // Langevin corrector step with eps = 2 alpha (snr |noise| / |score|)^2, the norms per sample or
  // averaged over the batch; the noise from `noise` or `noise_key` (one of them). Returns (x_new, x_mean).
  m.def("langevin_step(Tensor x, Tensor score, Tensor? noise, Tensor alpha, float snr,"
        " bool per_sample, Tensor? noise_key=None) -> (Tensor, Tensor)");
}

}  // namespace fastsde
