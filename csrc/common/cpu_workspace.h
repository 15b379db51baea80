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
struct Workspace {
  void* ptr = nullptr;
  explicit Workspace(size_t bytes) {
    bytes = (bytes + 63) / 64 * 64;
    ptr = bytes ? std::aligned_alloc(64, bytes) : nullptr;
  }
  ~Workspace() { std::free(ptr); }
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
