// GroupNorm with optional fused SiLU on the CPU: one task per (sample, group), two passes over
// the group for the statistics (the group is small enough to stay in cache), one to write y.
// Backward recomputes x_hat from the saved mean and 1/std; parameter gradients are reduced per
// (sample, channel) first and summed over samples in a fixed order (deterministic).
// An offset o [N, C] normalises x + o without forming it: o is constant over a channel's pixels,
// so it enters the statistics per channel (in the sum, and as a channel's own centre mean - o
// for the squares), the output through the per-channel shift, the backward through the centre.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <array>
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
    if constexpr (kVectorized<T>) {
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

// The normalised, affine output of an element (scale = rstd * weight, shift = bias - mean * scale),
// through SiLU where asked.
template <bool SILU, typename V, typename S>
inline __attribute__((always_inline)) V norm_out(V x, S scale, S shift) {
  V out = x * scale + shift;
  if constexpr (SILU) out = out * sigmoid(out);
  return out;
}

// dL/dz of y = SiLU(z) from dL/dy.
template <typename V>
inline __attribute__((always_inline)) V silu_backward(V dy, V z) {
  const V s = sigmoid(z);
  return dy * s * (1.0f + z * (1.0f - s));
}

// The offset of sample n, channel c in the math type, 0 without one.
template <typename T>
inline at::opmath_type<T> offset_of(const OffsetView<T>& o, int64_t n, int64_t c) {
  return o.p ? static_cast<at::opmath_type<T>>(o.p[n * o.sn + c * o.sc]) : at::opmath_type<T>(0);
}

// SILU is a template parameter so that the write loop carries no branch.
template <typename T, bool SILU>
void forward_kernel(const T* x, const T* weight, const T* bias, const OffsetView<T>& offset, T* y,
                    at::opmath_type<T>* mean_out, at::opmath_type<T>* rstd_out, int64_t N, int64_t C,
                    int64_t L, int64_t G, double eps) {
  using acc_t = at::opmath_type<T>;
  const int64_t Cg = C / G, M = Cg * L;
  at::parallel_for(0, N * G, 1, [&](int64_t begin, int64_t end) {
    with_isa([&]() __attribute__((always_inline)) {
      for (int64_t ng = begin; ng < end; ++ng) {
        const int64_t n = ng / G, g = ng % G;
        const T* xg = x + (n * C + g * Cg) * L;
        T* yg = y + (n * C + g * Cg) * L;
        double sum = reduce<T, acc_t>(M, [&](int64_t i, auto v) __attribute__((always_inline)) { return load<decltype(v)>(xg + i); });
        for (int64_t cl = 0; cl < Cg && offset.p; ++cl)
          sum += static_cast<double>(offset_of(offset, n, g * Cg + cl)) * L;
        const acc_t mean = static_cast<acc_t>(sum / M);
        double sq = 0;
        for (int64_t cl = 0; cl < Cg; ++cl) {  // about each channel's centre mean - o
          const T* xr = xg + cl * L;
          const acc_t centre = mean - offset_of(offset, n, g * Cg + cl);
          sq += reduce<T, acc_t>(L, [&](int64_t i, auto v) __attribute__((always_inline)) {
            const auto d = load<decltype(v)>(xr + i) - centre;
            return d * d;
          });
        }
        const acc_t rstd = static_cast<acc_t>(group_inv_std(sq / M, eps));
        mean_out[ng] = mean;
        rstd_out[ng] = rstd;
        for (int64_t cl = 0; cl < Cg; ++cl) {
          const int64_t c = g * Cg + cl;
          const acc_t scale = rstd * (weight ? static_cast<acc_t>(weight[c]) : acc_t(1));
          const acc_t shift = (bias ? static_cast<acc_t>(bias[c]) : acc_t(0)) -
                              (mean - offset_of(offset, n, c)) * scale;
          const T* xr = xg + cl * L;
          T* yr = yg + cl * L;
          simd_for<T, acc_t>(L, [&](int64_t i, auto v) __attribute__((always_inline)) {
            store(yr + i, norm_out<SILU>(load<decltype(v)>(xr + i), scale, shift));
          });
        }
      }
    });
  });
}

template <typename T>
void backward_kernel(const T* dy, const T* x, const at::opmath_type<T>* mean,
                     const at::opmath_type<T>* rstd, const T* weight, const T* bias, const OffsetView<T>& offset,
                     T* dx, at::opmath_type<T>* ds_nc, at::opmath_type<T>* db_nc, int64_t N, int64_t C,
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
        const acc_t r = rstd[ng];
        double sum_wdb = 0, sum_wds = 0;
        for (int64_t cl = 0; cl < Cg; ++cl) {
          const int64_t c = g * Cg + cl;
          const acc_t m = mean[ng] - offset_of(offset, n, c);  // the channel's centre
          const acc_t w = weight ? static_cast<acc_t>(weight[c]) : acc_t(1);
          const acc_t b = bias ? static_cast<acc_t>(bias[c]) : acc_t(0);
          const T* xr = x + off + cl * L;
          const T* dyr = dy + off + cl * L;
          acc_t* dzr = dz + cl * L;
          simd_for<T, acc_t>(L, [&](int64_t i, auto v) __attribute__((always_inline)) {
            using V = decltype(v);
            const V d = load<V>(dyr + i);
            store(dzr + i, silu ? silu_backward(d, (load<V>(xr + i) - m) * r * w + b) : d);
          });
          const double sdb = reduce<acc_t, acc_t>(L, [&](int64_t i, auto v) __attribute__((always_inline)) {
            return load<decltype(v)>(dzr + i);
          });
          const double sds = reduce<T, acc_t>(L, [&](int64_t i, auto v) __attribute__((always_inline)) {
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
          const acc_t m = mean[ng] - offset_of(offset, n, c);
          const acc_t w = weight ? static_cast<acc_t>(weight[c]) : acc_t(1);
          const T* xr = x + off + cl * L;
          const acc_t* dzr = dz + cl * L;
          T* dxr = dx + off + cl * L;
          simd_for<T, acc_t>(L, [&](int64_t i, auto v) __attribute__((always_inline)) {
            using V = decltype(v);
            const auto xhat = (load<V>(xr + i) - m) * r;
            store(dxr + i, r * (load<V>(dzr + i) * w - k1 - xhat * k2));
          });
        }
      }
    });
  });
}

// channels_last: x is [N, P, C] (P pixels), so a group's channels are interleaved with the others'.
// The work is split into chunks of pixels (tasks, so that one image still keeps every thread busy).
// Statistics take one pass over memory: per chunk and channel, sums over the chunk's pixels (at
// most 1024, in the math type, the chunk still in cache for a second, centred pass), combined over
// chunks and a group's channels in double in a fixed order (deterministic). Elementwise passes run
// along the contiguous C, vectorised.
struct Chunks {
  int64_t rows, count;  // pixels per chunk, chunks per image
};

inline Chunks chunks_of(int64_t P, int64_t C) {
  const int64_t rows = std::min<int64_t>(P, std::clamp<int64_t>(8192 / C, 1, 1024));
  return {rows, (P + rows - 1) / rows};
}

// Runs body(n, p0, p1, nk) for each chunk nk = n * count + j, pixels [p0, p1) of image n, in parallel.
template <typename F>
void for_chunks(const Chunks& k, int64_t N, int64_t P, F body) {
  at::parallel_for(0, N * k.count, 1, [&](int64_t begin, int64_t end) {
    with_isa([&]() __attribute__((always_inline)) {
      for (int64_t nk = begin; nk < end; ++nk) {
        const int64_t n = nk / k.count, p0 = nk % k.count * k.rows;
        body(n, p0, std::min(p0 + k.rows, P), nk);
      }
    });
  });
}

// Runs body(n, p) for every pixel p of every image n (each body loops over the C channels).
template <typename F>
void for_each_pixel(int64_t N, int64_t P, int64_t C, F body) {
  for_chunks(chunks_of(P, C), N, P, [&](int64_t n, int64_t p0, int64_t p1, int64_t) __attribute__((always_inline)) {
    for (int64_t p = p0; p < p1; ++p) body(n, p);
  });
}

// Sums over p in [p0, p1) of the NS terms that term(p) returns (a std::array<V, NS>), in two
// interleaved accumulators (one would wait on the add latency).
template <int NS, typename V, typename F>
inline __attribute__((always_inline)) std::array<V, NS> sum_pixels(int64_t p0, int64_t p1, F term) {
  std::array<V, NS> acc{}, acc1{};
  int64_t p = p0;
  for (; p + 1 < p1; p += 2) {
    const auto t = term(p), t1 = term(p + 1);
    for (int s = 0; s < NS; ++s) acc[s] += t[s], acc1[s] += t1[s];
  }
  if (p < p1) {
    const auto t = term(p);
    for (int s = 0; s < NS; ++s) acc[s] += t[s];
  }
  for (int s = 0; s < NS; ++s) acc[s] += acc1[s];
  return acc;
}

template <typename V>
inline __attribute__((always_inline)) void put_double(double* dst, V v) {
  if constexpr (std::is_same_v<V, f32x8>) {
    for (int j = 0; j < 8; ++j) dst[j] = v[j];
  } else {
    *dst = v;
  }
}

// Per-channel sums over the pixels of each image of the NS terms that term(n, p, c, V{}) returns:
// [N][NS][C] doubles.
template <typename T, int NS, typename F>
std::vector<double> channel_sums_cl(int64_t N, int64_t P, int64_t C, F term) {
  const Chunks k = chunks_of(P, C);
  std::vector<double> part(N * k.count * NS * C);
  for_chunks(k, N, P, [&](int64_t n, int64_t p0, int64_t p1, int64_t nk) __attribute__((always_inline)) {
    simd_for<T, at::opmath_type<T>>(C, [&](int64_t c, auto v) __attribute__((always_inline)) {
      using V = decltype(v);
      const auto acc = sum_pixels<NS, V>(p0, p1, [&](int64_t p) __attribute__((always_inline)) {
        return term(n, p, c, v);
      });
      for (int s = 0; s < NS; ++s) put_double(part.data() + (nk * NS + s) * C + c, acc[s]);
    });
  });
  std::vector<double> sums(N * NS * C, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < k.count; ++j)
      for (int64_t i = 0; i < NS * C; ++i) sums[n * NS * C + i] += part[(n * k.count + j) * NS * C + i];
  return sums;
}

// Each channel's value of a per-(sample, group) quantity: [N, G] -> [N, C].
template <typename ACC>
std::vector<ACC> per_channel(const ACC* ng, int64_t N, int64_t C, int64_t G) {
  std::vector<ACC> out(N * C);
  for (int64_t i = 0; i < N * C; ++i) out[i] = ng[i / C * G + i % C / (C / G)];
  return out;
}

template <typename T, bool SILU>
void forward_kernel_cl(const T* x, const T* weight, const T* bias, const OffsetView<T>& offset, T* y,
                       at::opmath_type<T>* mean_out, at::opmath_type<T>* rstd_out, int64_t N, int64_t C,
                       int64_t P, int64_t G, double eps) {
  using acc_t = at::opmath_type<T>;
  const int64_t Cg = C / G;
  const Chunks k = chunks_of(P, C);
  // Per chunk and channel: the sum and the sum of squares about the chunk's own channel mean.
  std::vector<double> part(N * k.count * 2 * C);
  for_chunks(k, N, P, [&](int64_t n, int64_t p0, int64_t p1, int64_t nk) __attribute__((always_inline)) {
    simd_for<T, acc_t>(C, [&](int64_t c, auto v) __attribute__((always_inline)) {
      using V = decltype(v);
      const T* xc = x + n * P * C + c;
      const V sum = sum_pixels<1, V>(p0, p1, [&](int64_t p) __attribute__((always_inline)) {
        return std::array{load<V>(xc + p * C)};
      })[0];
      const V mu = sum * (acc_t(1) / static_cast<acc_t>(p1 - p0));
      const V m2 = sum_pixels<1, V>(p0, p1, [&](int64_t p) __attribute__((always_inline)) {
        const V d = load<V>(xc + p * C) - mu;
        return std::array{d * d};
      })[0];
      put_double(part.data() + nk * 2 * C + c, sum);
      put_double(part.data() + (nk * 2 + 1) * C + c, m2);
    });
  });
  // Chan et al.'s combination: M2 = sum of the parts' M2 + n_part * (part mean - mean)^2 (a part's
  // mean of x + o is its mean of x plus o; its M2 is the same).
  std::vector<acc_t> scale(N * C), shift(N * C);
  for (int64_t ng = 0; ng < N * G; ++ng) {
    const int64_t n = ng / G, c0 = ng % G * Cg;
    double total = 0;
    for (int64_t j = 0; j < k.count; ++j) {
      const double rows = static_cast<double>(std::min(k.rows, P - j * k.rows));
      for (int64_t c = c0; c < c0 + Cg; ++c)
        total += part[((n * k.count + j) * 2) * C + c] + rows * offset_of(offset, n, c);
    }
    const double mean = total / static_cast<double>(Cg * P);
    double m2 = 0;
    for (int64_t j = 0; j < k.count; ++j) {
      const double rows = static_cast<double>(std::min(k.rows, P - j * k.rows));
      for (int64_t c = c0; c < c0 + Cg; ++c) {
        const double* q = part.data() + ((n * k.count + j) * 2) * C + c;
        const double d = q[0] / rows + offset_of(offset, n, c) - mean;
        m2 += q[C] + rows * d * d;
      }
    }
    mean_out[ng] = static_cast<acc_t>(mean);
    rstd_out[ng] = static_cast<acc_t>(group_inv_std(m2 / static_cast<double>(Cg * P), eps));
    for (int64_t c = c0; c < c0 + Cg; ++c) {
      scale[n * C + c] = rstd_out[ng] * (weight ? static_cast<acc_t>(weight[c]) : acc_t(1));
      shift[n * C + c] = (bias ? static_cast<acc_t>(bias[c]) : acc_t(0)) -
                         (mean_out[ng] - offset_of(offset, n, c)) * scale[n * C + c];
    }
  }
  // Pointers local to each pixel's loop: through the lambdas' captures the compiler would reload
  // them after every store to y (2x slower).
  for_each_pixel(N, P, C, [&](int64_t n, int64_t p) __attribute__((always_inline)) {
    const T* __restrict xp = x + (n * P + p) * C;
    T* __restrict yp = y + (n * P + p) * C;
    const acc_t* __restrict a = scale.data() + n * C;
    const acc_t* __restrict b = shift.data() + n * C;
    simd_for<T, acc_t>(C, [&](int64_t c, auto v) __attribute__((always_inline)) {
      using V = decltype(v);
      store(yp + c, norm_out<SILU>(load<V>(xp + c), load<V>(a + c), load<V>(b + c)));
    });
  });
}

template <typename T>
void backward_kernel_cl(const T* dy, const T* x, const at::opmath_type<T>* mean,
                        const at::opmath_type<T>* rstd, const T* weight, const T* bias, const OffsetView<T>& offset,
                        T* dx, at::opmath_type<T>* ds_nc, at::opmath_type<T>* db_nc, int64_t N, int64_t C,
                        int64_t P, int64_t G, bool silu) {
  using acc_t = at::opmath_type<T>;
  const int64_t Cg = C / G;
  const double M = static_cast<double>(Cg * P);
  std::vector<acc_t> m = per_channel(mean, N, C, G);  // each channel's centre: mean - o
  for (int64_t nc = 0; nc < N * C && offset.p; ++nc) m[nc] -= offset_of(offset, nc / C, nc % C);
  const std::vector<acc_t> r = per_channel(rstd, N, C, G);
  std::vector<acc_t> w(C, acc_t(1)), b(C, acc_t(0));
  for (int64_t c = 0; c < C; ++c) {
    if (weight) w[c] = static_cast<acc_t>(weight[c]);
    if (bias) b[c] = static_cast<acc_t>(bias[c]);
  }
  // (dL/d pre-activation, x_hat) of element i (channel c, nc = n * C + c).
  auto terms = [silu, x, dy, m = m.data(), r = r.data(), w = w.data(), b = b.data()](
                   int64_t i, int64_t c, int64_t nc, auto v) __attribute__((always_inline)) {
    using V = decltype(v);
    const V xhat = (load<V>(x + i) - load<V>(m + nc)) * load<V>(r + nc);
    const V d = load<V>(dy + i);
    return std::array{silu ? silu_backward(d, xhat * load<V>(w + c) + load<V>(b + c)) : d, xhat};
  };
  const auto sums = channel_sums_cl<T, 2>(N, P, C, [&](int64_t n, int64_t p, int64_t c, auto v)
                                                       __attribute__((always_inline)) {
    const auto [d, xhat] = terms((n * P + p) * C + c, c, n * C + c, v);
    return std::array{d, d * xhat};
  });
  std::vector<acc_t> k1(N * C), k2(N * C);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t g = 0; g < G; ++g) {
      double sum_wdb = 0, sum_wds = 0;
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
        const double sdb = sums[(n * 2) * C + c], sds = sums[(n * 2 + 1) * C + c];
        db_nc[n * C + c] = static_cast<acc_t>(sdb);
        ds_nc[n * C + c] = static_cast<acc_t>(sds);
        sum_wdb += w[c] * sdb;
        sum_wds += w[c] * sds;
      }
      std::fill_n(k1.begin() + n * C + g * Cg, Cg, static_cast<acc_t>(sum_wdb / M));
      std::fill_n(k2.begin() + n * C + g * Cg, Cg, static_cast<acc_t>(sum_wds / M));
    }
  }
  for_each_pixel(N, P, C, [&](int64_t n, int64_t p) __attribute__((always_inline)) {
    const int64_t i0 = (n * P + p) * C;
    T* __restrict dxp = dx + i0;
    const acc_t* __restrict rn = r.data() + n * C;
    const acc_t* __restrict wc = w.data();
    const acc_t* __restrict k1n = k1.data() + n * C;
    const acc_t* __restrict k2n = k2.data() + n * C;
    simd_for<T, acc_t>(C, [&](int64_t c, auto v) __attribute__((always_inline)) {
      using V = decltype(v);
      const auto [d, xhat] = terms(i0 + c, c, n * C + c, v);
      store(dxp + c, load<V>(rn + c) * (d * load<V>(wc + c) - load<V>(k1n + c) - xhat * load<V>(k2n + c)));
    });
  });
}

// NCHW (and any other layout, made contiguous) runs the [N, C, L] kernels, channels_last the
// [N, P, C] ones; outputs take x's layout.
std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_cpu(const at::Tensor& x_in,
                                                              int64_t num_groups,
                                                              const std::optional<at::Tensor>& weight,
                                                              const std::optional<at::Tensor>& bias,
                                                              double eps, bool silu,
                                                              const std::optional<at::Tensor>& offset) {
  check_group_norm(x_in, num_groups, weight, bias, offset, eps);
  const GroupNormArgs a = group_norm_args(x_in, num_groups, weight, bias, offset);
  at::Tensor y = at::empty_like(a.x), mean = a.empty(a.N, a.G), rstd = a.empty(a.N, a.G);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "group_norm_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto run = a.cl ? (silu ? forward_kernel_cl<scalar_t, true> : forward_kernel_cl<scalar_t, false>)
                          : (silu ? forward_kernel<scalar_t, true> : forward_kernel<scalar_t, false>);
    run(a.x.const_data_ptr<scalar_t>(), a.w<scalar_t>(), a.b<scalar_t>(), a.o<scalar_t>(),
        y.mutable_data_ptr<scalar_t>(), mean.mutable_data_ptr<acc_t>(), rstd.mutable_data_ptr<acc_t>(), a.N,
        a.C, a.L, a.G, eps);
  });
  return {y.contiguous(a.fmt), mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& mean_in,
    const at::Tensor& rstd_in, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, bool silu, const std::optional<at::Tensor>& offset) {
  const int64_t G = check_group_norm_backward(grad_y, x_in, mean_in, rstd_in, weight, bias, offset);
  const GroupNormArgs a = group_norm_args(x_in, G, weight, bias, offset);
  const at::Tensor dy = grad_y.contiguous(a.cl ? a.fmt : at::MemoryFormat::Contiguous);
  const at::Tensor mean = mean_in.contiguous(), rstd = rstd_in.contiguous();
  at::Tensor dx = at::empty_like(a.x), ds_nc = a.empty(a.N, a.C), db_nc = a.empty(a.N, a.C);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "group_norm_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto run = a.cl ? backward_kernel_cl<scalar_t> : backward_kernel<scalar_t>;
    run(dy.const_data_ptr<scalar_t>(), a.x.const_data_ptr<scalar_t>(), mean.const_data_ptr<acc_t>(),
        rstd.const_data_ptr<acc_t>(), a.w<scalar_t>(), a.b<scalar_t>(), a.o<scalar_t>(),
        dx.mutable_data_ptr<scalar_t>(), ds_nc.mutable_data_ptr<acc_t>(), db_nc.mutable_data_ptr<acc_t>(), a.N,
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
