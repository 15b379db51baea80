"""Input encodings for neural fields (NeRF / INR), with tiny-cuda-nn's semantics.

Each module maps (..., in_features) to (..., out_features) with plain differentiable torch ops, so
input gradients, double backward (eikonal losses), torch.func and torch.compile all go through
autograd. None has parameters. The exact formulas, their order and their sources in tiny-cuda-nn
are documented in perceptrons.reference.encodings, the float64 numpy reference they are tested
against. No ones-padding columns are appended (that is the tcnn front's job).
"""
import math

import torch
from torch import Tensor, nn

SH_MAX_DEGREE = 4
_DTYPES = (torch.float32, torch.float64)


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return value


class _Encoding(nn.Module):
    in_features: int
    out_features: int

    def _check(self, x: Tensor):
        if not isinstance(x, Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in _DTYPES:
            raise TypeError(f"x: expected dtype torch.float32 or torch.float64, got {x.dtype}")
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected shape (..., {self.in_features}) (in_features={self.in_features}), "
                             f"got {tuple(x.shape)}")


class FrequencyEncoding(_Encoding):
    """NeRF positional encoding as tcnn's "Frequency": per input feature x, for l = 0..n_frequencies-1,
    sin(2^l pi x), cos(2^l pi x) (interleaved), features one after the other. out = in * 2 * n_frequencies.
    """

    def __init__(self, in_features: int, n_frequencies: int = 12):
        super().__init__()
        self.in_features = _positive_int("in_features", in_features)
        self.n_frequencies = _positive_int("n_frequencies", n_frequencies)
        self.out_features = in_features * 2 * n_frequencies

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        # 2^l * pi in x's dtype: scaling a rounded pi by a power of two is exact, so this equals
        # tcnn's (x * 2^l) * pi.
        scales = torch.exp2(torch.arange(self.n_frequencies, dtype=x.dtype, device=x.device)) * math.pi
        theta = x.unsqueeze(-1) * scales  # (..., in, F)
        out = torch.stack((torch.sin(theta), torch.cos(theta)), dim=-1)  # (..., in, F, 2)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, n_frequencies={self.n_frequencies}"


def _sh_values(v: Tensor, degree: int):
    """The first degree^2 real SH polynomials of v (..., 3) in tcnn's order and signs."""
    x, y, z = v.unbind(-1)
    rs = 1.0 / math.sqrt(math.pi)
    # The constant band is written as 0 * x + c, not a fresh tensor, so that the output stays on the
    # autograd graph (zero gradient) even at degree 1, where nothing else depends on x.
    out = [x * 0.0 + 0.5 * rs]
    if degree > 1:
        c1 = math.sqrt(3.0) / 2.0 * rs
        out += [-c1 * y, c1 * z, -c1 * x]
    if degree > 2:
        x2, y2, z2 = x * x, y * y, z * z
        c2 = math.sqrt(15.0) / 2.0 * rs
        out += [c2 * x * y, -c2 * y * z, math.sqrt(5.0) / 4.0 * rs * (3.0 * z2 - 1.0), -c2 * x * z,
                math.sqrt(15.0) / 4.0 * rs * (x2 - y2)]
    if degree > 3:
        c3a, c3c = math.sqrt(70.0) / 8.0 * rs, math.sqrt(42.0) / 8.0 * rs
        out += [c3a * y * (y2 - 3.0 * x2), math.sqrt(105.0) / 2.0 * rs * x * y * z, c3c * y * (1.0 - 5.0 * z2),
                math.sqrt(7.0) / 4.0 * rs * z * (5.0 * z2 - 3.0), c3c * x * (1.0 - 5.0 * z2),
                math.sqrt(105.0) / 4.0 * rs * z * (x2 - y2), c3a * x * (3.0 * y2 - x2)]
    return out


class SphericalHarmonicsEncoding(_Encoding):
    """tcnn's "SphericalHarmonics": real SH of bands 0..degree-1 (degree^2 outputs) of v = 2x - 1.

    Inputs are unit directions mapped into [0,1]^3 as (v + 1) / 2, tcnn's convention; v is not
    renormalised. Degrees 1..4 (tcnn has up to 8).
    """

    def __init__(self, in_features: int = 3, degree: int = 4):
        super().__init__()
        if isinstance(in_features, bool) or in_features != 3:
            raise ValueError(f"in_features: expected 3 (spherical harmonics encode 3-D directions), "
                             f"got {in_features!r}")
        if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= SH_MAX_DEGREE:
            raise ValueError(f"degree: expected an integer in 1..{SH_MAX_DEGREE}, got {degree!r}")
        self.in_features = 3
        self.degree = degree
        self.out_features = degree * degree

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return torch.stack(_sh_values(x * 2.0 - 1.0, self.degree), dim=-1)

    def extra_repr(self) -> str:
        return f"in_features=3, degree={self.degree}"


def _quartic_cdf(u: Tensor) -> Tensor:
    # Clamping the argument (not the result) gives the same values as tcnn's clamped polynomial,
    # and derivatives that are the kernel's: the density and its slope both vanish at |u| = 1.
    u = u.clamp(-1.0, 1.0)
    u2 = u * u
    return (15.0 / 16.0) * u * (1.0 - (2.0 / 3.0) * u2 + 0.2 * u2 * u2) + 0.5


class OneBlobEncoding(_Encoding):
    """tcnn's "OneBlob": per input feature x in [0,1], n_bins values: the mass in each bin [k/B, (k+1)/B]
    of a quartic blob of radius 1/n_bins centred at x, wrapped around [0,1]. out = in * n_bins.

    tcnn uses a quartic kernel, not the Gaussian of the original paper, and requires n_bins to be a
    power of two; here any n_bins >= 1 works.
    """

    def __init__(self, in_features: int, n_bins: int = 16):
        super().__init__()
        self.in_features = _positive_int("in_features", in_features)
        self.n_bins = _positive_int("n_bins", n_bins)
        self.out_features = in_features * n_bins

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        n = self.n_bins
        bounds = torch.arange(n + 1, dtype=x.dtype, device=x.device) / n
        u = (bounds - x.unsqueeze(-1)) * n  # (..., in, B+1)
        cdf = _quartic_cdf(u - n) + _quartic_cdf(u) + _quartic_cdf(u + n)
        return (cdf[..., 1:] - cdf[..., :-1]).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, n_bins={self.n_bins}"


class IdentityEncoding(_Encoding):
    """tcnn's "Identity": x * scale + offset."""

    def __init__(self, in_features: int, scale: float = 1.0, offset: float = 0.0):
        super().__init__()
        self.in_features = _positive_int("in_features", in_features)
        for name, value in (("scale", scale), ("offset", offset)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name}: expected a finite number, got {value!r}")
        self.scale = float(scale)
        self.offset = float(offset)
        self.out_features = in_features

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return x * self.scale + self.offset

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, scale={self.scale}, offset={self.offset}"
