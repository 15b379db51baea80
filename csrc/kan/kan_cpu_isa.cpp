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

using cpu::kFeatureBlock;
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

template <typename T, int K>
inline void edge_terms(const Packed<T>& P, int i, T x, EdgeTerms<T, K>& e, bool derivative) {
  const T s = act_sigmoid(x);
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
  }
}

template <typename T>
Packed<T> packed_view(const KanConfig& c, const Layout& lay, const T* ws) {
  Packed<T> P;
  P.cfg = &c;
  P.W = ws + lay.weights;
  P.knots = ws + lay.knots;
  P.inv_h = ws + lay.inv_h;
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

template <typename T, int K>
void forward_rows(const Packed<T>& P, const T* x, T* y, int64_t batch, const Layout& lay, T* ws) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int VL = S::L;
  const int nvec = int((P.out + VL - 1) / VL);
#pragma omp parallel num_threads(lay.n_threads) if (lay.n_threads > 1)
  {
    T* acc = ws + lay.threads_base + int64_t(thread_id()) * lay.per_thread;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < batch; ++b) {
      for (int v = 0; v < nvec; ++v) S::store(acc + v * VL, V{});
      for (int i = 0; i < P.in; ++i) {
        EdgeTerms<T, K> e;
        edge_terms<T, K>(P, i, x[b * P.in + i], e, false);
        const T* Wi = P.w(i);
        const T* rows[K + 2];
        for (int q = 0; q < K + 2; ++q) rows[q] = Wi + e.row[q] * P.po;
        for (int v = 0; v < nvec; ++v) {
          V a = S::load(acc + v * VL);
#pragma GCC unroll 8
          for (int q = 0; q < K + 2; ++q) a += S::load(rows[q] + v * VL) * e.w[q];
          S::store(acc + v * VL, a);
        }
      }
      T* yb = y + b * P.out;
      for (int o = 0; o < P.out; ++o) yb[o] = acc[o];
    }
  }
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
  const int n_blocks = (P.in + kFeatureBlock - 1) / kFeatureBlock;
  const int nb = P.nb;
  const T* sw = static_cast<const T*>(a.params.spline_weight);
  const T* ss = static_cast<const T*>(a.params.spline_scaler);
  T* dbw = static_cast<T*>(a.d_base_weight);
  T* dsw = static_cast<T*>(a.d_spline_weight);
  T* dss = static_cast<T*>(a.d_spline_scaler);
  // One pass per block of input features: each (row, input) has its terms evaluated once and used
  // for both dx[b, i] and the weight-gradient slabs of input i, which this thread alone owns.
#pragma omp parallel num_threads(lay.n_threads) if (lay.n_threads > 1)
  {
    T* mine = ws + lay.threads_base + int64_t(thread_id()) * lay.per_thread;
    T* dyrow = mine;  // dy row padded with zeros to whole vectors
    T* slabs = mine + 2 * P.po;
    for (long o = P.out; o < P.po; ++o) dyrow[o] = T(0);
#pragma omp for schedule(static)
    for (int blk = 0; blk < n_blocks; ++blk) {
      const int i0 = blk * kFeatureBlock;
      const int ni = P.in - i0 < kFeatureBlock ? P.in - i0 : kFeatureBlock;
      const long slab = long(P.R) * P.po;
      if (want_w)
        for (long e = 0; e < ni * slab; ++e) slabs[e] = T(0);
      for (int64_t b = 0; b < batch; ++b) {
        for (int o = 0; o < P.out; ++o) dyrow[o] = dy[b * P.out + o];
        for (int ii = 0; ii < ni; ++ii) {
          const int i = i0 + ii;
          EdgeTerms<T, K> e;
          edge_terms<T, K>(P, i, x[b * P.in + i], e, dx != nullptr);
          const T* Wi = P.w(i);
          T* Si = slabs + ii * slab;
          V dot = V{};
          for (int v = 0; v < nvec; ++v) {
            const V g = S::load(dyrow + v * VL);
            if (dx) {
              V comb = V{};
#pragma GCC unroll 8
              for (int q = 0; q < K + 2; ++q) comb += S::load(Wi + e.row[q] * P.po + v * VL) * e.dw[q];
              dot += comb * g;
            }
            if (want_w) {
#pragma GCC unroll 8
              for (int q = 0; q < K + 2; ++q) {
                T* p = Si + e.row[q] * P.po + v * VL;
                S::store(p, S::load(p) + g * e.w[q]);
              }
            }
          }
          if (dx) {
            T buf[VL];
            S::store(buf, dot);
            T sum = T(0);
            for (int l = 0; l < VL; ++l) sum += buf[l];
            dx[b * P.in + i] = sum;
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
