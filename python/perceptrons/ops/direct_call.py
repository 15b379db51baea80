"""Eager calls of the CPU ops without the dispatcher, where nothing could tell the difference.

A call through a torch custom op runs its implementation behind ~40-50 us of Python machinery (the
op's autograd kernel, a redispatch, dynamo's disable wrapper). Measured on this project's 2-core
machine: the routed MLP's training forward at M = 4, W = 64, B = 32 costs 87 us as an op and 48 us as
its implementation; the backward 137 against 85 us. At small batches that is as much as the kernel,
and more than the per-op cost of the torch baselines the benchmarks compare against.

The ops stay the interface (torch.compile, fake tensors, opcheck and torch.export see them), and the
autograd Functions call an op's CPU implementation directly only when the call is plain eager work:
- not traced by dynamo (torch.compile), torch.jit.trace or a dispatch / torch-function mode (fake
  tensors, FlopCounterMode, non-strict export, proxies), and no functorch transform is active;
- no profiler is running, so profiles still show the op by name;
- every tensor is a plain Tensor or Parameter (a subclass may override dispatch) with no lazy
  negative or conjugate bit and not a zero tensor (the dispatcher materialises those first).
Inside an autograd.Function's forward and backward, grad mode is off, so the op's autograd kernel
would only have redispatched. The result is the same call of the same function either way.

A kernel that a user registers over one of our ops with torch.library is not seen by the direct
path (it calls our implementation).

CUDA calls of the fused MLP take the same shortcut to the op's CUDA implementation (which sets the
device, launches on the current stream and allocates through torch, as through the op). Host time per
inference call on the H100 machine (w64x4, 2^14 and 2^18 rows, bench/results/h100 run 20): the op
through the dispatcher 60-69 us, its CUDA implementation called directly 32-48 us. Below ~2^19 rows
the GPU finishes first, so host time is the call's time.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
from torch import Tensor

_PLAIN_TENSOR_TYPES = (Tensor, torch.nn.Parameter)


def dispatcher_needed(tensors: Iterable[Tensor]) -> bool:
    """Whether a call with these tensors must go through the op (see the module docstring)."""
    C = torch._C
    if torch.compiler.is_compiling() or C._len_torch_dispatch_stack() or C._len_torch_function_stack():
        return True
    if C._are_functorch_transforms_active() or C._get_tracing_state() is not None:
        return True
    if C._autograd._profiler_enabled():  # any profiler, the legacy one and C++-started ones included
        return True
    for t in tensors:
        if type(t) not in _PLAIN_TENSOR_TYPES or t.is_neg() or t.is_conj() or t._is_zerotensor():
            return True
    return False


def call_op(op: Callable, cpu_impl: Callable, device: torch.device, tensors: Iterable[Tensor], *args,
            cuda_impl: Optional[Callable] = None):
    """op(*args), or the op's implementation for the device (cpu_impl, or cuda_impl where the op has
    one worth calling directly) where the dispatcher adds nothing."""
    kind = device.type
    impl = cpu_impl if kind == "cpu" else cuda_impl if kind == "cuda" else None
    if impl is not None and not dispatcher_needed(tensors):
        return impl(*args)
    return op(*args)
