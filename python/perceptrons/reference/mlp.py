"""Reference MLP: y = f_out(W_{L-1} ... f(W_0 x + b_0) ... + b_{L-1}) with nn.Linear layout.

weights[l] has shape (out_l, in_l), biases[l] shape (out_l,) or None. Everything is computed in
float64 whatever the input dtype.
"""
import numpy as np

from . import activations as _act


def _as64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def forward(x, weights, biases=None, activation="relu", output_activation="none", activation_param=None,
            output_activation_param=None, return_intermediates=False):
    """Forward pass. x: (batch, in). Returns y (batch, out), or (y, zs, hs) with every pre-activation
    zs[l] and every layer input hs[l] (hs[0] = x) when return_intermediates is set."""
    x = _as64(x)
    n = len(weights)
    biases = [None] * n if biases is None else biases
    h = x
    zs, hs = [], [x]
    for l, (w, b) in enumerate(zip(weights, biases)):
        z = h @ _as64(w).T
        if b is not None:
            z = z + _as64(b)
        last = l == n - 1
        name, param = (output_activation, output_activation_param) if last else (activation, activation_param)
        h = _act.forward(name, z, param)
        zs.append(z)
        if not last:
            hs.append(h)
    return (h, zs, hs) if return_intermediates else h


def backward(dy, x, weights, biases=None, activation="relu", output_activation="none", activation_param=None,
             output_activation_param=None):
    """Gradients of sum(dy * y) with respect to x, every weight and every bias.

    Returns (dx, dweights, dbiases); dbiases[l] is None where biases[l] is None.
    """
    n = len(weights)
    biases = [None] * n if biases is None else biases
    _, zs, hs = forward(x, weights, biases, activation, output_activation, activation_param,
                        output_activation_param, return_intermediates=True)
    g = _as64(dy) * _act.derivative(output_activation, zs[-1], output_activation_param)
    dws, dbs = [None] * n, [None] * n
    for l in range(n - 1, -1, -1):
        dws[l] = g.T @ hs[l]
        dbs[l] = g.sum(axis=0) if biases[l] is not None else None
        g = g @ _as64(weights[l])
        if l > 0:
            g = g * _act.derivative(activation, zs[l - 1], activation_param)
    return g, dws, dbs
