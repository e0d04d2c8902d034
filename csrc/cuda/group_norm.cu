// GroupNorm with optional fused SiLU on CUDA, on [N, C, L] contiguous data.
// Forward: one block per (sample, group) computes the mean and then the centred variance (two
// passes, the second one served from L2), then an elementwise kernel writes y.
// Backward: one block per (sample, channel) reduces the two sums of dL/d(pre-activation); a tiny
// kernel folds them per group; an elementwise kernel writes dx. Parameter gradients are the
// per-(sample, channel) sums added over samples by a fixed-order reduction (deterministic).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "../common.h"
#include "cuda_utils.cuh"

namespace fastsde::cuda {
namespace {

template <typename ACC>
__device__ __forceinline__ ACC sigmoid(ACC v) {
  return ACC(1) / (ACC(1) + exp(-v));
}

template <typename T, typename ACC>
__global__ void stats_kernel(const T* __restrict__ x, ACC* __restrict__ mean, ACC* __restrict__ rstd,
                             int64_t M, double eps) {
  const T* xg = x + blockIdx.x * M;
  ACC s = 0;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) s += static_cast<ACC>(xg[i]);
  const ACC m = block_sum(s) / static_cast<ACC>(M);
  ACC q = 0;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const ACC d = static_cast<ACC>(xg[i]) - m;
    q += d * d;
  }
  const ACC var = block_sum(q) / static_cast<ACC>(M);
  if (threadIdx.x == 0) {
    mean[blockIdx.x] = m;
    rstd[blockIdx.x] = static_cast<ACC>(rsqrt(static_cast<double>(var) + eps));
  }
}

template <typename T, typename ACC>
__global__ void apply_kernel(const T* __restrict__ x, const T* __restrict__ weight,
                             const T* __restrict__ bias, const ACC* __restrict__ mean,
                             const ACC* __restrict__ rstd, T* __restrict__ y, int64_t total,
                             int64_t C, int64_t L, int64_t Cg, bool silu) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t nc = i / L, c = nc % C, ng = nc / Cg;
    const ACC w = weight ? static_cast<ACC>(weight[c]) : ACC(1);
    const ACC b = bias ? static_cast<ACC>(bias[c]) : ACC(0);
    ACC v = (static_cast<ACC>(x[i]) - mean[ng]) * rstd[ng] * w + b;
    if (silu) v = v * sigmoid(v);
    y[i] = static_cast<T>(v);
  }
}

template <typename T, typename ACC>
__device__ __forceinline__ ACC grad_pre(const T* dy, const T* x, int64_t i, ACC m, ACC r, ACC w,
                                        ACC b, bool silu) {
  ACC d = static_cast<ACC>(dy[i]);
  if (silu) {
    const ACC z = (static_cast<ACC>(x[i]) - m) * r * w + b;
    const ACC s = sigmoid(z);
    d = d * s * (ACC(1) + z * (ACC(1) - s));
  }
  return d;
}

// Block per (n, c): ds = sum dz * x_hat, db = sum dz.
template <typename T, typename ACC>
__global__ void channel_sums_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                    const T* __restrict__ weight, const T* __restrict__ bias,
                                    const ACC* __restrict__ mean, const ACC* __restrict__ rstd,
                                    ACC* __restrict__ ds, ACC* __restrict__ db, int64_t C,
                                    int64_t L, int64_t Cg, bool silu) {
  const int64_t nc = blockIdx.x, c = nc % C, ng = nc / Cg;
  const ACC m = mean[ng], r = rstd[ng];
  const ACC w = weight ? static_cast<ACC>(weight[c]) : ACC(1);
  const ACC b = bias ? static_cast<ACC>(bias[c]) : ACC(0);
  const T* dyc = dy + nc * L;
  const T* xc = x + nc * L;
  ACC sds = 0, sdb = 0;
  for (int64_t i = threadIdx.x; i < L; i += blockDim.x) {
    const ACC dz = grad_pre(dyc, xc, i, m, r, w, b, silu);
    sdb += dz;
    sds += dz * (static_cast<ACC>(xc[i]) - m) * r;
  }
  const ACC tds = block_sum(sds);
  const ACC tdb = block_sum(sdb);
  if (threadIdx.x == 0) {
    ds[nc] = tds;
    db[nc] = tdb;
  }
}

// Per (n, g): k1 = sum_c w_c db / M, k2 = sum_c w_c ds / M.
template <typename T, typename ACC>
__global__ void group_coef_kernel(const T* __restrict__ weight, const ACC* __restrict__ ds,
                                  const ACC* __restrict__ db, ACC* __restrict__ k1,
                                  ACC* __restrict__ k2, int64_t NG, int64_t C, int64_t Cg,
                                  int64_t M) {
  const int64_t ng = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (ng >= NG) return;
  const int64_t G = C / Cg, n = ng / G, g = ng % G;
  ACC a1 = 0, a2 = 0;
  for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
    const ACC w = weight ? static_cast<ACC>(weight[c]) : ACC(1);
    a1 += w * db[n * C + c];
    a2 += w * ds[n * C + c];
  }
  k1[ng] = a1 / static_cast<ACC>(M);
  k2[ng] = a2 / static_cast<ACC>(M);
}

template <typename T, typename ACC>
__global__ void dx_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                          const T* __restrict__ weight, const T* __restrict__ bias,
                          const ACC* __restrict__ mean, const ACC* __restrict__ rstd,
                          const ACC* __restrict__ k1, const ACC* __restrict__ k2,
                          T* __restrict__ dx, int64_t total, int64_t C, int64_t L, int64_t Cg,
                          bool silu) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t nc = i / L, c = nc % C, ng = nc / Cg;
    const ACC m = mean[ng], r = rstd[ng];
    const ACC w = weight ? static_cast<ACC>(weight[c]) : ACC(1);
    const ACC b = bias ? static_cast<ACC>(bias[c]) : ACC(0);
    const ACC dz = grad_pre(dy, x, i, m, r, w, b, silu);
    const ACC xhat = (static_cast<ACC>(x[i]) - m) * r;
    dx[i] = static_cast<T>(r * (dz * w - k1[ng] - xhat * k2[ng]));
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_cuda(
    const at::Tensor& x_in, int64_t num_groups, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, double eps, bool silu) {
  check_group_norm(x_in, num_groups, weight, bias);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const GroupNormArgs a = group_norm_args(x_in, num_groups, weight, bias);
  at::Tensor y = at::empty_like(a.x), mean = a.empty(a.N, a.G), rstd = a.empty(a.N, a.G);
  const int64_t Cg = a.C / a.G, total = a.x.numel();
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "group_norm_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    stats_kernel<scalar_t, acc_t><<<a.N * a.G, 512, 0, stream>>>(
        a.x.const_data_ptr<scalar_t>(), mean.mutable_data_ptr<acc_t>(),
        rstd.mutable_data_ptr<acc_t>(), Cg * a.L, eps);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    apply_kernel<scalar_t, acc_t><<<blocks_for(total), kThreads, 0, stream>>>(
        a.x.const_data_ptr<scalar_t>(), a.w<scalar_t>(), a.b<scalar_t>(),
        mean.const_data_ptr<acc_t>(), rstd.const_data_ptr<acc_t>(), y.mutable_data_ptr<scalar_t>(),
        total, a.C, a.L, Cg, silu);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y.contiguous(a.fmt), mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& mean_in,
    const at::Tensor& rstd_in, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, bool silu) {
  const int64_t G = check_group_norm_backward(grad_y, x_in, mean_in, rstd_in, weight, bias);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const GroupNormArgs a = group_norm_args(x_in, G, weight, bias);
  const at::Tensor dy = grad_y.contiguous(), mean = mean_in.contiguous(), rstd = rstd_in.contiguous();
  at::Tensor dx = at::empty_like(a.x), ds = a.empty(a.N, a.C), db = a.empty(a.N, a.C);
  at::Tensor k1 = a.empty(a.N, a.G), k2 = a.empty(a.N, a.G);
  const int64_t Cg = a.C / a.G, total = a.x.numel();
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "group_norm_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    channel_sums_kernel<scalar_t, acc_t><<<a.N * a.C, kThreads, 0, stream>>>(
        dy.const_data_ptr<scalar_t>(), a.x.const_data_ptr<scalar_t>(), a.w<scalar_t>(),
        a.b<scalar_t>(), mean.const_data_ptr<acc_t>(), rstd.const_data_ptr<acc_t>(),
        ds.mutable_data_ptr<acc_t>(), db.mutable_data_ptr<acc_t>(), a.C, a.L, Cg, silu);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    group_coef_kernel<scalar_t, acc_t><<<blocks_for(a.N * a.G), kThreads, 0, stream>>>(
        a.w<scalar_t>(), ds.const_data_ptr<acc_t>(), db.const_data_ptr<acc_t>(),
        k1.mutable_data_ptr<acc_t>(), k2.mutable_data_ptr<acc_t>(), a.N * a.G, a.C, Cg, Cg * a.L);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    dx_kernel<scalar_t, acc_t><<<blocks_for(total), kThreads, 0, stream>>>(
        dy.const_data_ptr<scalar_t>(), a.x.const_data_ptr<scalar_t>(), a.w<scalar_t>(),
        a.b<scalar_t>(), mean.const_data_ptr<acc_t>(), rstd.const_data_ptr<acc_t>(),
        k1.const_data_ptr<acc_t>(), k2.const_data_ptr<acc_t>(), dx.mutable_data_ptr<scalar_t>(),
        total, a.C, a.L, Cg, silu);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dx.contiguous(a.fmt), ds.sum(0).to(a.x.scalar_type()), db.sum(0).to(a.x.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastsde, CUDA, m) {
  m.impl("group_norm", &group_norm_cuda);
  m.impl("group_norm_backward", &group_norm_backward_cuda);
}

}  // namespace fastsde::cuda
