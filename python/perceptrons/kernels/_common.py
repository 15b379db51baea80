"""Argument checks shared by the numpy fronts."""
import numpy as np

DTYPES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}


def check_array(name, a, shape, dtype):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {a.dtype}")
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(a.shape)}")
    return np.ascontiguousarray(a)


def input_matrix(x, width):
    """x as a contiguous (batch, width) float32/float64 array, or a clear error."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x: expected a numpy array, got {type(x).__name__}")
    if x.dtype not in DTYPES:
        raise TypeError(f"x: expected float32 or float64, got {x.dtype}")
    if x.ndim != 2 or x.shape[1] != width:
        raise ValueError(f"x: expected shape (batch, {width}), got {tuple(x.shape)}")
    return np.ascontiguousarray(x)


def ptr(a):
    return 0 if a is None or a.size == 0 else a.ctypes.data
