// upfirdn2d on the CPU, computed directly in polyphase form: each output sample reads only the
// input samples that the zero-insertion would not make zero, so no upsampled or padded copy is
// ever formed. The tap tables per output row and column are built once per call. Separable
// filters (1-D taps, what NCSN++ uses) take a fast vectorised path.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <vector>

#include "../common.h"
#include "simd.h"

namespace fastsde::cpu {
namespace {

// The input samples that reach output i along one axis: in[i0 .. i0+n) with filter taps
// k0, k0-up, k0-2up, ... (indices into the unflipped filter, since the op is a true convolution).
struct Taps {
  int64_t i0, k0, n;
};

std::vector<Taps> axis_taps(int64_t in, int64_t out, int64_t up, int64_t down, int64_t p0,
                            int64_t K) {
  std::vector<Taps> taps(out);
  for (int64_t i = 0; i < out; ++i) {
    // Output i covers the upsampled+padded positions j = i*down + k, k in [0, K); position j holds
    // input m where j - p0 = m*up.
    const int64_t lo = i * down - p0;
    const int64_t m0 = std::max<int64_t>(-floor_div(-lo, up), 0);
    const int64_t m1 = std::min<int64_t>(floor_div(lo + K - 1, up), in - 1);
    const int64_t n = std::max<int64_t>(m1 - m0 + 1, 0);
    taps[i] = {m0, K - 1 - (m0 * up - lo), n};
  }
  return taps;
}

// A general 2-D filter: each output sums its taps straight from the tap tables.
template <typename T>
void upfirdn2d_direct(const T* x, const at::opmath_type<T>* f, T* out, int64_t planes, int64_t H,
                      int64_t W, int64_t OH, int64_t OW, int64_t Kw, int64_t up,
                      const std::vector<Taps>& ty, const std::vector<Taps>& tx) {
  using acc_t = at::opmath_type<T>;
  at::parallel_for(0, planes * OH, 16, [&](int64_t begin, int64_t end) {
    for (int64_t po = begin; po < end; ++po) {
      const int64_t p = po / OH, oy = po % OH;
      const Taps& r = ty[oy];
      for (int64_t ox = 0; ox < OW; ++ox) {
        const Taps& c = tx[ox];
        acc_t acc = 0;
        for (int64_t a = 0; a < r.n; ++a) {
          const T* xrow = x + (p * H + r.i0 + a) * W + c.i0;
          const acc_t* frow = f + (r.k0 - a * up) * Kw + c.k0;
          for (int64_t b = 0; b < c.n; ++b) acc += static_cast<acc_t>(xrow[b]) * frow[-b * up];
        }
        out[po * OW + ox] = static_cast<T>(acc);
      }
    }
  });
}

// One axis of a separable filter, along the rows: output row o = sum over its taps of
// f[k0 - a*up] * input row (i0 + a), each row `width` long and contiguous, so it vectorises fully.
template <typename T, typename ACC>
inline __attribute__((always_inline)) void filter_rows(const T* src, ACC* dst, int64_t width,
                                                       const std::vector<Taps>& taps, const ACC* f,
                                                       int64_t up) {
  for (size_t o = 0; o < taps.size(); ++o) {
    const Taps& r = taps[o];
    ACC* d = dst + o * width;
    simd_for<T, ACC>(width, [&](int64_t i, auto v) {
      using V = decltype(v);
      V acc = {};
      for (int64_t a = 0; a < r.n; ++a) acc += f[r.k0 - a * up] * load<V>(src + (r.i0 + a) * width + i);
      store(d + i, acc);
    });
  }
}

template <typename S, typename D>
inline __attribute__((always_inline)) void transpose(const S* src, D* dst, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = static_cast<D>(src[r * cols + c]);
}

// A separable filter (given as 1-D taps) runs as filter_rows along H, a transpose of the plane,
// filter_rows along W, and a transpose back; a plane of NCSN++ (at most 32x32 there) stays in L1.
template <typename T>
void upfirdn2d_separable(const T* x, const at::opmath_type<T>* f, T* out, int64_t planes, int64_t H,
                         int64_t W, int64_t OH, int64_t OW, int64_t up,
                         const std::vector<Taps>& ty, const std::vector<Taps>& tx) {
  using acc_t = at::opmath_type<T>;
  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<acc_t> buf;
    buf.resize(2 * OH * W + OW * OH);
    acc_t* rows_done = buf.data();           // [OH][W]
    acc_t* rows_t = rows_done + OH * W;      // [W][OH]
    acc_t* both_t = rows_t + W * OH;         // [OW][OH]
    with_isa([&]() __attribute__((always_inline)) {
      for (int64_t p = begin; p < end; ++p) {
        filter_rows(x + p * H * W, rows_done, W, ty, f, up);
        transpose(rows_done, rows_t, OH, W);
        filter_rows(rows_t, both_t, OH, tx, f, up);
        transpose(both_t, out + p * OH * OW, OW, OH);
      }
    });
  });
}

at::Tensor upfirdn2d_cpu(const at::Tensor& x_in, const at::Tensor& kernel, int64_t up, int64_t down,
                         at::IntArrayRef pad) {
  const auto [OH, OW] = check_upfirdn2d(x_in, kernel, up, down, pad);
  const auto fmt = output_format(x_in);
  const at::Tensor x = x_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const bool separable = kernel.dim() == 1;
  const int64_t Kh = kernel.size(0), Kw = kernel.size(separable ? 0 : 1);
  const auto ty = axis_taps(H, OH, up, down, pad[2], Kh);
  const auto tx = axis_taps(W, OW, up, down, pad[0], Kw);
  at::Tensor out = at::empty({N, C, OH, OW}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor f = kernel.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
    if (separable) {
      upfirdn2d_separable<scalar_t>(x.const_data_ptr<scalar_t>(), f.const_data_ptr<acc_t>(),
                                    out.mutable_data_ptr<scalar_t>(), N * C, H, W, OH, OW, up, ty, tx);
    } else {
      upfirdn2d_direct<scalar_t>(x.const_data_ptr<scalar_t>(), f.const_data_ptr<acc_t>(),
                                 out.mutable_data_ptr<scalar_t>(), N * C, H, W, OH, OW, Kw, up, ty, tx);
    }
  });
  return out.contiguous(fmt);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastsde, CPU, m) { m.impl("upfirdn2d", &upfirdn2d_cpu); }

}  // namespace fastsde::cpu
