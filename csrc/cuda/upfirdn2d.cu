// upfirdn2d on CUDA: one thread per output sample, polyphase (only the input samples that zero
// insertion leaves non-zero are read), float32 accumulation, 64-bit indexing, NCHW or channels_last
// (where neighbouring threads take neighbouring channels of a pixel). A straightforward first
// kernel; the tiled shared-memory version is planned work.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "../common.h"
#include "cuda_utils.cuh"

namespace fastsde::cuda {
namespace {

struct Geometry {
  int64_t N, C, H, W, OH, OW, Kh, Kw, up, down, px0, py0;
  bool separable, cl;
};

template <typename T, typename ACC>
__global__ void upfirdn2d_kernel(const T* __restrict__ x, const ACC* __restrict__ f,
                                 T* __restrict__ out, Geometry g) {
  const int64_t total = g.N * g.C * g.OH * g.OW;
  // Input element (my, mx) of the thread's plane is xp[my * sy + mx * sx].
  const int64_t sy = g.cl ? g.W * g.C : g.W, sx = g.cl ? g.C : 1;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // idx enumerates the output in memory order: [N, C, OH, OW] or [N, OH, OW, C].
    const int64_t c = g.cl ? idx % g.C : idx / (g.OW * g.OH) % g.C;
    const int64_t pix = g.cl ? idx / g.C : idx;
    const int64_t ox = pix % g.OW, oy = pix / g.OW % g.OH, n = idx / (g.C * g.OH * g.OW);
    const int64_t ly = oy * g.down - g.py0, lx = ox * g.down - g.px0;
    const int64_t my0 = max(-floor_div(-ly, g.up), int64_t(0));
    const int64_t my1 = min(floor_div(ly + g.Kh - 1, g.up), g.H - 1);
    const int64_t mx0 = max(-floor_div(-lx, g.up), int64_t(0));
    const int64_t mx1 = min(floor_div(lx + g.Kw - 1, g.up), g.W - 1);
    const T* xp = x + (g.cl ? n * g.H * g.W * g.C + c : (n * g.C + c) * g.H * g.W);
    ACC acc = 0;
    for (int64_t my = my0; my <= my1; ++my) {
      const int64_t ky = g.Kh - 1 - (my * g.up - ly);
      for (int64_t mx = mx0; mx <= mx1; ++mx) {
        const int64_t kx = g.Kw - 1 - (mx * g.up - lx);
        const ACC w = g.separable ? f[ky] * f[kx] : f[ky * g.Kw + kx];
        acc += w * static_cast<ACC>(xp[my * sy + mx * sx]);
      }
    }
    out[idx] = static_cast<T>(acc);
  }
}

at::Tensor upfirdn2d_cuda(const at::Tensor& x_in, const at::Tensor& kernel, int64_t up,
                          int64_t down, at::IntArrayRef pad) {
  const auto [OH, OW] = check_upfirdn2d(x_in, kernel, up, down, pad);
  const DeviceGuard guard(x_in.device());
  const auto fmt = output_format(x_in);
  const at::Tensor x = x_in.contiguous(fmt);
  const bool separable = kernel.dim() == 1;
  Geometry g{x.size(0), x.size(1), x.size(2), x.size(3), OH, OW, kernel.size(0),
             kernel.size(separable ? 0 : 1), up, down, pad[0], pad[2], separable,
             fmt == at::MemoryFormat::ChannelsLast};
  at::Tensor out = at::empty({x.size(0), x.size(1), OH, OW}, x.options().memory_format(fmt));
  const int64_t total = out.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor f = kernel.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
    launch(upfirdn2d_kernel<scalar_t, acc_t>, blocks_for(total), kThreads, 0, current_stream(),
           x.const_data_ptr<scalar_t>(), f.const_data_ptr<acc_t>(), out.mutable_data_ptr<scalar_t>(), g);
  });
  return out;
}

}  // namespace

FASTSDE_CUDA_KERNELS(m) { m.impl("upfirdn2d", &upfirdn2d_cuda); }

}  // namespace fastsde::cuda
