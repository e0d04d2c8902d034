// upfirdn2d on the CPU, computed directly in polyphase form: each output sample reads only the
// input samples that the zero-insertion would not make zero, so no upsampled copy is ever formed.
//
// Along W, outputs ox = r + q*L (L = up/gcd(up, down) phases r) read the inputs m0_r + q*M + a
// (M = down/gcd) with the taps k0_r - a*up, which is a convolution in q once each input row is
// padded with zeros and split into its M residues mod M (for down=2: even and odd samples). So every
// filter step is a contiguous vector load and a multiply-add, at every border, with no transposes.
// Along H the same happens with whole rows, which are contiguous already.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <numeric>
#include <vector>

#include "../common.h"
#include "simd.h"

namespace fastsde::cpu {
namespace {

// The input rows that reach output row i: in[i0 .. i0+n) with filter taps k0, k0-up, k0-2up, ...
// (indices into the unflipped filter, since the op is a true convolution).
struct Taps {
  int64_t i0, k0, n;
};

std::vector<Taps> row_taps(int64_t in, int64_t out, int64_t up, int64_t down, int64_t p0, int64_t K) {
  std::vector<Taps> taps(out);
  for (int64_t i = 0; i < out; ++i) {
    // Output i covers the upsampled+padded positions j = i*down + k, k in [0, K); position j holds
    // input m where j - p0 = m*up.
    const int64_t lo = i * down - p0;
    const int64_t m0 = std::max<int64_t>(-floor_div(-lo, up), 0);
    const int64_t m1 = std::min<int64_t>(floor_div(lo + K - 1, up), in - 1);
    taps[i] = {m0, K - 1 - (m0 * up - lo), std::max<int64_t>(m1 - m0 + 1, 0)};
  }
  return taps;
}

// The polyphase plan along W. A prepared row holds input columns [base, base + M*T), zero outside
// the row, split into M streams of T: stream s, element t is column base + t*M + s. Phase r has Q[r]
// outputs; its taps read filter index k from prepared offset off + q.
struct ColPlan {
  int64_t L, M, T, base;
  std::vector<int64_t> Q;
  std::vector<std::vector<std::pair<int64_t, int64_t>>> taps;  // per phase: (offset, filter index)
};

ColPlan col_plan(int64_t W, int64_t OW, int64_t up, int64_t down, int64_t p0, int64_t K) {
  const int64_t g = std::gcd(up, down);
  ColPlan p{up / g, down / g, 0, 0, {}, {}};
  std::vector<int64_t> m0(p.L), k0(p.L), n(p.L);
  int64_t lo_in = INT64_MAX, hi_in = INT64_MIN;
  for (int64_t r = 0; r < p.L; ++r) {
    const int64_t lo = r * down - p0;
    m0[r] = -floor_div(-lo, up);
    k0[r] = K - 1 - (m0[r] * up - lo);
    n[r] = floor_div(k0[r], up) + 1;
    p.Q.push_back(r < OW ? (OW - r + p.L - 1) / p.L : 0);
    if (p.Q[r] > 0 && n[r] > 0) {
      lo_in = std::min(lo_in, m0[r]);
      hi_in = std::max(hi_in, m0[r] + (p.Q[r] - 1) * p.M + n[r] - 1);
    }
  }
  if (lo_in > hi_in) lo_in = hi_in = 0;  // no tap reads anything: every output is zero
  p.base = lo_in;
  p.T = (hi_in - lo_in) / p.M + 1;
  p.taps.resize(p.L);
  for (int64_t r = 0; r < p.L; ++r) {
    for (int64_t a = 0; p.Q[r] > 0 && a < n[r]; ++a) {
      const int64_t e = m0[r] - p.base + a;
      p.taps[r].emplace_back((e % p.M) * p.T + e / p.M, k0[r] - a * up);
    }
  }
  return p;
}

// Pads one input row with zeros and splits it into the plan's M streams, in the math type. M_ is
// M when known at compile time (1 or 2, NCSN++'s cases), so the interior loop vectorises.
template <int64_t M_, typename S, typename ACC>
inline __attribute__((always_inline)) void prepare_row_m(const S* x, int64_t W, const ColPlan& p, ACC* dst) {
  const int64_t M = M_ ? M_ : p.M, T_ = p.T, base = p.base;
  // The t whose M columns base + t*M + [0, M) all lie in [0, W).
  const int64_t t0 = std::clamp<int64_t>(-floor_div(base, M), 0, T_);
  const int64_t t1 = std::clamp<int64_t>(floor_div(W - base, M), t0, T_);
  auto edge = [&](int64_t t) __attribute__((always_inline)) {
    for (int64_t s = 0; s < M; ++s) {
      const int64_t c = base + t * M + s;
      dst[s * T_ + t] = c >= 0 && c < W ? static_cast<ACC>(x[c]) : ACC(0);
    }
  };
  for (int64_t t = 0; t < t0; ++t) edge(t);
  const S* xi = x + base;
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t s = 0; s < M; ++s) dst[s * T_ + t] = static_cast<ACC>(xi[t * M + s]);
  for (int64_t t = t1; t < T_; ++t) edge(t);
}

template <typename S, typename ACC>
inline __attribute__((always_inline)) void prepare_row(const S* x, int64_t W, const ColPlan& p, ACC* dst) {
  switch (p.M) {
    case 1: return prepare_row_m<1>(x, W, p, dst);
    case 2: return prepare_row_m<2>(x, W, p, dst);
    default: return prepare_row_m<0>(x, W, p, dst);
  }
}

// One output row along W: dst[r + q*L] = sum over rows a and phase-r taps j of
// frow[a][k_j] * row[a][off_j + q]. One source row for a pass of a separable filter; for a 2-D
// filter, the input rows that reach this output row, each with its own filter row. Vectorised
// where the tensor type T is kVectorized (D is T or its math type ACC).
template <typename T, typename D, typename ACC>
inline __attribute__((always_inline)) void filter_cols(const ACC* const* rows, const ACC* const* frows,
                                                       int64_t nrows, const ColPlan& p, D* dst) {
  for (int64_t r = 0; r < p.L; ++r) {
    const auto& taps = p.taps[r];
    simd_for<T, ACC>(p.Q[r], [&](int64_t q, auto v) __attribute__((always_inline)) {
      using V = decltype(v);
      V acc = {}, acc1 = {};  // two chains: a tap waits on the one before it otherwise
      const int64_t n = taps.size();
      for (int64_t a = 0; a < nrows; ++a) {
        const ACC* row = rows[a] + q;
        const ACC* fr = frows[a];
        int64_t j = 0;
        for (; j + 1 < n; j += 2) {
          acc += fr[taps[j].second] * load<V>(row + taps[j].first);
          acc1 += fr[taps[j + 1].second] * load<V>(row + taps[j + 1].first);
        }
        if (j < n) acc += fr[taps[j].second] * load<V>(row + taps[j].first);
      }
      acc += acc1;
      if constexpr (std::is_same_v<V, ACC>) {
        store(dst + r + q * p.L, acc);
      } else if (p.L == 1) {
        store(dst + q, acc);
      } else {
        for (int j = 0; j < 8; ++j) dst[r + (q + j) * p.L] = acc[j];
      }
    });
  }
}

// One pass of a separable filter across rows: output row o (of `count`, from taps[0]) = sum over
// its taps of f[k0 - a*up] * row (i0 + a), each row `width` long and contiguous: image rows along H,
// or, in channels_last, pixels (C wide) along W. S and D are T or its math type ACC.
template <typename T, typename S, typename D, typename ACC>
inline __attribute__((always_inline)) void filter_rows(const S* src, D* dst, int64_t width,
                                                       const Taps* taps, int64_t count, const ACC* f,
                                                       int64_t up) {
  for (int64_t o = 0; o < count; ++o) {
    const Taps& r = taps[o];
    simd_for<T, ACC>(width, [&](int64_t i, auto v) __attribute__((always_inline)) {
      using V = decltype(v);
      V acc = {}, acc1 = {};  // two chains, as in filter_cols
      const S* s = src + r.i0 * width + i;
      const ACC* fk = f + r.k0;
      int64_t a = 0;
      for (; a + 1 < r.n; a += 2) {
        acc += fk[-a * up] * load<V>(s + a * width);
        acc1 += fk[-(a + 1) * up] * load<V>(s + (a + 1) * width);
      }
      if (a < r.n) acc += fk[-a * up] * load<V>(s + a * width);
      store(dst + o * width + i, acc + acc1);
    });
  }
}

// A plane at a time (an NCSN++ plane, at most 32x32 there, stays in L1). A separable filter (1-D
// taps) runs one pass along each axis, along H first where that shrinks the plane (downsampling),
// else along W first; a 2-D filter sums, for each output row, the input rows that reach it, each
// filtered along W by its own filter row.
template <typename T>
void upfirdn2d_planes(const T* x, const at::opmath_type<T>* f, T* out, int64_t planes, int64_t H,
                      int64_t W, int64_t OH, int64_t OW, int64_t Kw, bool separable, int64_t up,
                      const std::vector<Taps>& ty, const ColPlan& px) {
  using acc_t = at::opmath_type<T>;
  const int64_t prow = px.M * px.T;
  const bool h_first = separable && OH < H;
  const int64_t prep_rows = h_first ? OH : H;
  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    // The prepared rows ([rows][M][T]: the input's, or along H first the first pass's), then the
    // plane after the first pass of a separable filter: [OH][W] along H first, [H][OW] along W
    // first. All rows are prepared before any is filtered: a wide load of data that narrow stores
    // have just written would wait on store forwarding.
    thread_local std::vector<acc_t> buf;
    buf.resize(prep_rows * prow + (h_first ? OH * W : separable ? H * OW : 0));
    acc_t* prep = buf.data();
    acc_t* half_done = prep + prep_rows * prow;
    std::vector<const acc_t*> rows(H), frows(H);  // a 2-D filter's input rows of one output row
    with_isa([&]() __attribute__((always_inline)) {
      for (int64_t p = begin; p < end; ++p) {
        const T* xp = x + p * H * W;
        T* o = out + p * OH * OW;
        if (h_first) {
          filter_rows<T>(xp, half_done, W, ty.data(), OH, f, up);
          for (int64_t i = 0; i < OH; ++i) prepare_row(half_done + i * W, W, px, prep + i * prow);
          for (int64_t i = 0; i < OH; ++i) {
            const acc_t* row = prep + i * prow;
            filter_cols<T>(&row, &f, 1, px, o + i * OW);
          }
          continue;
        }
        for (int64_t i = 0; i < H; ++i) prepare_row(xp + i * W, W, px, prep + i * prow);
        if (separable) {
          for (int64_t i = 0; i < H; ++i) {
            const acc_t* row = prep + i * prow;
            filter_cols<T>(&row, &f, 1, px, half_done + i * OW);
          }
          filter_rows<T>(half_done, o, OW, ty.data(), OH, f, up);
        } else {
          for (int64_t oy = 0; oy < OH; ++oy) {
            const Taps& r = ty[oy];
            for (int64_t a = 0; a < r.n; ++a) {
              rows[a] = prep + (r.i0 + a) * prow;
              frows[a] = f + (r.k0 - a * up) * Kw;
            }
            filter_cols<T>(rows.data(), frows.data(), r.n, px, o + oy * OW);
          }
        }
      }
    });
  });
}

// channels_last: x is [N, H, W, C] and every filter step is a multiply-add of C-wide pixels. A
// separable filter runs as two filter_rows passes (pixels along W, image rows along H; along H
// first where that shrinks the plane) over blocks of output rows, one task each, through a buffer
// that stays in cache: along H first, the block's H-filtered rows; along W first, the W-filtered
// input rows that the block reads (a few halo rows are filtered by both neighbouring blocks). A
// 2-D filter sums each output pixel's input pixels directly.
template <typename T>
void upfirdn2d_cl(const T* x, const at::opmath_type<T>* f, T* out, int64_t N, int64_t C, int64_t H,
                  int64_t W, int64_t OH, int64_t OW, int64_t Kw, bool separable, int64_t up,
                  const std::vector<Taps>& ty, const std::vector<Taps>& tx) {
  using acc_t = at::opmath_type<T>;
  if (!separable) {
    at::parallel_for(0, N * OH, 1, [&](int64_t begin, int64_t end) {
      with_isa([&]() __attribute__((always_inline)) {
        for (int64_t row = begin; row < end; ++row) {
          const int64_t n = row / OH;
          const Taps& ry = ty[row % OH];
          for (int64_t ox = 0; ox < OW; ++ox) {
            const Taps& rx = tx[ox];
            simd_for<T, acc_t>(C, [&](int64_t c, auto v) __attribute__((always_inline)) {
              using V = decltype(v);
              V acc = {};
              for (int64_t a = 0; a < ry.n; ++a) {
                const T* xr = x + ((n * H + ry.i0 + a) * W + rx.i0) * C + c;
                const acc_t* fr = f + (ry.k0 - a * up) * Kw + rx.k0;
                for (int64_t b = 0; b < rx.n; ++b) acc += fr[-b * up] * load<V>(xr + b * C);
              }
              store(out + (row * OW + ox) * C + c, acc);
            });
          }
        }
      });
    });
    return;
  }
  const bool h_first = OH < H;
  const int64_t mid_width = (h_first ? W : OW) * C;  // one buffered row
  // Blocks of about 64K buffered elements, and at least two tasks per thread overall.
  const int64_t tasks = 2 * at::get_num_threads();
  const int64_t R = std::clamp<int64_t>(std::min(65536 / mid_width, (OH * N + tasks - 1) / tasks), 1, OH);
  const int64_t blocks = (OH + R - 1) / R;
  at::parallel_for(0, N * blocks, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<acc_t> buf;
    thread_local std::vector<Taps> local;
    with_isa([&]() __attribute__((always_inline)) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / blocks, o0 = task % blocks * R, o1 = std::min(o0 + R, OH);
        const T* xn = x + n * H * W * C;
        T* on = out + n * OH * OW * C;
        if (h_first) {
          buf.resize(R * mid_width);
          filter_rows<T>(xn, buf.data(), mid_width, &ty[o0], o1 - o0, f, up);
          for (int64_t o = o0; o < o1; ++o)
            filter_rows<T>(buf.data() + (o - o0) * mid_width, on + o * OW * C, C, tx.data(), OW, f, up);
          continue;
        }
        // The input rows [lo, hi) that the block reads, and its taps relative to lo.
        int64_t lo = INT64_MAX, hi = INT64_MIN;
        for (int64_t o = o0; o < o1; ++o) {
          if (ty[o].n == 0) continue;
          lo = std::min(lo, ty[o].i0);
          hi = std::max(hi, ty[o].i0 + ty[o].n);
        }
        if (lo > hi) lo = hi = 0;  // the block reads nothing: its rows are zero
        local.assign(ty.begin() + o0, ty.begin() + o1);
        for (Taps& t : local) t.i0 = t.n ? t.i0 - lo : 0;
        buf.resize(std::max<int64_t>(hi - lo, 1) * mid_width);
        for (int64_t i = lo; i < hi; ++i)
          filter_rows<T>(xn + i * W * C, buf.data() + (i - lo) * mid_width, C, tx.data(), OW, f, up);
        filter_rows<T>(buf.data(), on + o0 * OW * C, mid_width, local.data(), o1 - o0, f, up);
      }
    });
  });
}

at::Tensor upfirdn2d_cpu(const at::Tensor& x_in, const at::Tensor& kernel, int64_t up, int64_t down,
                         at::IntArrayRef pad) {
  const auto out_size = check_upfirdn2d(x_in, kernel, up, down, pad);
  const int64_t OH = out_size[0], OW = out_size[1];
  const auto fmt = output_format(x_in);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const at::Tensor x = x_in.contiguous(fmt);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const bool separable = kernel.dim() == 1;
  const int64_t Kh = kernel.size(0), Kw = kernel.size(separable ? 0 : 1);
  const auto ty = row_taps(H, OH, up, down, pad[2], Kh);
  at::Tensor out = at::empty({N, C, OH, OW}, x.options().memory_format(fmt));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor f = kernel.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
    if (cl) {
      upfirdn2d_cl<scalar_t>(x.const_data_ptr<scalar_t>(), f.const_data_ptr<acc_t>(),
                             out.mutable_data_ptr<scalar_t>(), N, C, H, W, OH, OW, Kw, separable, up,
                             ty, row_taps(W, OW, up, down, pad[0], Kw));
    } else {
      upfirdn2d_planes<scalar_t>(x.const_data_ptr<scalar_t>(), f.const_data_ptr<acc_t>(),
                                 out.mutable_data_ptr<scalar_t>(), N * C, H, W, OH, OW, Kw, separable,
                                 up, ty, col_plan(W, OW, up, down, pad[0], Kw));
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastsde, CPU, m) { m.impl("upfirdn2d", &upfirdn2d_cpu); }

}  // namespace fastsde::cpu
