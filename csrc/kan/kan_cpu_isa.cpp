// Spline-KAN layer on the CPU, compiled once per ISA. Never builds the (batch, in, G+k) basis:
// for each (row, input) the k+1 non-zero basis values are evaluated locally (common/bspline.h)
// and the edge's k+2 terms (base + k+1 spline bases) are applied as vectors over the outputs.
//
//   forward  y[b,:]   += sum_terms w_t(x[b,i]) * Wpacked[i, row_t, :]        (parallel over rows)
//   dx       dx[b,i]   = sum_terms w'_t(x[b,i]) * <Wpacked[i, row_t, :], dy[b,:]>
//   dW       dWp[i,row_t,:] += w_t(x[b,i]) * dy[b,:]
// The backward runs both in one pass, parallel over blocks of input features.
// Each weight gradient belongs to one input feature and is summed over the batch in row order by
// the one thread that owns that feature: deterministic whatever the thread count, no atomics.
#include "kan/kan_cpu_isa.h"

#include <cstdint>
#include <limits>
#include <type_traits>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/activations.h"
#include "common/bspline.h"

namespace perceptrons {
namespace kan {
namespace PERCEPTRONS_ISA_NS {
namespace {

#include "common/cpu_simd.h"

using cpu::Layout;
using cpu::pad;

inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

template <typename T>
struct Packed {
  const KanConfig* cfg;
  const T* W;      // (in, R, po)
  const T* knots;  // (in, kld), feature i's knots start at knots + i*kld + kMaxSplineOrder
  const T* inv_h;  // (in)
  const T *t_first, *t_last, *lo, *hi;  // (in) each
  int in, out, R, nb, n_knots, zero_row;
  long po, kld;
  bool clamp;
  const T* t(int i) const { return knots + i * kld + kMaxSplineOrder; }
  const T* w(int i) const { return W + long(i) * R * po; }
};

// The k+2 terms of edge (., i) at x: packed row and weight (and d weight / dx if dw is given).
template <typename T, int K>
struct EdgeTerms {
  int row[K + 2];
  T w[K + 2];
  T dw[K + 2];
};

// s = sigmoid(x), computed for a whole row beforehand (vectorised).
template <typename T, int K>
inline void edge_terms(const Packed<T>& P, int i, T x, T s, EdgeTerms<T, K>& e, bool derivative) {
  e.row[0] = 0;
  e.w[0] = x * s;  // silu
  if (derivative) e.dw[0] = s * (T(1) + x * (T(1) - s));
  const T* t = P.t(i);
  T xs = x, dfac = T(1);
  if (P.clamp) {
    const T lo = t[K], hi = t[P.n_knots - 1 - K];
    if (x < lo) xs = lo, dfac = T(0);
    if (x > hi) xs = hi, dfac = T(0);
  }
  const T inv_h = P.inv_h[i];
  const int j = bspline_find_cell<T>(t, P.n_knots, xs, inv_h != T(0), inv_h);
  T wl[K + 1], dwl[K + 1];
  if (j >= 0) {
    if (inv_h != T(0)) bspline_local_uniform<T, K>((xs - t[0]) * inv_h, j, inv_h, wl, derivative ? dwl : nullptr);
    else bspline_local<T, K>(t, j, xs, wl, derivative ? dwl : nullptr);
  }
  for (int r = 0; r <= K; ++r) {
    const int c = j - K + r;
    const bool live = j >= 0 && c >= 0 && c < P.nb;
    e.row[r + 1] = live ? 1 + c : P.zero_row;
    e.w[r + 1] = live ? wl[r] : T(0);
    if (derivative) e.dw[r + 1] = live ? dwl[r] * dfac : T(0);
  }
}

// Edge terms of features [i0, i0+n) of one row, evaluated a vector of features at a time on
// uniform grids (the common case: every grid before an update_grid): the cell by truncation and the
// division-free triangle of bspline_local_uniform, lane-wise. Features on non-uniform grids are left
// to the scalar edge_terms.
template <typename T, int K>
struct RowTerms {
  T *x, *sig, *cell, *row, *w, *dw;  // row, w, dw: (K+1) rows of ld values (row: packed row, as T)
  int ld;
  void bind(T* scratch, int n) {
    ld = int(pad(n));
    x = scratch;
    sig = x + ld;
    cell = sig + ld;
    row = cell + ld;
    w = row + (kMaxSplineOrder + 1) * ld;
    dw = w + (kMaxSplineOrder + 1) * ld;
  }
};

template <typename T, int K>
void row_terms(const Packed<T>& P, const T* xb, int i0, int n, bool derivative, RowTerms<T, K>& rt) {
  using S = Simd<T>;
  using V = typename S::V;
  typedef int VI __attribute__((vector_size(S::L * sizeof(int))));
  constexpr int VL = S::L;
  for (int i = 0; i < n; ++i) rt.x[i] = xb[i0 + i];
  for (int i = n; i < rt.ld; ++i) rt.x[i] = T(0);
  sigmoid_n(rt.x, rt.sig, rt.ld);
  const V zero = V{}, one = S::splat(T(1)), minus_one = S::splat(T(-1));
  const V last_cell = S::splat(T(P.n_knots - 2));
  for (int v = 0; v < rt.ld; v += VL) {
    // Lanes past n read the per-feature arrays' zero padding: inv_h = 0 marks them invalid.
    const V x = S::load(rt.x + v);
    const V inv_h = S::load(P.inv_h + i0 + v);
    V xs = x, dfac = one;
    if (P.clamp) {
      const V lo = S::load(P.lo + i0 + v), hi = S::load(P.hi + i0 + v);
      dfac = (x < lo) ? zero : dfac;
      dfac = (x > hi) ? zero : dfac;
      xs = (x < lo) ? lo : xs;
      xs = (x > hi) ? hi : xs;
    }
    const V t0 = S::load(P.t_first + i0 + v);
    const V s = (xs - t0) * inv_h;
    const auto valid = (xs >= t0) & (xs < S::load(P.t_last + i0 + v)) & (inv_h != zero);
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
    S::store(rt.cell + v, valid ? jf : minus_one);
    // Per term r: the packed row (1 + c, or the zero row for a dropped basis) and masked weights.
    const V zero_row = S::splat(T(P.zero_row)), nb = S::splat(T(P.nb));
#pragma GCC unroll 8
    for (int r = 0; r <= K; ++r) {
      const V c = jf + T(r - K);
      const auto live = valid & (c >= zero) & (c < nb);
      S::store(rt.row + r * rt.ld + v, live ? c + one : zero_row);
      S::store(rt.w + r * rt.ld + v, live ? nv[r] : zero);
      if (derivative) {
        const V a = r >= 1 ? prev[r - 1] : zero;
        const V b = r <= K - 1 ? prev[r] : zero;
        S::store(rt.dw + r * rt.ld + v, live ? (a - b) * inv_h * dfac : zero);
      }
    }
  }
}

// EdgeTerms of feature i0+ii from the row's precomputed values (scalar path off uniform grids).
template <typename T, int K>
inline void edge_terms_from_row(const Packed<T>& P, int i0, int ii, const RowTerms<T, K>& rt,
                                EdgeTerms<T, K>& e, bool derivative) {
  const int i = i0 + ii;
  const T x = rt.x[ii], s = rt.sig[ii];
  // Off uniform grids, and for k = 1 derivatives (which jump at knots, so the cell must follow the
  // stored knots exactly rather than the rounded (x - t_0)/h), the scalar path decides.
  if (P.inv_h[i] == T(0) || (K == 1 && derivative)) {
    edge_terms<T, K>(P, i, x, s, e, derivative);
    return;
  }
  e.row[0] = 0;
  e.w[0] = x * s;  // silu
  if (derivative) e.dw[0] = s * (T(1) + x * (T(1) - s));
#pragma GCC unroll 8
  for (int r = 0; r <= K; ++r) {
    e.row[r + 1] = int(rt.row[r * rt.ld + ii]);
    e.w[r + 1] = rt.w[r * rt.ld + ii];
    if (derivative) e.dw[r + 1] = rt.dw[r * rt.ld + ii];
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
#pragma omp parallel for schedule(static) num_threads(lay.n_threads) if (lay.n_threads > 1 && in > 1)
  for (int i = 0; i < in; ++i) {
    T* Wi = W + long(i) * R * po;
    for (int q = 0; q < R; ++q)
      for (long o = 0; o < po; ++o) Wi[q * po + o] = T(0);
    for (int o = 0; o < out; ++o) {
      Wi[o] = bw[long(o) * in + i];
      const T scale = ss ? ss[long(o) * in + i] : T(1);
      const T* so = sw + (long(o) * in + i) * nb;
      for (int q = 0; q < nb; ++q) Wi[(1 + q) * po + o] = scale * so[q];
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
  for (int64_t i = in; i < pad(in) + cpu::kPad; ++i)  // padding lanes: inv_h = 0 marks them invalid
    ws[lay.inv_h + i] = ws[lay.t_first + i] = ws[lay.t_last + i] = ws[lay.lo + i] = ws[lay.hi + i] = T(0);
}

template <typename T>
Packed<T> packed_view(const KanConfig& c, const Layout& lay, const T* ws) {
  Packed<T> P;
  P.cfg = &c;
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
  P.zero_row = cpu::zero_row(c);
  P.po = pad(c.out_features);
  P.kld = pad(cpu::padded_knots(c));
  P.clamp = c.mode == OutOfRange::Clamp;
  return P;
}

// acc[o0 : o0 + NV*VL] += the k+2 terms of one edge.
template <typename T, int K, int NV>
inline void accumulate_edge(const T* __restrict Wi, const EdgeTerms<T, K>& e, long po, T* __restrict acc) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int VL = S::L;
  V a[NV];
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) a[v] = S::load(acc + v * VL);
#pragma GCC unroll 8
  for (int q = 0; q < K + 2; ++q) {
    const T* row = Wi + e.row[q] * po;
    const T w = e.w[q];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) a[v] += S::load(row + v * VL) * w;
  }
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) S::store(acc + v * VL, a[v]);
}

// Forward over tiles of kRowTile rows: input by input, so each input's packed weights are read from
// memory once per tile and then from L1 for the tile's other rows.
template <typename T, int K>
void forward_rows(const Packed<T>& P, const T* x, T* y, int64_t batch, const Layout& lay, T* ws) {
  constexpr int VL = Simd<T>::L;
  constexpr int RT = cpu::kRowTile;
  constexpr int kChunk = kMaxNV * 2;
  const int nvec = int((P.out + VL - 1) / VL);
  const int64_t n_tiles = (batch + RT - 1) / RT;
#pragma omp parallel num_threads(lay.n_threads) if (lay.n_threads > 1)
  {
    T* acc = ws + lay.threads_base + int64_t(thread_id()) * lay.per_thread;  // (RT, po)
    RowTerms<T, K> rt[RT];
    for (int r = 0; r < RT; ++r) rt[r].bind(acc + RT * P.po + r * cpu::row_terms_numel(P.in), P.in);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < n_tiles; ++t) {
      const int64_t b0 = t * RT;
      const int rows = int(batch - b0 < RT ? batch - b0 : RT);
      for (int r = 0; r < rows; ++r) {
        row_terms<T, K>(P, x + (b0 + r) * P.in, 0, P.in, false, rt[r]);
        for (long o = 0; o < P.po; ++o) acc[r * P.po + o] = T(0);
      }
      for (int i = 0; i < P.in; ++i) {
        const T* Wi = P.w(i);
        for (int r = 0; r < rows; ++r) {
          EdgeTerms<T, K> e;
          edge_terms_from_row<T, K>(P, 0, i, rt[r], e, false);
          for (int v0 = 0; v0 < nvec; v0 += kChunk) {
            T* a = acc + r * P.po + v0 * VL;
            switch (nvec - v0 < kChunk ? nvec - v0 : kChunk) {
#define PCT_KAN_CHUNK(n) \
  case n: accumulate_edge<T, K, (n <= kChunk ? n : kChunk)>(Wi + v0 * VL, e, P.po, a); break;
              PCT_KAN_CHUNK(1) PCT_KAN_CHUNK(2) PCT_KAN_CHUNK(3) PCT_KAN_CHUNK(4)
              PCT_KAN_CHUNK(5) PCT_KAN_CHUNK(6) PCT_KAN_CHUNK(7) PCT_KAN_CHUNK(8)
#undef PCT_KAN_CHUNK
              default: break;
            }
          }
        }
      }
      for (int r = 0; r < rows; ++r)
        for (int o = 0; o < P.out; ++o) y[(b0 + r) * P.out + o] = acc[r * P.po + o];
    }
  }
}

// One edge (row b, input i), outputs o0 .. o0 + NV*VL: returns this chunk's part of dx[b, i]
// (sum_terms w'_t <W[i, row_t, chunk], dy[b, chunk]>) and adds w_t dy[b, chunk] to the slab rows.
template <typename T, int K, int NV>
inline T backward_edge_chunk(const Packed<T>& P, int i, const EdgeTerms<T, K>& e, const T* __restrict dyb,
                             const T* __restrict dy_tail, T* __restrict slab, int o0, bool want_dx, bool want_w) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int VL = S::L;
  // dy's row is read in place; its last, partial vector comes zero-padded from dy_tail.
  const int full = P.out / VL;
  V g[NV];
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) g[v] = o0 / VL + v < full ? S::load(dyb + o0 + v * VL) : S::load(dy_tail);
  T result = T(0);
  if (want_dx) {
    const T* __restrict Wi = P.w(i) + o0;
    V comb[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) comb[v] = V{};
#pragma GCC unroll 8
    for (int q = 0; q < K + 2; ++q) {
      const T* row = Wi + e.row[q] * P.po;
      const T d = e.dw[q];
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) comb[v] += S::load(row + v * VL) * d;
    }
    V dot = comb[0] * g[0];
#pragma GCC unroll 16
    for (int v = 1; v < NV; ++v) dot += comb[v] * g[v];
    result = hsum<T>(dot);
  }
  if (want_w) {
#pragma GCC unroll 8
    for (int q = 0; q < K + 2; ++q) {
      T* row = slab + e.row[q] * P.po + o0;
      const T w = e.w[q];
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) S::store(row + v * VL, S::load(row + v * VL) + g[v] * w);
    }
  }
  return result;
}

template <typename T, int K>
void backward_impl(const Packed<T>& P, const KanBackwardArgs& a, const Layout& lay, T* ws) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int VL = S::L;
  const int nvec = int((P.out + VL - 1) / VL);
  const T* x = static_cast<const T*>(a.x);
  const T* dy = static_cast<const T*>(a.dy);
  T* dx = static_cast<T*>(a.dx);
  const int64_t batch = a.batch;
  const bool want_w = a.d_base_weight || a.d_spline_weight || a.d_spline_scaler;
  const int fb = lay.feature_block;
  const int n_blocks = (P.in + fb - 1) / fb;
  const int nb = P.nb;
  const T* sw = static_cast<const T*>(a.params.spline_weight);
  const T* ss = static_cast<const T*>(a.params.spline_scaler);
  T* dbw = static_cast<T*>(a.d_base_weight);
  T* dsw = static_cast<T*>(a.d_spline_weight);
  T* dss = static_cast<T*>(a.d_spline_scaler);
  constexpr int kChunk = kMaxNV * 2;
  // One pass per block of input features: each (row, input) has its terms evaluated once and used
  // for both dx[b, i] and the weight-gradient slabs of input i, which this thread alone owns.
#pragma omp parallel num_threads(lay.n_threads) if (lay.n_threads > 1)
  {
    constexpr int RT = cpu::kRowTile;
    T* mine = ws + lay.threads_base + int64_t(thread_id()) * lay.per_thread;
    T* dy_tails = mine;  // (RT, VL): the last, partial vector of each tile row's dy, zero-padded
    RowTerms<T, K> rt[RT];
    for (int r = 0; r < RT; ++r) rt[r].bind(mine + RT * P.po + r * cpu::row_terms_numel(fb), fb);
    T* slabs = mine + RT * P.po + RT * cpu::row_terms_numel(fb);
    for (int l = 0; l < RT * VL; ++l) dy_tails[l] = T(0);
#pragma omp for schedule(static)
    for (int blk = 0; blk < n_blocks; ++blk) {
      const int i0 = blk * fb;
      const int ni = P.in - i0 < fb ? P.in - i0 : fb;
      const long slab = long(P.R) * P.po;
      if (want_w)
        for (long e = 0; e < ni * slab; ++e) slabs[e] = T(0);
      for (int64_t b0 = 0; b0 < batch; b0 += RT) {
        const int rows = int(batch - b0 < RT ? batch - b0 : RT);
        for (int r = 0; r < rows; ++r) {
          const T* dyb = dy + (b0 + r) * P.out;
          for (int o = P.out / VL * VL; o < P.out; ++o) dy_tails[r * VL + o % VL] = dyb[o];
          row_terms<T, K>(P, x + (b0 + r) * P.in, i0, ni, dx != nullptr, rt[r]);
        }
        // Input by input, so its packed weights and slab stay in L1 across the tile's rows.
        for (int ii = 0; ii < ni; ++ii) {
          const int i = i0 + ii;
          T* Si = slabs + ii * slab;
          for (int r = 0; r < rows; ++r) {
            EdgeTerms<T, K> e;
            edge_terms_from_row<T, K>(P, i0, ii, rt[r], e, dx != nullptr);
            const T* dyb = dy + (b0 + r) * P.out;
            T sum = T(0);
            for (int v0 = 0; v0 < nvec; v0 += kChunk) {
              switch (nvec - v0 < kChunk ? nvec - v0 : kChunk) {
#define PCT_KAN_CHUNK(n) \
  case n: sum += backward_edge_chunk<T, K, (n <= kChunk ? n : kChunk)>(P, i, e, dyb, dy_tails + r * VL, Si, v0 * VL, dx != nullptr, want_w); break;
                PCT_KAN_CHUNK(1) PCT_KAN_CHUNK(2) PCT_KAN_CHUNK(3) PCT_KAN_CHUNK(4)
                PCT_KAN_CHUNK(5) PCT_KAN_CHUNK(6) PCT_KAN_CHUNK(7) PCT_KAN_CHUNK(8)
#undef PCT_KAN_CHUNK
                default: break;
              }
            }
            if (dx) dx[(b0 + r) * P.in + i] = sum;
          }
        }
      }
      if (!want_w) continue;
      // Slab rows -> the user's layout: d base_weight, d spline_weight (times the scaler, which was
      // folded into the packed weights) and d scaler (sum over the bases).
      for (int ii = 0; ii < ni; ++ii) {
        const int i = i0 + ii;
        const T* Si = slabs + ii * slab;
        for (int o = 0; o < P.out; ++o) {
          const long oi = long(o) * P.in + i;
          if (dbw) dbw[oi] = Si[o];
          T dscale = T(0);
          for (int q = 0; q < nb; ++q) {
            const T g = Si[(1 + q) * P.po + o];
            if (dsw) dsw[oi * nb + q] = ss ? g * ss[oi] : g;
            dscale += g * sw[oi * nb + q];
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
    forward_rows<T, K.value>(P, static_cast<const T*>(a.x), static_cast<T*>(a.y), a.batch, lay, ws);
  });
}

template <typename T>
void backward_dispatch(const KanBackwardArgs& a, const Layout& lay, void* ws_raw) {
  T* ws = static_cast<T*>(ws_raw);
  pack<T>(a.cfg, a.params, lay, ws);
  const Packed<T> P = packed_view<T>(a.cfg, lay, ws);
  with_order(a.cfg.spline_order, [&](auto K) { backward_impl<T, K.value>(P, a, lay, ws); });
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
