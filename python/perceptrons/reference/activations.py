"""Activation functions and their derivatives in numpy (float64 reference).

Names and default parameters match perceptrons.activations; formulas follow torch.nn where torch
has the activation (Softplus with beta and threshold 20, LeakyReLU with negative_slope), SIREN for
sine (sin(w0 z)).
"""
import numpy as np

SOFTPLUS_THRESHOLD = 20.0


def _sigmoid(z):
    with np.errstate(over="ignore"):
        return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))


def forward(name, z, param=None):
    """f(z) for the named activation."""
    z = np.asarray(z)
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "none":
            return z.copy()
        if name == "relu":
            return np.where(z > 0, z, np.where(np.isnan(z), z, 0.0))
        if name == "leaky_relu":
            return np.where(z > 0, z, param * z)
        if name == "sigmoid":
            return _sigmoid(z)
        if name == "tanh":
            return np.tanh(z)
        if name == "softplus":
            bz = param * z
            return np.where(bz > SOFTPLUS_THRESHOLD, z, np.logaddexp(0.0, bz) / param)
        if name == "silu":
            return z * _sigmoid(z)
        if name == "sine":
            return np.sin(param * z)
        if name == "exp":
            return np.exp(z)
    raise ValueError(f"unknown activation {name!r}")


def derivative(name, z, param=None):
    """f'(z) for the named activation (derivative at 0 of relu/leaky_relu taken from the left, as torch)."""
    z = np.asarray(z)
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "none":
            return np.ones_like(z)
        if name == "relu":
            return (z > 0).astype(z.dtype)
        if name == "leaky_relu":
            return np.where(z > 0, 1.0, param)
        if name == "sigmoid":
            s = _sigmoid(z)
            return s * (1.0 - s)
        if name == "tanh":
            return 1.0 - np.tanh(z) ** 2
        if name == "softplus":
            bz = param * z
            return np.where(bz > SOFTPLUS_THRESHOLD, 1.0, _sigmoid(bz))
        if name == "silu":
            s = _sigmoid(z)
            return s * (1.0 + z * (1.0 - s))
        if name == "sine":
            return param * np.cos(param * z)
        if name == "exp":
            return np.exp(z)
    raise ValueError(f"unknown activation {name!r}")
