// GroupNorm with optional fused SiLU on CUDA, on [N, C, L] (NCHW) or [N, L, C] (channels_last) data.
// Forward, a group of up to kFusedMax elements (every group of a CIFAR-10 NCSN++): one block per
// (sample, group) holds the group in registers, so x is read once and y written once, in one launch.
// Larger groups: blocks per (sample, group) compute the mean and then the centred sum of squares
// of a chunk of the group (two passes, the second one served from L2); where a group has more than
// one chunk, a thread per (sample, group) combines the chunks (Chan et al.) in a fixed order. Then
// an elementwise kernel writes y.
// Backward: the two per-(sample, channel) sums of dL/d(pre-activation) over chunks of pixels, by
// blocks per (sample, channel) in NCHW, by blocks per (sample, 32 channels) in channels_last (a
// warp reads 32 consecutive channels of a pixel), the chunks' sums then added in a fixed order;
// a tiny kernel folds them per group; an elementwise kernel writes dx. Parameter gradients are the
// per-(sample, channel) sums added over samples in a fixed order. Nothing uses atomics, so every
// result is deterministic. How many chunks: split() in cuda_utils.cuh. Every kernel that streams x
// (or dy) moves 16-byte vectors where the layout and the pointers' alignment allow, except the
// channels_last channel sums, whose warps already read 32 consecutive channels.
// An offset o [N, C] normalises x + o: the kernels add o to each element they load for the
// statistics, and use mean - o as a channel's centre where they normalise.
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

// Where the elements of x lie: [N, C, L] or, cl, [N, L, C]; groups of Cg channels; element
// indices of type Index (see dispatch_index).
template <typename Index>
struct Layout {
  Index C, L, Cg, G;
  Divider<Index> by_C, by_L, by_CL, by_Cg;
  bool cl;

  Layout(int64_t C_, int64_t L_, int64_t Cg_, bool cl_)
      : C(C_), L(L_), Cg(Cg_), G(C_ / Cg_), by_C(C_), by_L(L_), by_CL(C_ * L_), by_Cg(Cg_), cl(cl_) {}

  // Element i (< Cg L) of group g of sample n: a contiguous run, or Cg-wide runs at a stride of C.
  __device__ __forceinline__ Index in_group(Index n, Index g, Index i) const {
    if (!cl) return (n * C + g * Cg) * L + i;
    const auto pixel = by_Cg.divmod(i);
    return (n * L + pixel.div) * C + g * Cg + pixel.mod;
  }
  // The channel of element i of group g.
  __device__ __forceinline__ Index channel_in_group(Index g, Index i) const {
    return g * Cg + (cl ? by_Cg.mod(i) : by_L.div(i));
  }
  __device__ __forceinline__ Index channel(Index i) const {
    return cl ? by_C.mod(i) : by_C.mod(by_L.div(i));
  }
  // The (sample, group) row of the statistics for element i of channel c.
  __device__ __forceinline__ Index group(Index i, Index c) const {
    return by_CL.div(i) * G + by_Cg.div(c);
  }
  // The sample of element i.
  __device__ __forceinline__ Index sample(Index i) const { return by_CL.div(i); }
};

// The offset of sample n, channel c in ACC, 0 without an offset.
template <typename ACC, typename T>
__device__ __forceinline__ ACC offset_at(const OffsetView<T>& o, int64_t n, int64_t c) {
  return o.p ? static_cast<ACC>(o.p[n * o.sn + c * o.sc]) : ACC(0);
}

// S blocks per (sample, group), block s over elements [s chunk, (s + 1) chunk) of the group: its
// mean and centred sum of squares, into part (double), or, when S = 1, the group's mean and rstd.
// Vectors of NV elements as in the fused kernel (chunks are multiples of NV).
template <typename T, typename ACC, typename Index, int NV>
__global__ void stats_kernel(const T* __restrict__ x, const OffsetView<T> offset, ACC* __restrict__ mean,
                             ACC* __restrict__ rstd, double* __restrict__ part, Layout<Index> lay, Index S,
                             Index chunk, double eps) {
  const Index ng = blockIdx.x / S, n = ng / lay.G, g = ng % lay.G;
  const Index i0 = blockIdx.x % S * chunk, i1 = min(i0 + chunk, lay.Cg * lay.L);
  // Element i + k of the group as x + o (a run may cross channels in NCHW).
  const auto value = [&](const Vector<T, NV>& v, Index i, int k) {
    return static_cast<ACC>(v.v[k]) + offset_at<ACC>(offset, n, lay.channel_in_group(g, i + k));
  };
  ACC s = 0;
  for (Index i = i0 + threadIdx.x * NV; i < i1; i += blockDim.x * NV) {
    const Vector<T, NV> v = load_vector<NV>(x + lay.in_group(n, g, i));
#pragma unroll
    for (int k = 0; k < NV; ++k) s += value(v, i, k);
  }
  const ACC m = block_sum(s) / static_cast<ACC>(i1 - i0);
  ACC q = 0;
  for (Index i = i0 + threadIdx.x * NV; i < i1; i += blockDim.x * NV) {
    const Vector<T, NV> v = load_vector<NV>(x + lay.in_group(n, g, i));
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      const ACC d = value(v, i, k) - m;
      q += d * d;
    }
  }
  const ACC m2 = block_sum(q);
  if (threadIdx.x != 0) return;
  if (S == 1) {
    mean[ng] = m;
    rstd[ng] = static_cast<ACC>(group_inv_std(static_cast<double>(m2) / static_cast<double>(i1 - i0), eps));
  } else {
    part[2 * blockIdx.x] = m;
    part[2 * blockIdx.x + 1] = m2;
  }
}

constexpr int kFusedThreads = 512;
constexpr int64_t kFusedMax = 32 * kFusedThreads;

// Block of kFusedThreads per (sample, group) of at most R kFusedThreads elements: statistics from
// registers (mean, then the centred sum of squares), then y. Each thread reads runs of NV elements
// (one vector access each: the host makes sure that a run neither crosses a pixel's Cg channels
// in channels_last nor leaves the group, and that the pointers are aligned).
template <typename T, typename ACC, typename Index, int R, int NV>
__global__ void __launch_bounds__(kFusedThreads)
    fused_kernel(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
                 const OffsetView<T> offset, ACC* __restrict__ mean, ACC* __restrict__ rstd,
                 T* __restrict__ y, Layout<Index> lay, double eps, bool silu) {
  static_assert(R % NV == 0);
  const Index ng = blockIdx.x, n = ng / lay.G, g = ng % lay.G, M = lay.Cg * lay.L;
  // Element k of run r of this thread.
  const auto element = [](int r, int k) { return (threadIdx.x + r * kFusedThreads) * Index(NV) + k; };
  ACC v[R];
  ACC s = 0;
#pragma unroll
  for (int r = 0; r < R / NV; ++r) {
    Vector<T, NV> in;
    if (element(r, 0) < M) {
      in = load_vector<NV>(x + lay.in_group(n, g, element(r, 0)));
    } else {
#pragma unroll
      for (int k = 0; k < NV; ++k) in.v[k] = T(0);
    }
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      // (x + o; the elements past the group stay 0, out of the sums)
      const bool inside = offset.p && element(r, k) < M;
      v[r * NV + k] = static_cast<ACC>(in.v[k]) +
                      (inside ? offset_at<ACC>(offset, n, lay.channel_in_group(g, element(r, k))) : ACC(0));
      s += v[r * NV + k];
    }
  }
  const ACC m = block_sum(s) / static_cast<ACC>(M);
  ACC q = 0;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const ACC d = element(r / NV, r % NV) < M ? v[r] - m : ACC(0);
    q += d * d;
  }
  const ACC rs = static_cast<ACC>(group_inv_std(static_cast<double>(block_sum(q)) / static_cast<double>(M), eps));
  if (threadIdx.x == 0) {
    mean[ng] = m;
    rstd[ng] = rs;
  }
#pragma unroll
  for (int r = 0; r < R / NV; ++r) {
    if (element(r, 0) >= M) break;
    Vector<T, NV> out;
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      const Index c = lay.channel_in_group(g, element(r, k));
      const ACC w = weight ? static_cast<ACC>(weight[c]) : ACC(1);
      const ACC b = bias ? static_cast<ACC>(bias[c]) : ACC(0);
      ACC z = (v[r * NV + k] - m) * rs * w + b;
      if (silu) z = z * sigmoid(z);
      out.v[k] = static_cast<T>(z);
    }
    store_vector<NV>(y + lay.in_group(n, g, element(r, 0)), out);
  }
}

// Thread per (sample, group): the S chunks' means and sums of squares combined in order.
template <typename ACC>
__global__ void combine_stats_kernel(const double* __restrict__ part, ACC* __restrict__ mean,
                                     ACC* __restrict__ rstd, int64_t NG, int64_t M, int64_t S,
                                     int64_t chunk, double eps) {
  const int64_t ng = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (ng >= NG) return;
  double count = 0, m = 0, m2 = 0;
  for (int64_t s = 0; s < S; ++s) {
    const double cs = static_cast<double>(min(chunk, M - s * chunk)), total = count + cs;
    const double d = part[2 * (ng * S + s)] - m;
    m += d * cs / total;
    m2 += part[2 * (ng * S + s) + 1] + d * d * count * cs / total;
    count = total;
  }
  mean[ng] = static_cast<ACC>(m);
  rstd[ng] = static_cast<ACC>(group_inv_std(m2 / static_cast<double>(M), eps));
}

// The elementwise kernels take runs of NV elements, which the host makes sure lie in one pixel
// (channels_last) or one channel (NCHW) and start aligned.
template <typename T, typename ACC, typename Index, int NV>
__global__ void apply_kernel(const T* __restrict__ x, const T* __restrict__ weight,
                             const T* __restrict__ bias, const OffsetView<T> offset,
                             const ACC* __restrict__ mean, const ACC* __restrict__ rstd, T* __restrict__ y,
                             Index total, Layout<Index> lay, bool silu) {
  for (Index i = (blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x) * NV; i < total;
       i += static_cast<Index>(gridDim.x) * blockDim.x * NV) {
    const Index c0 = lay.channel(i);
    const Vector<T, NV> in = load_vector<NV>(x + i);
    Vector<T, NV> out;
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      const Index c = lay.cl ? c0 + k : c0, ng = lay.group(i, c);
      const ACC w = weight ? static_cast<ACC>(weight[c]) : ACC(1);
      const ACC b = bias ? static_cast<ACC>(bias[c]) : ACC(0);
      const ACC centre = mean[ng] - offset_at<ACC>(offset, lay.sample(i), c);
      ACC v = (static_cast<ACC>(in.v[k]) - centre) * rstd[ng] * w + b;
      if (silu) v = v * sigmoid(v);
      out.v[k] = static_cast<T>(v);
    }
    store_vector<NV>(y + i, out);
  }
}

// dL/d(pre-activation) from dL/dy = dy and x.
template <typename ACC>
__device__ __forceinline__ ACC grad_pre(ACC dy, ACC x, ACC m, ACC r, ACC w, ACC b, bool silu) {
  ACC d = dy;
  if (silu) {
    const ACC z = (x - m) * r * w + b;
    const ACC s = sigmoid(z);
    d = d * s * (ACC(1) + z * (ACC(1) - s));
  }
  return d;
}

// The sums over pixels [p0, p1) of channel c of sample n: ds = sum dz * x_hat, db = sum dz.
// NCHW: a block per (n c, chunk of pixels): grid (N C, chunks); ds and db are [chunks, N, C].
// Vectors of NV pixels (L and the chunks are multiples of NV).
template <typename T, typename ACC, int NV>
__global__ void channel_sums_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                    const T* __restrict__ weight, const T* __restrict__ bias,
                                    const OffsetView<T> offset, const ACC* __restrict__ mean,
                                    const ACC* __restrict__ rstd, ACC* __restrict__ ds, ACC* __restrict__ db,
                                    int64_t C, int64_t L, int64_t Cg, int64_t chunk, bool silu) {
  const int64_t nc = blockIdx.x, c = nc % C, ng = nc / Cg;
  const int64_t p0 = blockIdx.y * chunk, p1 = min(p0 + chunk, L);
  const ACC m = mean[ng] - offset_at<ACC>(offset, nc / C, c), r = rstd[ng];  // the channel's centre
  const ACC w = weight ? static_cast<ACC>(weight[c]) : ACC(1);
  const ACC b = bias ? static_cast<ACC>(bias[c]) : ACC(0);
  const T* dyc = dy + nc * L;
  const T* xc = x + nc * L;
  ACC sds = 0, sdb = 0;
  for (int64_t i = p0 + threadIdx.x * NV; i < p1; i += blockDim.x * NV) {
    const Vector<T, NV> dyv = load_vector<NV>(dyc + i), xv = load_vector<NV>(xc + i);
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      const ACC xi = static_cast<ACC>(xv.v[k]);
      const ACC dz = grad_pre(static_cast<ACC>(dyv.v[k]), xi, m, r, w, b, silu);
      sdb += dz;
      sds += dz * (xi - m) * r;
    }
  }
  const ACC tds = block_sum(sds);
  const ACC tdb = block_sum(sdb);
  if (threadIdx.x == 0) {
    ds[blockIdx.y * gridDim.x + nc] = tds;
    db[blockIdx.y * gridDim.x + nc] = tdb;
  }
}

constexpr int kRows = 8;  // warps of a channels_last channel-sums block

// channels_last: a block of 32 x kRows threads per (n, 32 channels, chunk of pixels), grid
// (N, C / 32, chunks): lane = channel, the warps stride over the pixels; then the kRows partial
// sums of each channel are added in shared memory.
template <typename T, typename ACC>
__global__ void channel_sums_cl_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                       const T* __restrict__ weight, const T* __restrict__ bias,
                                       const OffsetView<T> offset, const ACC* __restrict__ mean,
                                       const ACC* __restrict__ rstd, ACC* __restrict__ ds,
                                       ACC* __restrict__ db, int64_t C, int64_t L, int64_t Cg,
                                       int64_t chunk, bool silu) {
  __shared__ ACC part[2][kRows][32];
  const int64_t n = blockIdx.x, c = blockIdx.y * 32 + threadIdx.x;
  const int64_t p0 = blockIdx.z * chunk, p1 = min(p0 + chunk, L);
  ACC sds = 0, sdb = 0;
  if (c < C) {
    const int64_t ng = n * (C / Cg) + c / Cg;
    const ACC m = mean[ng] - offset_at<ACC>(offset, n, c), r = rstd[ng];
    const ACC w = weight ? static_cast<ACC>(weight[c]) : ACC(1);
    const ACC b = bias ? static_cast<ACC>(bias[c]) : ACC(0);
    for (int64_t p = p0 + threadIdx.y; p < p1; p += kRows) {
      const int64_t i = (n * L + p) * C + c;
      const ACC xi = static_cast<ACC>(x[i]);
      const ACC dz = grad_pre(static_cast<ACC>(dy[i]), xi, m, r, w, b, silu);
      sdb += dz;
      sds += dz * (xi - m) * r;
    }
  }
  part[0][threadIdx.y][threadIdx.x] = sds;
  part[1][threadIdx.y][threadIdx.x] = sdb;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    ACC tds = 0, tdb = 0;
    for (int k = 0; k < kRows; ++k) tds += part[0][k][threadIdx.x], tdb += part[1][k][threadIdx.x];
    ds[(blockIdx.z * gridDim.x + n) * C + c] = tds;
    db[(blockIdx.z * gridDim.x + n) * C + c] = tdb;
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

template <typename T, typename ACC, typename Index, int NV>
__global__ void dx_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                          const T* __restrict__ weight, const T* __restrict__ bias,
                          const OffsetView<T> offset, const ACC* __restrict__ mean,
                          const ACC* __restrict__ rstd,
                          const ACC* __restrict__ k1, const ACC* __restrict__ k2,
                          T* __restrict__ dx, Index total, Layout<Index> lay, bool silu) {
  for (Index i = (blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x) * NV; i < total;
       i += static_cast<Index>(gridDim.x) * blockDim.x * NV) {
    const Index c0 = lay.channel(i);
    const Vector<T, NV> dyv = load_vector<NV>(dy + i), xv = load_vector<NV>(x + i);
    Vector<T, NV> out;
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      const Index c = lay.cl ? c0 + k : c0, ng = lay.group(i, c);
      const ACC m = mean[ng] - offset_at<ACC>(offset, lay.sample(i), c), r = rstd[ng];
      const ACC w = weight ? static_cast<ACC>(weight[c]) : ACC(1);
      const ACC b = bias ? static_cast<ACC>(bias[c]) : ACC(0);
      const ACC xi = static_cast<ACC>(xv.v[k]);
      const ACC dz = grad_pre(static_cast<ACC>(dyv.v[k]), xi, m, r, w, b, silu);
      out.v[k] = static_cast<T>(r * (dz * w - k1[ng] - (xi - m) * r * k2[ng]));
    }
    store_vector<NV>(dx + i, out);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_cuda(
    const at::Tensor& x_in, int64_t num_groups, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, double eps, bool silu, const std::optional<at::Tensor>& offset) {
  check_group_norm(x_in, num_groups, weight, bias, offset, eps);
  const DeviceGuard guard(x_in.device());
  const GroupNormArgs a = group_norm_args(x_in, num_groups, weight, bias, offset);
  at::Tensor y = at::empty_like(a.x), mean = a.empty(a.N, a.G), rstd = a.empty(a.N, a.G);
  const int64_t total = a.x.numel(), NG = a.N * a.G, M = a.C / a.G * a.L;
  const std::initializer_list<const void*> data{a.x.const_data_ptr(), y.const_data_ptr()};
  // Vectors within a pixel's channels of the group (channels_last) or within the group, for the
  // fused forward and the statistics; within a pixel or a channel for the elementwise apply.
  const int group_width = vector_width(a.x.element_size(), a.cl ? a.C / a.G : M, data);
  const int width = vector_width(a.x.element_size(), a.cl ? a.C : a.L, data);
  const auto parts = split(NG, M, kMinChunk, group_width);
  const int64_t S = parts.first, chunk = parts.second;
  const bool fused = M <= kFusedMax;
  at::Tensor part = at::empty({!fused && S > 1 ? 2 * NG * S : 0}, a.x.options().dtype(at::kDouble));
  const auto stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "group_norm_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    dispatch_index(total, [&](auto index) {
      using index_t = decltype(index);
      const Layout<index_t> lay(a.C, a.L, a.C / a.G, a.cl);
      if (fused) {
        dispatch_width<scalar_t>(group_width, [&](auto nv) {
          constexpr int NV = decltype(nv)::value;
          const auto run = M <= 8 * kFusedThreads    ? fused_kernel<scalar_t, acc_t, index_t, 8, NV>
                           : M <= 16 * kFusedThreads ? fused_kernel<scalar_t, acc_t, index_t, 16, NV>
                                                     : fused_kernel<scalar_t, acc_t, index_t, 32, NV>;
          launch(run, NG, kFusedThreads, 0, stream, a.x.const_data_ptr<scalar_t>(), a.w<scalar_t>(),
                 a.b<scalar_t>(), a.o<scalar_t>(), mean.mutable_data_ptr<acc_t>(),
                 rstd.mutable_data_ptr<acc_t>(), y.mutable_data_ptr<scalar_t>(), lay, eps, silu);
        });
        return;
      }
      dispatch_width<scalar_t>(group_width, [&](auto nv) {
        launch(stats_kernel<scalar_t, acc_t, index_t, decltype(nv)::value>, NG * S, 512, 0, stream,
               a.x.const_data_ptr<scalar_t>(), a.o<scalar_t>(), mean.mutable_data_ptr<acc_t>(),
               rstd.mutable_data_ptr<acc_t>(), part.mutable_data_ptr<double>(), lay, S, chunk, eps);
      });
      if (S > 1) {
        launch(combine_stats_kernel<acc_t>, blocks_for(NG), kThreads, 0, stream,
               part.const_data_ptr<double>(), mean.mutable_data_ptr<acc_t>(),
               rstd.mutable_data_ptr<acc_t>(), NG, M, S, chunk, eps);
      }
      dispatch_width<scalar_t>(width, [&](auto nv) {
        constexpr int NV = decltype(nv)::value;
        launch(apply_kernel<scalar_t, acc_t, index_t, NV>, blocks_for(total / NV), kThreads, 0,
               stream, a.x.const_data_ptr<scalar_t>(), a.w<scalar_t>(), a.b<scalar_t>(), a.o<scalar_t>(),
               mean.const_data_ptr<acc_t>(), rstd.const_data_ptr<acc_t>(),
               y.mutable_data_ptr<scalar_t>(), total, lay, silu);
      });
    });
  });
  return {y.contiguous(a.fmt), mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& mean_in,
    const at::Tensor& rstd_in, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, bool silu, const std::optional<at::Tensor>& offset) {
  const int64_t G = check_group_norm_backward(grad_y, x_in, mean_in, rstd_in, weight, bias, offset);
  const DeviceGuard guard(x_in.device());
  const GroupNormArgs a = group_norm_args(x_in, G, weight, bias, offset);
  const at::Tensor dy = grad_y.contiguous(a.cl ? a.fmt : at::MemoryFormat::Contiguous);
  const at::Tensor mean = mean_in.contiguous(), rstd = rstd_in.contiguous();
  const int64_t Cg = a.C / a.G, total = a.x.numel(), tiles = (a.C + 31) / 32;
  at::Tensor dx = at::empty_like(a.x);
  // Vectors within a pixel (channels_last) or a channel (NCHW): dx, and the NCHW channel sums.
  const int width = vector_width(a.x.element_size(), a.cl ? a.C : a.L,
                                 {dy.const_data_ptr(), a.x.const_data_ptr(), dx.const_data_ptr()});
  const auto parts = a.cl ? split(a.N * tiles, a.L, kMinChunk / 32) : split(a.N * a.C, a.L, kMinChunk, width);
  const int64_t S = parts.first, chunk = parts.second;
  const auto acc = a.x.options().dtype(acc_type(a.x));
  at::Tensor ds = at::empty({S, a.N, a.C}, acc), db = at::empty({S, a.N, a.C}, acc);
  at::Tensor k1 = a.empty(a.N, a.G), k2 = a.empty(a.N, a.G);
  const auto stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "group_norm_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    dispatch_width<scalar_t>(width, [&](auto nv) {
      const auto sums = a.cl ? channel_sums_cl_kernel<scalar_t, acc_t>
                             : channel_sums_kernel<scalar_t, acc_t, decltype(nv)::value>;
      launch(sums, a.cl ? dim3(a.N, tiles, S) : dim3(a.N * a.C, S), a.cl ? dim3(32, kRows) : dim3(kThreads),
             0, stream, dy.const_data_ptr<scalar_t>(), a.x.const_data_ptr<scalar_t>(), a.w<scalar_t>(),
             a.b<scalar_t>(), a.o<scalar_t>(), mean.const_data_ptr<acc_t>(), rstd.const_data_ptr<acc_t>(),
             ds.mutable_data_ptr<acc_t>(), db.mutable_data_ptr<acc_t>(), a.C, a.L, Cg, chunk, silu);
    });
    ds = S > 1 ? ds.sum(0) : ds[0];  // over the chunks: [N, C]
    db = S > 1 ? db.sum(0) : db[0];
    launch(group_coef_kernel<scalar_t, acc_t>, blocks_for(a.N * a.G), kThreads, 0, stream,
           a.w<scalar_t>(), ds.const_data_ptr<acc_t>(), db.const_data_ptr<acc_t>(),
           k1.mutable_data_ptr<acc_t>(), k2.mutable_data_ptr<acc_t>(), a.N * a.G, a.C, Cg, Cg * a.L);
    dispatch_index(total, [&](auto index) {
      using index_t = decltype(index);
      dispatch_width<scalar_t>(width, [&](auto nv) {
        constexpr int NV = decltype(nv)::value;
        launch(dx_kernel<scalar_t, acc_t, index_t, NV>, blocks_for(total / NV), kThreads, 0, stream,
               dy.const_data_ptr<scalar_t>(), a.x.const_data_ptr<scalar_t>(), a.w<scalar_t>(),
               a.b<scalar_t>(), a.o<scalar_t>(), mean.const_data_ptr<acc_t>(), rstd.const_data_ptr<acc_t>(),
               k1.const_data_ptr<acc_t>(), k2.const_data_ptr<acc_t>(),
               dx.mutable_data_ptr<scalar_t>(), total, Layout<index_t>(a.C, a.L, Cg, a.cl), silu);
      });
    });
  });
  return {dx.contiguous(a.fmt), ds.sum(0).to(a.x.scalar_type()), db.sum(0).to(a.x.scalar_type())};
}

}  // namespace

FASTSDE_CUDA_KERNELS(m) {
  m.impl("group_norm", &group_norm_cuda);
  m.impl("group_norm_backward", &group_norm_backward_cuda);
}

}  // namespace fastsde::cuda
