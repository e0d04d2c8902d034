// upfirdn2d on CUDA, in two kernels.
// - Tiled, for the cases NCSN++ runs (a 4x4 or separable 4-tap filter with up 2, down 2 or neither,
//   which its backward maps onto each other) in float32, float16 and bfloat16: a block stages the
//   input its output tile needs in shared memory (float32, zero outside the image; 16-byte loads
//   where the layout allows), then each thread computes a 2x4 patch of outputs from registers,
//   with every tap, phase and offset a compile-time constant. NCHW blocks take a few planes,
//   channels_last blocks 32 channels of a pixel tile (a warp reads a pixel's 32 channels).
// - Direct, for everything else: one thread per output sample, polyphase (only the input samples
//   that zero insertion leaves non-zero are read), float32 accumulation (float64 for float64),
//   output coordinates from fast divisions by invariants, `up` a compile-time constant for 1 and 2.
// FASTSDE_UPFIRDN2D_TILED=0 in the environment sends every call to the direct kernel (read at each
// call): for comparing the two on a GPU, and a way around the tiled one should it fail on a device.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "../common.h"
#include "cuda_utils.cuh"

#include <cstdlib>
#include <cstring>

namespace fastsde::cuda {
namespace {

template <typename Index>
struct Geometry {  // of the direct kernel
  int64_t H, W, Kh, Kw, up, down, px0, py0;
  Index total, plane;  // output elements; input elements per plane (NCHW) or image (channels_last)
  Divider<Index> by_C, by_OW, by_OH;
  int64_t sy, sx;      // input strides of a row and a pixel
  bool separable, cl;
};

template <typename T, typename ACC, typename Index, int UP>
__global__ void upfirdn2d_kernel(const T* __restrict__ x, const ACC* __restrict__ f,
                                 T* __restrict__ out, Geometry<Index> g) {
  const int64_t up = UP ? UP : g.up;
  for (Index idx = blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x; idx < g.total;
       idx += static_cast<Index>(gridDim.x) * blockDim.x) {
    // idx enumerates the output in memory order, [N, C, OH, OW] or [N, OH, OW, C]; qy.div is the
    // plane (n, c) or, channels_last, the sample n, whose channel c is then x's offset.
    Index c = 0, rest = idx;
    if (g.cl) {
      const auto q = g.by_C.divmod(idx);
      c = q.mod;
      rest = q.div;
    }
    const auto qx = g.by_OW.divmod(rest);
    const auto qy = g.by_OH.divmod(qx.div);
    const int64_t ox = qx.mod, oy = qy.mod;
    const int64_t ly = oy * g.down - g.py0, lx = ox * g.down - g.px0;
    const int64_t my0 = max(-floor_div(-ly, up), int64_t(0));
    const int64_t my1 = min(floor_div(ly + g.Kh - 1, up), g.H - 1);
    const int64_t mx0 = max(-floor_div(-lx, up), int64_t(0));
    const int64_t mx1 = min(floor_div(lx + g.Kw - 1, up), g.W - 1);
    const T* xp = x + qy.div * g.plane + c;
    ACC acc = 0;
    for (int64_t my = my0; my <= my1; ++my) {
      const int64_t ky = g.Kh - 1 - (my * up - ly);
      for (int64_t mx = mx0; mx <= mx1; ++mx) {
        const int64_t kx = g.Kw - 1 - (mx * up - lx);
        const ACC w = g.separable ? f[ky] * f[kx] : f[ky * g.Kw + kx];
        acc += w * static_cast<ACC>(xp[my * g.sy + mx * g.sx]);
      }
    }
    out[idx] = static_cast<T>(acc);
  }
}

// The tiled kernel's compile-time shape: each thread computes VY x VX outputs.
constexpr int kVX = 4, kVY = 2;
// A warp of channels_last threads takes 32 channels of a pixel; fewer channels leave lanes idle.
constexpr int kChannelsPerBlockCL = 32;

struct TiledGeometry {
  int64_t N, C, H, W, OH, OW, planes;
  int64_t px, py;            // leading pads (multiples of up)
  int tx, ty, cb;            // pixel threads along x and y; channels (NCHW: planes) per block
  int tih, sw;               // staged input rows; staged row width in elements (>= input tile width)
  int channel_chunks, tiles_x;
  bool separable;            // f is [K] (taps f[i] f[j]), else [K, K]
  bool vec_load, vec_store;  // 16-byte loads of the input; VX-wide stores of the output (NCHW)
};

// Stages the block's input tile in shared memory (float32): NCHW as [cb][tih][sw], channels_last as
// [tih][sw][cb], so that either way consecutive threads load consecutive addresses of x.
template <int NV, bool CL, typename T>
__device__ void stage_tile(const T* __restrict__ x, float* s, const TiledGeometry& g, int64_t iy0,
                           int64_t sx0, int64_t n_or_plane0, int64_t c0) {
  const int inner = (CL ? g.cb : g.sw) / NV;  // vectors along the contiguous dimension
  const int total = g.cb * g.tih * g.sw / NV;
  for (int e = threadIdx.x; e < total; e += blockDim.x) {
    const int v = e % inner * NV, rest = e / inner;
    int lc, r, col;
    if (CL) {
      lc = v, col = rest % g.sw, r = rest / g.sw;
    } else {
      col = v, r = rest % g.tih, lc = rest / g.tih;
    }
    const int64_t iy = iy0 + r, ix = sx0 + col;
    const bool pixel_in = iy >= 0 && iy < g.H && ix >= 0 && ix < g.W;
    // With NV > 1, W (NCHW) or C (channels_last) is a multiple of NV and vectors start at multiples
    // of NV, so a vector lies wholly inside or wholly outside.
    const T* src;
    bool inside;
    float* dst;
    if (CL) {
      inside = pixel_in && c0 + lc < g.C;
      src = x + ((n_or_plane0 * g.H + iy) * g.W + ix) * g.C + c0 + lc;
      dst = s + (r * g.sw + col) * g.cb + lc;
    } else {
      inside = pixel_in && n_or_plane0 + lc < g.planes;
      src = x + ((n_or_plane0 + lc) * g.H + iy) * g.W + ix;
      dst = s + (lc * g.tih + r) * g.sw + col;
    }
    Vector<T, NV> in;
    if (inside) {
      in = load_vector<NV>(src);
    } else {
#pragma unroll
      for (int k = 0; k < NV; ++k) in.v[k] = T(0);
    }
    // dst is then 16-byte aligned too (NV floats from a multiple of NV): 16-byte stores.
    if constexpr (NV % 4 == 0) {
#pragma unroll
      for (int k = 0; k < NV; k += 4) {
        Vector<float, 4> f4;
#pragma unroll
        for (int j = 0; j < 4; ++j) f4.v[j] = static_cast<float>(in.v[k + j]);
        store_vector<4>(dst + k, f4);
      }
    } else {
#pragma unroll
      for (int k = 0; k < NV; ++k) dst[k] = static_cast<float>(in.v[k]);
    }
  }
}

template <typename T, int UP, int DOWN, int K, bool CL>
__global__ void __launch_bounds__(kThreads)
    upfirdn2d_tiled_kernel(const T* __restrict__ x, const float* __restrict__ f, T* __restrict__ out,
                           TiledGeometry g) {
  static_assert(kVX * DOWN % UP == 0 && kVY * DOWN % UP == 0, "a patch must start on a phase 0");
  // Input samples a thread's patch reads per row and per column.
  constexpr int RX = ((kVX - 1) * DOWN + K - 1) / UP + 1, RY = ((kVY - 1) * DOWN + K - 1) / UP + 1;
  constexpr int NV = 16 / sizeof(T);
  float w[K][K];
#pragma unroll
  for (int i = 0; i < K; ++i) {
#pragma unroll
    for (int j = 0; j < K; ++j) w[i][j] = g.separable ? f[i] * f[j] : f[i * K + j];
  }
  float* s = shared_memory<float>();
  const int pixel_threads = g.tx * g.ty, t = threadIdx.x;
  const int lc = CL ? t % g.cb : t / pixel_threads, q = CL ? t / g.cb : t % pixel_threads;
  const int qy = q / g.tx, qx = q % g.tx;
  const int64_t oy0 = int64_t(blockIdx.y / g.tiles_x) * g.ty * kVY;
  const int64_t ox0 = int64_t(blockIdx.y % g.tiles_x) * g.tx * kVX;
  // The tile's first output reads from upsampled coordinate o0 * DOWN - p, a multiple of UP.
  const int64_t iy0 = (oy0 * DOWN - g.py) / UP, ix0 = (ox0 * DOWN - g.px) / UP;
  // 16-byte NCHW loads start the staged rows at a multiple of NV, a few columns early.
  const int64_t sx0 = !CL && g.vec_load ? floor_div(ix0, NV) * NV : ix0;
  // NCHW: the block's first plane (n, c) of N x C; channels_last: the sample n and first channel.
  const int64_t n_or_plane0 = CL ? blockIdx.x / g.channel_chunks : int64_t(blockIdx.x) * g.cb;
  const int64_t c0 = CL ? int64_t(blockIdx.x % g.channel_chunks) * g.cb : 0;
  if (g.vec_load) {
    stage_tile<NV, CL>(x, s, g, iy0, sx0, n_or_plane0, c0);
  } else {
    stage_tile<1, CL>(x, s, g, iy0, sx0, n_or_plane0, c0);
  }
  __syncthreads();

  const int step_x = CL ? g.cb : 1, step_y = CL ? g.sw * g.cb : g.sw;
  const int col0 = static_cast<int>(ix0 - sx0) + qx * (kVX * DOWN / UP);
  const int row0 = qy * (kVY * DOWN / UP);
  const float* sp = s + (CL ? (row0 * g.sw + col0) * g.cb + lc : (lc * g.tih + row0) * g.sw + col0);
  float acc[kVY][kVX] = {};
#pragma unroll
  for (int r = 0; r < RY; ++r) {
    float row[RX];
#pragma unroll
    for (int i = 0; i < RX; ++i) row[i] = sp[r * step_y + i * step_x];
    // Output (vy, vx) takes tap (jy, jx) of the flipped filter from the upsampled sample
    // (vy * DOWN + jy, vx * DOWN + jx) of its patch, which exists where both are multiples of UP.
#pragma unroll
    for (int vy = 0; vy < kVY; ++vy) {
#pragma unroll
      for (int jy = 0; jy < K; ++jy) {
        if ((vy * DOWN + jy) % UP != 0 || (vy * DOWN + jy) / UP != r) continue;
#pragma unroll
        for (int vx = 0; vx < kVX; ++vx) {
#pragma unroll
          for (int jx = 0; jx < K; ++jx) {
            if ((vx * DOWN + jx) % UP != 0) continue;
            acc[vy][vx] += w[K - 1 - jy][K - 1 - jx] * row[(vx * DOWN + jx) / UP];
          }
        }
      }
    }
  }

  const int64_t oy = oy0 + qy * kVY, ox = ox0 + qx * kVX;
  if (CL ? c0 + lc >= g.C : n_or_plane0 + lc >= g.planes) return;
#pragma unroll
  for (int vy = 0; vy < kVY; ++vy) {
    if (oy + vy >= g.OH) break;
    if (CL) {
      T* o = out + ((n_or_plane0 * g.OH + oy + vy) * g.OW + ox) * g.C + c0 + lc;
#pragma unroll
      for (int vx = 0; vx < kVX; ++vx) {
        if (ox + vx < g.OW) o[vx * g.C] = static_cast<T>(acc[vy][vx]);
      }
    } else {
      T* o = out + ((n_or_plane0 + lc) * g.OH + oy + vy) * g.OW + ox;
      if (g.vec_store && ox + kVX <= g.OW) {
        Vector<T, kVX> v;
#pragma unroll
        for (int vx = 0; vx < kVX; ++vx) v.v[vx] = static_cast<T>(acc[vy][vx]);
        store_vector<kVX>(o, v);
      } else {
#pragma unroll
        for (int vx = 0; vx < kVX; ++vx) {
          if (ox + vx < g.OW) o[vx] = static_cast<T>(acc[vy][vx]);
        }
      }
    }
  }
}

int pow2_at_least(int64_t v) {
  int p = 1;
  while (p < v) p *= 2;
  return p;
}

bool tiled_enabled() {
  const char* v = std::getenv("FASTSDE_UPFIRDN2D_TILED");
  return v == nullptr || std::strcmp(v, "0") != 0;
}

// Launches the tiled kernel if it covers this call; false if not.
template <typename T>
bool upfirdn2d_tiled(const at::Tensor& x, const at::Tensor& kernel, const float* f, int64_t up,
                     int64_t down, at::IntArrayRef pad, bool cl, at::Tensor& out) {
  constexpr int K = 4, NV = 16 / sizeof(T);
  const bool separable = kernel.dim() == 1;
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t OH = out.size(2), OW = out.size(3);
  const bool shape_ok = kernel.size(0) == K && (separable || kernel.size(1) == K) &&
                        ((up == 2 && down == 1) || (up == 1 && down == 2) || (up == 1 && down == 1)) &&
                        pad[0] % up == 0 && pad[2] % up == 0 && (!cl || C >= kChannelsPerBlockCL);
  if (!shape_ok) return false;
  // Pixel threads: enough to cover small outputs; at most 16 x 16 in NCHW, 8 (4 rows) in
  // channels_last, whose 32 channels multiply the staged tile.
  const int max_ty = cl ? 4 : 16;
  const int ty = std::min(pow2_at_least((OH + kVY - 1) / kVY), max_ty);
  const int tx = std::min(pow2_at_least((OW + kVX - 1) / kVX), cl ? 8 / ty : 16);
  const int cb = cl ? kChannelsPerBlockCL
                    : static_cast<int>(std::min<int64_t>(kThreads / (tx * ty), N * C));
  const int tiw = static_cast<int>(((tx * kVX - 1) * down + K - 1) / up + 1);
  const int tih = static_cast<int>(((ty * kVY - 1) * down + K - 1) / up + 1);
  const bool vec_load = vector_width(sizeof(T), cl ? C : W, {x.const_data_ptr()}) == NV;
  const int sw = !cl && vec_load ? (tiw + 2 * NV - 2) / NV * NV : tiw;
  const std::size_t smem = sizeof(float) * cb * tih * sw;
  const int tiles_x = static_cast<int>((OW + tx * kVX - 1) / (tx * kVX));
  const int64_t tiles = tiles_x * ((OH + ty * kVY - 1) / (ty * kVY));
  const int channel_chunks = static_cast<int>((C + cb - 1) / cb);
  const int64_t blocks = cl ? N * channel_chunks : (N * C + cb - 1) / cb;
  if (smem > kMaxSharedMemory || tiles > 65535 || blocks >= INT32_MAX) return false;
  const bool vec_store = !cl && OW % kVX == 0 &&
                         reinterpret_cast<std::uintptr_t>(out.const_data_ptr()) % sizeof(Vector<T, kVX>) == 0;

  const TiledGeometry g{N, C, H, W, OH, OW, N * C, pad[0], pad[2], tx, ty, cb, tih, sw,
                        channel_chunks, tiles_x, separable, vec_load, vec_store};
  const auto run = [&](auto kernel_fn) {
    launch(kernel_fn, dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(tiles)),
           tx * ty * cb, smem, current_stream(), x.const_data_ptr<T>(), f, out.mutable_data_ptr<T>(), g);
  };
  const auto pick = [&](auto cl_tag) {
    constexpr bool CLv = decltype(cl_tag)::value;
    if (up == 2) {
      run(upfirdn2d_tiled_kernel<T, 2, 1, K, CLv>);
    } else if (down == 2) {
      run(upfirdn2d_tiled_kernel<T, 1, 2, K, CLv>);
    } else {
      run(upfirdn2d_tiled_kernel<T, 1, 1, K, CLv>);
    }
  };
  if (cl) {
    pick(std::true_type{});
  } else {
    pick(std::false_type{});
  }
  return true;
}

at::Tensor upfirdn2d_cuda(const at::Tensor& x_in, const at::Tensor& kernel, int64_t up,
                          int64_t down, at::IntArrayRef pad) {
  const auto out_size = check_upfirdn2d(x_in, kernel, up, down, pad);
  const int64_t OH = out_size[0], OW = out_size[1];
  const DeviceGuard guard(x_in.device());
  const auto fmt = output_format(x_in);
  const at::Tensor x = x_in.contiguous(fmt);
  const bool separable = kernel.dim() == 1, cl = fmt == at::MemoryFormat::ChannelsLast;
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor out = at::empty({x.size(0), C, OH, OW}, x.options().memory_format(fmt));
  const int64_t total = out.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor f = kernel.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
    if constexpr (std::is_same_v<acc_t, float>) {
      if (tiled_enabled() &&
          upfirdn2d_tiled<scalar_t>(x, kernel, f.const_data_ptr<float>(), up, down, pad, cl, out)) {
        return;
      }
    }
    dispatch_index(std::max(total, x.numel()), [&](auto index) {
      using index_t = decltype(index);
      const Geometry<index_t> g{H, W, kernel.size(0), kernel.size(separable ? 0 : 1), up, down,
                                pad[0], pad[2], static_cast<index_t>(total),
                                static_cast<index_t>(cl ? H * W * C : H * W), Divider<index_t>(C),
                                Divider<index_t>(OW), Divider<index_t>(OH), cl ? W * C : W,
                                cl ? C : 1, separable, cl};
      const auto run = up == 1 ? upfirdn2d_kernel<scalar_t, acc_t, index_t, 1>
                       : up == 2 ? upfirdn2d_kernel<scalar_t, acc_t, index_t, 2>
                                 : upfirdn2d_kernel<scalar_t, acc_t, index_t, 0>;
      launch(run, blocks_for(total), kThreads, 0, current_stream(), x.const_data_ptr<scalar_t>(),
             f.const_data_ptr<acc_t>(), out.mutable_data_ptr<scalar_t>(), g);
    });
  });
  return out;
}

}  // namespace

FASTSDE_CUDA_KERNELS(m) { m.impl("upfirdn2d", &upfirdn2d_cuda); }

}  // namespace fastsde::cuda
