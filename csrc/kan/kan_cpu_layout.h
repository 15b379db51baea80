// Workspace of the CPU KAN kernels, sized by the dispatcher (kan_cpu.cpp) and used by the per-ISA
// units (kan_cpu_isa.cpp). Counted in elements of the kernel's dtype; offsets are multiples of 16.
#pragma once
#include <cstdint>
#include <initializer_list>

#include "kan/kan.h"

namespace perceptrons {
namespace kan {
namespace cpu {

constexpr int kPad = 16;
// Backward: each thread owns blocks of input features (their weight-gradient slabs stay in cache
// while every row passes). As large as the threads allow, within this slab budget (bytes).
constexpr int64_t kSlabBudget = int64_t(1) << 20;
// Rows evaluated together: an input's packed weights (and slab) are read from memory once per tile,
// and each of its cells' weight rows once per tile and output chunk, shared by the tile's rows in
// that cell; more rows per tile, more rows per cell. The forward's accumulators are read and written
// in cell order, so its tile stays smaller (L2 latency on each of them otherwise); the backward only
// reads its tile of dy. Measured on KANLinear(100, 100), G = 5, 10,000 rows, 1 thread, on the 2-core
// CI-like VM: forward 64 / 128 / 256 rows 17.4 / 16.9 / 17.6 ms, backward 33.9 / 31.0 / 29.7 ms.
constexpr int kRowTileForward = 128;
constexpr int kRowTileBackward = 256;
// The larger tile: the row stride of the per-row buffers (a multiple of every vector length).
constexpr int kMaxRowTile = kRowTileBackward > kRowTileForward ? kRowTileBackward : kRowTileForward;
constexpr int kMaxVecLanes = 16;  // widest vector, in elements (AVX-512 float)

inline int64_t pad(int64_t n) { return (n + kPad - 1) / kPad * kPad; }

// Rows of the packed weights per input feature, packed transposed, (in, rows, pad(out)), so that
// every term of an edge is a contiguous vector over the outputs:
//   row 0                  base branch
//   rows 1 .. k            zeros
//   rows k+1 .. k+nb       spline basis c = 0 .. nb-1 (row 1+k+c), the scaler folded in
//   rows k+nb+1 .. nb+2k+1 zeros
// A point in cell j has its k+1 spline terms on the consecutive rows 1+j .. 1+j+k: the bases that
// do not exist (c < 0 or c >= nb, where the spline fades out over the extension cells) land on zero
// rows, so an edge is one row offset and k+2 weights, with no masks. A point outside every cell
// points at the trailing k+1 zero rows (zero_base).
inline int packed_rows(const KanConfig& c) { return c.n_basis() + 2 * c.spline_order + 2; }
inline int spline_row(const KanConfig& c, int basis) { return 1 + c.spline_order + basis; }
inline int zero_base(const KanConfig& c) { return c.n_basis() + c.spline_order + 1; }
// Knots per feature with kMaxSplineOrder padding knots on each side (see common/bspline.h).
inline int padded_knots(const KanConfig& c) { return c.n_knots() + 2 * kMaxSplineOrder; }

// An edge's terms for every row of a tile, one feature at a time (rows contiguous): the first
// spline row (an int in a T-sized slot), k+2 weights (silu, then the k+1 bases), and as many
// derivatives d/dx.
inline int64_t terms_numel(const KanConfig& c) { return int64_t(1 + 2 * (c.spline_order + 2)) * kMaxRowTile; }

struct Layout {
  int64_t weights = 0;    // (in, packed_rows, pad(out))
  int64_t knots = 0;      // (in, pad(padded_knots))
  int64_t inv_h = 0;      // (in): 1/h of a uniform grid, 0 if the feature's grid is not uniform
  int64_t t_first = 0, t_last = 0, lo = 0, hi = 0;  // (in) each: first/last knot, grid range
  int64_t threads_base = 0;
  int64_t per_thread = 0;
  int n_threads = 1;
  int feature_block = 1;  // backward: input features a thread owns at a time
  int row_tile = 1;       // rows per tile (kRowTileForward or kRowTileBackward)
  // Offsets inside one thread's part:
  int64_t tile = 0;    // (row_tile, pad(out)): forward accumulators / backward dy rows
  int64_t xt = 0;      // (features, kMaxRowTile): the tile's x, transposed (forward: all
                       // features, backward: a feature block)
  int64_t sig = 0;     // (kMaxRowTile): its sigmoid
  int64_t terms = 0;   // (terms_numel): its edge terms
  int64_t order = 0;   // ints: (kMaxRowTile) the tile's rows sorted by cell, then
                       //       (5 * pad(packed_rows + 1)) each cell's first index into them and
                       //       four histograms / cursors (kan_cpu_isa.cpp, RowBuckets)
  int64_t dot = 0;     // (kMaxRowTile, kMaxVecLanes): backward's dx partial sums as vectors
  int64_t dxt = 0;     // (feature_block, kMaxRowTile): backward's dx of the tile, transposed
  int64_t slabs = 0;   // (feature_block, packed_rows, pad(out)): backward's weight gradients
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

// The result never depends on n_threads: each weight gradient is summed by whichever thread owns
// its input feature, in a fixed order (tile by tile; inside a tile, cell by cell in row order), and
// each y / dx element over the features in feature order.
inline Layout make_layout(const KanConfig& c, int n_threads, bool backward) {
  Layout L;
  L.feature_block = feature_block(c, n_threads, c.dtype == DType::Float64 ? 8 : 4);
  const int64_t in = c.in_features, po = pad(c.out_features);
  int64_t off = 0;
  L.weights = off;
  off += in * packed_rows(c) * po;
  L.knots = off;
  off += in * pad(padded_knots(c));
  // Per-feature scalars: + kPad so that whole-vector reads from any block start stay inside.
  for (int64_t* field : {&L.inv_h, &L.t_first, &L.t_last, &L.lo, &L.hi}) {
    *field = off;
    off += pad(in) + kPad;
  }
  L.n_threads = n_threads;
  L.threads_base = off;
  L.row_tile = backward ? kRowTileBackward : kRowTileForward;
  const int64_t rows = kMaxRowTile;
  int64_t t = 0;
  L.tile = t;
  t += L.row_tile * po;
  L.xt = t;
  t += (backward ? L.feature_block : in) * rows;
  L.sig = t;
  t += rows;
  L.terms = t;
  t += pad(terms_numel(c));
  L.order = t;  // ints in T-sized slots (sizeof(int) <= sizeof(T))
  t += rows + 5 * pad(packed_rows(c) + 1);
  L.dot = t;
  t += backward ? rows * kMaxVecLanes : 0;
  L.dxt = t;
  t += backward ? L.feature_block * rows : 0;
  L.slabs = t;
  t += backward ? pad(int64_t(L.feature_block) * packed_rows(c) * po) : 0;
  L.per_thread = t;
  off += int64_t(n_threads) * L.per_thread;
  L.total = off;
  return L;
}

}  // namespace cpu
}  // namespace kan
}  // namespace perceptrons
