// A host emulation of the CUDA execution model, so that the CUDA kernels run (slowly) on the CPU
// where there is no GPU: tests/cuda_emulation.py compiles csrc/cuda/*.cu as C++ with
// FASTSDE_CUDA_EMULATION defined, and cuda_utils.cuh then includes this instead of the CUDA runtime.
//
// Blocks run one after another. The threads of a block are fibers (ucontext) on one host thread,
// switched at every __syncthreads() and warp shuffle, so barriers and shuffles mean what they mean
// on a GPU, and misuse fails loudly instead of hanging or passing: a barrier that not every live
// thread of the block reaches, a shuffle whose mask is not the warp's live lanes, an invalid launch
// configuration. Between barriers the fibers run in alternating order (forward, then reversed), so
// shared memory read before the barrier that should order it gives a different result.
// Dynamic shared memory is filled with NaN bytes before each block, so a read of an element the block
// never wrote shows; a misaligned vector access (load_vector, store_vector) and a launch asking for
// more dynamic shared memory than a GPU grants without opting in are errors.
// Not emulated: memory coalescing, timing; this checks logic, not speed.
#pragma once

#include <ucontext.h>

#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static  // one block runs at a time, so a static is the block's shared memory
#define __launch_bounds__(...)

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The built-in variables, set by the scheduler before it switches to a fiber.
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

using std::exp;
using std::max;
using std::min;
using std::sqrt;
inline float rsqrt(float v) { return 1.0f / std::sqrt(v); }
inline double rsqrt(double v) { return 1.0 / std::sqrt(v); }

namespace fastsde::emulation {

constexpr int kWarp = 32;
constexpr std::size_t kStack = 128 * 1024;

enum class Wait { None, Block, Warp, Done };

struct Fiber {
  ucontext_t ctx;
  Wait wait = Wait::None;
  unsigned mask = 0;          // of the warp operation the fiber waits at
  unsigned exchanges = 0;     // warp operations done; selects the exchange buffer
};

struct State {
  std::mutex launch;  // one launch at a time
  std::vector<Fiber> fibers;
  std::vector<std::unique_ptr<char[]>> stacks;
  // Per warp, two buffers of 32 lanes x 16 bytes: a warp operation writes one while a lagging
  // fiber may still read the other.
  std::vector<std::array<std::array<unsigned char, 16>, 2 * kWarp>> exchange;
  ucontext_t scheduler;
  int current = -1, threads = 0;
  const std::function<void()>* body = nullptr;
  std::vector<std::max_align_t> dynamic_shared;  // the launch's dynamic shared memory
  std::size_t dynamic_bytes = 0;
  std::exception_ptr error;
};

inline State& state() {
  static State s;
  return s;
}

inline void fiber_main() {
  State& s = state();
  try {
    (*s.body)();
  } catch (...) {
    if (!s.error) s.error = std::current_exception();
  }
  s.fibers[s.current].wait = Wait::Done;  // returning resumes the scheduler (uc_link)
}

inline void yield(Wait w) {
  State& s = state();
  Fiber& f = s.fibers[s.current];
  f.wait = w;
  swapcontext(&f.ctx, &s.scheduler);
}

// The lanes of warp w that exist in the block and have not returned.
inline unsigned live_lanes(const State& s, int w) {
  unsigned m = 0;
  for (int l = 0; l < kWarp && w * kWarp + l < s.threads; ++l) {
    if (s.fibers[w * kWarp + l].wait != Wait::Done) m |= 1u << l;
  }
  return m;
}

// Releases the fibers whose barrier or warp operation is complete; false if none could be.
inline bool release(State& s) {
  bool any = false;
  for (int w = 0; w * kWarp < s.threads; ++w) {
    const unsigned live = live_lanes(s, w);
    bool all = live != 0;
    for (int l = 0; l < kWarp && all; ++l) {
      if (live >> l & 1u) all = s.fibers[w * kWarp + l].wait == Wait::Warp;
    }
    if (!all) continue;
    for (int l = 0; l < kWarp; ++l) {
      if (!(live >> l & 1u)) continue;
      Fiber& f = s.fibers[w * kWarp + l];
      TORCH_CHECK(f.mask == live, "CUDA emulation: warp ", w, " of block (", blockIdx.x, ", ",
                  blockIdx.y, ", ", blockIdx.z, ") ran a warp operation with mask ", f.mask,
                  " but its live lanes are ", live);
      f.wait = Wait::None;
    }
    any = true;
  }
  if (any) return true;
  bool block = false;
  for (int t = 0; t < s.threads; ++t) {
    const Wait w = s.fibers[t].wait;
    if (w == Wait::Warp) return false;
    block = block || w == Wait::Block;
  }
  if (!block) return false;
  for (int t = 0; t < s.threads; ++t) {
    if (s.fibers[t].wait == Wait::Block) s.fibers[t].wait = Wait::None;
  }
  return true;
}

inline void run_block() {
  State& s = state();
  if (s.dynamic_bytes) std::memset(s.dynamic_shared.data(), 0xff, s.dynamic_bytes);
  for (int t = 0; t < s.threads; ++t) {
    Fiber& f = s.fibers[t];
    f = Fiber{};
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = s.stacks[t].get();
    f.ctx.uc_stack.ss_size = kStack;
    f.ctx.uc_link = &s.scheduler;
    makecontext(&f.ctx, fiber_main, 0);
  }
  for (bool reverse = false;; reverse = !reverse) {
    for (int i = 0; i < s.threads; ++i) {
      const int t = reverse ? s.threads - 1 - i : i;
      if (s.fibers[t].wait != Wait::None) continue;
      s.current = t;
      threadIdx = dim3(t % blockDim.x, t / blockDim.x % blockDim.y, t / (blockDim.x * blockDim.y));
      swapcontext(&s.scheduler, &s.fibers[t].ctx);
    }
    if (s.error) std::rethrow_exception(std::exchange(s.error, nullptr));
    if (std::all_of(s.fibers.begin(), s.fibers.begin() + s.threads,
                    [](const Fiber& f) { return f.wait == Wait::Done; })) {
      return;
    }
    TORCH_CHECK(release(s), "CUDA emulation: block (", blockIdx.x, ", ", blockIdx.y, ", ",
                blockIdx.z, ") deadlocks: some live threads wait at __syncthreads() or a warp "
                "operation that the others never reach");
  }
}

// Runs body as the kernel of a launch <<<grid, block, smem>>>, checking the configuration as CUDA does.
inline void run(dim3 grid, dim3 block, std::size_t smem, const std::function<void()>& body) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  TORCH_CHECK(threads >= 1 && threads <= 1024 && block.z <= 64,
              "CUDA emulation: invalid block size (", block.x, ", ", block.y, ", ", block.z, ")");
  TORCH_CHECK(grid.x >= 1 && grid.x < (1u << 31) && grid.y >= 1 && grid.y <= 65535 &&
                  grid.z >= 1 && grid.z <= 65535,
              "CUDA emulation: invalid grid size (", grid.x, ", ", grid.y, ", ", grid.z, ")");
  TORCH_CHECK(smem <= fastsde::cuda::kMaxSharedMemory, "CUDA emulation: ", smem, " bytes of dynamic "
              "shared memory, more than a block gets without cudaFuncSetAttribute (",
              fastsde::cuda::kMaxSharedMemory, ")");
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.launch);
  s.threads = static_cast<int>(threads);
  s.dynamic_bytes = smem;
  s.dynamic_shared.resize((smem + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t));
  while (s.stacks.size() < threads) s.stacks.emplace_back(new char[kStack]);
  if (s.fibers.size() < threads) s.fibers.resize(threads);
  s.exchange.resize((threads + kWarp - 1) / kWarp);
  s.body = &body;
  gridDim = grid;
  blockDim = block;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = dim3(x, y, z);
        run_block();
      }
    }
  }
}

// A warp operation: every live lane of the warp offers v and gets the value of lane source(lane),
// or its own where source gives a lane outside the warp.
template <typename T, typename Source>
T exchange(unsigned mask, T v, Source source) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 16);
  State& s = state();
  const int t = s.current, lane = t % kWarp;
  auto& buffers = s.exchange[t / kWarp];
  const int half = s.fibers[t].exchanges++ % 2 * kWarp;
  std::memcpy(buffers[half + lane].data(), &v, sizeof(T));
  s.fibers[t].mask = mask;
  yield(Wait::Warp);
  const int src = source(lane);
  T r = v;
  if (src >= 0 && src < kWarp && (mask >> src & 1u)) std::memcpy(&r, buffers[half + src].data(), sizeof(T));
  return r;
}

}  // namespace fastsde::emulation

inline void __syncthreads() { fastsde::emulation::yield(fastsde::emulation::Wait::Block); }

template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return fastsde::emulation::exchange(mask, v, [&](int lane) {
    return lane % width + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : -1;
  });
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return fastsde::emulation::exchange(mask, v, [&](int lane) {
    const int src = lane ^ lane_mask;
    return src / width == lane / width ? src : -1;
  });
}

template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  return fastsde::emulation::exchange(
      mask, v, [&](int lane) { return lane / width * width + src_lane % width; });
}

namespace fastsde::cuda {

template <typename T>
T* shared_memory() {
  return reinterpret_cast<T*>(emulation::state().dynamic_shared.data());
}

inline void check_aligned(const void* p, std::size_t bytes) {
  TORCH_CHECK(reinterpret_cast<std::uintptr_t>(p) % bytes == 0, "CUDA emulation: a ", bytes,
              "-byte vector access at ", p, ", which is not aligned to ", bytes, " bytes");
}

struct Stream {};
inline Stream current_stream() { return {}; }

// A GPU this small makes the tests' modest shapes take the paths that split work over more blocks.
inline int multiprocessor_count() { return 4; }

struct DeviceGuard {
  explicit DeviceGuard(c10::Device) {}
};

// kernel<<<grid, block, smem, stream>>>(args...), each argument converted to its parameter's type
// as a launch does.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem, Stream,
            Args&&... args) {
  const std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  emulation::run(grid, block, smem, [&] { std::apply(kernel, params); });
}

}  // namespace fastsde::cuda

// The emulated kernels are the CPU kernels of a library of their own (tests/cuda_emulation.py).
#define FASTSDE_CUDA_KERNELS(m) TORCH_LIBRARY_IMPL(fastsde_cuda_emu, CPU, m)
