// Small pieces shared by the CUDA kernels: launches, launch geometry and a block-wide sum.
// The kernels launch, guard the device and register only through these, so that the same
// sources also build for the host emulation of emulation.h (FASTSDE_CUDA_EMULATION).
#pragma once

#include <cstddef>

namespace fastsde::cuda {
// Without cudaFuncSetAttribute, a block may have this much dynamic shared memory.
constexpr std::size_t kMaxSharedMemory = 48 * 1024;
}  // namespace fastsde::cuda

#ifdef FASTSDE_CUDA_EMULATION
#include "emulation.h"
#else
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <utility>

namespace fastsde::cuda {

using DeviceGuard = c10::cuda::CUDAGuard;

inline cudaStream_t current_stream() { return at::cuda::getCurrentCUDAStream(); }

inline int multiprocessor_count() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

// The block's dynamic shared memory (the launch's smem bytes), 16-byte aligned.
template <typename T>
__device__ __forceinline__ T* shared_memory() {
  extern __shared__ __align__(16) unsigned char dynamic_shared[];
  return reinterpret_cast<T*>(dynamic_shared);
}

// A misaligned vector access faults on a GPU; the emulation checks for it instead.
__device__ __forceinline__ void check_aligned(const void*, std::size_t) {}

// kernel<<<grid, block, smem, stream>>>(args...), then the launch check.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream,
            Args&&... args) {
  kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace fastsde::cuda

#define FASTSDE_CUDA_KERNELS(m) TORCH_LIBRARY_IMPL(fastsde, CUDA, m)
#endif

#include <ATen/cuda/detail/IntegerDivider.cuh>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>

namespace fastsde::cuda {

// Division by a divisor fixed at launch: a multiply and a shift for 32-bit indices, plain division
// for 64-bit ones. Per-element 64-bit divisions would cost elementwise kernels more than their
// memory traffic.
template <typename Index>
using Divider = at::cuda::detail::IntDivider<Index>;

// f(Index{}) with Index = uint32_t where every index below `numel` fits in 31 bits (what Divider's
// fast path needs), else int64_t.
template <typename F>
void dispatch_index(int64_t numel, F&& f) {
  if (numel <= INT32_MAX) {
    f(uint32_t{});
  } else {
    f(int64_t{});
  }
}

constexpr int kThreads = 256;

// N elements of T moved as one access (16 bytes: one 128-bit load or store) where p is aligned
// to the vector's size.
template <typename T, int N>
struct alignas(sizeof(T) * N) Vector {
  T v[N];
};

// Elements (of element_size bytes) per vector access, 16 bytes' worth, of data at these pointers read
// in runs of `run` elements that a vector must not cross; 1 unless every pointer is 16-byte aligned
// and run a multiple.
inline int vector_width(int64_t element_size, int64_t run, std::initializer_list<const void*> pointers) {
  const int n = static_cast<int>(16 / element_size);
  if (run % n != 0) return 1;
  for (const void* p : pointers) {
    if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0) return 1;
  }
  return n;
}

// f(std::integral_constant<int, n>{}) for n, 1 or 16 / sizeof(T) (what vector_width returns).
template <typename T, typename F>
void dispatch_width(int n, F&& f) {
  if (n == 1) {
    f(std::integral_constant<int, 1>{});
  } else {
    f(std::integral_constant<int, 16 / sizeof(T)>{});
  }
}

template <int N, typename T>
__device__ __forceinline__ Vector<T, N> load_vector(const T* p) {
  check_aligned(p, sizeof(Vector<T, N>));
  return *reinterpret_cast<const Vector<T, N>*>(p);
}

template <int N, typename T>
__device__ __forceinline__ void store_vector(T* p, const Vector<T, N>& v) {
  check_aligned(p, sizeof(Vector<T, N>));
  *reinterpret_cast<Vector<T, N>*>(p) = v;
}

// A reduction over a large extent (a 1024x1024 image) in one block per row would leave most of
// the GPU idle when there are few rows (a small batch), so it is split into chunks:
// {chunks, chunk length}, enough chunks for rows x chunks blocks to fill the GPU twice over, each
// of at least min_len elements and a multiple of align (a vector width), none empty.
constexpr int64_t kMinChunk = 4096;

inline std::pair<int64_t, int64_t> split(int64_t rows, int64_t len, int64_t min_len = kMinChunk,
                                         int64_t align = 1) {
  const int64_t want = (2 * multiprocessor_count() + rows - 1) / rows;
  const int64_t chunks = std::max<int64_t>(1, std::min(want, len / min_len));
  const int64_t chunk = ((len + chunks - 1) / chunks + align - 1) / align * align;
  return {(len + chunk - 1) / chunk, chunk};
}

inline unsigned int blocks_for(int64_t n, int threads = kThreads) {
  const int64_t b = (n + threads - 1) / threads;
  // Grid-stride loops cover the rest beyond this many blocks.
  return static_cast<unsigned int>(b < 65535 * 32 ? b : 65535 * 32);
}

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
template <typename T>
__device__ T block_sum(T v) {
  __shared__ T warp_sums[32];
  __shared__ T total;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x / 32) ? warp_sums[lane] : T(0);
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (lane == 0) total = v;
  }
  __syncthreads();
  const T result = total;
  __syncthreads();  // so that a following call may reuse the shared slots
  return result;
}

}  // namespace fastsde::cuda
