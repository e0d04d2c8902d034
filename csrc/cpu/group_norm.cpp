// GroupNorm with optional fused SiLU on the CPU: one task per (sample, group), two passes over
// the group for the statistics (the group is small enough to stay in cache), one to write y.
// Backward recomputes x_hat from the saved mean and 1/std; parameter gradients are reduced per
// (sample, channel) first and summed over samples in a fixed order (deterministic).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/OpMathType.h>

#include <cmath>
#include <vector>

#include "../common.h"
#include "simd.h"

namespace fastsde::cpu {
namespace {

// Sum of term(i, V{}) over [0, n), where term returns the V-wide value at i: four independent vector
// partial sums (one accumulator would make the loop wait on the add latency, 3-4x slower in
// cache) and a scalar one in ACC over chunks of 4096, the chunks added in double, so that long
// groups (1024x1024 images) lose no accuracy.
template <typename T, typename ACC, typename F>
inline __attribute__((always_inline)) double reduce(int64_t n, F term) {
  double total = 0;
  for (int64_t start = 0; start < n; start += 4096) {
    const int64_t len = std::min<int64_t>(n - start, 4096);
    int64_t i = 0;
    if constexpr (std::is_same_v<T, float>) {
      f32x8 v0 = {}, v1 = {}, v2 = {}, v3 = {};
      for (; i + 32 <= len; i += 32) {
        v0 += term(start + i, f32x8{});
        v1 += term(start + i + 8, f32x8{});
        v2 += term(start + i + 16, f32x8{});
        v3 += term(start + i + 24, f32x8{});
      }
      for (; i + 8 <= len; i += 8) v0 += term(start + i, f32x8{});
      total += static_cast<double>(hsum((v0 + v1) + (v2 + v3)));
    }
    ACC one = 0;
    for (; i < len; ++i) one += term(start + i, ACC{});
    total += one;
  }
  return total;
}

// SILU is a template parameter so that the write loop carries no branch.
template <typename T, bool SILU>
void forward_kernel(const T* x, const T* weight, const T* bias, T* y, at::opmath_type<T>* mean_out,
                    at::opmath_type<T>* rstd_out, int64_t N, int64_t C, int64_t L, int64_t G,
                    double eps) {
  using acc_t = at::opmath_type<T>;
  const int64_t Cg = C / G, M = Cg * L;
  at::parallel_for(0, N * G, 1, [&](int64_t begin, int64_t end) {
    with_isa([&]() __attribute__((always_inline)) {
      for (int64_t ng = begin; ng < end; ++ng) {
        const int64_t n = ng / G, g = ng % G;
        const T* xg = x + (n * C + g * Cg) * L;
        T* yg = y + (n * C + g * Cg) * L;
        const acc_t mean = static_cast<acc_t>(
            reduce<T, acc_t>(M, [&](int64_t i, auto v) { return load<decltype(v)>(xg + i); }) / M);
        const double var = reduce<T, acc_t>(M, [&](int64_t i, auto v) {
                             const auto d = load<decltype(v)>(xg + i) - mean;
                             return d * d;
                           }) / M;
        const acc_t rstd = static_cast<acc_t>(1.0 / std::sqrt(var + eps));
        mean_out[ng] = mean;
        rstd_out[ng] = rstd;
        for (int64_t cl = 0; cl < Cg; ++cl) {
          const int64_t c = g * Cg + cl;
          const acc_t scale = rstd * (weight ? static_cast<acc_t>(weight[c]) : acc_t(1));
          const acc_t shift = (bias ? static_cast<acc_t>(bias[c]) : acc_t(0)) - mean * scale;
          const T* xr = xg + cl * L;
          T* yr = yg + cl * L;
          simd_for<T, acc_t>(L, [&](int64_t i, auto v) {
            auto out = load<decltype(v)>(xr + i) * scale + shift;
            if constexpr (SILU) out = out * sigmoid(out);
            store(yr + i, out);
          });
        }
      }
    });
  });
}

template <typename T>
void backward_kernel(const T* dy, const T* x, const at::opmath_type<T>* mean,
                     const at::opmath_type<T>* rstd, const T* weight, const T* bias, T* dx,
                     at::opmath_type<T>* ds_nc, at::opmath_type<T>* db_nc, int64_t N, int64_t C,
                     int64_t L, int64_t G, bool silu) {
  using acc_t = at::opmath_type<T>;
  const int64_t Cg = C / G, M = Cg * L;
  at::parallel_for(0, N * G, 1, [&](int64_t begin, int64_t end) {
    // dL/d(pre-activation) of the group, computed once and read back for dx.
    thread_local std::vector<acc_t> dz_buf;
    dz_buf.resize(M);
    acc_t* dz = dz_buf.data();
    with_isa([&]() __attribute__((always_inline)) {
      for (int64_t ng = begin; ng < end; ++ng) {
        const int64_t n = ng / G, g = ng % G;
        const int64_t off = (n * C + g * Cg) * L;
        const acc_t m = mean[ng], r = rstd[ng];
        double sum_wdb = 0, sum_wds = 0;
        for (int64_t cl = 0; cl < Cg; ++cl) {
          const int64_t c = g * Cg + cl;
          const acc_t w = weight ? static_cast<acc_t>(weight[c]) : acc_t(1);
          const acc_t b = bias ? static_cast<acc_t>(bias[c]) : acc_t(0);
          const T* xr = x + off + cl * L;
          const T* dyr = dy + off + cl * L;
          acc_t* dzr = dz + cl * L;
          simd_for<T, acc_t>(L, [&](int64_t i, auto v) {
            using V = decltype(v);
            auto d = load<V>(dyr + i);
            if (silu) {
              const auto z = (load<V>(xr + i) - m) * r * w + b;
              const auto s = sigmoid(z);
              d = d * s * (1.0f + z * (1.0f - s));
            }
            store(dzr + i, d);
          });
          const double sdb = reduce<acc_t, acc_t>(L, [&](int64_t i, auto v) {
            return load<decltype(v)>(dzr + i);
          });
          const double sds = reduce<T, acc_t>(L, [&](int64_t i, auto v) {
            using V = decltype(v);
            return load<V>(dzr + i) * ((load<V>(xr + i) - m) * r);
          });
          ds_nc[n * C + c] = static_cast<acc_t>(sds);
          db_nc[n * C + c] = static_cast<acc_t>(sdb);
          sum_wdb += w * sdb;
          sum_wds += w * sds;
        }
        const acc_t k1 = static_cast<acc_t>(sum_wdb / M), k2 = static_cast<acc_t>(sum_wds / M);
        for (int64_t cl = 0; cl < Cg; ++cl) {
          const int64_t c = g * Cg + cl;
          const acc_t w = weight ? static_cast<acc_t>(weight[c]) : acc_t(1);
          const T* xr = x + off + cl * L;
          const acc_t* dzr = dz + cl * L;
          T* dxr = dx + off + cl * L;
          simd_for<T, acc_t>(L, [&](int64_t i, auto v) {
            using V = decltype(v);
            const auto xhat = (load<V>(xr + i) - m) * r;
            store(dxr + i, r * (load<V>(dzr + i) * w - k1 - xhat * k2));
          });
        }
      }
    });
  });
}

// The kernels work on [N, C, L] contiguous data; channels_last tensors are converted to it and the
// results converted back (a native NHWC kernel is future work).
std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_cpu(const at::Tensor& x_in,
                                                              int64_t num_groups,
                                                              const std::optional<at::Tensor>& weight,
                                                              const std::optional<at::Tensor>& bias,
                                                              double eps, bool silu) {
  check_group_norm(x_in, num_groups, weight, bias);
  const GroupNormArgs a = group_norm_args(x_in, num_groups, weight, bias);
  at::Tensor y = at::empty_like(a.x), mean = a.empty(a.N, a.G), rstd = a.empty(a.N, a.G);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "group_norm_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto run = silu ? forward_kernel<scalar_t, true> : forward_kernel<scalar_t, false>;
    run(a.x.const_data_ptr<scalar_t>(), a.w<scalar_t>(), a.b<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
        mean.mutable_data_ptr<acc_t>(), rstd.mutable_data_ptr<acc_t>(), a.N, a.C, a.L, a.G, eps);
  });
  return {y.contiguous(a.fmt), mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& mean_in,
    const at::Tensor& rstd_in, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, bool silu) {
  const int64_t G = check_group_norm_backward(grad_y, x_in, mean_in, rstd_in, weight, bias);
  const GroupNormArgs a = group_norm_args(x_in, G, weight, bias);
  const at::Tensor dy = grad_y.contiguous(), mean = mean_in.contiguous(), rstd = rstd_in.contiguous();
  at::Tensor dx = at::empty_like(a.x), ds_nc = a.empty(a.N, a.C), db_nc = a.empty(a.N, a.C);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "group_norm_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    backward_kernel<scalar_t>(dy.const_data_ptr<scalar_t>(), a.x.const_data_ptr<scalar_t>(),
                              mean.const_data_ptr<acc_t>(), rstd.const_data_ptr<acc_t>(),
                              a.w<scalar_t>(), a.b<scalar_t>(), dx.mutable_data_ptr<scalar_t>(),
                              ds_nc.mutable_data_ptr<acc_t>(), db_nc.mutable_data_ptr<acc_t>(), a.N,
                              a.C, a.L, a.G, silu);
  });
  // Second, deterministic stage of the parameter gradients: a fixed-order sum over samples.
  return {dx.contiguous(a.fmt), ds_nc.sum(0).to(a.x.scalar_type()), db_nc.sum(0).to(a.x.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastsde, CPU, m) {
  m.impl("group_norm", &group_norm_cpu);
  m.impl("group_norm_backward", &group_norm_backward_cpu);
}

}  // namespace fastsde::cpu
