"""Input encodings in numpy (float64 reference), with tiny-cuda-nn's semantics.

Every encoding maps x of shape (..., in_features) to (..., out_features); each has a `*_backward`
that returns dL/dx = J(x)^T dL/dy for a given dL/dy (the vector-Jacobian product that autograd
computes). None of them has parameters. No padding columns are produced (tcnn appends columns of 1 up
to the network's alignment; that belongs to the tcnn front, not to the encodings themselves).

Sources (NVlabs/tiny-cuda-nn, read for this file; no code copied):

- Frequency: include/tiny-cuda-nn/encodings/frequency.h, kernel `frequency_encoding`: output column j
  of input feature i (j in 0..2F-1) is sin(2^l * pi * x_i + (j % 2) * pi/2) with l = j / 2, i.e. per
  input feature sin(pi x), cos(pi x), sin(2 pi x), cos(2 pi x), ..., features one after the other;
  dy/dx = 2^l * pi * cos(same argument). DOCUMENTATION.md ("Frequency") states the same order and
  that the factor pi is deliberate (many NeRF codes omit it). No raw-x passthrough column.
- SphericalHarmonics: include/tiny-cuda-nn/encodings/spherical_harmonics.h, `kernel_sh`: inputs are
  expected in [0,1]^3 and mapped to v = 2x - 1 (DOCUMENTATION.md: "normalized vectors v transformed
  into the unit cube as (v+1)/2"); degree d gives d^2 real SH values (bands 0..d-1) in the order and
  with the signs of the tcnn polynomials (their comments give each constant in closed form, e.g.
  -sqrt(3) y / (2 sqrt(pi))); `kernel_sh_backward` multiplies by 2 for the [0,1] -> [-1,1] map. The
  polynomials are not renormalised: v is used as given, whatever its length. tcnn goes to degree 8;
  this reference stops at 4.
- OneBlob: include/tiny-cuda-nn/encodings/oneblob.h and the quartic helpers of
  include/tiny-cuda-nn/common_device.h. Not a Gaussian: a quartic kernel ("replaced by a quartic
  kernel for performance", also DOCUMENTATION.md) of radius 1/n_bins, whose CDF in u = t * n_bins is
  Q(u) = clamp(15/16 u (1 - 2/3 u^2 + 1/5 u^4) + 1/2, 0, 1) (density 15/16 (1 - u^2)^2 on |u| < 1).
  Bin k of feature i covers [k/B, (k+1)/B] and gets C((k+1)/B - x) - C(k/B - x) with
  C(t) = Q(t B) + Q((t - 1) B) + Q((t + 1) B): the blob wraps around [0,1] (kernels
  `kernel_one_blob_soa`, `one_blob_subwarp_aligned`; the latter's shuffle trick equals this sum for x
  in [0,1]). Inputs are expected in [0,1]; the formula is applied as is outside. tcnn also requires
  n_bins to be a power of two (an optimisation of its kernel); the formula does not need it.
- Identity: include/tiny-cuda-nn/encodings/identity.h: y = x * scale + offset, dL/dx = dL/dy * scale.
"""
import math

import numpy as np

SH_MAX_DEGREE = 4


def _as_input(x, name="x"):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 1:
        raise ValueError(f"{name}: expected at least 1 dimension (..., in_features), got a 0-d array")
    return x


# --- Frequency -----------------------------------------------------------------------------------

def _frequency_phases(x, n_frequencies):
    """(..., in, F) arguments 2^l * pi * x (scaling by 2^l first, as tcnn does with scalbnf)."""
    scales = np.ldexp(1.0, np.arange(n_frequencies))
    return (x[..., None] * scales) * math.pi, scales * math.pi


def frequency(x, n_frequencies):
    """(..., in) -> (..., in * 2 * n_frequencies): per feature sin(pi x), cos(pi x), sin(2 pi x), ..."""
    x = _as_input(x)
    theta, _ = _frequency_phases(x, n_frequencies)
    out = np.stack([np.sin(theta), np.cos(theta)], axis=-1)  # (..., in, F, 2)
    return out.reshape(*x.shape[:-1], x.shape[-1] * 2 * n_frequencies)


def frequency_backward(dy, x, n_frequencies):
    x = _as_input(x)
    theta, dtheta_dx = _frequency_phases(x, n_frequencies)
    dy = np.asarray(dy, dtype=np.float64).reshape(*x.shape, n_frequencies, 2)
    return np.sum(dtheta_dx * (dy[..., 0] * np.cos(theta) - dy[..., 1] * np.sin(theta)), axis=-1)


# --- Spherical harmonics -------------------------------------------------------------------------

_SQRT_PI = math.sqrt(math.pi)
# Constants in the closed forms given in tcnn's comments (spherical_harmonics.h).
_C0 = 1.0 / (2.0 * _SQRT_PI)
_C1 = math.sqrt(3.0) / (2.0 * _SQRT_PI)
_C2A = math.sqrt(15.0) / (2.0 * _SQRT_PI)
_C2B = math.sqrt(5.0) / (4.0 * _SQRT_PI)
_C2C = math.sqrt(15.0) / (4.0 * _SQRT_PI)
_C3A = math.sqrt(70.0) / (8.0 * _SQRT_PI)
_C3B = math.sqrt(105.0) / (2.0 * _SQRT_PI)
_C3C = math.sqrt(42.0) / (8.0 * _SQRT_PI)
_C3D = math.sqrt(7.0) / (4.0 * _SQRT_PI)
_C3E = math.sqrt(105.0) / (4.0 * _SQRT_PI)


def _sh_terms(x, y, z):
    """The 16 real SH polynomials of bands 0..3 in tcnn's order, and their gradients (d/dx, d/dy, d/dz)."""
    one, zero = np.ones_like(x), np.zeros_like(x)
    x2, y2, z2 = x * x, y * y, z * z
    return [
        (_C0 * one, (zero, zero, zero)),
        (-_C1 * y, (zero, -_C1 * one, zero)),
        (_C1 * z, (zero, zero, _C1 * one)),
        (-_C1 * x, (-_C1 * one, zero, zero)),
        (_C2A * x * y, (_C2A * y, _C2A * x, zero)),
        (-_C2A * y * z, (zero, -_C2A * z, -_C2A * y)),
        (_C2B * (3.0 * z2 - 1.0), (zero, zero, 6.0 * _C2B * z)),
        (-_C2A * x * z, (-_C2A * z, zero, -_C2A * x)),
        (_C2C * (x2 - y2), (2.0 * _C2C * x, -2.0 * _C2C * y, zero)),
        (_C3A * y * (y2 - 3.0 * x2), (-6.0 * _C3A * x * y, 3.0 * _C3A * (y2 - x2), zero)),
        (_C3B * x * y * z, (_C3B * y * z, _C3B * x * z, _C3B * x * y)),
        (_C3C * y * (1.0 - 5.0 * z2), (zero, _C3C * (1.0 - 5.0 * z2), -10.0 * _C3C * y * z)),
        (_C3D * z * (5.0 * z2 - 3.0), (zero, zero, _C3D * (15.0 * z2 - 3.0))),
        (_C3C * x * (1.0 - 5.0 * z2), (_C3C * (1.0 - 5.0 * z2), zero, -10.0 * _C3C * x * z)),
        (_C3E * z * (x2 - y2), (2.0 * _C3E * x * z, -2.0 * _C3E * y * z, _C3E * (x2 - y2))),
        (_C3A * x * (3.0 * y2 - x2), (3.0 * _C3A * (y2 - x2), 6.0 * _C3A * x * y, zero)),
    ]


def _check_sh(x, degree):
    if not isinstance(degree, (int, np.integer)) or isinstance(degree, bool) or not 1 <= degree <= SH_MAX_DEGREE:
        raise ValueError(f"degree: expected an integer in 1..{SH_MAX_DEGREE}, got {degree!r}")
    if x.shape[-1] != 3:
        raise ValueError(f"x: expected last dimension 3 (a direction), got shape {x.shape}")


def spherical_harmonics(x, degree):
    """(..., 3) in [0,1]^3 -> (..., degree**2): real SH of v = 2x - 1, tcnn's order and signs."""
    x = _as_input(x)
    _check_sh(x, degree)
    v = 2.0 * x - 1.0
    terms = _sh_terms(v[..., 0], v[..., 1], v[..., 2])[: degree * degree]
    return np.stack([value for value, _ in terms], axis=-1)


def spherical_harmonics_backward(dy, x, degree):
    x = _as_input(x)
    _check_sh(x, degree)
    v = 2.0 * x - 1.0
    terms = _sh_terms(v[..., 0], v[..., 1], v[..., 2])[: degree * degree]
    jac = np.stack([np.stack(grad, axis=-1) for _, grad in terms], axis=-2)  # (..., d^2, 3) in v
    dy = np.asarray(dy, dtype=np.float64)
    return 2.0 * np.einsum("...k,...kj->...j", dy, jac)  # dv/dx = 2


# --- OneBlob -------------------------------------------------------------------------------------

def quartic_cdf(u):
    """CDF of the quartic kernel 15/16 (1 - u^2)^2 on [-1, 1]."""
    u = np.clip(u, -1.0, 1.0)
    return 15.0 / 16.0 * u * (1.0 - 2.0 / 3.0 * u * u + 0.2 * u ** 4) + 0.5


def quartic_pdf(u):
    """Density 15/16 (1 - u^2)^2 on [-1, 1], 0 outside; NaN stays NaN (as in the forward's CDF)."""
    u = np.clip(u, -1.0, 1.0)
    return 15.0 / 16.0 * (1.0 - u * u) ** 2


def _one_blob_bounds(x, n_bins):
    """(..., in, B+1) differences t = k/B - x between the bin boundaries and the input."""
    return np.arange(n_bins + 1) / n_bins - x[..., None]


def one_blob(x, n_bins):
    """(..., in) in [0,1] -> (..., in * n_bins): mass of a wrapped quartic blob of radius 1/n_bins per bin."""
    x = _as_input(x)
    t = _one_blob_bounds(x, n_bins)
    cdf = sum(quartic_cdf((t + s) * n_bins) for s in (-1.0, 0.0, 1.0))
    return np.diff(cdf, axis=-1).reshape(*x.shape[:-1], x.shape[-1] * n_bins)


def one_blob_backward(dy, x, n_bins):
    x = _as_input(x)
    t = _one_blob_bounds(x, n_bins)
    # d/dx of C(b - x) is -C'(b - x), C'(t) = B * sum_s pdf((t + s) B).
    dcdf = -n_bins * sum(quartic_pdf((t + s) * n_bins) for s in (-1.0, 0.0, 1.0))
    dy = np.asarray(dy, dtype=np.float64).reshape(*x.shape, n_bins)
    return np.sum(dy * np.diff(dcdf, axis=-1), axis=-1)


# --- Identity ------------------------------------------------------------------------------------

def identity(x, scale=1.0, offset=0.0):
    """(..., in) -> (..., in): x * scale + offset."""
    return _as_input(x) * scale + offset


def identity_backward(dy, x, scale=1.0, offset=0.0):
    return np.asarray(dy, dtype=np.float64) * scale


# --- Several encodings side by side (tcnn's Composite) and ones padding ---------------------------

_FORWARD = {"identity": lambda x, p: identity(x, p.scale, p.offset),
            "frequency": lambda x, p: frequency(x, p.n),
            "spherical_harmonics": lambda x, p: spherical_harmonics(x, p.n),
            "one_blob": lambda x, p: one_blob(x, p.n)}
_BACKWARD = {"identity": lambda dy, x, p: identity_backward(dy, x, p.scale, p.offset),
             "frequency": lambda dy, x, p: frequency_backward(dy, x, p.n),
             "spherical_harmonics": lambda dy, x, p: spherical_harmonics_backward(dy, x, p.n),
             "one_blob": lambda dy, x, p: one_blob_backward(dy, x, p.n)}


def encode(x, parts, n_ones=0):
    """Each part (an object with kind, n_dims, n, scale, offset) encodes the next n_dims inputs; the
    outputs are concatenated, then n_ones columns of 1 are appended."""
    x = _as_input(x)
    outs, i = [], 0
    for p in parts:
        outs.append(_FORWARD[p.kind](x[..., i:i + p.n_dims], p))
        i += p.n_dims
    outs.append(np.ones((*x.shape[:-1], n_ones)))
    return np.concatenate(outs, axis=-1)


def encode_backward(dy, x, parts, n_ones=0):
    """dL/dx of encode (the ones columns do not depend on x)."""
    x = _as_input(x)
    dy = np.asarray(dy, dtype=np.float64)
    dxs, i, j = [], 0, 0
    for p in parts:
        xp = x[..., i:i + p.n_dims]
        w = _FORWARD[p.kind](xp, p).shape[-1]
        dxs.append(_BACKWARD[p.kind](dy[..., j:j + w], xp, p))
        i += p.n_dims
        j += w
    return np.concatenate(dxs, axis=-1)
