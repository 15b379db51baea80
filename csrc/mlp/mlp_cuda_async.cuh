// Asynchronous global -> shared copies (cp.async, sm_80+) for the CUDA MLP kernels, and the readers
// of what they land. A warp copies the rows it will compute on well before it needs them, so the
// loads of one tile overlap the tensor-core work of the previous ones instead of stalling the warp
// (the kernels run few warps per SM: their accumulators take most of the registers).
//
// Row blocks land with a padded row stride (cols + 8 elements): the 8 rows a fragment read touches
// then start 16 bytes apart in the banks, so the 32-bit fragment reads are conflict-free. A row block
// is copied in 16-byte segments, so it needs cols % 8 == 0 and a 16-byte aligned matrix; rows past
// the batch are filled with zeros by the copy itself (src-size 0), so readers need no row mask.
#pragma once
#include <cstdint>

#include "common/hd.h"
#include "mlp/mlp_cuda_mma.cuh"

namespace perceptrons {
namespace mlp {
namespace cuda {

// 16 bytes from global to shared; src_bytes < 16 zero-fills the rest (0: reads nothing).
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src, int src_bytes) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem_src), "r"(src_bytes));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

// Waits until at most n of this thread's committed groups are still in flight (n <= 4).
__device__ __forceinline__ void cp_async_wait(int n) {
  switch (n) {
    case 0: asm volatile("cp.async.wait_group 0;\n" ::); break;
    case 1: asm volatile("cp.async.wait_group 1;\n" ::); break;
    case 2: asm volatile("cp.async.wait_group 2;\n" ::); break;
    case 3: asm volatile("cp.async.wait_group 3;\n" ::); break;
    default: asm volatile("cp.async.wait_group 4;\n" ::); break;
  }
}

// Padded row stride (elements) of a row block of `cols` 16-bit columns in shared memory.
PCT_HD constexpr int async_row_stride(int cols) { return cols + 8; }

// Whether a (rows x cols) 16-bit row-major matrix can be copied by async_copy_rows.
inline bool async_rows_ok(const void* m, int cols, int max_cols) {
  return m != nullptr && cols % 8 == 0 && cols <= max_cols && reinterpret_cast<uintptr_t>(m) % 16 == 0;
}

// How a lane walks the 16-byte segments of a row block: segment s = lane + 32 i sits at row
// s / per_row, column 8 * (s % per_row); the division is done once per kernel, then stepped.
struct RowSegments {
  int per_row, r, c, r_step, c_step;
  __device__ __forceinline__ RowSegments(int cols, int lane)
      : per_row(cols / 8), r(lane / per_row), c(lane % per_row), r_step(32 / per_row), c_step(32 % per_row) {}
  // From this lane's segment (row r, column segment c) to its next one, 32 segments on.
  __device__ __forceinline__ void next(int& row, int& col) const {
    row += r_step;
    col += c_step;
    if (col >= per_row) {
      col -= per_row;
      ++row;
    }
  }
};

// Warp-cooperative: rows [r0, r0 + nrows) of the row-major (rows x cols) matrix m into dst (row
// stride async_row_stride(cols)); rows >= rows become zeros. Issues the copies, does not commit.
__device__ __forceinline__ void async_copy_rows(uint16_t* dst, const void* m, int64_t rows, int cols, int64_t r0,
                                                int nrows, const RowSegments& seg) {
  const int ld = async_row_stride(cols);
  const uint16_t* src = static_cast<const uint16_t*>(m);
  for (int r = seg.r, c = seg.c; r < nrows;) {
    const bool ok = r0 + r < rows;
    cp_async_16(dst + r * ld + 8 * c, ok ? src + (r0 + r) * cols + 8 * c : src, ok ? 16 : 0);
    seg.next(r, c);
  }
}

// Warp-cooperative, the way back: rows [0, nrows) of a row block in shared memory (row stride
// async_row_stride(cols)) to rows [r0, r0 + nrows) of m, 16 bytes per store; rows >= rows are not
// written. Same conditions on m and cols as async_copy_rows.
__device__ __forceinline__ void store_rows(void* m, int64_t rows, int cols, int64_t r0, int nrows, const uint16_t* src,
                                           const RowSegments& seg) {
  const int ld = async_row_stride(cols);
  uint16_t* dst = static_cast<uint16_t*>(m);
  for (int r = seg.r, c = seg.c; r < nrows;) {
    if (r0 + r < rows)
      *reinterpret_cast<uint4*>(dst + (r0 + r) * cols + 8 * c) = *reinterpret_cast<const uint4*>(src + r * ld + 8 * c);
    seg.next(r, c);
  }
}

// Warp-cooperative, within shared memory: rows [0, nrows) of a landed row block (row stride
// async_row_stride(cols)) to dst (row stride dst_ld elements, 16-byte aligned rows), 16 bytes a copy.
__device__ __forceinline__ void copy_rows_shared(uint16_t* dst, int dst_ld, const uint16_t* src, int cols, int nrows,
                                                 const RowSegments& seg) {
  const int ld = async_row_stride(cols);
  for (int r = seg.r, c = seg.c; r < nrows; seg.next(r, c))
    *reinterpret_cast<uint4*>(dst + r * dst_ld + 8 * c) = *reinterpret_cast<const uint4*>(src + r * ld + 8 * c);
}

// A fragment of the 16 x 16 block at (row r0, column c0) of a landed row block; columns >= cols read 0.
__device__ __forceinline__ void load_a_smem(uint32_t (&a)[4], const uint16_t* s, int cols, int r0, int c0, int g,
                                            int t) {
  const int ld = async_row_stride(cols);
  const int c_lo = c0 + 2 * t, c_hi = c_lo + 8;  // cols % 8 == 0: a pair is all in or all out
  const uint32_t* p0 = reinterpret_cast<const uint32_t*>(s + (r0 + g) * ld);
  const uint32_t* p1 = reinterpret_cast<const uint32_t*>(s + (r0 + g + 8) * ld);
  a[0] = c_lo < cols ? p0[c_lo / 2] : 0u;
  a[1] = c_lo < cols ? p1[c_lo / 2] : 0u;
  a[2] = c_hi < cols ? p0[c_hi / 2] : 0u;
  a[3] = c_hi < cols ? p1[c_hi / 2] : 0u;
}

// C-fragment-shaped float values of the 16 x 8 block at (0, c0) of 16 rows in shared memory, row
// stride ld (elements); columns >= cols read 0.
template <typename T>
__device__ __forceinline__ void load_c_rows(float (&c)[4], const uint16_t* s, int ld, int cols, int c0, int g, int t) {
  const int cc = c0 + 2 * t;
  uint32_t lo = 0u, hi = 0u;
  if (cc < cols) {
    lo = reinterpret_cast<const uint32_t*>(s + g * ld)[cc / 2];
    hi = reinterpret_cast<const uint32_t*>(s + (g + 8) * ld)[cc / 2];
  }
  const float2 l = unpack2<T>(lo), h = unpack2<T>(hi);
  c[0] = l.x; c[1] = l.y; c[2] = h.x; c[3] = h.y;
}

}  // namespace cuda
}  // namespace mlp
}  // namespace perceptrons
