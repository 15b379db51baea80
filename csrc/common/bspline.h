// Local B-spline evaluation shared by the CPU and CUDA KAN kernels.
//
// Knots t[0..n_knots-1] of one input feature (pykan/efficient-kan: n_knots = G+2k+1, G+k basis
// functions B_c, c = 0..G+k-1, B_c non-zero on [t_c, t_{c+k+1})). For x in the half-open cell
// [t_j, t_{j+1}) exactly k+1 bases are non-zero: c = j-k .. j. Instead of the full Cox-de Boor
// recursion over all G+k bases (what efficient-kan materialises) we evaluate only those k+1 values
// with the triangular scheme (de Boor / "BasisFuns"), O(k^2) flops. Bases whose index falls outside
// [0, G+k) are dropped by the caller: that is what makes the spline decay to 0 over the k extension
// cells, exactly as pykan's recursion does. Outside [t_0, t_{n-1}) and for non-finite x there is no
// cell: every basis is 0.
#pragma once
#include "common/hd.h"

namespace perceptrons {

constexpr int kMaxSplineOrder = 5;

// Cell j with t[j] <= x < t[j+1], or -1 when x is outside [t_0, t_{n-1}) or not finite.
// uniform: knots are t_0 + c*h (checked when packing), found by floor instead of binary search.
template <typename T>
PCT_HD int bspline_find_cell(const T* t, int n_knots, T x, bool uniform, T inv_h) {
  if (!(x >= t[0]) || !(x < t[n_knots - 1])) return -1;  // also catches NaN
  const int last_cell = n_knots - 2;
  int j;
  if (uniform) {
    j = int((x - t[0]) * inv_h);
    j = j < 0 ? 0 : (j > last_cell ? last_cell : j);
    // floor can be off by one next to a knot; the half-open rule is decided by the knots themselves.
    while (j > 0 && x < t[j]) --j;
    while (j < last_cell && x >= t[j + 1]) ++j;
  } else {
    int lo = 0, hi = last_cell;  // invariant: t[lo] <= x < t[hi + 1]
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (x >= t[mid]) lo = mid;
      else hi = mid - 1;
    }
    j = lo;
  }
  return j;
}

// The K+1 non-zero basis values of order K at x in cell j: w[r] = B_{j-K+r}(x), and, if dw is not
// null, their derivatives dw[r] = B'_{j-K+r}(x). Zero-length knot spans contribute 0 (no 0/0).
// t must be readable at indices -K .. n_knots-1+K: near the ends the triangle touches knots of
// bases that do not exist (c < 0 or c >= G+k). Their values are dropped, and each existing B_c
// depends only on its own knots t_c..t_{c+K+1}, so any increasing padding gives the same result.
template <typename T, int K>
PCT_HD void bspline_local(const T* t, int j, T x, T* w, T* dw) {
  T left[K + 1], right[K + 1];
  T n[K + 1];   // order p values, p = 0..K
  T prev[K + 1];  // order K-1 values, for the derivative
  n[0] = T(1);
  for (int p = 1; p <= K; ++p) {
    left[p] = x - t[j + 1 - p];
    right[p] = t[j + p] - x;
    T saved = T(0);
    for (int r = 0; r < p; ++r) {
      const T den = right[r + 1] + left[p - r];
      const T tmp = den != T(0) ? n[r] / den : T(0);
      n[r] = saved + right[r + 1] * tmp;
      saved = left[p - r] * tmp;
    }
    n[p] = saved;
    if (p == K - 1)
      for (int r = 0; r < K; ++r) prev[r] = n[r];
  }
  for (int r = 0; r <= K; ++r) w[r] = n[r];
  if (dw) {
    if (K == 1) prev[0] = T(1);
    // B'_{c,K} = K (B_{c,K-1} / (t_{c+K} - t_c) - B_{c+1,K-1} / (t_{c+K+1} - t_{c+1})), c = j-K+r;
    // the order K-1 values are prev[q] = B_{j-K+1+q, K-1}.
    for (int r = 0; r <= K; ++r) {
      const int c = j - K + r;
      T d = T(0);
      if (r >= 1) {
        const T den = t[c + K] - t[c];
        if (den != T(0)) d += prev[r - 1] / den;
      }
      if (r <= K - 1) {
        const T den = t[c + K + 1] - t[c + 1];
        if (den != T(0)) d -= prev[r] / den;
      }
      dw[r] = T(K) * d;
    }
  }
}

// The same values on uniform knots t_m = t_0 + m h, from s = (x - t_0) / h: in these units the knots
// are the integers, every denominator of the triangle is the order p, and no division is left.
// Derivatives are returned per unit of x (times 1/h).
template <typename T, int K>
PCT_HD void bspline_local_uniform(T s, int j, T inv_h, T* w, T* dw) {
  T n[K + 1];
  T prev[K + 1];
  n[0] = T(1);
  for (int p = 1; p <= K; ++p) {
    const T inv_p = T(1) / T(p);
    T saved = T(0);
    for (int r = 0; r < p; ++r) {
      const T tmp = n[r] * inv_p;
      const T right = T(j + r + 1) - s;     // t'_{j+r+1} - s
      const T left = s - T(j + 1 - p + r);  // s - t'_{j+1-p+r}
      n[r] = saved + right * tmp;
      saved = left * tmp;
    }
    n[p] = saved;
    if (p == K - 1)
      for (int r = 0; r < K; ++r) prev[r] = n[r];
  }
  for (int r = 0; r <= K; ++r) w[r] = n[r];
  if (dw) {
    if (K == 1) prev[0] = T(1);
    // B'_{c,K} = K (B_{c,K-1} - B_{c+1,K-1}) / (K h) on uniform knots.
    for (int r = 0; r <= K; ++r) {
      const T a = r >= 1 ? prev[r - 1] : T(0);
      const T b = r <= K - 1 ? prev[r] : T(0);
      dw[r] = (a - b) * inv_h;
    }
  }
}

}  // namespace perceptrons
