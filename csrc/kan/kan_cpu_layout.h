// Workspace of the CPU KAN kernels, sized by the dispatcher (kan_cpu.cpp) and used by the per-ISA
// units (kan_cpu_isa.cpp). Counted in elements of the kernel's dtype; offsets are multiples of 16.
#pragma once
#include <cstdint>

#include "kan/kan.h"

namespace perceptrons {
namespace kan {
namespace cpu {

constexpr int kPad = 16;
// Backward: each thread owns blocks of input features (their weight-gradient slabs stay in cache
// while every row passes). As large as the threads allow, within this slab budget (bytes).
constexpr int64_t kSlabBudget = int64_t(1) << 20;
// Rows evaluated together: an input's packed weights (and slabs) are reused from L1 across them.
constexpr int kRowTile = 64;

inline int64_t pad(int64_t n) { return (n + kPad - 1) / kPad * kPad; }

// Rows of the packed weights per input feature: row 0 is the base branch, row 1+c the spline's
// basis c with the scaler folded in, and a last row of zeros that dropped bases point at (so every
// edge has exactly k+2 terms and the inner loop has a fixed length). Packed transposed,
// (in, rows, pad(out)), so that every term of an edge is a contiguous vector over the outputs.
inline int packed_rows(const KanConfig& c) { return c.n_basis() + 2; }
inline int zero_row(const KanConfig& c) { return c.n_basis() + 1; }
// Knots per feature with kMaxSplineOrder padding knots on each side (see common/bspline.h).
inline int padded_knots(const KanConfig& c) { return c.n_knots() + 2 * kMaxSplineOrder; }

// Per-row scratch of the vectorised basis evaluation for n features: x, sigmoid(x), cell, and
// (kMaxSplineOrder+1) packed-row indices, basis values and derivatives each.
inline int64_t row_terms_numel(int64_t n) { return (3 + 3 * (kMaxSplineOrder + 1)) * pad(n); }

struct Layout {
  int64_t weights = 0;    // (in, packed_rows, pad(out))
  int64_t knots = 0;      // (in, pad(padded_knots))
  int64_t inv_h = 0;      // (in): 1/h of a uniform grid, 0 if the feature's grid is not uniform
  int64_t t_first = 0, t_last = 0, lo = 0, hi = 0;  // (in) each: first/last knot, grid range
  int64_t threads_base = 0;
  int64_t per_thread = 0;
  int n_threads = 1;
  int feature_block = 1;  // backward: input features per block
  int64_t total = 0;
};

inline int feature_block(const KanConfig& c, int n_threads, int elem_bytes) {
  const int64_t per_feature = int64_t(packed_rows(c)) * pad(c.out_features) * elem_bytes;
  int64_t f = (c.in_features + n_threads - 1) / n_threads;
  const int64_t fit = kSlabBudget / per_feature;
  if (f > fit) f = fit > kPad ? fit / kPad * kPad : kPad;
  if (f > c.in_features) f = c.in_features;
  return int(f < 1 ? 1 : f);
}

// The result never depends on n_threads or the block size: each weight gradient is summed over the
// batch in row order by whichever thread owns its input feature.
inline Layout make_layout(const KanConfig& c, int n_threads, bool backward) {
  Layout L;
  L.feature_block = feature_block(c, n_threads, c.dtype == DType::Float64 ? 8 : 4);
  const int64_t in = c.in_features, po = pad(c.out_features);
  int64_t off = 0;
  L.weights = off;
  off += in * packed_rows(c) * po;
  L.knots = off;
  off += in * pad(padded_knots(c));
  L.inv_h = off;
  off += pad(in) + kPad;  // + kPad: whole-vector reads from any block start
  L.t_first = off;
  off += pad(in) + kPad;  // + kPad: whole-vector reads from any block start
  L.t_last = off;
  off += pad(in) + kPad;  // + kPad: whole-vector reads from any block start
  L.lo = off;
  off += pad(in) + kPad;  // + kPad: whole-vector reads from any block start
  L.hi = off;
  off += pad(in) + kPad;  // + kPad: whole-vector reads from any block start
  L.n_threads = n_threads;
  L.threads_base = off;
  // Per thread: kRowTile rows of pad(out) (forward accumulators, backward dy tails), the edge terms
  // of kRowTile rows (row_terms_numel each), and backward's gradient slabs.
  const int64_t feats = backward ? L.feature_block : in;
  L.per_thread = kRowTile * po + kRowTile * row_terms_numel(feats) +
                 (backward ? pad(int64_t(L.feature_block) * packed_rows(c) * po) : 0);
  off += int64_t(n_threads) * L.per_thread;
  L.total = off;
  return L;
}

}  // namespace cpu
}  // namespace kan
}  // namespace perceptrons
