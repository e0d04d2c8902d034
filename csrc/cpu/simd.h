// Helpers for CPU inner loops: 8-wide float vectors (GCC/Clang vector extensions, so the same
// source becomes AVX2 or SSE code) that load and store float, float16 and bfloat16 data, a
// branch-free exp that works on them and on scalars, and an ISA switch that runs an AVX2+FMA build
// of a loop where the CPU has it while the rest of the extension is built for the baseline ISA, so
// one build runs everywhere.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace fastsde::cpu {

typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef uint16_t u16x8 __attribute__((vector_size(16)));

// The types whose data loads into and stores from f32x8 (math in float, 8 lanes).
template <typename T>
constexpr bool kVectorized = std::is_same_v<T, float> || std::is_same_v<T, c10::Half> ||
                             std::is_same_v<T, c10::BFloat16>;

// 16-bit floats to and from float, 8 at a time, bit for bit as c10's scalar conversions (round to
// nearest even; subnormals, infinities and NaN kept), in plain vector arithmetic: no F16C or
// AVX512-BF16 instructions, so the baseline build compiles it too. bfloat16 is a float's upper half.
inline __attribute__((always_inline)) f32x8 widen_bf16(u16x8 h) {
  return __builtin_bit_cast(f32x8, __builtin_convertvector(h, u32x8) << 16);
}

inline __attribute__((always_inline)) u16x8 narrow_bf16(f32x8 v) {
  const u32x8 u = __builtin_bit_cast(u32x8, v);
  const u32x8 rounded = (u + ((u >> 16) & 1u) + 0x7FFFu) >> 16;
  return __builtin_convertvector(v != v ? u32x8{} + 0x7FC0u : rounded, u16x8);
}

// float16: the exponent rebias by a float multiplication (normals) or a magic-number subtraction
// (subnormals), and back by scalings that make the FPU round to float16's precision (the
// method of c10's fp16_ieee_to/from_fp32_value).
inline __attribute__((always_inline)) f32x8 widen_half(u16x8 h) {
  const u32x8 w = __builtin_convertvector(h, u32x8) << 16;
  const u32x8 two_w = w + w;
  const f32x8 normal = __builtin_bit_cast(f32x8, (two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const f32x8 subnormal = __builtin_bit_cast(f32x8, (two_w >> 17) | (126u << 23)) - 0.5f;
  const u32x8 bits = two_w < (1u << 27) ? __builtin_bit_cast(u32x8, subnormal) : __builtin_bit_cast(u32x8, normal);
  return __builtin_bit_cast(f32x8, (w & 0x80000000u) | bits);
}

inline __attribute__((always_inline)) u16x8 narrow_half(f32x8 v) {
  const u32x8 w = __builtin_bit_cast(u32x8, v);
  const u32x8 shl1_w = w + w;
  f32x8 base = (__builtin_bit_cast(f32x8, w & 0x7FFFFFFFu) * 0x1.0p+112f) * 0x1.0p-110f;
  u32x8 bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? u32x8{} + 0x71000000u : bias;
  base = __builtin_bit_cast(f32x8, (bias >> 1) + 0x07800000u) + base;
  const u32x8 bits = __builtin_bit_cast(u32x8, base);
  const u32x8 nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  const u32x8 out = ((w & 0x80000000u) >> 16) | (shl1_w > 0xFF000000u ? u32x8{} + 0x7E00u : nonsign);
  return __builtin_convertvector(out, u16x8);
}

// Loads and stores of 8 values of a kVectorized type as f32x8, or of one value of any type
// converted to/from its math type.
template <typename V, typename T>
inline __attribute__((always_inline)) V load(const T* p) {
  if constexpr (std::is_same_v<V, f32x8>) {
    static_assert(kVectorized<T>, "8-wide loads read float, float16 or bfloat16 data only");
    if constexpr (std::is_same_v<T, float>) {
      V v;
      std::memcpy(&v, p, sizeof(v));
      return v;
    } else {
      u16x8 h;
      std::memcpy(&h, p, sizeof(h));
      return std::is_same_v<T, c10::Half> ? widen_half(h) : widen_bf16(h);
    }
  } else {
    return static_cast<V>(*p);
  }
}

template <typename V, typename T>
inline __attribute__((always_inline)) void store(T* p, V v) {
  if constexpr (std::is_same_v<V, f32x8>) {
    static_assert(kVectorized<T>, "8-wide stores write float, float16 or bfloat16 data only");
    if constexpr (std::is_same_v<T, float>) {
      std::memcpy(p, &v, sizeof(v));
    } else {
      const u16x8 h = std::is_same_v<T, c10::Half> ? narrow_half(v) : narrow_bf16(v);
      std::memcpy(p, &h, sizeof(h));
    }
  } else {
    *p = static_cast<T>(v);
  }
}

// Runs f(i, V{}) over [0, n): 8 at a time with V = f32x8 where T is kVectorized, then one at a
// time with V = ACC (the tail, and every element for other types). f must be always_inline: a
// lambda that GCC leaves out of line is compiled for the baseline ISA, not with_isa's AVX2 (3-10x
// slower, and whether it does so changes from one build to the next).
template <typename T, typename ACC, typename F>
inline __attribute__((always_inline)) void simd_for(int64_t n, F f) {
  int64_t i = 0;
  if constexpr (kVectorized<T>) {
    for (; i + 8 <= n; i += 8) f(i, f32x8{});
  }
  for (; i < n; ++i) f(i, ACC{});
}

inline __attribute__((always_inline)) float hsum(f32x8 v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}
inline __attribute__((always_inline)) float hsum(float v) { return v; }
inline __attribute__((always_inline)) double hsum(double v) { return v; }

// exp for float scalars and vectors: Cody-Waite range reduction to |r| <= ln2/2 and a degree-5
// polynomial fitted for relative error there (3e-7 in float arithmetic, a few ulp, three
// operations fewer than Cephes' degree-7 form: SiLU's exp bounds the fused GroupNorm+SiLU);
// arguments are clamped to [-87, 88]; NaN stays NaN. double uses libm.
template <typename V>
inline __attribute__((always_inline)) V exp_approx(V x) {
  if constexpr (std::is_same_v<V, double>) {
    return __builtin_exp(x);
  } else {
    x = x < -87.0f ? V{} - 87.0f : x;
    x = x > 88.0f ? V{} + 88.0f : x;
    const float round_magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    const V k = (x * 1.44269504088896341f + round_magic) - round_magic;
    V r = x - k * 0.693359375f;
    r = r + k * 2.12194440e-4f;
    V p = r * 8.29765178e-3f + 4.19153832e-2f;
    p = p * r + 1.66675746e-1f;
    p = p * r + 4.99988943e-1f;
    p = p * r + 9.99999702e-1f;
    p = p * r + 1.00000012f;
    if constexpr (std::is_same_v<V, f32x8>) {
      const i32x8 bits = (__builtin_convertvector(k, i32x8) + 127) << 23;
      return p * __builtin_bit_cast(f32x8, bits);
    } else {
      const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
      return p * __builtin_bit_cast(float, bits);
    }
  }
}

template <typename V>
inline __attribute__((always_inline)) V sigmoid(V x) {
  return 1.0f / (1.0f + exp_approx(V{} - x));
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FASTSDE_AVX2 __attribute__((target("avx2,fma")))
inline bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#else
#define FASTSDE_AVX2
inline bool has_avx2() { return false; }
#endif

// Runs f, an always_inline lambda, compiled for AVX2+FMA where the CPU has them.
template <typename F>
FASTSDE_AVX2 void run_avx2(const F& f) { f(); }

template <typename F>
inline void with_isa(const F& f) {
  if (has_avx2()) run_avx2(f); else f();
}

}  // namespace fastsde::cpu
