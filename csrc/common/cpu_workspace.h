// Scratch memory and thread count for the CPU kernels' dispatchers.
#pragma once
#include <cstddef>
#include <cstdlib>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/dtype.h"

namespace perceptrons {

// 64-byte aligned scratch: with padded rows, every row starts on a cache line / zmm boundary.
// Up to kCachedWorkspaceBytes it is kept per calling thread and reused across calls: a fresh
// allocation of that size is an mmap, whose pages fault in again (inside the parallel region, where
// the threads contend for the process's memory map) and whose munmap interrupts the other cores.
constexpr size_t kCachedWorkspaceBytes = size_t(64) << 20;

struct WorkspaceCache {
  void* ptr = nullptr;
  size_t bytes = 0;
  ~WorkspaceCache() { std::free(ptr); }
};

// Cache slots per thread: slot 0 for the kernels; slot 1 for a kernel that calls other kernels (the
// routed MLP runs the fused MLP per stream) and keeps buffers of its own across those calls.
constexpr int kWorkspaceSlots = 2;
constexpr int kOuterWorkspaceSlot = 1;

inline WorkspaceCache& workspace_cache(int slot) {
  static thread_local WorkspaceCache cache[kWorkspaceSlots];
  return cache[slot >= 0 && slot < kWorkspaceSlots ? slot : kWorkspaceSlots - 1];  // slots are constants above
}

// Not reentrant on one thread and slot: a kernel holds its workspace until it returns; a kernel
// that calls other kernels takes kOuterWorkspaceSlot for its own buffers.
struct Workspace {
  void* ptr = nullptr;
  bool owned = false;
  explicit Workspace(size_t bytes, int slot = 0) {
    bytes = (bytes + 63) / 64 * 64;
    if (!bytes) return;
    if (bytes > kCachedWorkspaceBytes) {
      ptr = std::aligned_alloc(64, bytes);
      owned = true;
      return;
    }
    WorkspaceCache& c = workspace_cache(slot);
    if (c.bytes < bytes) {
      std::free(c.ptr);
      c.ptr = std::aligned_alloc(64, bytes);
      c.bytes = c.ptr ? bytes : 0;
    }
    ptr = c.ptr;
  }
  ~Workspace() {
    if (owned) std::free(ptr);
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
};

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// No more threads than units of work, at least one.
inline int threads_for(long long units) {
  const int m = max_threads();
  return units < m ? (units > 0 ? int(units) : 1) : m;
}

inline size_t dtype_size(DType d) { return d == DType::Float64 ? sizeof(double) : sizeof(float); }

}  // namespace perceptrons
