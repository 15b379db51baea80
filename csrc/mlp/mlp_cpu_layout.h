// Workspace layout of the CPU MLP kernels. The dispatcher (mlp_cpu.cpp) sizes and allocates the
// workspace from this; the per-ISA kernels (mlp_cpu_isa.cpp) index into it with the same numbers.
// Everything is counted in elements of the kernel's dtype; offsets are multiples of kPad, so with a
// 64-byte aligned base every packed row and tile row starts on a vector boundary.
#pragma once
#include <cstdint>

#include "common/cpu_workspace.h"
#include "mlp/mlp.h"

namespace perceptrons {
namespace mlp {
namespace cpu {

constexpr int kTileRows = 72;   // rows carried through all layers at once (divisible by 6, 8, 12, 24)
constexpr int kPad = kSavedAlign;  // row padding of packed weights and tiles (elements)
constexpr int kMaxSlots = 64;   // weight-gradient partial sums: fixed by the batch, not the threads

inline int64_t pad(int64_t n) { return (n + kPad - 1) / kPad * kPad; }
inline int64_t n_tiles(int64_t batch) { return (batch + kTileRows - 1) / kTileRows; }
inline int n_slots(int64_t batch) {
  int64_t t = n_tiles(batch);
  return int(t < kMaxSlots ? t : kMaxSlots);
}

// The weight-gradient GEMM puts the SIMD lanes on the longer side of W, and on the input side when
// both are as long: it then accumulates dW itself, whose rows go out as they are, where the other
// orientation accumulates dW^T and needs a transpose at the end (at small batches, as costly as a
// good part of the arithmetic). Lanes over the input need the layer input's rows readable in whole
// vectors: padded tiles for l >= 1; the user's x (layer 0) only when its width is a multiple of
// kPad, and not when an encoding feeds layer 0 (its tile is column-major).
inline bool dw_vector_over_input(const MlpConfig& c, int l) {
  const bool rows_in_vectors = l >= 1 || (!has_encoding(c) && c.widths[0] % kPad == 0);
  return rows_in_vectors && c.widths[l] >= c.widths[l + 1];
}

struct Layout {
  int64_t packed_w[kMaxLayers] = {};  // forward: W^T padded, (in, pad(out)); backward: W padded, (out, pad(in))
  int64_t packed_b[kMaxLayers] = {};  // forward only: bias padded, pad(out)
  int64_t tile_ld = 0;                // row stride of per-thread tiles
  int n_tile_buffers = 0;
  int64_t per_thread = 0;             // elements per thread
  int64_t threads_base = 0;
  int n_threads = 1;
  // forward of a batch of at most one tile: two feature-major buffers (width x fm_ld, the batch along
  // a row; see forward_feature_major in mlp_cpu_isa.cpp); fm_ld = 0 where there are none
  int64_t fm_ld = 0;
  int64_t fm_buffer = 0;        // offset of the first; the second follows it
  int64_t fm_buffer_elems = 0;  // elements of each
  int64_t fm_rows = 0;          // a layer's weight-row table (widest layer's pointers), in the workspace so
                                // that the kernel allocates nothing (an exception must not leave an
                                // OpenMP region: the routed MLP calls the kernel inside one)
  // backward only
  int slots = 0;
  int64_t slot_w[kMaxLayers] = {};    // offset inside one slot
  int64_t slot_b[kMaxLayers] = {};
  int64_t slot_elems = 0;
  int64_t slots_base = 0;
  int64_t total = 0;
};

inline Layout make_layout(const MlpConfig& c, int64_t batch, int n_threads, bool backward) {
  Layout L;
  int64_t off = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    const int64_t wi = c.widths[l], wo = c.widths[l + 1];
    L.packed_w[l] = off;
    off += backward ? wo * pad(wi) : wi * pad(wo);
    L.packed_b[l] = off;
    off += backward ? 0 : pad(wo);
  }
  int64_t ld = 0;
  for (int l = 1; l <= c.n_layers; ++l) ld = pad(c.widths[l]) > ld ? pad(c.widths[l]) : ld;
  // An encoded input is staged in a tile buffer (forward: the layer-0 input, column-major; backward:
  // it and its gradient), so the tiles must hold it too.
  if (has_encoding(c) && pad(c.widths[0]) > ld) ld = pad(c.widths[0]);
  L.tile_ld = ld;
  L.n_tile_buffers = backward ? 3 : 2;
  L.per_thread = L.n_tile_buffers * kTileRows * ld;
  L.n_threads = n_threads;
  L.threads_base = off;
  off += int64_t(n_threads) * L.per_thread;
  if (!backward && batch <= kTileRows) {
    int64_t widest = 0;
    for (int l = 0; l <= c.n_layers; ++l) widest = c.widths[l] > widest ? c.widths[l] : widest;
    L.fm_ld = pad(batch);
    L.fm_buffer = off;
    L.fm_buffer_elems = widest * L.fm_ld;
    off += 2 * L.fm_buffer_elems;
    const int64_t elem = int64_t(dtype_size(c.dtype));
    L.fm_rows = off;
    off += pad((widest * int64_t(sizeof(void*)) + elem - 1) / elem);
  }
  if (backward) {
    int64_t s = 0;
    for (int l = 0; l < c.n_layers; ++l) {
      const int64_t wi = c.widths[l], wo = c.widths[l + 1];
      L.slot_w[l] = s;
      s += dw_vector_over_input(c, l) ? wo * pad(wi) : wi * pad(wo);
      L.slot_b[l] = s;
      s += pad(wo);
    }
    L.slot_elems = s;
    L.slots = n_slots(batch);
    L.slots_base = off;
    off += int64_t(L.slots) * s;
  }
  L.total = off;
  return L;
}

}  // namespace cpu
}  // namespace mlp
}  // namespace perceptrons
