// Fused MLP on the CPU: forward (inference and training) and backward, compiled once per ISA.
//
// Work is cut into tiles of kTileRows batch rows. A tile goes through every layer before the next
// tile starts, so its activations stay in L1/L2: in inference nothing but y is written to memory.
// All activations are row-major with rows padded to kPad; every layer is one register-blocked GEMM
// (common/cpu_simd.h) against weights packed once per call.
//
// An input encoding (cfg.encoding) runs in the input stage: each tile's rows are encoded into a tile
// buffer just before layer 0 reads them, in the forward and again in the backward (where layer 0's
// weight gradient needs them and dL/dx goes back through the encoding), so no encoded row is ever
// written to memory.
//
// Weight gradients: each of n_slots(batch) slots owns a contiguous range of tiles and accumulates
// their outer products in its own buffer, in order; slots are summed in slot order at the end. The
// slot count depends on the batch only, so the bits do not change with the thread count.
#include "mlp/mlp_cpu_isa.h"

#include <cstdint>
#include <type_traits>
#include <utility>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/activations.h"
#include "encodings/encodings_math.h"

namespace perceptrons {
namespace mlp {
namespace PERCEPTRONS_ISA_NS {
namespace {

#include "common/cpu_simd.h"

using cpu::kTileRows;
using cpu::Layout;
using cpu::pad;

inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// Calls f(std::integral_constant<Activation, a>) so per-element loops see a compile-time activation.
template <typename F>
void with_activation(Activation a, F&& f) {
  switch (a) {
    case Activation::None: f(std::integral_constant<Activation, Activation::None>{}); break;
    case Activation::ReLU: f(std::integral_constant<Activation, Activation::ReLU>{}); break;
    case Activation::LeakyReLU: f(std::integral_constant<Activation, Activation::LeakyReLU>{}); break;
    case Activation::Sigmoid: f(std::integral_constant<Activation, Activation::Sigmoid>{}); break;
    case Activation::Tanh: f(std::integral_constant<Activation, Activation::Tanh>{}); break;
    case Activation::Softplus: f(std::integral_constant<Activation, Activation::Softplus>{}); break;
    case Activation::SiLU: f(std::integral_constant<Activation, Activation::SiLU>{}); break;
    case Activation::Sine: f(std::integral_constant<Activation, Activation::Sine>{}); break;
    case Activation::Exp: f(std::integral_constant<Activation, Activation::Exp>{}); break;
  }
}

// out[r][c] = f(in[r][c]) for c < cols.
template <typename T>
void activate_rows(Activation act, T p, int rows, int cols, const T* in, long ldi, T* out, long ldo) {
  if (ldi == cols && ldo == cols) {  // contiguous rows (the user's y): one long row vectorises better
    cols *= rows;
    rows = 1;
  }
  if (act == Activation::Sigmoid) {  // the vector exp of common/cpu_simd.h (float), not scalar expf
    for (int r = 0; r < rows; ++r) sigmoid_n(in + r * ldi, out + r * ldo, cols);
    return;
  }
  with_activation(act, [&](auto A) {
    for (int r = 0; r < rows; ++r) {
      const T* s = in + r * ldi;
      T* d = out + r * ldo;
      for (int c = 0; c < cols; ++c) d[c] = activation_forward<T>(A.value, s[c], p);
    }
  });
}

// g[r][c] *= f'(.) with f' written from the saved output y (from_input=false) or pre-activation z.
// relu and leaky_relu (the common case) run on whole vectors where the saved rows are padded to the
// vector length (tiles and saved layers are; g's padding is zero and stays zero).
template <typename T>
void scale_by_activation_grad(Activation act, T p, bool from_input, int rows, int cols, const T* saved,
                              long lds, T* g, long ldg) {
  if (act == Activation::None) return;
  constexpr int VL = Simd<T>::L;
  const bool padded = lds >= long((cols + VL - 1) / VL * VL);  // y itself (ld = out) may not be
  if ((act == Activation::ReLU || act == Activation::LeakyReLU) && padded) {
    using S = Simd<T>;
    using V = typename S::V;
    const V one = S::splat(T(1)), below = S::splat(act == Activation::ReLU ? T(0) : p);
    for (int r = 0; r < rows; ++r) {
      const T* s = saved + r * lds;
      T* d = g + r * ldg;
      for (int c = 0; c < cols; c += S::L) {
        const V sv = S::load(s + c);
        S::store(d + c, S::load(d + c) * (sv > T(0) ? one : below));  // y > 0 <=> z > 0
      }
    }
    return;
  }
  with_activation(act, [&](auto A) {
    for (int r = 0; r < rows; ++r) {
      const T* s = saved + r * lds;
      T* d = g + r * ldg;
      if (from_input) {
        for (int c = 0; c < cols; ++c) d[c] *= activation_grad_from_input<T>(A.value, s[c], p);
      } else {
        for (int c = 0; c < cols; ++c) d[c] *= activation_grad_from_output<T>(A.value, s[c], p);
      }
    }
  });
}

// The encoded rows of x (rows x n_in) into a column-major tile: element (r, j) at tile[j * kTileRows + r].
// Column-major because the encodings compute one column for all rows at a time (vector stores), and
// the GEMMs take either orientation of their A operand. The buffer holds kTileRows * tile_ld >=
// kTileRows * width elements.
template <typename T>
void encode_tile(const enc::EncodingConfig& e, const T* x, int rows, int n_in, T* tile) {
  enc::encode_rows(e, x, n_in, rows, tile, 1, kTileRows);
}

inline Epi epilogue_for(Activation a) {
  return a == Activation::ReLU ? Epi::ReLU : a == Activation::LeakyReLU ? Epi::Leaky : Epi::Store;
}
inline bool epilogue_applies(Activation a) {
  return a == Activation::ReLU || a == Activation::LeakyReLU || a == Activation::None;
}

template <typename T>
struct Net {
  const MlpConfig* cfg;
  int L;
  const T* W[kMaxLayers];
  const T* const* W_rows[kMaxLayers];  // null: W[l] is contiguous
  const T* b[kMaxLayers];
  Activation act, out_act;
  T p, out_p;
  Activation layer_act(int l) const { return l == L - 1 ? out_act : act; }
  T layer_p(int l) const { return l == L - 1 ? out_p : p; }
  int w(int l) const { return cfg->widths[l]; }
  const T* w_row(int l, int o) const { return W_rows[l] ? W_rows[l][o] : W[l] + long(o) * w(l); }
};

template <typename T>
Net<T> make_net(const MlpConfig& c, const MlpParams& prm) {
  Net<T> n;
  n.cfg = &c;
  n.L = c.n_layers;
  for (int l = 0; l < c.n_layers; ++l) {
    n.W[l] = static_cast<const T*>(prm.weights[l]);
    n.W_rows[l] = reinterpret_cast<const T* const*>(prm.weight_rows[l]);
    n.b[l] = static_cast<const T*>(prm.biases[l]);
  }
  n.act = c.activation;
  n.out_act = c.output_activation;
  n.p = T(c.activation_param);
  n.out_p = T(c.output_activation_param);
  return n;
}

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

template <typename T>
void pack_forward(const Net<T>& n, const Layout& lay, T* ws) {
  for (int l = 0; l < n.L; ++l) {
    const int wi = n.w(l), wo = n.w(l + 1);
    const long ldo = pad(wo);
    T* wt = ws + lay.packed_w[l];
    transpose_rows<T>([&](int o) { return n.w_row(l, o); }, [=](int i) { return wt + i * ldo; }, wo, wi);
    for (int i = 0; i < wi; ++i)
      for (long o = wo; o < ldo; ++o) wt[i * ldo + o] = T(0);
    T* bp = ws + lay.packed_b[l];
    for (int o = 0; o < wo; ++o) bp[o] = n.b[l] ? n.b[l][o] : T(0);
    for (long o = wo; o < ldo; ++o) bp[o] = T(0);
  }
}

template <typename T>
void forward_tile(const Net<T>& n, const MlpForwardArgs& args, const Layout& lay, const T* ws,
                  int64_t r0, int rows, T* bufA, T* bufB) {
  constexpr int VL = Simd<T>::L;
  const T* x = static_cast<const T*>(args.x);
  T* y = static_cast<T*>(args.y);
  const int n_in = mlp_n_inputs(*n.cfg);
  const T* in = x + r0 * n_in;
  long ld_in = n_in, cs_in = 1;  // the layer input's row and column strides
  // No software prefetch of the next tile's x rows: x is read in order, which the hardware prefetcher
  // follows, and a burst of prefetches per tile stalled the core on full fill buffers (measured: the
  // inference forward 3-5% faster without it; the backward prefetches its saved rows, which come from
  // memory, spread over its GEMMs instead: see SpreadPrefetch).
  if (has_encoding(*n.cfg)) {  // layer 0 reads the encoded rows from bufB (and writes to bufA)
    encode_tile<T>(n.cfg->encoding, x + r0 * n_in, rows, n_in, bufB);
    in = bufB;
    ld_in = 1;
    cs_in = kTileRows;
  }
  for (int l = 0; l < n.L; ++l) {
    const bool last = l == n.L - 1;
    const int wi = n.w(l), wo = n.w(l + 1);
    const Activation act = n.layer_act(l);
    const T p = n.layer_p(l);
    const bool training = args.training;
    const bool keep_z = training && activation_needs_preactivation(act);  // z goes to saved, h elsewhere
    // Where this layer's GEMM result goes, and where the activated values end up.
    T* z_dst;
    long ld_z;
    int n_store_z;
    if (training && layer_is_saved(*n.cfg, l)) {
      z_dst = static_cast<T*>(args.saved[l]) + r0 * saved_row_stride(wo);
      ld_z = saved_row_stride(wo);
      n_store_z = (wo + VL - 1) / VL * VL;
    } else if (last) {
      z_dst = y + r0 * wo;
      ld_z = wo;
      n_store_z = wo;
    } else {
      z_dst = in == bufA ? bufB : bufA;
      ld_z = lay.tile_ld;
      n_store_z = (wo + VL - 1) / VL * VL;
    }
    if (z_dst != y + r0 * wo && z_dst != bufA && z_dst != bufB) {
      // Saved rows are padded to kPad; the GEMM writes whole vectors only. Zero the rest so the
      // buffer is fully defined (same bits run to run, as opcheck and users expect).
      for (int r = 0; r < rows; ++r)
        for (long q = n_store_z; q < ld_z; ++q) z_dst[r * ld_z + q] = T(0);
    }
    const bool fused_act = epilogue_applies(act) && !keep_z;
    gemm<T>(rows, wo, wi, in, ld_in, cs_in, ws + lay.packed_w[l], pad(wo), z_dst, ld_z, n_store_z,
            Init::Row, ws + lay.packed_b[l], fused_act ? epilogue_for(act) : Epi::Store, p);
    const T* h = z_dst;
    long ld_h = ld_z;
    if (!fused_act) {
      // Transcendental activations: a pass over the tile while it is still in L1/L2.
      T* h_dst;
      if (last) {
        h_dst = y + r0 * wo;
        ld_h = wo;
      } else if (keep_z) {
        h_dst = in == bufA ? bufB : bufA;
        ld_h = lay.tile_ld;
      } else {
        h_dst = z_dst;
        ld_h = ld_z;
      }
      activate_rows<T>(act, p, rows, wo, z_dst, ld_z, h_dst, ld_h);
      if (!last && h_dst != z_dst) {  // keep the padding columns of the tile at zero
        for (int r = 0; r < rows; ++r)
          for (long c = wo; c < (wo + VL - 1) / VL * VL; ++c) h_dst[r * ld_h + c] = T(0);
      }
      h = h_dst;
    }
    in = h;
    ld_in = ld_h;
    cs_in = 1;
  }
}

// Feature-major forward for a batch of one tile or less. The batch-major forward packs W^T on every
// call, which at small batches costs as much as the arithmetic (256 wide, 32 rows: ~70 of ~180 us).
// Here activations are kept transposed, h^T (width x batch), and each layer is z^T = W h^T: A is W
// itself, broadcast from its rows where they are (a unit-routed model's through its row table), the
// batch runs along the vectors, and only x, y and the saved layers are transposed (batch x width
// elements, not in x out). Every output sums the same products in the same order as the batch-major
// GEMM (bias first, then k = 0, 1, ...), so both forwards give the same bits.
template <typename T>
bool use_feature_major(const Net<T>& n, const MlpForwardArgs& args, const Layout& lay) {
  constexpr int VL = Simd<T>::L;
  if (!lay.fm_ld || has_encoding(*n.cfg) || args.batch > kTileRows) return false;
  const int64_t B = args.batch, lanes = (B + VL - 1) / VL * VL;
  if (4 * B < 3 * lanes) return false;  // a quarter of the vector lanes idle or more
  int64_t packed = 0, transposed = B * (n.w(0) + n.w(n.L));
  for (int l = 0; l < n.L; ++l) {
    packed += int64_t(n.w(l)) * n.w(l + 1);
    if (args.training && layer_is_saved(*n.cfg, l)) transposed += B * n.w(l + 1);
  }
  return transposed < packed;
}

template <typename T>
void forward_feature_major(const Net<T>& n, const MlpForwardArgs& args, const Layout& lay, T* ws) {
  constexpr int VL = Simd<T>::L;
  const int B = int(args.batch);
  const int nb = (B + VL - 1) / VL * VL;  // columns the GEMMs compute (the rest of a vector is padding)
  const long ld = lay.fm_ld;
  const MlpConfig& c = *n.cfg;
  T* in = ws + lay.fm_buffer;
  T* out = in + lay.fm_buffer_elems;
  // x^T, with its padding columns zero (they go through the layers as columns of their own and are
  // never stored anywhere).
  const T* x = static_cast<const T*>(args.x);
  const int n_in = n.w(0);
  transpose_rows<T>([=](int r) { return x + long(r) * n_in; }, [=](int f) { return in + f * ld; }, B, n_in);
  for (int f = 0; f < n_in; ++f)
    for (int r = B; r < nb; ++r) in[f * ld + r] = T(0);
  const T** table = reinterpret_cast<const T**>(ws + lay.fm_rows);
  for (int l = 0; l < n.L; ++l) {
    const int wi = n.w(l), wo = n.w(l + 1);
    const Activation act = n.layer_act(l);
    const T p = n.layer_p(l);
    const bool saved = args.training && layer_is_saved(c, l);
    const bool keep_z = args.training && activation_needs_preactivation(act);  // saved holds z, not h
    const bool fused = epilogue_applies(act) && !keep_z;
    const T* const* rows = n.W_rows[l];
    if (!rows) {
      for (int o = 0; o < wo; ++o) table[o] = n.W[l] + long(o) * wi;
      rows = table;
    }
    gemm_ops<T, true>(wo, nb, wi, reinterpret_cast<const T*>(rows), 0, 0, StridedRows<T>{in, ld},
                      StridedOut<T>{out, ld}, nb, n.b[l] ? Init::Col : Init::Zero, n.b[l],
                      fused ? epilogue_for(act) : Epi::Store, p);
    // out^T's first B columns into the batch-major rows at dst (row stride ld_dst, padded to pad_to
    // with zeros).
    auto store_rows = [&](T* dst, long ld_dst, long pad_to) {
      transpose_rows<T>([=](int f) { return out + f * ld; }, [=](int r) { return dst + r * ld_dst; }, wo, B);
      for (int r = 0; r < B; ++r)
        for (long q = wo; q < pad_to; ++q) dst[r * ld_dst + q] = T(0);
    };
    T* saved_rows = saved ? static_cast<T*>(args.saved[l]) : nullptr;
    const long ld_saved = saved_row_stride(wo);
    if (saved && keep_z) store_rows(saved_rows, ld_saved, ld_saved);
    if (!fused) activate_rows<T>(act, p, wo, B, out, ld, out, ld);
    if (saved && !keep_z) store_rows(saved_rows, ld_saved, ld_saved);
    if (l == n.L - 1) store_rows(static_cast<T*>(args.y), wo, wo);
    T* t = in;
    in = out;
    out = t;
  }
}

template <typename T>
void forward_impl(const MlpForwardArgs& args, const Layout& lay, void* ws_raw) {
  const Net<T> n = make_net<T>(args.cfg, args.params);
  T* ws = static_cast<T*>(ws_raw);
  if (use_feature_major(n, args, lay)) {
    forward_feature_major(n, args, lay, ws);
    return;
  }
  pack_forward(n, lay, ws);
  const int64_t tiles = cpu::n_tiles(args.batch);
#pragma omp parallel num_threads(lay.n_threads) if (lay.n_threads > 1)
  {
    T* mine = ws + lay.threads_base + int64_t(thread_id()) * lay.per_thread;
    T* bufA = mine;
    T* bufB = mine + kTileRows * lay.tile_ld;
    // Tiles are handed out two at a time rather than split in halves up front: on a shared machine one
    // thread is often preempted for a while, and a static split then waits for it (measured, 2^16 rows,
    // 2 threads: median 4.35-5.75 ms static, 4.45-4.49 ms dynamic, over two repetitions).
#pragma omp for schedule(dynamic, 2)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t r0 = t * kTileRows;
      const int rows = int(args.batch - r0 < kTileRows ? args.batch - r0 : kTileRows);
      forward_tile<T>(n, args, lay, ws, r0, rows, bufA, bufB);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

// The backward reads W as it is stored, (out, in), with rows padded to kPad. Where in is a multiple
// of kPad the user's W already has that layout and is read in place, through its row table when it
// has one (a unit-routed model): the copy would cost as much as the arithmetic at small batches (a
// routed MLP runs one such call per stream and step).
template <typename T>
struct BackwardW {
  const T* w[kMaxLayers] = {};            // rows at w[l] + o * pad(in) (packed or the user's W) ...
  const T* const* rows[kMaxLayers] = {};  // ... or, when set, at rows[l][o] (the user's row table)
};

template <typename T>
bool backward_reads_w_in_place(const Net<T>& n, int l) {
  return n.w(l) % cpu::kPad == 0;
}

template <typename T>
void pack_backward(const Net<T>& n, const Layout& lay, T* ws, BackwardW<T>& packed) {
  for (int l = 0; l < n.L; ++l) {
    if (backward_reads_w_in_place(n, l)) {
      packed.w[l] = n.W[l];
      packed.rows[l] = n.W_rows[l];
      continue;
    }
    const int wi = n.w(l), wo = n.w(l + 1);
    const long ldi = pad(wi);
    T* wp = ws + lay.packed_w[l];
    for (int o = 0; o < wo; ++o) {
      const T* row = n.w_row(l, o);
      for (int i = 0; i < wi; ++i) wp[o * ldi + i] = row[i];
      for (long i = wi; i < ldi; ++i) wp[o * ldi + i] = T(0);
    }
    packed.w[l] = wp;
  }
}

// Where each layer's weight gradient accumulates: in the caller's dW itself (`direct`: its rows, or
// the rows its row table lists for a unit-routed model), set only when there is a single slot and dW
// has the slot's layout (rows of pad(in) = in elements); else in the slot. With one slot the slot
// would hold the final sum anyway, and writing it there first cost a zeroing pass and a copy of all
// of dW per call: at 32 rows, 256 wide, a third of the backward.
template <typename T>
struct DwTargets {
  T* direct[kMaxLayers] = {};
  T* const* direct_rows[kMaxLayers] = {};
  bool is_direct(int l) const { return direct[l] || direct_rows[l]; }
};

template <typename T>
DwTargets<T> dw_targets(const Net<T>& n, const MlpBackwardArgs& args, const Layout& lay) {
  DwTargets<T> d;
  for (int l = 0; l < n.L; ++l) {
    if (lay.slots != 1 || !args.dweights[l] || !cpu::dw_vector_over_input(*n.cfg, l) || pad(n.w(l)) != n.w(l))
      continue;
    if (args.dweight_rows[l]) d.direct_rows[l] = reinterpret_cast<T* const*>(args.dweight_rows[l]);
    else d.direct[l] = static_cast<T*>(args.dweights[l]);
  }
  return d;
}

// acc[j .. j + NV vectors) += the sum of g's rows over those columns, rows added in order (r = 0, 1,
// ...). The NV vectors' sums are independent chains, run side by side: one vector at a time, each add
// waited for the one before it (a bias gradient at width 64 cost as much as 72 adds' latency x 4).
template <typename T, int NV>
inline void add_column_sums(const T* g, long ldg, int rows, int j, T* acc) {
  using S = Simd<T>;
  typename S::V s[NV];
#pragma GCC unroll 4
  for (int q = 0; q < NV; ++q) s[q] = S::load(acc + j + q * S::L);
  for (int r = 0; r < rows; ++r)
#pragma GCC unroll 4
    for (int q = 0; q < NV; ++q) s[q] += S::load(g + r * ldg + j + q * S::L);
#pragma GCC unroll 4
  for (int q = 0; q < NV; ++q) S::store(acc + j + q * S::L, s[q]);
}

// The next tile's saved rows (they come from memory), prefetched a few cache lines after each
// micro-tile of this tile's GEMMs. Issued in one burst at the start of the tile (576 lines for the
// headline MLP), the prefetches outnumbered the core's line-fill buffers and the core waited on them:
// about 13% of the backward's time (perf, 2^16 rows, 1 thread). Spread, the
// backward got 5-6% faster (backward right after a training forward, 15 interleaved rounds: 1 thread
// 1.052-1.059x, 2 threads 1.046x; 4 or 32 lines a step 1.033-1.039x, 8 or 16 lines 1.052-1.058x).
// 16 lines a step cover a whole next tile of narrow layers too (32 wide: ~30 micro-tiles a tile).
struct SpreadPrefetch {
  static constexpr int kLinesPerStep = 16;
  const char* next[kMaxLayers];
  const char* end[kMaxLayers];
  int n = 0, cur = 0;
  void add(const char* p, long bytes) {
    next[n] = p;
    end[n++] = p + bytes;
  }
  void step() {
    for (int i = 0; i < kLinesPerStep; ++i) {
      while (cur < n && next[cur] >= end[cur]) ++cur;
      if (cur == n) return;
      __builtin_prefetch(next[cur], 0, 2);
      next[cur] += 64;
    }
  }
};
struct PrefetchStep {
  SpreadPrefetch* pf;
  void operator()() const { pf->step(); }
};

// One tile's share of the backward. `first`: the slot's first tile, whose products start the slot's
// sums (Init::Zero) instead of adding to them, so no slot is zeroed beforehand.
template <typename T>
void backward_tile(const Net<T>& n, const MlpBackwardArgs& args, const Layout& lay, const BackwardW<T>& packed,
                   const DwTargets<T>& dwt, T* slot, bool first, int64_t r0, int rows, T* bufG, T* bufG2, T* bufH) {
  constexpr int VL = Simd<T>::L;
  const MlpConfig& c = *n.cfg;
  const T* x = static_cast<const T*>(args.x);
  const T* y = static_cast<const T*>(args.y);
  const T* dy = static_cast<const T*>(args.dy);
  T* dx = static_cast<T*>(args.dx);
  const long ldt = lay.tile_ld;
  const int n_in = mlp_n_inputs(c);
  auto saved_rows = [&](int l) {  // saved rows of layer l's output, starting at this tile
    return static_cast<const T*>(args.saved[l]) + r0 * saved_row_stride(n.w(l + 1));
  };

  // G = dL/dz of the output layer: dy times the output activation's derivative. Padding is zero.
  {
    const int wo = n.w(n.L);
    const int wv = (wo + VL - 1) / VL * VL;
    for (int r = 0; r < rows; ++r) {
      const T* s = dy + (r0 + r) * wo;
      T* d = bufG + r * ldt;
      for (int o = 0; o < wo; ++o) d[o] = s[o];
      for (int o = wo; o < wv; ++o) d[o] = T(0);
    }
    if (activation_needs_preactivation(n.out_act))
      scale_by_activation_grad<T>(n.out_act, n.out_p, true, rows, wo, saved_rows(n.L - 1),
                                  saved_row_stride(wo), bufG, ldt);
    else if (n.out_act != Activation::None)
      scale_by_activation_grad<T>(n.out_act, n.out_p, false, rows, wo, y + r0 * wo, wo, bufG, ldt);
  }

  // The saved activations come from memory (they do not fit in cache at training batch sizes). The
  // next tile's rows are prefetched during this tile's GEMMs (SpreadPrefetch), so the loads overlap
  // its arithmetic instead of stalling it; in the order the next tile reads them, top layer first.
  SpreadPrefetch prefetch;
  const int64_t r_next = r0 + rows;
  if (r_next < args.batch) {
    const int next_rows = int(args.batch - r_next < kTileRows ? args.batch - r_next : kTileRows);
    for (int l = n.L - 1; l >= 0; --l) {
      if (!layer_is_saved(c, l)) continue;
      const long ld = saved_row_stride(n.w(l + 1));
      const char* p0 = static_cast<const char*>(args.saved[l]) + r_next * ld * long(sizeof(T));
      const long bytes = long(next_rows) * ld * long(sizeof(T));
      prefetch.add(p0, bytes);
    }
  }
  const PrefetchStep pf_step{&prefetch};

  T* g = bufG;
  T* g2 = bufG2;
  for (int l = n.L - 1; l >= 0; --l) {
    const int wi = n.w(l), wo = n.w(l + 1);
    // The layer's input activations h (rows x wi).
    const T* h;
    long ld_h, cs_h = 1;  // row and column strides of h
    if (l == 0 && has_encoding(c)) {
      encode_tile<T>(c.encoding, x + r0 * n_in, rows, n_in, bufH);
      h = bufH;
      ld_h = 1;
      cs_h = kTileRows;
    } else if (l == 0) {
      h = x + r0 * wi;
      ld_h = wi;
    } else if (activation_needs_preactivation(n.act)) {
      activate_rows<T>(n.act, n.p, rows, wi, saved_rows(l - 1), saved_row_stride(wi), bufH, ldt);
      for (int r = 0; r < rows; ++r)
        for (int q = wi; q < (wi + VL - 1) / VL * VL; ++q) bufH[r * ldt + q] = T(0);
      h = bufH;
      ld_h = ldt;
    } else {
      h = saved_rows(l - 1);
      ld_h = saved_row_stride(wi);
    }
    const Init dw_init = first ? Init::Zero : Init::Load;
    if (first && !dwt.is_direct(l)) {
      // The GEMM writes whole vectors up to the vector-rounded width; the slot's rows are padded
      // further (kPad > the vector length on AVX2, and for double). The slots are summed whole, so
      // that tail, and the region of a layer whose dW is not wanted, start at zero instead of holding
      // whatever the workspace held.
      const bool over_in = cpu::dw_vector_over_input(c, l);
      const int rows_w = over_in ? wo : wi, cols = over_in ? wi : wo;
      const long ld_w = pad(cols), from = args.dweights[l] ? (cols + VL - 1) / VL * VL : 0;
      T* acc = slot + lay.slot_w[l];
      for (int r = 0; r < rows_w; ++r)
        for (long q = from; q < ld_w; ++q) acc[r * ld_w + q] = T(0);
    }
    if (dwt.direct_rows[l]) {  // dW rows where the row table says
      gemm_rows<T>(wo, wi, rows, g, 1, ldt, StridedRows<T>{h, ld_h}, OutRowTable<T>{dwt.direct_rows[l], 0},
                   int(pad(wi)), dw_init, nullptr, Epi::Store, T(0), pf_step);
    } else if (args.dweights[l]) {
      T* acc = dwt.direct[l] ? dwt.direct[l] : slot + lay.slot_w[l];
      if (cpu::dw_vector_over_input(c, l))  // acc is dW (wo x pad(wi))
        gemm<T>(wo, wi, rows, g, 1, ldt, h, ld_h, acc, pad(wi), int(pad(wi)), dw_init, nullptr, Epi::Store, T(0),
                pf_step);
      else  // acc is dW^T (wi x pad(wo)) = h^T g
        gemm<T>(wi, wo, rows, h, cs_h, ld_h, g, ldt, acc, pad(wo), int(pad(wo)), dw_init, nullptr, Epi::Store, T(0),
                pf_step);
    }
    if (first)  // all pad(wo) entries, wanted or not: the slot sums add whole slots, padding included
      for (long j = 0; j < pad(wo); ++j) slot[lay.slot_b[l] + j] = T(0);
    if (args.dbiases[l]) {
      T* acc = slot + lay.slot_b[l];
      const int nvec = (wo + VL - 1) / VL;  // the last one partly padding (zero in g)
      int v = 0;
      for (; v + 4 <= nvec; v += 4) add_column_sums<T, 4>(g, ldt, rows, v * VL, acc);
      for (; v < nvec; ++v) add_column_sums<T, 1>(g, ldt, rows, v * VL, acc);
    }
    if (l == 0 && !dx) break;
    // dL/d(layer input): into dx directly, or into g2 when it is an encoding's output (or a hidden layer).
    const bool to_dx = l == 0 && !has_encoding(c);
    T* dst = to_dx ? dx + r0 * wi : g2;
    const long ld_dst = to_dx ? wi : ldt;
    const int n_store = to_dx ? wi : (wi + VL - 1) / VL * VL;
    if (packed.rows[l])
      gemm_rows<T>(rows, wi, wo, g, ldt, 1, RowTable<T>{packed.rows[l], 0}, StridedOut<T>{dst, ld_dst}, n_store,
                   Init::Zero, nullptr, Epi::Store, T(0), pf_step);
    else
      gemm<T>(rows, wi, wo, g, ldt, 1, packed.w[l], pad(wi), dst, ld_dst, n_store, Init::Zero, nullptr,
              Epi::Store, T(0), pf_step);
    if (l == 0 && !to_dx)
      enc::encode_rows_backward(c.encoding, x + r0 * n_in, n_in, rows, g2, ldt, 1, dx + r0 * n_in);
    if (l > 0) {
      const bool from_z = activation_needs_preactivation(n.act);
      scale_by_activation_grad<T>(n.act, n.p, from_z, rows, wi, saved_rows(l - 1), saved_row_stride(wi),
                                  g2, ldt);
      T* t = g;
      g = g2;
      g2 = t;
    }
  }
}

template <typename T>
void backward_impl(const MlpBackwardArgs& args, const Layout& lay, void* ws_raw) {
  const Net<T> n = make_net<T>(args.cfg, args.params);
  const MlpConfig& c = args.cfg;
  T* ws = static_cast<T*>(ws_raw);
  BackwardW<T> packed;
  pack_backward(n, lay, ws, packed);
  const DwTargets<T> dwt = dw_targets(n, args, lay);
  const int64_t tiles = cpu::n_tiles(args.batch);
  const int S = lay.slots;
  T* const slot0 = ws + lay.slots_base;
#pragma omp parallel num_threads(lay.n_threads) if (lay.n_threads > 1)
  {
    T* mine = ws + lay.threads_base + int64_t(thread_id()) * lay.per_thread;
    T* bufG = mine;
    T* bufG2 = mine + kTileRows * lay.tile_ld;
    T* bufH = mine + 2 * kTileRows * lay.tile_ld;
    // Slots are handed out one at a time (which thread runs a slot changes nothing in its sum): with
    // a static split, a thread that the machine preempts holds back the whole call.
#pragma omp for schedule(dynamic, 1)
    for (int s = 0; s < S; ++s) {
      T* slot = slot0 + int64_t(s) * lay.slot_elems;
      const int64_t t_begin = tiles * s / S, t_end = tiles * (s + 1) / S;  // at least one tile (S <= tiles)
      for (int64_t t = t_begin; t < t_end; ++t) {
        const int64_t r0 = t * kTileRows;
        const int rows = int(args.batch - r0 < kTileRows ? args.batch - r0 : kTileRows);
        backward_tile<T>(n, args, lay, packed, dwt, slot, t == t_begin, r0, rows, bufG, bufG2, bufH);
      }
    }
    // Sum the slots into slot 0 in slot order, ((s0 + s1) + s2) + ..., a block of elements at a time
    // (each element's adds are in the same order whatever the thread count: the same bits).
    constexpr int64_t kBlock = 1024;
    const int64_t n_blocks = (lay.slot_elems + kBlock - 1) / kBlock;
    if (S > 1) {
#pragma omp for schedule(static)
      for (int64_t blk = 0; blk < n_blocks; ++blk) {
        const int64_t e0 = blk * kBlock, e1 = e0 + kBlock < lay.slot_elems ? e0 + kBlock : lay.slot_elems;
        for (int s = 1; s < S; ++s) {
          const T* src = slot0 + int64_t(s) * lay.slot_elems;
          for (int64_t e = e0; e < e1; ++e) slot0[e] += src[e];
        }
      }
    }
    // Then out of slot 0's padded (and for some layers transposed) layout into the caller's arrays.
    for (int l = 0; l < n.L; ++l) {
      const int wi = n.w(l), wo = n.w(l + 1);
      T* dW = static_cast<T*>(args.dweights[l]);
      T* const* dW_rows = reinterpret_cast<T* const*>(args.dweight_rows[l]);
      auto dw_row = [=](int o) { return dW_rows ? dW_rows[o] : dW + int64_t(o) * wi; };
      if (dwt.is_direct(l)) {
        // already in place
      } else if (dW && S == 0) {  // empty batch: no slots, zero gradients
#pragma omp for schedule(static)
        for (int o = 0; o < wo; ++o)
          for (int i = 0; i < wi; ++i) dw_row(o)[i] = T(0);
      } else if (dW) {
        const T* acc = slot0 + lay.slot_w[l];
        if (cpu::dw_vector_over_input(c, l)) {  // acc is dW, rows padded
#pragma omp for schedule(static)
          for (int o = 0; o < wo; ++o) {
            T* d = dw_row(o);
            for (int i = 0; i < wi; ++i) d[i] = acc[int64_t(o) * pad(wi) + i];
          }
        } else {  // acc is dW^T, rows padded
#pragma omp single
          transpose_rows<T>([=](int i) { return acc + int64_t(i) * pad(wo); }, dw_row, wi, wo);
        }
      }
      T* db = static_cast<T*>(args.dbiases[l]);
      if (db) {
#pragma omp for schedule(static)
        for (int o = 0; o < wo; ++o) db[o] = S == 0 ? T(0) : slot0[lay.slot_b[l] + o];
      }
    }
  }
}

}  // namespace

void run(const MlpForwardArgs& args, const cpu::Layout& layout, void* ws) {
  if (args.cfg.dtype == DType::Float32) forward_impl<float>(args, layout, ws);
  else forward_impl<double>(args, layout, ws);
}

void run(const MlpBackwardArgs& args, const cpu::Layout& layout, void* ws) {
  if (args.cfg.dtype == DType::Float32) backward_impl<float>(args, layout, ws);
  else backward_impl<double>(args, layout, ws);
}

}  // namespace PERCEPTRONS_ISA_NS
}  // namespace mlp
}  // namespace perceptrons
