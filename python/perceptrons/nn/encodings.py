"""Input encodings for neural fields (NeRF / INR), with tiny-cuda-nn's semantics.

Each module maps (..., in_features) to (..., out_features). CPU tensors run the compiled kernels
(csrc/encodings/), CUDA tensors the same formulas in torch ops (perceptrons.ops.encodings); input
gradients, double backward (eikonal losses), torch.func and torch.compile all work. None has
parameters. The exact formulas, their order and their sources in tiny-cuda-nn are documented in
perceptrons.reference.encodings, the float64 numpy reference they are tested against. Each module has
a `spec` (perceptrons.kernels.encodings.EncodingSpec): that is what `EncodedMLP` runs inside the fused
MLP's input stage. No ones-padding columns are appended (the tcnn front adds them).
"""
import math
from typing import Sequence

from torch import Tensor, nn

from ..kernels.encodings import EncodingPart, EncodingSpec
from ..ops import encodings as _ops

SH_MAX_DEGREE = 4


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return value


class Encoding(nn.Module):
    """Base class of the encodings: `spec` says what they compute, `forward` runs it."""
    in_features: int
    out_features: int
    spec: EncodingSpec

    def _set_spec(self, *parts: EncodingPart):
        self.spec = EncodingSpec(parts)
        self.in_features = self.spec.in_features
        self.out_features = self.spec.out_features

    def forward(self, x: Tensor) -> Tensor:
        return _ops.encode(x, self.spec)


class FrequencyEncoding(Encoding):
    """NeRF positional encoding as tcnn's "Frequency": per input feature x, for l = 0..n_frequencies-1,
    sin(2^l pi x), cos(2^l pi x) (interleaved), features one after the other. out = in * 2 * n_frequencies.
    """

    def __init__(self, in_features: int, n_frequencies: int = 12):
        super().__init__()
        _positive_int("in_features", in_features)
        self.n_frequencies = _positive_int("n_frequencies", n_frequencies)
        self._set_spec(EncodingPart("frequency", in_features, n_frequencies))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, n_frequencies={self.n_frequencies}"


class SphericalHarmonicsEncoding(Encoding):
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
        self.degree = degree
        self._set_spec(EncodingPart("spherical_harmonics", 3, degree))

    def extra_repr(self) -> str:
        return f"in_features=3, degree={self.degree}"


class OneBlobEncoding(Encoding):
    """tcnn's "OneBlob": per input feature x in [0,1], n_bins values: the mass in each bin [k/B, (k+1)/B]
    of a quartic blob of radius 1/n_bins centred at x, wrapped around [0,1]. out = in * n_bins.

    tcnn uses a quartic kernel, not the Gaussian of the original paper, and requires n_bins to be a
    power of two; here any n_bins >= 1 works.
    """

    def __init__(self, in_features: int, n_bins: int = 16):
        super().__init__()
        _positive_int("in_features", in_features)
        self.n_bins = _positive_int("n_bins", n_bins)
        self._set_spec(EncodingPart("one_blob", in_features, n_bins))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, n_bins={self.n_bins}"


class IdentityEncoding(Encoding):
    """tcnn's "Identity": x * scale + offset."""

    def __init__(self, in_features: int, scale: float = 1.0, offset: float = 0.0):
        super().__init__()
        _positive_int("in_features", in_features)
        for name, value in (("scale", scale), ("offset", offset)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name}: expected a finite number, got {value!r}")
        self.scale = float(scale)
        self.offset = float(offset)
        self._set_spec(EncodingPart("identity", in_features, 0, self.scale, self.offset))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, scale={self.scale}, offset={self.offset}"


class CompositeEncoding(Encoding):
    """tcnn's "Composite": each encoding reads the next in_features inputs; outputs are concatenated.

    E.g. NeRF's colour network input: CompositeEncoding([IdentityEncoding(15), SphericalHarmonicsEncoding(3, 4)])
    maps (features, direction) to (features, SH(direction)).
    """

    def __init__(self, encodings: Sequence[Encoding]):
        super().__init__()
        encodings = list(encodings)
        if not encodings:
            raise ValueError("encodings: expected at least one encoding, got none")
        parts = []
        for i, e in enumerate(encodings):
            if not isinstance(e, Encoding):
                raise TypeError(f"encodings[{i}]: expected a perceptrons.nn encoding module, got {type(e).__name__}")
            parts.extend(e.spec.parts)
        self.encodings = nn.ModuleList(encodings)
        self._set_spec(*parts)
