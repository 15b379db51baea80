"""Permutation routing across M model copies (the M-cover transform, arXiv:2605.09256): mixing kernels
Q, their spectra, permutation samplers and the counter-based RNG that keys them. numpy only; the
routed kernels (perceptrons.kernels.routed, perceptrons.nn.RoutedMLP) compute the same permutations."""
from .mixing import (band, block, check_doubly_stochastic, circulant_row, identity, lambda2, ring_distance,
                     ring_gaussian, sinkhorn, spectral_gap, uniform)
from .routing import GRANULARITIES, MODES, PER, Routing
from .samplers import (BirkhoffSampler, PermanentalSampler, RotationSampler, TableSampler, birkhoff_decomposition,
                       make_sampler, sample_permutations)

__all__ = ["identity", "uniform", "ring_gaussian", "band", "block", "sinkhorn", "check_doubly_stochastic",
           "circulant_row", "ring_distance", "lambda2", "spectral_gap", "Routing", "GRANULARITIES", "PER", "MODES",
           "TableSampler", "RotationSampler", "BirkhoffSampler", "PermanentalSampler", "birkhoff_decomposition",
           "make_sampler", "sample_permutations"]
