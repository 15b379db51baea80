// Workspace of the CPU KAN kernels, sized by the dispatcher (kan_cpu.cpp) and used by the per-ISA
// units (kan_cpu_isa.cpp). Counted in elements of the kernel's dtype; offsets are multiples of 16.
#pragma once
#include <cstdint>

#include "kan/kan.h"

namespace perceptrons {
namespace kan {
namespace cpu {

constexpr int kPad = 16;
constexpr int kFeatureBlock = 8;  // input features whose weight-gradient slabs are filled together

inline int64_t pad(int64_t n) { return (n + kPad - 1) / kPad * kPad; }

// Rows of the packed weights per input feature: row 0 is the base branch, row 1+c the spline's
// basis c with the scaler folded in, and a last row of zeros that dropped bases point at (so every
// edge has exactly k+2 terms and the inner loop has a fixed length). Packed transposed,
// (in, rows, pad(out)), so that every term of an edge is a contiguous vector over the outputs.
inline int packed_rows(const KanConfig& c) { return c.n_basis() + 2; }
inline int zero_row(const KanConfig& c) { return c.n_basis() + 1; }
// Knots per feature with kMaxSplineOrder padding knots on each side (see common/bspline.h).
inline int padded_knots(const KanConfig& c) { return c.n_knots() + 2 * kMaxSplineOrder; }

struct Layout {
  int64_t weights = 0;    // (in, packed_rows, pad(out))
  int64_t knots = 0;      // (in, pad(padded_knots))
  int64_t inv_h = 0;      // (in): 1/h of a uniform grid, 0 if the feature's grid is not uniform
  int64_t threads_base = 0;
  int64_t per_thread = 0; // two rows of pad(out) (+ backward: kFeatureBlock gradient slabs)
  int n_threads = 1;
  int64_t total = 0;
};

inline Layout make_layout(const KanConfig& c, int n_threads, bool backward) {
  Layout L;
  const int64_t in = c.in_features, po = pad(c.out_features);
  int64_t off = 0;
  L.weights = off;
  off += in * packed_rows(c) * po;
  L.knots = off;
  off += in * pad(padded_knots(c));
  L.inv_h = off;
  off += pad(in);
  L.n_threads = n_threads;
  L.threads_base = off;
  L.per_thread = 2 * po + (backward ? pad(int64_t(kFeatureBlock) * packed_rows(c) * po) : 0);
  off += int64_t(n_threads) * L.per_thread;
  L.total = off;
  return L;
}

}  // namespace cpu
}  // namespace kan
}  // namespace perceptrons
