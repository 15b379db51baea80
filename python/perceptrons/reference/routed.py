"""Reference routed replicas (M-cover), float64: the routed MLP and the routed committee machine.

Routing is given explicitly, as owner maps: for layer l, owners[l][m, j, i] is the copy that stream m
reads for entry (j, i) of the augmented weight [W_l | b_l] (i = in_l is the bias), shape
(M, out, in + 1) for a minibatch, or (B, M, out, in + 1) with one map per example. Any granularity
is an owner map (a layer's map is constant over (j, i), a unit's over i), so one formula covers
them all; perceptrons.routing.Routing.owners computes the maps the kernels draw.

Parameters are copy-major: weights[l] (M, out, in), biases[l] (M, out) or None.
"""
import numpy as np

from . import mlp as _mlp


def _as64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def gather(weights, biases, owners_l, l):
    """The routed (W, b) of layer l for one owner map (M, out, in + 1): W~[m, j, i] =
    W[owners[m, j, i], j, i] and b~[m, j] = b[owners[m, j, in], j]."""
    W = _as64(weights[l])
    M, out, inp = W.shape
    j = np.arange(out)[None, :, None]
    i = np.arange(inp)[None, None, :]
    Wt = W[owners_l[:, :, :inp], j, i]
    bt = None
    if biases is not None and biases[l] is not None:
        bt = _as64(biases[l])[owners_l[:, :, inp], np.arange(out)[None, :]]
    return Wt, bt


def _streams(x, M):
    x = _as64(x)
    if x.ndim == 2:                     # the same batch for every stream
        x = np.broadcast_to(x, (M,) + x.shape)
    return x


def _per_example(owners):
    return owners[0].ndim == 4


def forward(x, weights, biases, owners, activation="relu", output_activation="none", activation_param=None,
            output_activation_param=None):
    """Routed forward. x: (M, B, in) or (B, in) (the same batch for every stream). Returns (M, B, out)."""
    M = np.shape(weights[0])[0]
    x = _streams(x, M)
    L = len(weights)
    kw = dict(activation=activation, output_activation=output_activation, activation_param=activation_param,
              output_activation_param=output_activation_param)
    if not _per_example(owners):
        routed = [gather(weights, biases, owners[l], l) for l in range(L)]
        return np.stack([_mlp.forward(x[m], [r[0][m] for r in routed],
                                      None if biases is None else [r[1][m] for r in routed], **kw)
                         for m in range(M)])
    B = x.shape[1]
    out = np.zeros((M, B, np.shape(weights[-1])[1]))
    for s in range(B):
        routed = [gather(weights, biases, owners[l][s], l) for l in range(L)]
        for m in range(M):
            out[m, s] = _mlp.forward(x[m, s:s + 1], [r[0][m] for r in routed],
                                     None if biases is None else [r[1][m] for r in routed], **kw)[0]
    return out


def _scatter_add(dweights, dbiases, owners_l, l, dWt, dbt):
    """Sends routed gradients (M, out, in) and (M, out) back to the copies they were read from."""
    M, out, inp = dWt.shape
    j = np.broadcast_to(np.arange(out)[None, :, None], dWt.shape)
    i = np.broadcast_to(np.arange(inp)[None, None, :], dWt.shape)
    np.add.at(dweights[l], (owners_l[:, :, :inp], j, i), dWt)
    if dbt is not None:
        np.add.at(dbiases[l], (owners_l[:, :, inp], np.broadcast_to(np.arange(out)[None, :], dbt.shape)), dbt)


def backward(dy, x, weights, biases, owners, activation="relu", output_activation="none", activation_param=None,
             output_activation_param=None):
    """Gradients of sum(dy * y) for the routed forward. Returns (dx (M, B, in) per stream, dweights
    copy-major, dbiases copy-major or None): each routed block's gradient is added to the copy it was
    read from."""
    M = np.shape(weights[0])[0]
    x = _streams(x, M)
    dy = _as64(dy)
    L = len(weights)
    kw = dict(activation=activation, output_activation=output_activation, activation_param=activation_param,
              output_activation_param=output_activation_param)
    has_b = biases is not None and biases[0] is not None
    dws = [np.zeros(np.shape(w)) for w in weights]
    dbs = [np.zeros(np.shape(b)) for b in biases] if has_b else None
    dx = np.zeros(x.shape)
    groups = [(slice(None), owners)] if not _per_example(owners) else \
        [(slice(s, s + 1), [o[s] for o in owners]) for s in range(x.shape[1])]
    for rows, own in groups:
        routed = [gather(weights, biases if has_b else None, own[l], l) for l in range(L)]
        per_stream = [_mlp.backward(dy[m, rows], x[m, rows], [r[0][m] for r in routed],
                                    [r[1][m] for r in routed] if has_b else None, **kw) for m in range(M)]
        dx[:, rows] = np.stack([p[0] for p in per_stream])
        for l in range(L):
            dWt = np.stack([p[1][l] for p in per_stream])
            dbt = np.stack([p[2][l] for p in per_stream]) if has_b else None
            _scatter_add(dws, dbs, own[l], l, dWt, dbt)
    return dx, dws, dbs


# ---- routed committee machine / binary perceptron ---------------------------------------------------

def binary_weights(H):
    """sign(H) with sign(0) = +1: the binary weights carried by real hidden states H."""
    return np.where(np.asarray(H) >= 0, 1, -1).astype(np.int64)


def committee_epoch(H, patterns, labels, order, owners, eta=1.0, margin=0.0, h_max=0.0):
    """One online epoch of the routed committee machine (K hidden units, K = 1: the binary
    perceptron), updating H (M, K, N) in place. Returns the number of (pattern, stream) updates.

    owners(mu) -> (M, K, N) int: the copy whose weight (k, i) stream m reads for pattern mu.
    Per pattern mu (in `order`), from the state before the pattern, stream m computes
    S_k = sum_i sign(H[owner, k, i]) xi_i and the stabilities y S_k; unit k agrees when
    y S_k > margin * sqrt(N). If at most K/2 units agree, the disagreeing unit with the largest
    y S_k (the lowest k on ties) is updated at the copies it was read from:
    H[owner, k, i] += eta * y * xi_i, then clipped to [-h_max, h_max] when h_max > 0.
    """
    M, K, N = H.shape
    patterns = np.asarray(patterns, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    threshold = margin * np.sqrt(float(N))
    k_idx = np.arange(K)[None, :, None]
    i_idx = np.arange(N)[None, None, :]
    updates = 0
    for mu in order:
        own = owners(int(mu))
        xi, y = patterns[mu], int(labels[mu])
        w = binary_weights(H[own, k_idx, i_idx])          # (M, K, N): what each stream sees
        stab = y * (w @ xi)                                # (M, K), integers
        for m in range(M):
            agree = stab[m].astype(np.float64) > threshold
            if 2 * agree.sum() > K:
                continue
            cand = np.where(~agree, stab[m], np.iinfo(np.int64).min)
            k = int(np.argmax(cand))                       # first maximum: lowest k on ties
            rows = own[m, k]
            H[rows, k, np.arange(N)] += eta * (y * xi)
            if h_max > 0:
                H[rows, k, np.arange(N)] = np.clip(H[rows, k, np.arange(N)], -h_max, h_max)
            updates += 1
    return updates
