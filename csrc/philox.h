// Counter-based normal noise drawn inside the kernels, host and device: Philox-4x32-10 turned
// into a float32 normal exactly as Triton's tl.randn(seed, counter). The specification, with the
// steps spelled out, is fastsde/ops/philox.py.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace fastsde {

C10_HOST_DEVICE inline uint32_t mulhi32(uint32_t a, uint32_t b) {
#ifdef __CUDA_ARCH__
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

C10_HOST_DEVICE inline float philox_uniform(uint32_t w) {
  const int32_t v = static_cast<int32_t>(w);
  return static_cast<float>(v < 0 ? -(v + 1) : v) * 4.6566127342e-10f;
}

// Element `counter` of the stream `seed`: tl.randn(seed, counter).
C10_HOST_DEVICE inline float philox_normal(int64_t seed, int64_t counter) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(static_cast<uint64_t>(counter) >> 32);
  uint32_t c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(static_cast<uint64_t>(seed) >> 32);
  for (int r = 0; r < 10; ++r) {
    const uint32_t n0 = mulhi32(0xCD9E8D57u, c2) ^ c1 ^ k0;
    const uint32_t n2 = mulhi32(0xD2511F53u, c0) ^ c3 ^ k1;
    c1 = 0xCD9E8D57u * c2;
    c3 = 0xD2511F53u * c0;
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  const float u1 = fmaxf(philox_uniform(c0), 1e-7f);
  const float theta = 6.283185307179586f * philox_uniform(c1);
  return sqrtf(-2.0f * logf(u1)) * cosf(theta);
}

}  // namespace fastsde
