// Spline-KAN layer on the CPU, compiled once per ISA. Never builds the (batch, in, G+k) basis:
// for each (row, input) the k+1 non-zero basis values are evaluated locally (common/bspline.h)
// and the edge's k+2 terms (base + k+1 spline bases) are applied as vectors over the outputs.
//
//   forward  y[b,:]   += sum_terms w_t(x[b,i]) * Wpacked[i, row_t, :]        (parallel over rows)
//   dx       dx[b,i]   = sum_terms w'_t(x[b,i]) * <Wpacked[i, row_t, :], dy[b,:]>
//   dW       dWp[i,row_t,:] += w_t(x[b,i]) * dy[b,:]
// The backward computes both from one evaluation of the terms, parallel over blocks of input
// features. Each weight gradient belongs to one input feature and is summed over the batch in a
// fixed order by the one thread that owns that feature: deterministic whatever the thread count,
// no atomics.
//
// Loop structure: tiles of lay.row_tile rows; inside a tile, feature by feature: the edge terms of the
// tile's rows are evaluated vectorised over the rows (feature_terms), the rows are bucketed by
// cell (RowBuckets), and for each cell the k+1 packed weight rows it touches (forward, dx) or their
// gradient rows (dW) are held in registers, over a chunk of the outputs, while the cell's rows pass
// (forward_feature, dx_feature, dw_feature). Every weight vector is then loaded once per cell
// instead of once per edge: the kernels are FMA-bound rather than load-bound.
#include "kan/kan_cpu_isa.h"

#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/bspline.h"

namespace perceptrons {
namespace kan {
namespace PERCEPTRONS_ISA_NS {
namespace {

#include "common/cpu_simd.h"

using cpu::Layout;
using cpu::pad;

#if defined(__AVX512F__)
constexpr int kVecRegs = 32;
#else
constexpr int kVecRegs = 16;
#endif
constexpr int kLd = cpu::kMaxRowTile;  // row stride of the per-feature term arrays
static_assert(kLd % cpu::kMaxVecLanes == 0, "term rows must be whole vectors");

inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// Hides a pointer's value from the optimiser: with run-time row strides GCC otherwise keeps one
// induction variable per (term, vector) address of the unrolled kernels, spills them, and pays an
// extra load per FMA; an opaque pointer is used as base + constant displacement instead.
template <typename P>
inline __attribute__((always_inline)) P* opaque(P* p) {
  asm("" : "+r"(p));
  return p;
}

// A scalar from memory in every lane, as one broadcast load. (Simd::splat's V{} + s must keep a
// real add, since -0 + 0 = +0, and then broadcasts from a register, which issues on the port of the
// second FMA unit; s - 0 = s for every s, so this folds to the bare broadcast.)
template <typename T>
inline __attribute__((always_inline)) typename Simd<T>::V bcast(const T& s) {
  return s - typename Simd<T>::V{};
}

inline int round_up(int n, int m) { return (n + m - 1) / m * m; }

template <typename T>
struct Packed {
  const T* W;      // (in, R, po)
  const T* knots;  // (in, kld), feature i's knots start at knots + i*kld + kMaxSplineOrder
  const T* inv_h;  // (in)
  const T *t_first, *t_last, *lo, *hi;  // (in) each
  int in, out, R, nb, n_knots, zero_base;
  long po, kld;
  bool clamp;
  const T* t(int i) const { return knots + i * kld + kMaxSplineOrder; }
  const T* w(int i) const { return W + long(i) * R * po; }
};

// One feature's edge terms over a tile's rows (rows contiguous, row stride kLd):
//   base[r]        packed row of the first spline term (see kan_cpu_layout.h)
//   w[q * kLd + r] term q's weight: q = 0 silu(x), q = 1 + r' basis B_{j-K+r'}(x)
//   dw[...]        d/dx of each weight (backward with dx only)
template <typename T, int K>
struct Terms {
  int* base;
  T* w;
  T* dw;
  explicit Terms(T* p) : base(reinterpret_cast<int*>(p)), w(p + kLd), dw(p + kLd + (K + 2) * kLd) {}
};

// Terms of feature i for rows 0 .. n-1 (n a multiple of the vector length) from x's column xcol.
// Uniform grids (every grid before an update_grid) are evaluated a vector of rows at a time: the
// cell by truncation and the division-free triangle of bspline_local_uniform. Non-uniform grids,
// and k = 1 (whose derivatives jump at knots, so the cell must follow the stored knots exactly
// rather than the rounded (x - t_0)/h, in the forward too so that both directions agree and the
// weight-gradient order does not depend on whether dx is wanted), take the scalar path of
// bspline.h row by row.
template <typename T, int K>
void feature_terms(const Packed<T>& P, int i, const T* xcol, T* sig, int n, bool derivative, Terms<T, K> tm) {
  using S = Simd<T>;
  using V = typename S::V;
  typedef int VI __attribute__((vector_size(S::L * sizeof(int))));
  constexpr int VL = S::L;
  sigmoid_n(xcol, sig, n);
  const V one = S::splat(T(1));
  for (int v = 0; v < n; v += VL) {
    const V x = S::load(xcol + v), s = S::load(sig + v);
    S::store(tm.w + v, x * s);  // silu
    if (derivative) S::store(tm.dw + v, s * (one + x * (one - s)));
  }
  const T inv_h_s = P.inv_h[i];
  if (inv_h_s == T(0) || K == 1) {
    const T* t = P.t(i);
    for (int r = 0; r < n; ++r) {
      T xs = xcol[r], dfac = T(1);
      // Only finite x is clamped: NaN and +-Inf have no cell in either mode (the reference's rule).
      if (P.clamp && xs - xs == T(0)) {
        const T lo = t[K], hi = t[P.n_knots - 1 - K];
        if (xs < lo) xs = lo, dfac = T(0);
        if (xs > hi) xs = hi, dfac = T(0);
      }
      const int j = bspline_find_cell<T>(t, P.n_knots, xs, inv_h_s != T(0), inv_h_s);
      T wl[K + 1] = {}, dwl[K + 1] = {};
      if (j >= 0) {
        if (inv_h_s != T(0)) bspline_local_uniform<T, K>((xs - t[0]) * inv_h_s, j, inv_h_s, wl, derivative ? dwl : nullptr);
        else bspline_local<T, K>(t, j, xs, wl, derivative ? dwl : nullptr);
      }
      tm.base[r] = j >= 0 ? 1 + j : P.zero_base;
      for (int q = 0; q <= K; ++q) {
        tm.w[(1 + q) * kLd + r] = wl[q];
        if (derivative) tm.dw[(1 + q) * kLd + r] = dwl[q] * dfac;
      }
    }
    return;
  }
  const V zero = V{};
  const V inv_h = S::splat(inv_h_s), t0 = S::splat(P.t_first[i]), tl = S::splat(P.t_last[i]);
  const V lo = S::splat(P.lo[i]), hi = S::splat(P.hi[i]);
  const V last_cell = S::splat(T(P.n_knots - 2)), zero_base = S::splat(T(P.zero_base));
  for (int v = 0; v < n; v += VL) {
    const V x = S::load(xcol + v);
    V xs = x, dfac = one;
    if (P.clamp) {
      const auto finite = (x - x) == zero;  // NaN and +-Inf are not clamped: they have no cell
      const auto below = finite & (x < lo), above = finite & (x > hi);
      dfac = below ? zero : dfac;
      dfac = above ? zero : dfac;
      xs = below ? lo : xs;
      xs = above ? hi : xs;
    }
    const V s = (xs - t0) * inv_h;
    const auto valid = (xs >= t0) & (xs < tl);  // false for NaN
    V jf = __builtin_convertvector(__builtin_convertvector(valid ? s : zero, VI), V);  // floor, s >= 0
    jf = jf > last_cell ? last_cell : jf;
    V nv[K + 1], prev[K + 1];
    nv[0] = one;
#pragma GCC unroll 8
    for (int p = 1; p <= K; ++p) {
      const T inv_p = T(1) / T(p);
      V saved = zero;
#pragma GCC unroll 8
      for (int r = 0; r < p; ++r) {
        const V tmp = nv[r] * inv_p;
        const V right = jf + T(r + 1) - s;
        const V left = s - (jf + T(1 - p + r));
        nv[r] = saved + right * tmp;
        saved = left * tmp;
      }
      nv[p] = saved;
      if (p == K - 1)
#pragma GCC unroll 8
        for (int r = 0; r < K; ++r) prev[r] = nv[r];
    }
    if (K == 1) prev[0] = one;
    const VI base = __builtin_convertvector(valid ? jf + one : zero_base, VI);
    __builtin_memcpy(tm.base + v, &base, sizeof(VI));
    // Invalid rows point at zero rows; their weights are zeroed too, since the triangle of a
    // garbage s (x infinite) may hold Inf or NaN, and 0 * NaN would not vanish.
#pragma GCC unroll 8
    for (int r = 0; r <= K; ++r) {
      S::store(tm.w + (1 + r) * kLd + v, valid ? nv[r] : zero);
      if (derivative) {
        const V a = r >= 1 ? prev[r - 1] : zero;
        const V b = r <= K - 1 ? prev[r] : zero;
        S::store(tm.dw + (1 + r) * kLd + v, valid ? (a - b) * inv_h * dfac : zero);
      }
    }
  }
}

template <typename T>
void pack(const KanConfig& c, const KanParams& prm, const Layout& lay, T* ws) {
  const int in = c.in_features, out = c.out_features, nb = c.n_basis(), R = cpu::packed_rows(c);
  const long po = pad(out);
  const T* bw = static_cast<const T*>(prm.base_weight);
  const T* sw = static_cast<const T*>(prm.spline_weight);
  const T* ss = static_cast<const T*>(prm.spline_scaler);
  const T* grid = static_cast<const T*>(prm.grid);
  T* W = ws + lay.weights;
  const int first_spline = cpu::spline_row(c, 0);
  // The weights, transposed to (in, rows, out) by blocks of outputs: reading feature i of a block's
  // outputs walks kOutBlock rows of base_weight / spline_weight forward (one page each), and the
  // writes of one feature land on whole lines. (Feature-major order would touch a new page of
  // spline_weight for every output: a TLB miss per element on wide layers.)
  constexpr int kOutBlock = 64;
  const int n_oblk = (out + kOutBlock - 1) / kOutBlock;
#pragma omp parallel for schedule(static) num_threads(lay.n_threads) if (lay.n_threads > 1 && n_oblk > 1)
  for (int ob = 0; ob < n_oblk; ++ob) {
    const int o0 = ob * kOutBlock, o1 = o0 + kOutBlock < out ? o0 + kOutBlock : out;
    for (int i = 0; i < in; ++i) {
      T* Wi = W + long(i) * R * po;
      for (int o = o0; o < o1; ++o) {
        Wi[o] = bw[long(o) * in + i];
        const T scale = ss ? ss[long(o) * in + i] : T(1);
        const T* so = sw + (long(o) * in + i) * nb;
        for (int q = 0; q < nb; ++q) Wi[(first_spline + q) * po + o] = scale * so[q];
      }
    }
  }
#pragma omp parallel for schedule(static) num_threads(lay.n_threads) if (lay.n_threads > 1 && in > 1)
  for (int i = 0; i < in; ++i) {
    T* Wi = W + long(i) * R * po;
    // Zero rows (before and after the bases) and the padding columns of every row.
    for (int q = 0; q < R; ++q) {
      const bool zero_row = q != 0 && (q < first_spline || q >= first_spline + nb);
      for (long o = zero_row ? 0 : out; o < po; ++o) Wi[q * po + o] = T(0);
    }
    // Knots with kMaxSplineOrder extra knots on each side at the end spacings (see bspline.h).
    const int n = c.n_knots(), P = kMaxSplineOrder;
    const T* g = grid + long(i) * n;
    T* kt = ws + lay.knots + long(i) * pad(cpu::padded_knots(c));
    const T h0 = g[1] - g[0] > T(0) ? g[1] - g[0] : T(1), h1 = g[n - 1] - g[n - 2] > T(0) ? g[n - 1] - g[n - 2] : T(1);
    for (int m = 0; m < P; ++m) {
      kt[m] = g[0] - T(P - m) * h0;
      kt[P + n + m] = g[n - 1] + T(m + 1) * h1;
    }
    for (int m = 0; m < n; ++m) kt[P + m] = g[m];
    // Uniform knots (always, before any grid update) take the division-free path: only when they
    // are uniform up to rounding, since that path uses the ideal knots t_0 + m h.
    const T h = (g[n - 1] - g[0]) / T(n - 1);
    const T mag = (g[0] < T(0) ? -g[0] : g[0]) + (g[n - 1] < T(0) ? -g[n - 1] : g[n - 1]) + h;
    const T tol = T(64) * std::numeric_limits<T>::epsilon() * mag;
    bool uniform = h > T(0);
    for (int m = 1; m < n - 1 && uniform; ++m) {
      const T d = g[m] - (g[0] + T(m) * h);
      uniform = (d < T(0) ? -d : d) <= tol;
    }
    ws[lay.inv_h + i] = uniform ? T(1) / h : T(0);
    ws[lay.t_first + i] = g[0];
    ws[lay.t_last + i] = g[n - 1];
    ws[lay.lo + i] = g[c.spline_order];
    ws[lay.hi + i] = g[n - 1 - c.spline_order];
  }
}

template <typename T>
Packed<T> packed_view(const KanConfig& c, const Layout& lay, const T* ws) {
  Packed<T> P;
  P.W = ws + lay.weights;
  P.knots = ws + lay.knots;
  P.inv_h = ws + lay.inv_h;
  P.t_first = ws + lay.t_first;
  P.t_last = ws + lay.t_last;
  P.lo = ws + lay.lo;
  P.hi = ws + lay.hi;
  P.in = c.in_features;
  P.out = c.out_features;
  P.R = cpu::packed_rows(c);
  P.nb = c.n_basis();
  P.n_knots = c.n_knots();
  P.zero_base = cpu::zero_base(c);
  P.po = pad(c.out_features);
  P.kld = pad(cpu::padded_knots(c));
  P.clamp = c.mode == OutOfRange::Clamp;
  return P;
}

// Calls f(integral_constant<int, NV>) for the chunk width nv in 1 .. 8 (capped at kMaxNv).
template <int kMaxNv, typename F>
void with_chunk(int nv, F&& f) {
  switch (nv) {
#define PCT_KAN_CHUNK(n) \
  case n: f(std::integral_constant<int, (n <= kMaxNv ? n : kMaxNv)>{}); break;
    PCT_KAN_CHUNK(1) PCT_KAN_CHUNK(2) PCT_KAN_CHUNK(3) PCT_KAN_CHUNK(4)
    PCT_KAN_CHUNK(5) PCT_KAN_CHUNK(6) PCT_KAN_CHUNK(7)
#undef PCT_KAN_CHUNK
    default: f(std::integral_constant<int, kMaxNv>{}); break;
  }
}

// Features [f0, f0 + nf) of the tile's x, transposed into xt (nf, kLd) so that each feature's
// column is contiguous, rows past `rows` zeroed up to n_eval. Eight rows at a time: each x line
// read serves the features it holds while those eight rows are streamed.
template <typename T>
void transpose_tile(const T* x, int in, int64_t b0, int rows, int n_eval, int f0, int nf, T* xt) {
  constexpr int kRows = 8;
  for (int r0 = 0; r0 < rows; r0 += kRows) {
    const int nr = rows - r0 < kRows ? rows - r0 : kRows;
    const T* src = x + (b0 + r0) * in + f0;
    for (int i = 0; i < nf; ++i)
      for (int rr = 0; rr < nr; ++rr) xt[i * kLd + r0 + rr] = src[int64_t(rr) * in + i];
  }
  for (int i = 0; i < nf; ++i)
    for (int r = rows; r < n_eval; ++r) xt[i * kLd + r] = T(0);
}

// One step of the transposed reduction below: lanes [0, L/2) of the result hold a's blocks of 2W
// lanes folded to W (a[k 2W + j] + a[k 2W + W + j]), lanes [L/2, L) the same of b.
template <int W, int L>
constexpr int fold_index(int l, bool high) {
  return (l < L / 2 ? (l / W) * 2 * W + l % W : L + ((l - L / 2) / W) * 2 * W + (l - L / 2) % W) + (high ? W : 0);
}
template <int W, typename V, int... I>
inline __attribute__((always_inline)) V fold(V a, V b, std::integer_sequence<int, I...>) {
  constexpr int L = int(sizeof...(I));
  return __builtin_shufflevector(a, b, fold_index<W, L>(I, false)...) +
         __builtin_shufflevector(a, b, fold_index<W, L>(I, true)...);
}
template <int W, int N, typename V, typename Seq>
inline __attribute__((always_inline)) void fold_all(V* v, Seq seq) {
  if constexpr (N > 1) {
#pragma GCC unroll 16
    for (int k = 0; k < N / 2; ++k) v[k] = fold<W>(v[2 * k], v[2 * k + 1], seq);
    fold_all<W / 2, N / 2>(v, seq);
  }
}

// out[r] = the sum of the L lanes of vec[r] for r < n (n a multiple of L): L rows at a time, by
// folding L vectors into one (log2 L shuffle-and-add steps) instead of one horizontal sum per row.
// Each row's lanes are added in the same halving tree as hsum.
template <typename T>
void hsum_rows(const T* vec, int n, T* out) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::L;
  for (int r0 = 0; r0 < n; r0 += L) {
    V v[L];
#pragma GCC unroll 16
    for (int k = 0; k < L; ++k) v[k] = S::load(vec + (r0 + k) * L);
    fold_all<L / 2, L>(v, std::make_integer_sequence<int, L>{});
    S::store(out + r0, v[0]);
  }
}

// The tile's rows sorted by their first spline row (= cell + 1, or zero_base): rows of one cell
// share the packed weight rows (and slab rows) they touch, which the kernels below then hold in
// registers across the cell's rows. A counting sort over four interleaved histograms (row r counts
// in histogram r % 4), so that runs of rows in one cell do not chain through one counter: inside a
// cell the rows come as r = 0, 4, 8, ..., then 1, 5, 9, ..., and so on (a fixed order).
// order[starts[c] .. starts[c+1]) are the rows whose base is c, for c in 0 .. n_bases-1.
struct RowBuckets {
  static constexpr int kWays = 4;
  int* order;
  int* starts;  // n_bases + 1
  int* hist;    // kWays histograms of hist_ld, then cursors
  int hist_ld;
  void sort(const int* base, int rows, int n_bases) {
    int* h[kWays];
    for (int j = 0; j < kWays; ++j) {
      h[j] = hist + j * hist_ld;
      for (int c = 0; c < n_bases; ++c) h[j][c] = 0;
    }
    int r = 0;
    for (; r + kWays <= rows; r += kWays)
#pragma GCC unroll 4
      for (int j = 0; j < kWays; ++j) ++h[j][base[r + j]];
    for (int j = 0; r < rows; ++r, ++j) ++h[j][base[r]];
    int at = 0;
    for (int c = 0; c < n_bases; ++c) {
      starts[c] = at;
#pragma GCC unroll 4
      for (int j = 0; j < kWays; ++j) {
        const int n = h[j][c];
        h[j][c] = at;
        at += n;
      }
    }
    starts[n_bases] = at;
    for (r = 0; r + kWays <= rows; r += kWays)
#pragma GCC unroll 4
      for (int j = 0; j < kWays; ++j) order[h[j][base[r + j]]++] = r + j;
    for (int j = 0; r < rows; ++r, ++j) order[h[j][base[r]]++] = r;
  }
};

// Rows rows[0 .. R-1] (stride po), NV vectors of each, to and from registers: a cell's k+1 weight or
// weight-gradient rows in the cell-bucketed kernels below.
template <typename T, int R, int NV>
inline __attribute__((always_inline)) void load_rows(const T* rows, long po, typename Simd<T>::V (&out)[R][NV]) {
#pragma GCC unroll 8
  for (int q = 0; q < R; ++q)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) out[q][v] = Simd<T>::load(rows + q * po + v * Simd<T>::L);
}
template <typename T, int R, int NV>
inline __attribute__((always_inline)) void store_rows(T* rows, long po, const typename Simd<T>::V (&in)[R][NV]) {
#pragma GCC unroll 8
  for (int q = 0; q < R; ++q)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) Simd<T>::store(rows + q * po + v * Simd<T>::L, in[q][v]);
}

// Output vectors per chunk of the cell-bucketed kernels: the cell's k+1 packed rows, the base row,
// and one more row of vectors (accumulators or dy) in registers, with a few left over.
template <int K>
constexpr int chunk_vectors() {
  return (kVecRegs - 4) / (K + 3) < 1 ? 1 : ((kVecRegs - 4) / (K + 3) > 8 ? 8 : (kVecRegs - 4) / (K + 3));
}

// Forward, one feature, outputs o0 .. o0+NV*VL (Wi, acc offset by o0): for each cell, its k+1
// packed rows and the base row in registers; acc[r] += w0[r] W[0] + sum_q w_q[r] W[base + q] for
// every row r of the cell.
template <typename T, int K, int NV>
void forward_feature(const T* __restrict Wi, long po, const Terms<T, K> tm, const RowBuckets& bk, int n_bases,
                     T* __restrict acc) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int VL = S::L;
  V w0r[NV];
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) w0r[v] = S::load(Wi + v * VL);
  for (int c = 0; c < n_bases; ++c) {
    const int beg = bk.starts[c], end = bk.starts[c + 1];
    if (beg == end) continue;
    V wr[K + 1][NV];
    load_rows<T, K + 1, NV>(Wi + long(c) * po, po, wr);
    for (int k = beg; k < end; ++k) {
      const int r = bk.order[k];
      T* a = opaque(acc + long(r) * po);
      // The row's weights as broadcast vectors before any store (which could alias them).
      const V w0 = bcast<T>(tm.w[r]);
      V wq[K + 1];
#pragma GCC unroll 8
      for (int q = 0; q <= K; ++q) wq[q] = bcast<T>(tm.w[(1 + q) * kLd + r]);
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) {
        V s = S::load(a + v * VL) + w0r[v] * w0;
#pragma GCC unroll 8
        for (int q = 0; q <= K; ++q) s += wr[q][v] * wq[q];
        S::store(a + v * VL, s);
      }
    }
  }
}

// Backward dx, one feature, one chunk: dot[r] (a vector of partial sums) += sum over the chunk of
// (w'_0[r] W[0] + sum_q w'_q[r] W[base + q]) * dy[r], the cell's rows in registers as forward.
template <typename T, int K, int NV>
void dx_feature(const T* __restrict Wi, long po, const Terms<T, K> tm, const RowBuckets& bk, int n_bases,
                const T* __restrict dy, T* __restrict dot, bool first) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int VL = S::L;
  V w0r[NV];
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) w0r[v] = S::load(Wi + v * VL);
  for (int c = 0; c < n_bases; ++c) {
    const int beg = bk.starts[c], end = bk.starts[c + 1];
    if (beg == end) continue;
    V wr[K + 1][NV];
    load_rows<T, K + 1, NV>(Wi + long(c) * po, po, wr);
    for (int k = beg; k < end; ++k) {
      const int r = bk.order[k];
      const T* g = opaque(dy + long(r) * po);
      const V d0 = bcast<T>(tm.dw[r]);
      V dq[K + 1];
#pragma GCC unroll 8
      for (int q = 0; q <= K; ++q) dq[q] = bcast<T>(tm.dw[(1 + q) * kLd + r]);
      V acc = first ? V{} : S::load(dot + r * VL);
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) {
        V comb = w0r[v] * d0;
#pragma GCC unroll 8
        for (int q = 0; q <= K; ++q) comb += wr[q][v] * dq[q];
        acc += comb * S::load(g + v * VL);
      }
      S::store(dot + r * VL, acc);
    }
  }
}

// Backward weight gradients, one feature, one chunk: slab[0] += w0[r] dy[r] and slab[base + q] +=
// w_q[r] dy[r]; the base row's sums stay in registers for the whole tile, each cell's k+1 rows for
// its rows.
template <typename T, int K, int NV>
void dw_feature(long po, const Terms<T, K> tm, const RowBuckets& bk, int n_bases, const T* __restrict dy,
                T* __restrict slab) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int VL = S::L;
  V s0[NV];
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) s0[v] = S::load(slab + v * VL);
  for (int c = 0; c < n_bases; ++c) {
    const int beg = bk.starts[c], end = bk.starts[c + 1];
    if (beg == end) continue;
    V sr[K + 1][NV];
    T* Sc = slab + long(c) * po;
    load_rows<T, K + 1, NV>(Sc, po, sr);
    for (int k = beg; k < end; ++k) {
      const int r = bk.order[k];
      const T* g = opaque(dy + long(r) * po);
      const V w0 = bcast<T>(tm.w[r]);
      V wq[K + 1];
#pragma GCC unroll 8
      for (int q = 0; q <= K; ++q) wq[q] = bcast<T>(tm.w[(1 + q) * kLd + r]);
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) {
        const V gv = S::load(g + v * VL);
        s0[v] += gv * w0;
#pragma GCC unroll 8
        for (int q = 0; q <= K; ++q) sr[q][v] += gv * wq[q];
      }
    }
    store_rows<T, K + 1, NV>(Sc, po, sr);
  }
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) S::store(slab + v * VL, s0[v]);
}

template <typename T>
RowBuckets buckets_view(const Layout& lay, T* mine, int n_bases) {
  RowBuckets bk;
  bk.order = reinterpret_cast<int*>(mine + lay.order);
  bk.starts = bk.order + cpu::kMaxRowTile;
  bk.hist_ld = int(pad(n_bases + 1));
  bk.hist = bk.starts + bk.hist_ld;
  return bk;
}

template <typename T, int K>
void forward_tiles(const Packed<T>& P, const T* x, T* y, int64_t batch, const Layout& lay, T* ws) {
  constexpr int VL = Simd<T>::L;
  const int RT = lay.row_tile;
  constexpr int CV = chunk_vectors<K>();
  const int nvec = int((P.out + VL - 1) / VL);
  const int64_t n_tiles = (batch + RT - 1) / RT;
  const int n_bases = P.zero_base + 1;  // first spline rows 1 .. zero_base
  // Fewer tiles than threads (small batches): the outputs are split into parts too, each part's
  // thread evaluating the tile's terms itself (cheap next to the outputs' FMAs on wide layers).
  const int64_t n_chunks = (nvec + CV - 1) / CV;
  int64_t parts = n_tiles >= lay.n_threads ? 1 : (lay.n_threads + n_tiles - 1) / n_tiles;
  if (parts > n_chunks) parts = n_chunks;
  const int64_t chunks_per_part = (n_chunks + parts - 1) / parts;
#pragma omp parallel num_threads(lay.n_threads) if (lay.n_threads > 1)
  {
    T* mine = ws + lay.threads_base + int64_t(thread_id()) * lay.per_thread;
    T* acc = mine + lay.tile;  // (RT, po)
    T* xt = mine + lay.xt;
    T* sig = mine + lay.sig;
    const Terms<T, K> tm(mine + lay.terms);
    RowBuckets bk = buckets_view(lay, mine, n_bases);
#pragma omp for schedule(static)
    for (int64_t item = 0; item < n_tiles * parts; ++item) {
      const int64_t t = item / parts;
      const int v_lo = int(item % parts * chunks_per_part * CV);
      const int v_hi = v_lo + int(chunks_per_part * CV) < nvec ? v_lo + int(chunks_per_part * CV) : nvec;
      if (v_lo >= v_hi) continue;
      const int64_t b0 = t * RT;
      const int rows = int(batch - b0 < RT ? batch - b0 : RT);
      const int n_eval = round_up(rows, VL);
      for (int r = 0; r < rows; ++r)
        for (long e = long(v_lo) * VL; e < long(v_hi) * VL; ++e) acc[r * P.po + e] = T(0);
      transpose_tile(x, P.in, b0, rows, n_eval, 0, P.in, xt);
      for (int i = 0; i < P.in; ++i) {
        feature_terms<T, K>(P, i, xt + i * kLd, sig, n_eval, false, tm);
        bk.sort(tm.base, rows, n_bases);
        for (int v0 = v_lo; v0 < v_hi; v0 += CV) {
          with_chunk<CV>(v_hi - v0, [&](auto NV) {
            forward_feature<T, K, NV.value>(P.w(i) + v0 * VL, P.po, tm, bk, n_bases, acc + v0 * VL);
          });
        }
      }
      const int o_hi = v_hi * VL < P.out ? v_hi * VL : P.out;
      for (int r = 0; r < rows; ++r)
        for (int o = v_lo * VL; o < o_hi; ++o) y[(b0 + r) * P.out + o] = acc[r * P.po + o];
    }
  }
}

template <typename T, int K, bool DX, bool DW>
void backward_tiles(const Packed<T>& P, const KanBackwardArgs& a, const Layout& lay, T* ws) {
  using S = Simd<T>;
  constexpr int VL = S::L;
  const int RT = lay.row_tile;
  constexpr int CV = chunk_vectors<K>();
  const int nvec = int((P.out + VL - 1) / VL);
  const int n_bases = P.zero_base + 1;
  const T* x = static_cast<const T*>(a.x);
  const T* dy = static_cast<const T*>(a.dy);
  T* dx = static_cast<T*>(a.dx);
  const int64_t batch = a.batch;
  const int fb = lay.feature_block;
  const int n_blocks = (P.in + fb - 1) / fb;
  const int nb = P.nb;
  const long slab = long(P.R) * P.po;
  const T* sw = static_cast<const T*>(a.params.spline_weight);
  const T* ss = static_cast<const T*>(a.params.spline_scaler);
  T* dbw = static_cast<T*>(a.d_base_weight);
  T* dsw = static_cast<T*>(a.d_spline_weight);
  T* dss = static_cast<T*>(a.d_spline_scaler);
#pragma omp parallel num_threads(lay.n_threads) if (lay.n_threads > 1)
  {
    T* mine = ws + lay.threads_base + int64_t(thread_id()) * lay.per_thread;
    T* dy_tile = mine + lay.tile;  // (RT, po): the tile's dy rows, zero-padded
    T* xt = mine + lay.xt;
    T* sig = mine + lay.sig;
    const Terms<T, K> tm(mine + lay.terms);
    RowBuckets bk = buckets_view(lay, mine, n_bases);
    T* dot = mine + lay.dot;
    T* dxt = mine + lay.dxt;
    T* slabs = mine + lay.slabs;
    for (long e = 0; e < long(RT) * P.po; ++e) dy_tile[e] = T(0);
    // A thread owns a block of input features and their weight gradients; for each tile and
    // feature the edge terms are evaluated once and used for both dx[:, i] and the slab of i.
#pragma omp for schedule(static)
    for (int blk = 0; blk < n_blocks; ++blk) {
      const int f0 = blk * fb;
      const int nf = P.in - f0 < fb ? P.in - f0 : fb;
      if (DW)
        for (long e = 0; e < nf * slab; ++e) slabs[e] = T(0);
      for (int64_t b0 = 0; b0 < batch; b0 += RT) {
        const int rows = int(batch - b0 < RT ? batch - b0 : RT);
        const int n_eval = round_up(rows, VL);
        for (int r = 0; r < rows; ++r) {
          const T* src = dy + (b0 + r) * P.out;
          T* dst = dy_tile + r * P.po;
          for (int o = 0; o < P.out; ++o) dst[o] = src[o];
        }
        // hsum_rows folds whole vectors of rows: the dot rows past the tile's end (never written
        // by dx_feature, their sums dropped) are zeroed so that nothing reads uninitialised memory.
        if (DX)
          for (long e = long(rows) * VL; e < long(n_eval) * VL; ++e) dot[e] = T(0);
        transpose_tile(x, P.in, b0, rows, n_eval, f0, nf, xt);
        for (int i = f0; i < f0 + nf; ++i) {
            feature_terms<T, K>(P, i, xt + (i - f0) * kLd, sig, n_eval, DX, tm);
            bk.sort(tm.base, rows, n_bases);
            for (int v0 = 0; v0 < nvec; v0 += CV) {
            with_chunk<CV>(nvec - v0, [&](auto NV) {
              if (DW) dw_feature<T, K, NV.value>(P.po, tm, bk, n_bases, dy_tile + v0 * VL, slabs + (i - f0) * slab + v0 * VL);
              if (DX) dx_feature<T, K, NV.value>(P.w(i) + v0 * VL, P.po, tm, bk, n_bases, dy_tile + v0 * VL, dot, v0 == 0);
            });
          }
          if (DX) hsum_rows(dot, n_eval, dxt + (i - f0) * kLd);
        }
        if (DX)  // transposed back 16 rows at a time: one dxt line read per feature, 16 dx rows open
          for (int r0 = 0; r0 < rows; r0 += 16) {
            const int nr = rows - r0 < 16 ? rows - r0 : 16;
            for (int ii = 0; ii < nf; ++ii)
              for (int rr = 0; rr < nr; ++rr) dx[(b0 + r0 + rr) * P.in + f0 + ii] = dxt[ii * kLd + r0 + rr];
          }
      }
      if (!DW) continue;
      // Slab rows -> the user's layout: d base_weight, d spline_weight (times the scaler, which was
      // folded into the packed weights) and d scaler (sum over the bases).
      for (int ii = 0; ii < nf; ++ii) {
        const int i = f0 + ii;
        const T* Si = slabs + ii * slab;
        const T* Sc = Si + (1 + a.cfg.spline_order) * P.po;  // basis 0's row (cpu::spline_row)
        for (int o = 0; o < P.out; ++o) {
          const long oi = long(o) * P.in + i;
          if (dbw) dbw[oi] = Si[o];
          T dscale = T(0);
          for (int q = 0; q < nb; ++q) {
            const T gq = Sc[q * P.po + o];
            if (dsw) dsw[oi * nb + q] = ss ? gq * ss[oi] : gq;
            dscale += gq * sw[oi * nb + q];
          }
          if (dss) dss[oi] = dscale;
        }
      }
    }
  }
}

template <typename F>
void with_order(int k, F&& f) {
  switch (k) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    default: f(std::integral_constant<int, 5>{}); break;
  }
}

template <typename T>
void forward_impl(const KanForwardArgs& a, const Layout& lay, void* ws_raw) {
  T* ws = static_cast<T*>(ws_raw);
  pack<T>(a.cfg, a.params, lay, ws);
  const Packed<T> P = packed_view<T>(a.cfg, lay, ws);
  with_order(a.cfg.spline_order, [&](auto K) {
    forward_tiles<T, K.value>(P, static_cast<const T*>(a.x), static_cast<T*>(a.y), a.batch, lay, ws);
  });
}

template <typename T>
void backward_dispatch(const KanBackwardArgs& a, const Layout& lay, void* ws_raw) {
  T* ws = static_cast<T*>(ws_raw);
  pack<T>(a.cfg, a.params, lay, ws);
  const Packed<T> P = packed_view<T>(a.cfg, lay, ws);
  const bool want_w = a.d_base_weight || a.d_spline_weight || a.d_spline_scaler;
  with_order(a.cfg.spline_order, [&](auto K) {
    constexpr int k = K.value;
    if (a.dx && want_w) backward_tiles<T, k, true, true>(P, a, lay, ws);
    else if (a.dx) backward_tiles<T, k, true, false>(P, a, lay, ws);
    else if (want_w) backward_tiles<T, k, false, true>(P, a, lay, ws);
  });
}

}  // namespace

void run(const KanForwardArgs& a, const cpu::Layout& layout, void* ws) {
  if (a.cfg.dtype == DType::Float32) forward_impl<float>(a, layout, ws);
  else forward_impl<double>(a, layout, ws);
}

void run(const KanBackwardArgs& a, const cpu::Layout& layout, void* ws) {
  if (a.cfg.dtype == DType::Float32) backward_dispatch<float>(a, layout, ws);
  else backward_dispatch<double>(a, layout, ws);
}

}  // namespace PERCEPTRONS_ISA_NS
}  // namespace kan
}  // namespace perceptrons
