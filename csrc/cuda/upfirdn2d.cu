// upfirdn2d on CUDA: one thread per output sample, polyphase (only the input samples that zero
// insertion leaves non-zero are read), float32 accumulation, NCHW or channels_last (where
// neighbouring threads take neighbouring channels of a pixel). Output coordinates come from fast
// divisions by invariants (32-bit indices where they fit); `up` is a compile-time constant for
// the factors NCSN++ uses (1 and 2), so its polyphase divisions become shifts. A straightforward
// first kernel; the tiled shared-memory version is planned work.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "../common.h"
#include "cuda_utils.cuh"

namespace fastsde::cuda {
namespace {

template <typename Index>
struct Geometry {
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

at::Tensor upfirdn2d_cuda(const at::Tensor& x_in, const at::Tensor& kernel, int64_t up,
                          int64_t down, at::IntArrayRef pad) {
  const auto [OH, OW] = check_upfirdn2d(x_in, kernel, up, down, pad);
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
