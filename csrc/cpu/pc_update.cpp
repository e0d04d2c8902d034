// Fused predictor and corrector updates on the CPU: one pass that reads x, score and noise once
// (or draws the noise from a Philox key) and writes x and x_mean once. Per-sample coefficients
// are tiny [B] tensors.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <cmath>

#include "../common.h"
#include "simd.h"

namespace fastsde::cpu {
namespace {

// Noise element i of sample n: z[n D + i], or drawn from the sample's key (seed, offset).
template <typename T, typename ACC>
inline ACC noise_at(const T* z, const int64_t* key, int64_t n, int64_t D, int64_t i) {
  return key ? static_cast<ACC>(philox_normal(key[2 * n], key[2 * n + 1] + i))
             : static_cast<ACC>(z[n * D + i]);
}

// x_mean = a x + b s; x_new = x_mean + c z, over a [B, D] view, with per-sample a, b, c; z from
// the tensor z, the key, or neither (no noise term).
template <typename T>
void affine_kernel(const T* x, const T* s, const T* z, const int64_t* key,
                   const at::opmath_type<T>* a, const at::opmath_type<T>* b,
                   const at::opmath_type<T>* c, T* x_new, T* x_mean, int64_t B, int64_t D) {
  using acc_t = at::opmath_type<T>;
  at::parallel_for(0, B * D, 16384, [&](int64_t begin, int64_t end) {
    with_isa([&]() __attribute__((always_inline)) {
      for (int64_t i = begin; i < end;) {
        const int64_t n = i / D, stop = std::min(end, (n + 1) * D);
        const acc_t an = a[n], bn = b[n], cn = c[n];
        if (key) {  // a loop of its own, so that the tensor-noise loop stays vectorisable
          for (; i < stop; ++i) {
            const acc_t m = an * static_cast<acc_t>(x[i]) + bn * static_cast<acc_t>(s[i]);
            x_mean[i] = static_cast<T>(m);
            x_new[i] = static_cast<T>(m + cn * noise_at<T, acc_t>(z, key, n, D, i - n * D));
          }
        }
        for (; i < stop; ++i) {
          const acc_t m = an * static_cast<acc_t>(x[i]) + bn * static_cast<acc_t>(s[i]);
          x_mean[i] = static_cast<T>(m);
          x_new[i] = static_cast<T>(z ? m + cn * static_cast<acc_t>(z[i]) : m);
        }
      }
    });
  });
}

// Per-sample Euclidean norms of a [B, D] tensor (or of the noise of a key), accumulated in double.
template <typename T>
std::vector<double> sample_norms(const T* v, const int64_t* key, int64_t B, int64_t D) {
  std::vector<double> out(B);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      double acc = 0;
      for (int64_t i = 0; i < D; ++i) {
        const double e = noise_at<T, double>(v, key, n, D, i);
        acc += e * e;
      }
      out[n] = std::sqrt(acc);
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> run_affine(const StepArgs& s, const at::Tensor& a,
                                              const at::Tensor& b, const at::Tensor& c) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.x.scalar_type(), "pc_step_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc = acc_type(s.x);
    const at::Tensor ac = a.to(acc).contiguous(), bc = b.to(acc).contiguous(), cc = c.to(acc).contiguous();
    affine_kernel<scalar_t>(s.x.const_data_ptr<scalar_t>(), s.score.const_data_ptr<scalar_t>(),
                            s.z<scalar_t>(), s.k(), ac.const_data_ptr<acc_t>(), bc.const_data_ptr<acc_t>(),
                            cc.const_data_ptr<acc_t>(), s.x_new.mutable_data_ptr<scalar_t>(),
                            s.x_mean.mutable_data_ptr<scalar_t>(), s.B, s.D);
  });
  return s.outputs();
}

std::tuple<at::Tensor, at::Tensor> predictor_step_cpu(const at::Tensor& x, const at::Tensor& score,
                                                      const std::optional<at::Tensor>& noise,
                                                      const at::Tensor& a, const at::Tensor& b,
                                                      const at::Tensor& c,
                                                      const std::optional<at::Tensor>& noise_key) {
  check_step("predictor_step", x, score, noise, noise_key, {{&a, "a"}, {&b, "b"}, {&c, "c"}});
  return run_affine(step_args(x, score, noise, noise_key), a, b, c);
}

// The step size needs the norms before the update, so the norms are a first, read-only pass; the
// update is then the affine step with a = 1, b = eps, c = sqrt(2 eps).
std::tuple<at::Tensor, at::Tensor> langevin_step_cpu(const at::Tensor& x, const at::Tensor& score,
                                                     const std::optional<at::Tensor>& noise,
                                                     const at::Tensor& alpha, double snr,
                                                     bool per_sample,
                                                     const std::optional<at::Tensor>& noise_key) {
  check_langevin(x, score, noise, noise_key, alpha);
  const StepArgs s = step_args(x, score, noise, noise_key);
  const int64_t B = s.B;
  std::vector<double> gn, nn;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "langevin_norms", [&] {
    gn = sample_norms(s.score.const_data_ptr<scalar_t>(), nullptr, B, s.D);
    nn = sample_norms(s.z<scalar_t>(), s.k(), B, s.D);
  });
  if (!per_sample) {
    double g = 0, n = 0;
    for (int64_t i = 0; i < B; ++i) g += gn[i], n += nn[i];
    std::fill(gn.begin(), gn.end(), g / B);
    std::fill(nn.begin(), nn.end(), n / B);
  }
  const at::Tensor al = alpha.to(at::kDouble).contiguous();
  at::Tensor eps = at::empty({B}, al.options());
  double* e = eps.mutable_data_ptr<double>();
  for (int64_t i = 0; i < B; ++i) {
    const double ratio = snr * nn[i] / gn[i];
    e[i] = 2.0 * al.const_data_ptr<double>()[i] * ratio * ratio;
  }
  return run_affine(s, at::ones_like(eps), eps, (2.0 * eps).sqrt());
}

}  // namespace

TORCH_LIBRARY_IMPL(fastsde, CPU, m) {
  m.impl("predictor_step", &predictor_step_cpu);
  m.impl("langevin_step", &langevin_step_cpu);
}

}  // namespace fastsde::cpu
