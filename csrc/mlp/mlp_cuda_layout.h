// Sizes and offsets of the CUDA MLP backend, in plain C++ so the host code, the bindings (built
// without nvcc) and the kernels agree on one definition.
//
// Tiles. A warp owns 16-row tiles (the M of mma.m16n8k16). Hidden activations never leave its
// registers: the accumulator fragment of one layer is, pair by pair, the A fragment of the next.
// The forward block is kFwdWarps warps, each walking its own tiles; the backward block is
// kBwdWarps (kBwdWarpsWide for ReLU up to width 64) warps sharing one chunk of 16 rows per warp, so
// the block can reduce the chunk's weight gradients with tensor cores (csrc/mlp/mlp_cuda_backward.cu).
//
// Weights in "fragment order". Layer l's matrix is repacked once per call so that lane i of a warp
// finds the B fragments of two neighbouring n8 tiles as one 16-byte word: word
// ((kk * n_pairs + jp) * 32 + lane) holds {b0, b1} of n-tile 2jp and of 2jp+1 for k-tile kk. A warp
// reads 512 contiguous bytes per k-tile and n-tile pair: one coalesced load, no shared-memory staging.
// The forward packs B(k, n) = W[n][k] (K = in, N = out); the backward also packs B(k, n) = W[k][n]
// (K = out, N = in) for g * W.
//
// Layer 0's forward fragments may instead be packed "k-permuted" (when the forward reads x as 16-byte
// row segments, FwdParams::x_vec): within each 32-row block of k, logical k = 16 kt + 8 hi + 2 t + lo
// (kt, hi, lo in {0, 1}, t < 4) holds W's input column 8 t + 4 kt + 2 hi + lo. Lane (g, t) then finds
// the A fragments of both k-tiles of a 32-column block of x in the 16 bytes at columns 8t .. 8t + 7
// of its rows: a dot product does not care in which order k runs, only that A and B agree.
//
// Saved activations ("training forward") use the same fragment order: for each hidden layer, tile
// tt's k-tile kk is the 16-byte word ((tt * (W / 16) + kk) * 32 + lane) (of W 16-bit elements per
// row), i.e. exactly the registers the warp holds. Rows are padded to 16; padded rows hold finite
// values computed from zero inputs and are masked out by the backward.
//
// Weight-gradient accumulators: for layer l, an (out_pad x in_aug) float matrix in C-fragment order
// (tile (mt, nt) of 16 x 8 floats at ((mt * nt_n + nt) * 32 + lane) * 4), in_aug = round_up(in + 1,
// 8): the extra column is the bias gradient (the chunk's inputs get a column of ones).
#pragma once
#include <cstdint>

#include "common/hd.h"
#include "mlp/mlp.h"

namespace perceptrons {
namespace mlp {
namespace cuda_layout {

constexpr int kTileRows = 16;
constexpr int kFwdWarps = 4;
constexpr int kBwdWarps = 8;
// ReLU networks up to this width run kBwdWarpsWide warps per backward block (plan_backward).
constexpr int kBwdWarpsWide = 12;
constexpr int kBwdWideMaxWidth = 64;
constexpr int64_t kAlign = 256;  // workspace sections start on this many bytes
// Input and output widths the backward stages per chunk in shared memory (2 x 128 rows).
constexpr int kMaxIoWidth = 256;
// Widest x (forward) and x / dy (backward) that the kernels prefetch with cp.async into shared
// memory (mlp_cuda_async.cuh); wider ones, or ones with in % 8 != 0, are read straight from global.
constexpr int kMaxAsyncIn = 128;
constexpr int kMaxAsyncBwdIo = 64;

PCT_HD int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
PCT_HD int64_t ceil_div(int64_t v, int64_t m) { return (v + m - 1) / m; }
inline bool hidden_width_ok(int w) { return w == 16 || w == 32 || w == 64 || w == 128; }

// Ok when the tensor-core kernels take this configuration; else why not (the Python layer then
// uses torch ops and says so in its docs).
inline Status cuda_supported(const MlpConfig& c) {
  if (c.dtype != DType::Float16 && c.dtype != DType::BFloat16) return Status::BadDtype;
  if (c.n_layers < 2) return Status::Unsupported;
  if (has_encoding(c)) return Status::Unsupported;  // the CUDA kernels have no input-encoding stage yet
  if (c.n_layers > kMaxLayers) return Status::TooManyLayers;
  const int w = c.widths[1];
  for (int l = 1; l < c.n_layers; ++l)
    if (c.widths[l] != w) return Status::Unsupported;
  if (!hidden_width_ok(w)) return Status::UnsupportedWidth;
  if (c.widths[0] < 1 || c.widths[c.n_layers] < 1) return Status::BadShape;
  if (c.widths[0] > kMaxIoWidth || c.widths[c.n_layers] > kMaxIoWidth) return Status::UnsupportedWidth;
  if (!activation_valid(int(c.activation)) || !activation_valid(int(c.output_activation)))
    return Status::BadActivation;
  return Status::Ok;
}

// Hidden layers save their output (or pre-activation for silu/sine) in fragment order; the output
// layer saves nothing (the backward recomputes its pre-activation when the output activation needs it).
inline int64_t cuda_saved_layer_numel(const MlpConfig& c, int64_t batch, int l) {
  return l < c.n_layers - 1 ? round_up(batch, kTileRows) * c.widths[l + 1] : 0;
}

struct Layout {
  int n_layers = 0;
  // In 16-byte words from the workspace start.
  int64_t fwd_frag[kMaxLayers] = {};
  int64_t bwd_frag[kMaxLayers] = {};
  // In floats from the workspace start.
  int64_t bias[kMaxLayers] = {};
  int64_t acc[kMaxLayers] = {};   // offset inside one block's accumulator slab
  int acc_mt[kMaxLayers] = {};    // 16-row tiles (out_pad / 16)
  int acc_nt[kMaxLayers] = {};    // 8-column tiles (in_aug / 8)
  int64_t acc_total = 0;          // floats per block slab
  int64_t partials = 0;           // float offset of slab 0
  int64_t bytes = 0;
};

PCT_HD int64_t frag_words(int k, int n) { return ceil_div(k, 16) * ceil_div(n, 16) * 32; }

// grid_blocks: the backward grid (one accumulator slab per block); 0 for the forward.
inline Layout make_layout(const MlpConfig& c, bool backward, int64_t grid_blocks) {
  Layout s;
  s.n_layers = c.n_layers;
  int64_t words = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    s.fwd_frag[l] = words;
    // Layer 0 in whole 32-row k-blocks: the forward may pack it k-permuted (PackJob::perm_k32).
    words += frag_words(l == 0 ? int(round_up(c.widths[0], 32)) : c.widths[l], c.widths[l + 1]);
  }
  if (backward) {
    for (int l = 0; l < c.n_layers; ++l) {
      s.bwd_frag[l] = words;
      words += frag_words(c.widths[l + 1], c.widths[l]);
    }
  }
  int64_t floats = round_up(words * 16, kAlign) / 4;
  for (int l = 0; l < c.n_layers; ++l) {
    s.bias[l] = floats;
    floats += round_up(c.widths[l + 1], 16);
  }
  floats = round_up(floats * 4, kAlign) / 4;
  if (backward) {
    for (int l = 0; l < c.n_layers; ++l) {
      s.acc_mt[l] = int(ceil_div(c.widths[l + 1], 16));
      s.acc_nt[l] = int(ceil_div(c.widths[l] + 1, 8));
      s.acc[l] = s.acc_total;
      s.acc_total += int64_t(s.acc_mt[l]) * s.acc_nt[l] * 128;
    }
    s.partials = floats;
    floats += grid_blocks * s.acc_total;
  }
  s.bytes = round_up(floats * 4, kAlign);
  return s;
}

// n-tiles per reduction unit of the backward's weight-gradient reduction (mlp_cuda_backward.cu,
// reduce_chunk). A unit is one 16-row m-tile by up to this many 8-column n-tiles; the block's warps
// take units round-robin and wait for the slowest at the barrier that ends the layer, so the choice
// minimises the busiest warp's work: per k-step a unit costs its n-tiles' mma plus about one for the
// A operand's ldmatrix and the loop. Ties go to the wider unit (fewer A loads in all). For width 64
// with the hidden layers' 4 x 9 tiles (the bias column makes 9) over 12 warps: units of 4 gave eight
// warps 4 tiles and four warps the lone bias tile (the busiest 5 per k-step); units of 3 give every
// warp 3 (4).
PCT_HD constexpr int reduce_unit_cost(int mt_n, int nt_n, int warps, int unit) {
  int worst = 0;
  const int units_n = (nt_n + unit - 1) / unit;
  for (int w = 0; w < warps; ++w) {
    int cost = 0;
    for (int u = w; u < mt_n * units_n; u += warps) {
      const int un = u / mt_n;
      const int tiles = nt_n - un * unit < unit ? nt_n - un * unit : unit;
      cost += tiles + 1;
    }
    worst = cost > worst ? cost : worst;
  }
  return worst;
}
PCT_HD constexpr int reduce_unit_tiles(int mt_n, int nt_n, int warps) {
  int best = 4;
  for (int unit = 3; unit >= 1; --unit)
    if (reduce_unit_cost(mt_n, nt_n, warps, unit) < reduce_unit_cost(mt_n, nt_n, warps, best)) best = unit;
  return best;
}
// The hidden layers' choice for hidden width w (out w: w / 16 m-tiles; in w plus the bias column:
// w / 8 + 1 n-tiles); the backward kernel uses it for every layer of the network.
PCT_HD constexpr int reduce_unit_tiles_for_width(int w, int warps) {
  return reduce_unit_tiles(w / 16, w / 8 + 1, warps);
}

// Shared-memory row strides (16-bit elements) of the backward's staging buffers: columns padded so
// that a warp's reduction unit (up to 4 n-tiles, reduce_unit_tiles) never reads past a row, then
// skewed by 8 so that the stride is an odd number of 16-byte units (the 8 rows of an ldmatrix land in
// distinct bank groups).
inline int staging_stride(int cols) { return int(round_up(cols, 32)) + 8; }

}  // namespace cuda_layout
}  // namespace mlp
}  // namespace perceptrons
