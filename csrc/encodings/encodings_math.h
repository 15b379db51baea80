// The encodings of a block of rows, forward and input gradient, shared by the standalone kernels
// (encodings_cpu.cpp) and the fused MLP's input stage (csrc/mlp/mlp_cpu_isa.cpp). Same names as the
// float64 numpy reference (python/perceptrons/reference/encodings.py), which cites tcnn's sources.
//
// Arithmetic is in double whatever T is: it costs little next to the MLP, and it keeps the
// frequency encoding's angle-doubling recurrence (below) within float32 rounding.
// CPU only for now (the frequency loops keep per-block arrays); the per-row SH / OneBlob / Identity
// functions are PCT_HD for a future CUDA kernel.
#pragma once
#include <cmath>
#include <type_traits>

#include "common/hd.h"
#include "encodings/encodings.h"

namespace perceptrons {
namespace enc {

constexpr double kPi = 3.14159265358979323846;

// ---- Frequency: per input, sin(2^l pi x), cos(2^l pi x) for l = 0..F-1 (interleaved) ----------
// One sin/cos per input; the higher octaves come from the double-angle formulas
// sin 2a = 2 sin a cos a, cos 2a = (cos a - sin a)(cos a + sin a). An error in (sin, cos) doubles per
// octave (squaring a unit complex number doubles its angle error), so after l octaves it is about
// 2^l * 1e-16: below float32 rounding up to about 25 octaves, a few float32 ulps at 32.
//
// sin(pi x), cos(pi x) without a libm call, branch-free so that loops over rows vectorise: with
// k = rint(2x), r = x - k/2 is exact and |r| <= 1/4, so a = pi r lies in [-pi/4, pi/4], where Taylor
// series to a^17 / a^16 are exact to double rounding (next terms below 1e-17); the quadrant k mod 4
// then swaps and negates. Exact for |x| < 2^51 (the rounding trick's range); beyond, where every double
// is an integer, the result is not guaranteed (tcnn's float32 __sinf has no phase left there either).
// Inf and NaN give NaN.
PCT_HD double round_to_int(double v) {  // round half to even for |v| < 2^51, in plain arithmetic
  // Adding and subtracting 1.5 * 2^52 rounds to an integer in the current (nearest) mode; unlike
  // rint/floor this needs no SSE4.1 and no library call, so loops over it vectorise on any ISA.
  const double magic = 6755399441055744.0;
  return (v + magic) - magic;
}

PCT_HD void sincospi(double x, double& s, double& c) {
  const double k = round_to_int(2.0 * x);
  const double a = kPi * (x - 0.5 * k);
  const double a2 = a * a;
  const double sa = a * (1.0 + a2 * (-1.0 / 6 + a2 * (1.0 / 120 + a2 * (-1.0 / 5040 + a2 * (1.0 / 362880 +
                    a2 * (-1.0 / 39916800 + a2 * (1.0 / 6227020800.0 + a2 * (-1.0 / 1307674368000.0 +
                    a2 * (1.0 / 355687428096000.0)))))))));
  const double ca = 1.0 + a2 * (-0.5 + a2 * (1.0 / 24 + a2 * (-1.0 / 720 + a2 * (1.0 / 40320 +
                    a2 * (-1.0 / 3628800 + a2 * (1.0 / 479001600.0 + a2 * (-1.0 / 87178291200.0 +
                    a2 * (1.0 / 20922789888000.0))))))));
  // Quadrant q = k mod 4 in {0, 1, 2, 3}: k / 4 - 3/8 is never a tie, so it rounds to floor(k / 4).
  const double q = k - 4.0 * round_to_int(0.25 * k - 0.375);
  const bool odd = q == 1.0 || q == 3.0;
  const double ss = odd ? ca : sa, cc = odd ? sa : ca;
  s = q >= 2.0 ? -ss : ss;
  c = q == 1.0 || q == 2.0 ? -cc : cc;
}

// Rows r < rows of x (row stride ldx); output (r, j) goes to out[r * rs + j * cs]. Rows go in blocks,
// (sin, cos) kept per row in small arrays, so every step is a loop over rows: it vectorises, and with
// a column-major output (rs = 1, the fused MLP's tiles) so do the stores.
template <typename T>
static inline void frequency(const T* x, long ldx, int rows, int n_dims, int F, T* out, long rs, long cs) {
  constexpr int kBlock = 64;
  double s[kBlock], c[kBlock];
  for (int r0 = 0; r0 < rows; r0 += kBlock) {
    const int nr = rows - r0 < kBlock ? rows - r0 : kBlock;
    for (int i = 0; i < n_dims; ++i) {
      for (int r = 0; r < nr; ++r) sincospi(double(x[(r0 + r) * ldx + i]), s[r], c[r]);
      T* o = out + r0 * rs + long(i) * 2 * F * cs;
      for (int l = 0; l < F; ++l) {
        T* os = o + 2 * l * cs;
        T* oc = os + cs;
        for (int r = 0; r < nr; ++r) {
          os[r * rs] = T(s[r]);
          oc[r * rs] = T(c[r]);
          const double s2 = 2.0 * s[r] * c[r];
          c[r] = (c[r] - s[r]) * (c[r] + s[r]);
          s[r] = s2;
        }
      }
    }
  }
}

// dx[r][i] = sum_l 2^l pi (g(r, sin_l) cos - g(r, cos_l) sin), g(r, j) = g[r * rs + j * cs];
// dx has x's row stride ldx.
template <typename T>
static inline void frequency_backward(const T* x, long ldx, int rows, const T* g, long rs, long cs, int n_dims,
                                      int F, T* dx) {
  constexpr int kBlock = 64;
  double s[kBlock], c[kBlock], acc[kBlock];
  for (int r0 = 0; r0 < rows; r0 += kBlock) {
    const int nr = rows - r0 < kBlock ? rows - r0 : kBlock;
    for (int i = 0; i < n_dims; ++i) {
      for (int r = 0; r < nr; ++r) {
        sincospi(double(x[(r0 + r) * ldx + i]), s[r], c[r]);
        acc[r] = 0.0;
      }
      const T* gi = g + r0 * rs + long(i) * 2 * F * cs;
      double w = kPi;
      for (int l = 0; l < F; ++l) {
        const T* gs = gi + 2 * l * cs;
        const T* gc = gs + cs;
        for (int r = 0; r < nr; ++r) {
          acc[r] += w * (double(gs[r * rs]) * c[r] - double(gc[r * rs]) * s[r]);
          const double s2 = 2.0 * s[r] * c[r];
          c[r] = (c[r] - s[r]) * (c[r] + s[r]);
          s[r] = s2;
        }
        w *= 2.0;
      }
      for (int r = 0; r < nr; ++r) dx[(r0 + r) * ldx + i] = T(acc[r]);
    }
  }
}

// ---- Spherical harmonics of v = 2x - 1, bands 0..degree-1 (tcnn's order and signs) -------------
// Constants: the closed forms of tcnn's comments, c / sqrt(pi).
struct ShConstants {
  static constexpr double rs = 0.56418958354775628695;  // 1 / sqrt(pi)
  static constexpr double c0 = 0.5 * rs;
  static constexpr double c1 = 0.86602540378443864676 * rs;   // sqrt(3) / 2
  static constexpr double c2a = 1.93649167310370844259 * rs;  // sqrt(15) / 2
  static constexpr double c2b = 0.55901699437494742410 * rs;  // sqrt(5) / 4
  static constexpr double c2c = 0.96824583655185422129 * rs;  // sqrt(15) / 4
  static constexpr double c3a = 1.04582503316759380138 * rs;  // sqrt(70) / 8
  static constexpr double c3b = 5.12347538297980033384 * rs;  // sqrt(105) / 2
  static constexpr double c3c = 0.81009258730098255062 * rs;  // sqrt(42) / 8
  static constexpr double c3d = 0.66143782776614764763 * rs;  // sqrt(7) / 4
  static constexpr double c3e = 2.56173769148990016692 * rs;  // sqrt(105) / 4
};

template <typename T>
PCT_HD void spherical_harmonics(const T* in, int degree, T* out, long os) {
  using K = ShConstants;
  const double x = 2.0 * double(in[0]) - 1.0, y = 2.0 * double(in[1]) - 1.0, z = 2.0 * double(in[2]) - 1.0;
  out[0 * os] = T(K::c0);
  if (degree <= 1) return;
  out[1 * os] = T(-K::c1 * y);
  out[2 * os] = T(K::c1 * z);
  out[3 * os] = T(-K::c1 * x);
  if (degree <= 2) return;
  const double x2 = x * x, y2 = y * y, z2 = z * z;
  out[4 * os] = T(K::c2a * x * y);
  out[5 * os] = T(-K::c2a * y * z);
  out[6 * os] = T(K::c2b * (3.0 * z2 - 1.0));
  out[7 * os] = T(-K::c2a * x * z);
  out[8 * os] = T(K::c2c * (x2 - y2));
  if (degree <= 3) return;
  out[9 * os] = T(K::c3a * y * (y2 - 3.0 * x2));
  out[10 * os] = T(K::c3b * x * y * z);
  out[11 * os] = T(K::c3c * y * (1.0 - 5.0 * z2));
  out[12 * os] = T(K::c3d * z * (5.0 * z2 - 3.0));
  out[13 * os] = T(K::c3c * x * (1.0 - 5.0 * z2));
  out[14 * os] = T(K::c3e * z * (x2 - y2));
  out[15 * os] = T(K::c3a * x * (3.0 * y2 - x2));
}

template <typename T>
PCT_HD void spherical_harmonics_backward(const T* in, const T* g, long gs, int degree, T* dx) {
  using K = ShConstants;
  const double x = 2.0 * double(in[0]) - 1.0, y = 2.0 * double(in[1]) - 1.0, z = 2.0 * double(in[2]) - 1.0;
  double gx = 0.0, gy = 0.0, gz = 0.0;  // dL/dv
  if (degree > 1) {
    gy -= K::c1 * double(g[1 * gs]);
    gz += K::c1 * double(g[2 * gs]);
    gx -= K::c1 * double(g[3 * gs]);
  }
  if (degree > 2) {
    const double g4 = g[4 * gs], g5 = g[5 * gs], g6 = g[6 * gs], g7 = g[7 * gs], g8 = g[8 * gs];
    gx += K::c2a * (y * g4 - z * g7) + 2.0 * K::c2c * x * g8;
    gy += K::c2a * (x * g4 - z * g5) - 2.0 * K::c2c * y * g8;
    gz += -K::c2a * (y * g5 + x * g7) + 6.0 * K::c2b * z * g6;
  }
  if (degree > 3) {
    const double x2 = x * x, y2 = y * y, z2 = z * z;
    const double g9 = g[9 * gs], g10 = g[10 * gs], g11 = g[11 * gs], g12 = g[12 * gs], g13 = g[13 * gs], g14 = g[14 * gs], g15 = g[15 * gs];
    gx += -6.0 * K::c3a * x * y * g9 + K::c3b * y * z * g10 + K::c3c * (1.0 - 5.0 * z2) * g13 +
          2.0 * K::c3e * x * z * g14 + 3.0 * K::c3a * (y2 - x2) * g15;
    gy += 3.0 * K::c3a * (y2 - x2) * g9 + K::c3b * x * z * g10 + K::c3c * (1.0 - 5.0 * z2) * g11 -
          2.0 * K::c3e * y * z * g14 + 6.0 * K::c3a * x * y * g15;
    gz += K::c3b * x * y * g10 - 10.0 * K::c3c * y * z * g11 + K::c3d * (15.0 * z2 - 3.0) * g12 -
          10.0 * K::c3c * x * z * g13 + K::c3e * (x2 - y2) * g14;
  }
  dx[0] = T(2.0 * gx);  // dv/dx = 2
  dx[1] = T(2.0 * gy);
  dx[2] = T(2.0 * gz);
}

// ---- OneBlob: mass of a wrapped quartic blob of radius 1/B centred at x, per bin ---------------
// In u = (k/B - x) B = k - x B the boundary k's CDF is Q(u - B) + Q(u) + Q(u + B) (the blob wraps
// around [0,1]); Q is the CDF of 15/16 (1 - u^2)^2 on [-1, 1].
PCT_HD double quartic_cdf(double u) {
  u = u < -1.0 ? -1.0 : (u > 1.0 ? 1.0 : u);
  const double u2 = u * u;
  return 15.0 / 16.0 * u * (1.0 - 2.0 / 3.0 * u2 + 0.2 * u2 * u2) + 0.5;
}
PCT_HD double quartic_pdf(double u) {
  u = u < -1.0 ? -1.0 : (u > 1.0 ? 1.0 : u);  // 0 at and beyond |u| = 1
  const double v = 1.0 - u * u;
  return 15.0 / 16.0 * v * v;
}
PCT_HD double one_blob_cdf(double u, double B) { return quartic_cdf(u - B) + quartic_cdf(u) + quartic_cdf(u + B); }
PCT_HD double one_blob_pdf(double u, double B) { return quartic_pdf(u - B) + quartic_pdf(u) + quartic_pdf(u + B); }

// Rows r < rows of x (row stride ldx); output (r, j) at out[r * rs + j * cs]. Like frequency(): a
// block of rows at a time, one loop over rows per bin, branch-free (clamped polynomials), so it
// vectorises, with contiguous stores into the MLP's column-major tiles.
template <typename T>
static inline void one_blob(const T* x, long ldx, int rows, int n_dims, int n_bins, T* out, long rs, long cs) {
  constexpr int kBlock = 64;
  const double B = n_bins;
  double xb[kBlock], prev[kBlock];
  for (int r0 = 0; r0 < rows; r0 += kBlock) {
    const int nr = rows - r0 < kBlock ? rows - r0 : kBlock;
    for (int i = 0; i < n_dims; ++i) {
      for (int r = 0; r < nr; ++r) {
        xb[r] = double(x[(r0 + r) * ldx + i]) * B;
        prev[r] = one_blob_cdf(-xb[r], B);
      }
      T* o = out + r0 * rs + long(i) * n_bins * cs;
      for (int k = 0; k < n_bins; ++k) {
        for (int r = 0; r < nr; ++r) {
          const double next = one_blob_cdf(double(k + 1) - xb[r], B);
          o[r * rs + k * cs] = T(next - prev[r]);
          prev[r] = next;
        }
      }
    }
  }
}

// dx[r][i] = B sum_k g(r, bin k of i) (Q'(k - xB) - Q'(k + 1 - xB)): d/dx of Q(k - x B) is -B Q'.
template <typename T>
static inline void one_blob_backward(const T* x, long ldx, int rows, const T* g, long rs, long cs, int n_dims,
                                     int n_bins, T* dx) {
  constexpr int kBlock = 64;
  const double B = n_bins;
  double xb[kBlock], prev[kBlock], acc[kBlock];
  for (int r0 = 0; r0 < rows; r0 += kBlock) {
    const int nr = rows - r0 < kBlock ? rows - r0 : kBlock;
    for (int i = 0; i < n_dims; ++i) {
      for (int r = 0; r < nr; ++r) {
        xb[r] = double(x[(r0 + r) * ldx + i]) * B;
        prev[r] = one_blob_pdf(-xb[r], B);
        acc[r] = 0.0;
      }
      const T* gi = g + r0 * rs + long(i) * n_bins * cs;
      for (int k = 0; k < n_bins; ++k) {
        for (int r = 0; r < nr; ++r) {
          const double next = one_blob_pdf(double(k + 1) - xb[r], B);
          acc[r] += double(gi[r * rs + k * cs]) * (prev[r] - next);
          prev[r] = next;
        }
      }
      for (int r = 0; r < nr; ++r) dx[(r0 + r) * ldx + i] = T(B * acc[r]);
    }
  }
}

// ---- Identity ---------------------------------------------------------------------------------
template <typename T>
PCT_HD void identity(const T* x, int n_dims, double scale, double offset, T* out, long os) {
  for (int i = 0; i < n_dims; ++i) out[i * os] = T(double(x[i]) * scale + offset);
}
template <typename T>
PCT_HD void identity_backward(const T* g, long gs, int n_dims, double scale, T* dx) {
  for (int i = 0; i < n_dims; ++i) dx[i] = T(double(g[i * gs]) * scale);
}

// ---- Rows: the parts in order, then the columns of ones -----------------------------------------
// x: rows of n_inputs (row stride ldx). Output element (r, j) goes to out[r * rs + j * cs]: row-major
// (rs = n_outputs, cs = 1) for the standalone kernels, column-major (rs = 1) for the MLP's tiles.
template <typename T>
static inline void encode_rows(const EncodingConfig& c, const T* x, long ldx, int rows, T* out, long rs, long cs) {
  int xi = 0;
  long oi = 0;
  for (int p = 0; p < c.n_parts; ++p) {
    const Part& q = c.parts[p];
    if (q.kind == Kind::Frequency) {
      frequency(x + xi, ldx, rows, q.n_dims, q.n, out + oi * cs, rs, cs);
    } else if (q.kind == Kind::OneBlob) {
      one_blob(x + xi, ldx, rows, q.n_dims, q.n, out + oi * cs, rs, cs);
    } else if (q.kind == Kind::SphericalHarmonics) {
      // One loop per degree, so the polynomial code has no early returns and vectorises over rows.
      const auto rows_of = [&](auto degree) {
        for (int r = 0; r < rows; ++r) spherical_harmonics(x + r * ldx + xi, decltype(degree)::value, out + r * rs + oi * cs, cs);
      };
      switch (q.n) {
        case 1: rows_of(std::integral_constant<int, 1>{}); break;
        case 2: rows_of(std::integral_constant<int, 2>{}); break;
        case 3: rows_of(std::integral_constant<int, 3>{}); break;
        default: rows_of(std::integral_constant<int, 4>{}); break;
      }
    } else {
      for (int r = 0; r < rows; ++r) identity(x + r * ldx + xi, q.n_dims, q.scale, q.offset, out + r * rs + oi * cs, cs);
    }
    xi += q.n_dims;
    oi += part_width(q);
  }
  for (int j = 0; j < c.n_ones; ++j)
    for (int r = 0; r < rows; ++r) out[r * rs + (oi + j) * cs] = T(1);
}

// dx = J(x)^T g per row; g(r, j) = g[r * rs + j * cs] is dL/d(encoded) (the ones columns are ignored);
// dx has x's row stride ldx.
template <typename T>
static inline void encode_rows_backward(const EncodingConfig& c, const T* x, long ldx, int rows, const T* g,
                                        long rs, long cs, T* dx) {
  int xi = 0;
  long gi = 0;
  for (int p = 0; p < c.n_parts; ++p) {
    const Part& q = c.parts[p];
    if (q.kind == Kind::Frequency) {
      frequency_backward(x + xi, ldx, rows, g + gi * cs, rs, cs, q.n_dims, q.n, dx + xi);
    } else if (q.kind == Kind::OneBlob) {
      one_blob_backward(x + xi, ldx, rows, g + gi * cs, rs, cs, q.n_dims, q.n, dx + xi);
    } else {
      for (int r = 0; r < rows; ++r) {
        const T* xr = x + r * ldx + xi;
        const T* gr = g + r * rs + gi * cs;
        T* d = dx + r * ldx + xi;
        switch (q.kind) {
          case Kind::Identity: identity_backward(gr, cs, q.n_dims, q.scale, d); break;
          case Kind::SphericalHarmonics: spherical_harmonics_backward(xr, gr, cs, q.n, d); break;
          case Kind::Frequency: case Kind::OneBlob: break;
        }
      }
    }
    xi += q.n_dims;
    gi += part_width(q);
  }
}

}  // namespace enc
}  // namespace perceptrons
