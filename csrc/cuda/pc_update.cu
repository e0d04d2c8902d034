// Fused predictor and corrector updates on CUDA: one elementwise pass that reads x, score and
// noise once (or draws the noise from a Philox key) and writes x and x_mean once, in 16-byte
// vectors where the pointers' alignment allows. The Langevin step first reduces the per-sample
// norms (blocks per sample, in chunks for large samples; see split()), then a one-block kernel
// turns them into the per-sample coefficients.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "../common.h"
#include "cuda_utils.cuh"

namespace fastsde::cuda {
namespace {

// Element i (flat index) of the noise, sample n = i / D: z[i], or drawn from the sample's key.
template <typename T, typename ACC, typename Index>
__device__ __forceinline__ ACC noise_at(const T* __restrict__ z, const int64_t* __restrict__ key,
                                        Index i, Index n, Index D) {
  return key ? static_cast<ACC>(philox_normal(key[2 * n], key[2 * n + 1] + (i - n * D)))
             : static_cast<ACC>(z[i]);
}

// Runs of NV elements, which the host makes sure lie in one sample and start aligned.
template <typename T, typename ACC, typename Index, int NV>
__global__ void affine_kernel(const T* __restrict__ x, const T* __restrict__ s,
                              const T* __restrict__ z, const int64_t* __restrict__ key,
                              const ACC* __restrict__ a, const ACC* __restrict__ b,
                              const ACC* __restrict__ c, T* __restrict__ x_new,
                              T* __restrict__ x_mean, Index total, Divider<Index> D) {
  const bool noisy = z || key;
  for (Index i = (blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x) * NV; i < total;
       i += static_cast<Index>(gridDim.x) * blockDim.x * NV) {
    const Index n = D.div(i);
    const Vector<T, NV> xv = load_vector<NV>(x + i), sv = load_vector<NV>(s + i);
    Vector<T, NV> zv, mean_out, new_out;
    if (z) zv = load_vector<NV>(z + i);
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      const ACC m = a[n] * static_cast<ACC>(xv.v[k]) + b[n] * static_cast<ACC>(sv.v[k]);
      mean_out.v[k] = static_cast<T>(m);
      if (noisy) {
        const ACC zk = z ? static_cast<ACC>(zv.v[k]) : noise_at<T, ACC>(z, key, i + k, n, D.divisor);
        new_out.v[k] = static_cast<T>(m + c[n] * zk);
      } else {
        new_out.v[k] = mean_out.v[k];
      }
    }
    store_vector<NV>(x_mean + i, mean_out);
    store_vector<NV>(x_new + i, new_out);
  }
}

// Block per (sample, chunk), grid (B, chunks): squared norms of the chunk of the score and the
// noise, in double, into sq_s and sq_z [chunks, B].
template <typename T>
__global__ void norms_kernel(const T* __restrict__ s, const T* __restrict__ z,
                             const int64_t* __restrict__ key, double* __restrict__ sq_s,
                             double* __restrict__ sq_z, int64_t D, int64_t chunk) {
  const int64_t off = blockIdx.x * D, i0 = blockIdx.y * chunk, i1 = min(i0 + chunk, D);
  double as = 0, az = 0;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
    const double vs = static_cast<double>(s[off + i]);
    const double vz = noise_at<T, double, int64_t>(z, key, off + i, blockIdx.x, D);
    as += vs * vs;
    az += vz * vz;
  }
  const double ts = block_sum(as);
  const double tz = block_sum(az);
  if (threadIdx.x == 0) {
    sq_s[blockIdx.y * gridDim.x + blockIdx.x] = ts;
    sq_z[blockIdx.y * gridDim.x + blockIdx.x] = tz;
  }
}

// Norm of sample n from its S chunks' squared norms, added in order.
__device__ __forceinline__ double norm_of(const double* __restrict__ sq, int64_t n, int64_t B,
                                          int64_t S) {
  double t = 0;
  for (int64_t k = 0; k < S; ++k) t += sq[k * B + n];
  return sqrt(t);
}

// One block: eps_n = 2 alpha_n (snr |z| / |s|)^2, norms per sample or batch-averaged; writes the
// affine coefficients a = 1, b = eps, c = sqrt(2 eps).
template <typename ACC>
__global__ void langevin_coef_kernel(const double* __restrict__ sq_s, const double* __restrict__ sq_z,
                                     const ACC* __restrict__ alpha, ACC* __restrict__ a,
                                     ACC* __restrict__ b, ACC* __restrict__ c, int64_t B, int64_t S,
                                     double snr, bool per_sample) {
  double mean_s = 0, mean_z = 0;
  if (!per_sample) {
    double ps = 0, pz = 0;
    for (int64_t n = threadIdx.x; n < B; n += blockDim.x) {
      ps += norm_of(sq_s, n, B, S);
      pz += norm_of(sq_z, n, B, S);
    }
    mean_s = block_sum(ps) / B;
    mean_z = block_sum(pz) / B;
  }
  for (int64_t n = threadIdx.x; n < B; n += blockDim.x) {
    const double gn = per_sample ? norm_of(sq_s, n, B, S) : mean_s;
    const double nn = per_sample ? norm_of(sq_z, n, B, S) : mean_z;
    const double ratio = snr * nn / gn;
    const double eps = 2.0 * static_cast<double>(alpha[n]) * ratio * ratio;
    a[n] = ACC(1);
    b[n] = static_cast<ACC>(eps);
    c[n] = static_cast<ACC>(sqrt(2.0 * eps));
  }
}

std::tuple<at::Tensor, at::Tensor> run_affine(const StepArgs& s, const at::Tensor& a,
                                              const at::Tensor& b, const at::Tensor& c) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.x.scalar_type(), "pc_step_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc = acc_type(s.x);
    const at::Tensor ac = a.to(acc).contiguous(), bc = b.to(acc).contiguous(), cc = c.to(acc).contiguous();
    const int width = vector_width(sizeof(scalar_t), s.D,
                                   {s.x.const_data_ptr(), s.score.const_data_ptr(), s.z<scalar_t>(),
                                    s.x_new.const_data_ptr(), s.x_mean.const_data_ptr()});
    dispatch_index(s.x.numel(), [&](auto index) {
      using index_t = decltype(index);
      dispatch_width<scalar_t>(width, [&](auto nv) {
        constexpr int NV = decltype(nv)::value;
        launch(affine_kernel<scalar_t, acc_t, index_t, NV>, blocks_for(s.x.numel() / NV), kThreads,
               0, current_stream(), s.x.const_data_ptr<scalar_t>(), s.score.const_data_ptr<scalar_t>(),
               s.z<scalar_t>(), s.k(), ac.const_data_ptr<acc_t>(), bc.const_data_ptr<acc_t>(),
               cc.const_data_ptr<acc_t>(), s.x_new.mutable_data_ptr<scalar_t>(),
               s.x_mean.mutable_data_ptr<scalar_t>(), s.x.numel(), Divider<index_t>(s.D));
      });
    });
  });
  return s.outputs();
}

std::tuple<at::Tensor, at::Tensor> predictor_step_cuda(const at::Tensor& x, const at::Tensor& score,
                                                       const std::optional<at::Tensor>& noise,
                                                       const at::Tensor& a, const at::Tensor& b,
                                                       const at::Tensor& c,
                                                       const std::optional<at::Tensor>& noise_key) {
  check_step("predictor_step", x, score, noise, noise_key, {{&a, "a"}, {&b, "b"}, {&c, "c"}});
  const DeviceGuard guard(x.device());
  return run_affine(step_args(x, score, noise, noise_key), a, b, c);
}

std::tuple<at::Tensor, at::Tensor> langevin_step_cuda(const at::Tensor& x, const at::Tensor& score,
                                                      const std::optional<at::Tensor>& noise,
                                                      const at::Tensor& alpha, double snr,
                                                      bool per_sample,
                                                      const std::optional<at::Tensor>& noise_key) {
  check_langevin(x, score, noise, noise_key, alpha);
  const DeviceGuard guard(x.device());
  const StepArgs s = step_args(x, score, noise, noise_key);
  const int64_t B = s.B;
  const auto parts = split(B, s.D);
  const int64_t S = parts.first, chunk = parts.second;
  at::Tensor sq = at::empty({2, S, B}, x.options().dtype(at::kDouble));
  at::Tensor coef = at::empty({3, B}, x.options().dtype(acc_type(x)));
  const auto stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "langevin_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch(norms_kernel<scalar_t>, dim3(B, S), kThreads, 0, stream,
           s.score.const_data_ptr<scalar_t>(), s.z<scalar_t>(), s.k(), sq.mutable_data_ptr<double>(),
           sq.mutable_data_ptr<double>() + S * B, s.D, chunk);
    const at::Tensor al = alpha.to(acc_type(x)).contiguous();
    acc_t* cp = coef.mutable_data_ptr<acc_t>();
    launch(langevin_coef_kernel<acc_t>, 1, 1024, 0, stream,
           sq.const_data_ptr<double>(), sq.const_data_ptr<double>() + S * B, al.const_data_ptr<acc_t>(),
           cp, cp + B, cp + 2 * B, B, S, snr, per_sample);
  });
  return run_affine(s, coef[0], coef[1], coef[2]);
}

}  // namespace

FASTSDE_CUDA_KERNELS(m) {
  m.impl("predictor_step", &predictor_step_cuda);
  m.impl("langevin_step", &langevin_step_cuda);
}

}  // namespace fastsde::cuda
