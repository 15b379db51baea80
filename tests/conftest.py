import contextlib

import numpy as np
import pytest

import perceptrons
from perceptrons import _C

ISAS = perceptrons.available_cpu_isas()


@contextlib.contextmanager
def cpu_isa(name):
    """Runs the block with the CPU kernels forced onto one instruction set."""
    before = perceptrons.cpu_isa()
    perceptrons.set_cpu_isa(name)
    try:
        yield
    finally:
        perceptrons.set_cpu_isa(before)


@contextlib.contextmanager
def num_threads(n):
    before = _C.openmp_max_threads()
    perceptrons.set_num_threads(n)
    try:
        yield
    finally:
        perceptrons.set_num_threads(before)


def tolerance(dtype):
    """Allowed error relative to the largest reference value, from the dtype's machine epsilon.

    Error grows with the number of summed products (width) and the layers it passes through; the
    factor below covers width 128, depth 3 and the steepest activations used in the tests with a
    margin, while still catching a wrong index, a missed term or a wrong derivative (those give
    errors of order 1e-2 and more).
    """
    return float(np.finfo(dtype).eps) * (2e5 if dtype == np.float64 else 2e3)


@pytest.fixture(params=ISAS)
def isa(request):
    with cpu_isa(request.param):
        yield request.param
