"""torch.nn.Modules: drop-in layers backed by the fused kernels."""
from .activations import Exp, Sine
from .encodings import (CompositeEncoding, Encoding, FrequencyEncoding, IdentityEncoding, OneBlobEncoding,
                        SphericalHarmonicsEncoding)
from .encoded_mlp import EncodedMLP
from .fused_mlp import FusedMLP
from .kan import KAN, KANLinear
from .routed_mlp import RoutedMLP

__all__ = ["FusedMLP", "EncodedMLP", "RoutedMLP", "KANLinear", "KAN", "Sine", "Exp",
           "FrequencyEncoding", "SphericalHarmonicsEncoding", "OneBlobEncoding", "IdentityEncoding",
           "CompositeEncoding", "Encoding"]
