// Kernels for tests/test_cuda_emulation.py, built with the emulated CUDA kernels: a block reduction
// that the emulation must run right, and misuses of the execution model that it must reject or show.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cuda/cuda_utils.cuh"

namespace fastsde::cuda {
namespace {

__global__ void block_sums_kernel(const float* x, float* out, int64_t n) {
  float v = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) v += x[blockIdx.x * n + i];
  const float s = block_sum(v);
  if (threadIdx.x == 0) out[blockIdx.x] = s;
}

// out[t] = x[(t + 1) % n] through shared memory, with or without the barrier that orders it.
__global__ void rotate_kernel(const float* x, float* out, bool sync) {
  __shared__ float s[1024];
  const int t = threadIdx.x, n = blockDim.x;
  s[t] = x[t];
  if (sync) __syncthreads();
  out[t] = s[(t + 1) % n];
}

// Odd lanes shuffle while even lanes go on to the barrier: a warp operation half the warp skips.
__global__ void divergent_shuffle_kernel(float* out) {
  float v = threadIdx.x;
  if (threadIdx.x % 2) v = __shfl_down_sync(0xffffffffu, v, 1);
  __syncthreads();
  out[threadIdx.x] = v;
}

// A full-warp mask in a block of fewer than 32 threads.
__global__ void partial_warp_shuffle_kernel(float* out) {
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, float(threadIdx.x), 1);
}

// out[t] = 4 floats from x + offset + 4 t, as one 16-byte vector.
__global__ void vector_copy_kernel(const float* x, float* out, int64_t offset) {
  store_vector<4>(out + 4 * threadIdx.x, load_vector<4>(x + offset + 4 * threadIdx.x));
}

// out[t] = the first `written` floats of dynamic shared memory, then what follows unwritten.
__global__ void shared_memory_kernel(float* out, int written) {
  float* s = shared_memory<float>();
  if (threadIdx.x < written) s[threadIdx.x] = threadIdx.x;
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}

at::Tensor block_sums(const at::Tensor& x, int64_t threads) {
  at::Tensor out = at::empty({x.size(0)}, x.options());
  launch(block_sums_kernel, x.size(0), threads, 0, current_stream(), x.const_data_ptr<float>(),
         out.mutable_data_ptr<float>(), x.size(1));
  return out;
}

at::Tensor rotate(const at::Tensor& x, bool sync) {
  at::Tensor out = at::empty_like(x);
  launch(rotate_kernel, 1, x.numel(), 0, current_stream(), x.const_data_ptr<float>(),
         out.mutable_data_ptr<float>(), sync);
  return out;
}

at::Tensor misuse(const std::string& what) {
  at::Tensor out = at::zeros({64});
  float* o = out.mutable_data_ptr<float>();
  if (what == "divergent_shuffle") launch(divergent_shuffle_kernel, 1, 64, 0, current_stream(), o);
  if (what == "partial_warp_shuffle") launch(partial_warp_shuffle_kernel, 1, 16, 0, current_stream(), o);
  if (what == "block_too_large") launch(partial_warp_shuffle_kernel, 1, 2048, 0, current_stream(), o);
  if (what == "empty_grid") launch(partial_warp_shuffle_kernel, 0, 32, 0, current_stream(), o);
  if (what == "misaligned_vector") launch(vector_copy_kernel, 1, 8, 0, current_stream(), o, o + 32, int64_t{1});
  if (what == "shared_memory_too_large") {
    launch(shared_memory_kernel, 1, 64, 48 * 1024 + 4, current_stream(), o, 64);
  }
  return out;
}

at::Tensor vector_copy(const at::Tensor& x) {
  at::Tensor out = at::empty({x.numel()}, x.options());
  launch(vector_copy_kernel, 1, x.numel() / 4, 0, current_stream(), x.const_data_ptr<float>(),
         out.mutable_data_ptr<float>(), int64_t{0});
  return out;
}

at::Tensor read_shared_memory(int64_t threads, int64_t written) {
  at::Tensor out = at::empty({threads});
  launch(shared_memory_kernel, 1, threads, threads * sizeof(float), current_stream(),
         out.mutable_data_ptr<float>(), static_cast<int>(written));
  return out;
}

}  // namespace
}  // namespace fastsde::cuda

TORCH_LIBRARY(fastsde_emulation_checks, m) {
  m.def("block_sums(Tensor x, int threads) -> Tensor", &fastsde::cuda::block_sums);
  m.def("rotate(Tensor x, bool sync) -> Tensor", &fastsde::cuda::rotate);
  m.def("misuse(str what) -> Tensor", &fastsde::cuda::misuse);
  m.def("vector_copy(Tensor x) -> Tensor", &fastsde::cuda::vector_copy);
  m.def("read_shared_memory(int threads, int written) -> Tensor", &fastsde::cuda::read_shared_memory);
}
