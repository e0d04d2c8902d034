// Shared by the CPU and CUDA kernels: argument checks, output sizes and layout rules.
// The Python layer (fastsde/ops) runs the same checks first with the same wording, so a bad
// argument gets one message whichever backend was asked for; these guard direct torch.ops calls.
// Every source builds as C++17 too: torch 2.11 and older compile extensions with -std=c++17 (hence
// no structured bindings that a lambda captures, which nvcc only warns about and clang rejects).
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

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

// A dtype's name as Python writes it (float32, not Float).
inline std::string dtype_name(at::ScalarType t) {
  return std::string(c10::getDtypeNames(t).first);
}

// What was passed, as error messages name it (Python's describe).
inline std::string describe(const at::Tensor& t) {
  std::ostringstream s;
  s << "shape " << t.sizes() << ", dtype " << dtype_name(t.scalar_type()) << ", on " << t.device();
  return s.str();
}

// Fails unless t has the shape (shape_ok; `shape` as the message states it) and the dtype (nullopt:
// any of is_float_type's) on the device (nullopt: any) asked for, with the message of Python's
// check_tensor (fastsde/ops/_common.py): ValueError, or TypeError where the dtype is wrong.
inline void check_tensor(const char* op, const char* name, const at::Tensor& t, bool shape_ok,
                         const std::string& shape, std::optional<at::ScalarType> dtype,
                         std::optional<at::Device> device, const char* what) {
  const bool dtype_ok = dtype ? t.scalar_type() == *dtype : is_float_type(t.scalar_type());
  if (dtype_ok && shape_ok && (!device || t.device() == *device)) return;
  std::ostringstream want;
  want << what << " of shape " << shape << ", dtype "
       << (dtype ? dtype_name(*dtype) : "float32, float64, float16 or bfloat16");
  if (device) want << ", on " << *device;
  TORCH_CHECK_TYPE(dtype_ok, op, ": ", name, " must be ", want.str(), "; got ", describe(t));
  TORCH_CHECK_VALUE(false, op, ": ", name, " must be ", want.str(), "; got ", describe(t));
}

// t of exactly these sizes.
inline void check_tensor(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef shape,
                         std::optional<at::ScalarType> dtype, std::optional<at::Device> device,
                         const char* what = "a tensor") {
  std::ostringstream s;
  s << shape;
  check_tensor(op, name, t, t.sizes() == shape, s.str(), dtype, device, what);
}

// A non-empty float tensor laid out as `layout`: "[N, C, H, W]" has exactly 4 dims, "[N, C, ...]"
// at least 2.
inline void check_input(const char* op, const char* name, const at::Tensor& t, std::string_view layout,
                        std::optional<at::Device> device = std::nullopt) {
  const bool more = layout.find("...") != std::string_view::npos;
  const int64_t dims = std::count(layout.begin(), layout.end(), ',') + 1 - (more ? 1 : 0);
  const bool shape_ok = t.numel() > 0 && (more ? t.dim() >= dims : t.dim() == dims);
  check_tensor(op, name, t, shape_ok, std::string(layout), std::nullopt, device, "a non-empty tensor");
}

// Floor division for possibly negative numerators (pads may be negative); host and device.
inline C10_HOST_DEVICE int64_t floor_div(int64_t a, int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

// GroupNorm's 1 / sqrt(var + eps); NaN where the variance overflowed to Inf (inputs near float's
// range), as the reference (torch) gives then: a zero would make each output its channel's bias.
inline C10_HOST_DEVICE double group_inv_std(double var, double eps) {
  return var == INFINITY ? var - var : 1.0 / sqrt(var + eps);
}

// upfirdn2d output extent along one axis.
inline int64_t upfirdn_out_size(int64_t in, int64_t up, int64_t down, int64_t p0, int64_t p1,
                                int64_t k) {
  return floor_div(in * up + p0 + p1 - k, down) + 1;
}

inline std::array<int64_t, 2> check_upfirdn2d(const at::Tensor& x, const at::Tensor& f, int64_t up,
                                              int64_t down, at::IntArrayRef pad) {
  check_input("upfirdn2d", "x", x, "[N, C, H, W]");
  TORCH_CHECK_VALUE(f.dim() == 1 || f.dim() == 2,
                    "upfirdn2d: kernel must be a tensor of shape [k] (separable) or [kh, kw]; got ", describe(f));
  check_input("upfirdn2d", "kernel", f, f.dim() == 1 ? "[k]" : "[kh, kw]", x.device());
  TORCH_CHECK_VALUE(up >= 1, "upfirdn2d: up must be an integer >= 1, got ", up);
  TORCH_CHECK_VALUE(down >= 1, "upfirdn2d: down must be an integer >= 1, got ", down);
  TORCH_CHECK_VALUE(pad.size() == 4, "upfirdn2d: pad must have 4 entries (x0, x1, y0, y1), got ",
                    pad.size());
  const int64_t oh = upfirdn_out_size(x.size(2), up, down, pad[2], pad[3], f.size(0));
  const int64_t ow = upfirdn_out_size(x.size(3), up, down, pad[0], pad[1], f.size(f.dim() - 1));
  TORCH_CHECK_VALUE(oh >= 1 && ow >= 1, "upfirdn2d: pad ", pad, " with up=", up, ", down=", down,
                    " and a ", f.size(0), "x", f.size(f.dim() - 1), " kernel leaves an empty output for a ",
                    x.size(2), "x", x.size(3), " input");
  return {oh, ow};
}

inline void check_group_norm(const at::Tensor& x, int64_t num_groups,
                             const std::optional<at::Tensor>& weight,
                             const std::optional<at::Tensor>& bias,
                             const std::optional<at::Tensor>& offset, double eps = 0) {
  check_input("group_norm", "x", x, "[N, C, ...]");
  const int64_t C = x.size(1);
  TORCH_CHECK_VALUE(num_groups >= 1 && C % num_groups == 0, "group_norm: num_groups (", num_groups,
                    ") must be a positive integer that divides the number of channels (", C, ")");
  TORCH_CHECK_VALUE(eps >= 0, "group_norm: eps must be a number >= 0, got ", eps);
  if (weight.has_value()) check_tensor("group_norm", "weight", *weight, {C}, x.scalar_type(), x.device());
  if (bias.has_value()) check_tensor("group_norm", "bias", *bias, {C}, x.scalar_type(), x.device());
  if (offset.has_value()) {
    check_tensor("group_norm", "offset", *offset, {x.size(0), C}, x.scalar_type(), x.device());
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
  check_input(op, "x", x, "[B, ...]");
  check_tensor(op, "score", score, x.sizes(), x.scalar_type(), x.device());
  if (noise.has_value()) check_tensor(op, "noise", *noise, x.sizes(), x.scalar_type(), x.device());
  if (noise_key.has_value()) {
    TORCH_CHECK_VALUE(!noise.has_value(), op, ": pass noise or noise_key, not both");
    check_tensor(op, "noise_key", *noise_key, {x.size(0), 2}, at::kLong, x.device(),
                 "a tensor of (seed, offset) pairs");
  }
  for (const auto& [t, name] : coefs) check_tensor(op, name, *t, {x.size(0)}, std::nullopt, x.device());
}

// langevin_step needs its noise, from the tensor or the key.
inline void check_langevin(const at::Tensor& x, const at::Tensor& score,
                           const std::optional<at::Tensor>& noise,
                           const std::optional<at::Tensor>& noise_key, const at::Tensor& alpha) {
  check_step("langevin_step", x, score, noise, noise_key, {{&alpha, "alpha"}});
  TORCH_CHECK_VALUE(noise.has_value() || noise_key.has_value(), "langevin_step: noise or noise_key is required");
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
