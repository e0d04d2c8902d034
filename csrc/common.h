// Shared by the CPU and CUDA kernels: argument checks, output sizes and layout rules.
// The Python layer (fastsde/ops) runs the same checks first with the same wording, so a bad
// argument gets one message whichever backend was asked for; these guard direct torch.ops calls.
// Every source builds as C++17 too: torch 2.11 and older compile extensions with -std=c++17 (hence
// no structured bindings that a lambda captures, which nvcc only warns about and clang rejects).
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <array>

#include "philox.h"

namespace fastsde {

// Outputs are channels_last when the input is (and is not also plain contiguous), else contiguous.
inline at::MemoryFormat output_format(const at::Tensor& x) {
  if (x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    return at::MemoryFormat::ChannelsLast;
  }
  return at::MemoryFormat::Contiguous;
}

// The dtype kernels accumulate in (and store statistics and coefficients in) for x's dtype.
inline at::ScalarType acc_type(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline bool is_float_type(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(is_float_type(t.scalar_type()), name,
              " must be float32, float64, float16 or bfloat16, got ", t.scalar_type());
}

inline void check_same_device(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK(t.device() == x.device(), name, " must be on the same device as x (", x.device(),
              "), got ", t.device());
}

inline void check_nonempty(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.numel() > 0, name, " must not be empty, got shape ", x.sizes());
}

// Floor division for possibly negative numerators (pads may be negative); host and device.
inline C10_HOST_DEVICE int64_t floor_div(int64_t a, int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

// upfirdn2d output extent along one axis.
inline int64_t upfirdn_out_size(int64_t in, int64_t up, int64_t down, int64_t p0, int64_t p1,
                                int64_t k) {
  return floor_div(in * up + p0 + p1 - k, down) + 1;
}

inline std::array<int64_t, 2> check_upfirdn2d(const at::Tensor& x, const at::Tensor& f, int64_t up,
                                              int64_t down, at::IntArrayRef pad) {
  TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be 4-D [N, C, H, W], got shape ", x.sizes());
  check_float(x, "upfirdn2d: x");
  check_nonempty(x, "upfirdn2d: x");
  TORCH_CHECK(f.dim() == 1 || f.dim() == 2,
              "upfirdn2d: kernel must be 1-D [k] (separable) or 2-D [kh, kw], got shape ", f.sizes());
  check_float(f, "upfirdn2d: kernel");
  check_nonempty(f, "upfirdn2d: kernel");
  check_same_device(f, x, "upfirdn2d: kernel");
  TORCH_CHECK(up >= 1, "upfirdn2d: up must be >= 1, got ", up);
  TORCH_CHECK(down >= 1, "upfirdn2d: down must be >= 1, got ", down);
  TORCH_CHECK(pad.size() == 4, "upfirdn2d: pad must have 4 entries (x0, x1, y0, y1), got ",
              pad.size());
  const int64_t oh = upfirdn_out_size(x.size(2), up, down, pad[2], pad[3], f.size(0));
  const int64_t ow = upfirdn_out_size(x.size(3), up, down, pad[0], pad[1], f.size(f.dim() - 1));
  TORCH_CHECK(oh >= 1 && ow >= 1, "upfirdn2d: pad ", pad, " with up=", up, ", down=", down,
              " and a ", f.size(0), "x", f.size(f.dim() - 1), " kernel leaves an empty output for a ",
              x.size(2), "x", x.size(3), " input");
  return {oh, ow};
}

inline void check_group_norm(const at::Tensor& x, int64_t num_groups,
                             const std::optional<at::Tensor>& weight,
                             const std::optional<at::Tensor>& bias,
                             const std::optional<at::Tensor>& offset) {
  TORCH_CHECK(x.dim() >= 2, "group_norm: x must be at least 2-D [N, C, ...], got shape ", x.sizes());
  check_float(x, "group_norm: x");
  check_nonempty(x, "group_norm: x");
  const int64_t C = x.size(1);
  TORCH_CHECK(num_groups >= 1 && C % num_groups == 0, "group_norm: num_groups (", num_groups,
              ") must be positive and divide the number of channels (", C, ")");
  for (const auto& [t, name] : {std::make_pair(weight, "group_norm: weight"),
                                std::make_pair(bias, "group_norm: bias")}) {
    if (!t.has_value()) continue;
    TORCH_CHECK(t->dim() == 1 && t->size(0) == C, name, " must have shape [", C, "], got ",
                t->sizes());
    check_same_device(*t, x, name);
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), name, " must have the dtype of x (",
                x.scalar_type(), "), got ", t->scalar_type());
  }
  if (offset.has_value()) {
    TORCH_CHECK(offset->dim() == 2 && offset->size(0) == x.size(0) && offset->size(1) == C,
                "group_norm: offset must have shape [", x.size(0), ", ", C, "], got ", offset->sizes());
    check_same_device(*offset, x, "group_norm: offset");
    TORCH_CHECK(offset->scalar_type() == x.scalar_type(), "group_norm: offset must have the dtype of x (",
                x.scalar_type(), "), got ", offset->scalar_type());
  }
}

// Checks the backward's inputs; returns the number of groups (from the saved statistics).
inline int64_t check_group_norm_backward(const at::Tensor& grad_y, const at::Tensor& x,
                                         const at::Tensor& mean, const at::Tensor& rstd,
                                         const std::optional<at::Tensor>& weight,
                                         const std::optional<at::Tensor>& bias,
                                         const std::optional<at::Tensor>& offset) {
  const int64_t G = mean.dim() == 2 ? mean.size(1) : 0;
  check_group_norm(x, G, weight, bias, offset);
  TORCH_CHECK(grad_y.sizes() == x.sizes() && grad_y.scalar_type() == x.scalar_type() &&
                  grad_y.device() == x.device(),
              "group_norm_backward: grad_y must match x in shape, dtype and device");
  const auto stat_type = acc_type(x);
  TORCH_CHECK(mean.sizes() == rstd.sizes() && mean.size(0) == x.size(0) &&
                  mean.scalar_type() == stat_type && rstd.scalar_type() == stat_type &&
                  mean.device() == x.device() && rstd.device() == x.device(),
              "group_norm_backward: mean and rstd must be [N, G] ", stat_type,
              " tensors on the device of x");
  return G;
}

// x, score and (if given) noise share shape, dtype and device; a noise key is int64 [B, 2] on the
// device, never together with noise; coefficients are [B] floats.
inline void check_step(const char* op, const at::Tensor& x, const at::Tensor& score,
                       const std::optional<at::Tensor>& noise,
                       const std::optional<at::Tensor>& noise_key,
                       std::initializer_list<std::pair<const at::Tensor*, const char*>> coefs) {
  TORCH_CHECK(x.dim() >= 1, op, ": x must be at least 1-D [B, ...], got shape ", x.sizes());
  check_float(x, op);
  check_nonempty(x, op);
  auto same = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.sizes() == x.sizes(), op, ": ", name, " must have the shape of x (", x.sizes(),
                "), got ", t.sizes());
    TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": ", name, " must have the dtype of x (",
                x.scalar_type(), "), got ", t.scalar_type());
    TORCH_CHECK(t.device() == x.device(), op, ": ", name, " must be on the device of x (",
                x.device(), "), got ", t.device());
  };
  same(score, "score");
  if (noise.has_value()) same(*noise, "noise");
  if (noise_key.has_value()) {
    TORCH_CHECK(!noise.has_value(), op, ": pass noise or noise_key, not both");
    const at::Tensor& k = *noise_key;
    TORCH_CHECK(k.scalar_type() == at::kLong && k.dim() == 2 && k.size(0) == x.size(0) && k.size(1) == 2,
                op, ": noise_key must be an int64 tensor of shape [", x.size(0),
                ", 2] (seed, offset per sample), got ", k.scalar_type(), " of shape ", k.sizes());
    TORCH_CHECK(k.device() == x.device(), op, ": noise_key must be on the device of x (", x.device(),
                "), got ", k.device());
  }
  for (const auto& [t, name] : coefs) {
    TORCH_CHECK(t->dim() == 1 && t->size(0) == x.size(0), op, ": ", name, " must have shape [",
                x.size(0), "], got ", t->sizes());
    TORCH_CHECK(is_float_type(t->scalar_type()), op, ": ", name, " must be a float tensor, got ",
                t->scalar_type());
    TORCH_CHECK(t->device() == x.device(), op, ": ", name, " must be on the device of x (",
                x.device(), "), got ", t->device());
  }
}

// langevin_step needs its noise, from the tensor or the key.
inline void check_langevin(const at::Tensor& x, const at::Tensor& score,
                           const std::optional<at::Tensor>& noise,
                           const std::optional<at::Tensor>& noise_key, const at::Tensor& alpha) {
  check_step("langevin_step", x, score, noise, noise_key, {{&alpha, "alpha"}});
  TORCH_CHECK(noise.has_value() || noise_key.has_value(), "langevin_step: noise or noise_key is required");
}

// An offset [N, C] read where it lies, at any strides: element (n, c) is p[n * sn + c * sc] (p null
// without one). fold_constants' time embeddings are column slices of one [N, sum C] product, which
// a contiguous copy would cost a kernel each.
template <typename T>
struct OffsetView {
  const T* p;
  int64_t sn, sc;
};

// The operands of a GroupNorm call as the kernels take them: x as [N, C, L] contiguous data, or as
// [N, L, C] (cl) where x is channels_last, the affine parameters, the offset [N, C] as given
// (undefined when absent), and what the outputs look like.
struct GroupNormArgs {
  at::Tensor x, weight, bias, offset;
  int64_t N, C, L, G;
  at::MemoryFormat fmt;
  bool cl;

  template <typename T>
  const T* w() const { return weight.defined() ? weight.const_data_ptr<T>() : nullptr; }
  template <typename T>
  const T* b() const { return bias.defined() ? bias.const_data_ptr<T>() : nullptr; }
  template <typename T>
  OffsetView<T> o() const {
    if (!offset.defined()) return {nullptr, 0, 0};
    return {offset.const_data_ptr<T>(), offset.stride(0), offset.stride(1)};
  }
  at::Tensor empty(int64_t rows, int64_t cols) const {
    return at::empty({rows, cols}, x.options().dtype(acc_type(x)));
  }
};

inline GroupNormArgs group_norm_args(const at::Tensor& x, int64_t G,
                                     const std::optional<at::Tensor>& weight,
                                     const std::optional<at::Tensor>& bias,
                                     const std::optional<at::Tensor>& offset) {
  const int64_t N = x.size(0), C = x.size(1);
  const at::MemoryFormat fmt = output_format(x);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const auto dense = [](const std::optional<at::Tensor>& t) { return t.has_value() ? t->contiguous() : at::Tensor(); };
  return {x.contiguous(cl ? fmt : at::MemoryFormat::Contiguous), dense(weight), dense(bias),
          offset.has_value() ? *offset : at::Tensor(),
          N, C, x.numel() / (N * C), G, fmt, cl};
}

// Operands of a fused sampler step as the kernels take them: [B, D] contiguous data (so an
// element's index within its sample is its NCHW index, the Philox counter offset), the noise key
// (undefined without one) and the outputs (x_new, x_mean), allocated.
struct StepArgs {
  at::Tensor x, score, noise, key, x_new, x_mean;
  int64_t B, D;
  at::MemoryFormat fmt;

  template <typename T>
  const T* z() const { return noise.defined() ? noise.const_data_ptr<T>() : nullptr; }
  const int64_t* k() const { return key.defined() ? key.const_data_ptr<int64_t>() : nullptr; }
  std::tuple<at::Tensor, at::Tensor> outputs() const {
    return {x_new.contiguous(fmt), x_mean.contiguous(fmt)};
  }
};

inline StepArgs step_args(const at::Tensor& x_in, const at::Tensor& score,
                          const std::optional<at::Tensor>& noise,
                          const std::optional<at::Tensor>& noise_key) {
  const at::Tensor x = x_in.contiguous();
  return {x, score.contiguous(), noise.has_value() ? noise->contiguous() : at::Tensor(),
          noise_key.has_value() ? noise_key->contiguous() : at::Tensor(),
          at::empty_like(x), at::empty_like(x), x.size(0), x.numel() / x.size(0),
          output_format(x_in)};
}

}  // namespace fastsde
