"""Activation names, their codes in the compiled module and their parameters.

The codes mirror csrc/common/activations.h. Parameters: leaky_relu takes its negative slope
(default 0.01, must be >= 0), softplus its beta (default 1, > 0; linear where beta*z > 20 as in
torch.nn.Softplus), sine its w0 (SIREN, default 30, != 0). The others take none.
"""
from __future__ import annotations

import math

CODES = {
    "none": 0,
    "relu": 1,
    "leaky_relu": 2,
    "sigmoid": 3,
    "tanh": 4,
    "softplus": 5,
    "silu": 6,
    "sine": 7,
    "exp": 8,
}
NAMES = tuple(CODES)
DEFAULT_PARAMS = {"leaky_relu": 0.01, "softplus": 1.0, "sine": 30.0}
_ALIASES = {"identity": "none", "linear": "none", "swish": "silu", "sin": "sine", "exponential": "exp",
            "leakyrelu": "leaky_relu"}
# Activations whose derivative needs the pre-activation: the training forward saves z for these.
NEEDS_PREACTIVATION = frozenset({"silu", "sine"})


def canonical(name, argname="activation"):
    """Returns the canonical activation name; None means 'none'. Raises ValueError naming argname."""
    if name is None:
        return "none"
    if not isinstance(name, str):
        raise TypeError(f"{argname}: expected an activation name (one of {', '.join(NAMES)}) or None, "
                        f"got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key.replace("_", ""), _ALIASES.get(key, key))
    if key not in CODES:
        raise ValueError(f"{argname}: unknown activation {name!r}; expected one of {', '.join(NAMES)}")
    return key


def resolve_param(name, param, argname="activation_param"):
    """Checks an activation's parameter and fills in its default (0.0 for parameterless ones)."""
    if name not in DEFAULT_PARAMS:
        if param is not None and param != 0.0:  # 0.0 is what this function returns for them
            raise ValueError(f"{argname}: activation {name!r} takes no parameter, got {param!r}")
        return 0.0
    value = DEFAULT_PARAMS[name] if param is None else float(param)
    if not math.isfinite(value):
        raise ValueError(f"{argname}: expected a finite number for {name!r}, got {param!r}")
    if name == "leaky_relu" and value < 0:
        raise ValueError(f"{argname}: leaky_relu negative slope must be >= 0, got {value}")
    if name == "softplus" and value <= 0:
        raise ValueError(f"{argname}: softplus beta must be > 0, got {value}")
    if name == "sine" and value == 0:
        raise ValueError(f"{argname}: sine w0 must be non-zero, got {value}")
    return value
