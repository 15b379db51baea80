"""Checks every benchmark runs before timing: a candidate that disagrees with the reference is not timed."""
from __future__ import annotations

import numpy as np


class ValidationError(RuntimeError):
    pass


def _as64(a):
    return np.asarray(a.detach().double().numpy() if hasattr(a, "detach") else a, dtype=np.float64)


def rel_err(got, ref) -> float:
    """max |got - ref| / max |ref| (inf when the shapes differ); numpy arrays or torch tensors."""
    got, ref = _as64(got), _as64(ref)
    if got.shape != ref.shape:
        return float("inf")
    scale = max(float(np.abs(ref).max()), 1e-30)
    return float(np.abs(got - ref).max()) / scale


def check(name: str, got: list, ref: list, errors: dict, tolerance: float, labels=None):
    """Records the worst relative error of `name` over its tensors in errors[name]; raises
    ValidationError if it is over `tolerance`. `labels` name the tensors in the message."""
    errs = [rel_err(g, r) for g, r in zip(got, ref)]
    worst = max(errs) if len(got) == len(ref) else float("inf")
    errors[name] = worst
    if not worst <= tolerance:
        detail = (", ".join(f"{t} {e:.2g}" for t, e in zip(labels, errs)) if labels
                  else "per tensor: " + ", ".join(f"{e:.2g}" for e in errs))
        raise ValidationError(f"{name}: max relative error {worst:.3g} > {tolerance:g} ({detail})")
