// Helpers for CPU inner loops: 8-wide float vectors (GCC/Clang vector extensions, so the same
// source becomes AVX2 or SSE code), a branch-free exp that works on them and on scalars, and an ISA
// switch that runs an AVX2+FMA build of a loop where the CPU has it while the rest of the
// extension is built for the baseline ISA, so one build runs everywhere.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace fastsde::cpu {

typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));

// Loads and stores of 8 floats, or of one value of any type converted to/from its float math type.
template <typename V, typename T>
inline __attribute__((always_inline)) V load(const T* p) {
  if constexpr (std::is_same_v<V, f32x8>) {
    static_assert(std::is_same_v<T, float>, "8-wide loads read float data only");
    V v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  } else {
    return static_cast<V>(*p);
  }
}

template <typename V, typename T>
inline __attribute__((always_inline)) void store(T* p, V v) {
  if constexpr (std::is_same_v<V, f32x8>) {
    static_assert(std::is_same_v<T, float>, "8-wide stores write float data only");
    std::memcpy(p, &v, sizeof(v));
  } else {
    *p = static_cast<T>(v);
  }
}

// Runs f(i, V{}) over [0, n): 8 at a time with V = f32x8 where T is float, then one at a time
// with V = ACC (the tail, and every element for other types). f must be always_inline: a lambda
// that GCC leaves out of line is compiled for the baseline ISA, not with_isa's AVX2 (3-10x slower,
// and whether it does so changes from one build to the next).
template <typename T, typename ACC, typename F>
inline __attribute__((always_inline)) void simd_for(int64_t n, F f) {
  int64_t i = 0;
  if constexpr (std::is_same_v<T, float>) {
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
