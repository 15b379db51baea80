// Moves fragments between registers and the user's row-major (rows x cols) 16-bit matrices, with
// the batch tail and the column tail masked (zeros in, nothing out). "pairs" means the matrix may be
// accessed as aligned 32-bit pairs (cols even and the base 4-byte aligned).
#pragma once
#include "mlp/mlp_cuda_mma.cuh"

namespace perceptrons {
namespace mlp {
namespace cuda {

__device__ __forceinline__ uint32_t load_pair_bits(const uint16_t* m, int64_t rows, int cols, int64_t r, int c,
                                                   bool pairs) {
  if (r >= rows || c >= cols) return 0u;
  const uint16_t* q = m + r * cols + c;
  if (pairs) return *reinterpret_cast<const uint32_t*>(q);
  return uint32_t(q[0]) | (c + 1 < cols ? uint32_t(q[1]) << 16 : 0u);
}

// A fragment of the 16 x 16 block at (r0, c0).
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const void* m, int64_t rows, int cols, int64_t r0, int c0,
                                       int g, int t, bool pairs) {
  const uint16_t* p = static_cast<const uint16_t*>(m);
  a[0] = load_pair_bits(p, rows, cols, r0 + g, c0 + 2 * t, pairs);
  a[1] = load_pair_bits(p, rows, cols, r0 + g + 8, c0 + 2 * t, pairs);
  a[2] = load_pair_bits(p, rows, cols, r0 + g, c0 + 2 * t + 8, pairs);
  a[3] = load_pair_bits(p, rows, cols, r0 + g + 8, c0 + 2 * t + 8, pairs);
}

// C-fragment-shaped float values of the 16 x 8 block at (r0, c0).
template <typename T>
__device__ __forceinline__ void load_c(float (&c)[4], const void* m, int64_t rows, int cols, int64_t r0, int c0,
                                       int g, int t, bool pairs) {
  const uint16_t* p = static_cast<const uint16_t*>(m);
  float2 lo = unpack2<T>(load_pair_bits(p, rows, cols, r0 + g, c0 + 2 * t, pairs));
  float2 hi = unpack2<T>(load_pair_bits(p, rows, cols, r0 + g + 8, c0 + 2 * t, pairs));
  c[0] = lo.x; c[1] = lo.y; c[2] = hi.x; c[3] = hi.y;
}

template <typename T>
__device__ __forceinline__ void store_pair(T* m, int64_t rows, int cols, int64_t r, int c, float v0, float v1,
                                           bool pairs) {
  if (r >= rows || c >= cols) return;
  T* q = m + r * cols + c;
  if (pairs) {
    *reinterpret_cast<uint32_t*>(q) = pack2<T>(v0, v1);
  } else {
    q[0] = from_float<T>(v0);
    if (c + 1 < cols) q[1] = from_float<T>(v1);
  }
}

// Stores the C fragment of the 16 x 8 block at (r0, c0).
template <typename T>
__device__ __forceinline__ void store_c(void* m, int64_t rows, int cols, int64_t r0, int c0, const float (&c)[4],
                                        int g, int t, bool pairs) {
  T* p = static_cast<T*>(m);
  store_pair<T>(p, rows, cols, r0 + g, c0 + 2 * t, c[0], c[1], pairs);
  store_pair<T>(p, rows, cols, r0 + g + 8, c0 + 2 * t, c[2], c[3], pairs);
}

// Bias of the 16 x 8 block at column c0 into a C fragment (bias arrays are padded to 16).
__device__ __forceinline__ void bias_c(float (&c)[4], const float* bias, int c0, int t) {
  const float2 b = *reinterpret_cast<const float2*>(bias + c0 + 2 * t);
  c[0] = b.x; c[1] = b.y; c[2] = b.x; c[3] = b.y;
}

}  // namespace cuda
}  // namespace mlp
}  // namespace perceptrons
