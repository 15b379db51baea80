"""Cheaper `apply` for the kernels' autograd Functions.

`torch.autograd.Function.apply` binds its arguments to `inspect.signature(cls.forward)` on every call
when the Function defines `setup_context` (which torch.func transforms require, so all of ours do).
Computing that signature from scratch cost tens of microseconds per call (measured: a routed MLP
forward at M = 16, one row per stream, 290 us of which ~40 us in inspect); even with the signature
computed once, the bind itself costs ~11 us a call for the routed MLP's 13 arguments, about a quarter
of its kernel at small batches. The bind only turns keyword and default arguments into positional
ones; every caller here passes all arguments positionally and no forward has defaults, so outside
functorch transforms `apply` goes straight to the C++ apply (after the dead-wrapper unwrapping that
torch's apply does there too). Inside a transform it takes torch's own path. torch.compile does not run
`apply` at all: dynamo recognises `Function.apply` calls by name and traces forward and backward.
"""
from __future__ import annotations

import inspect

import torch
from torch._functorch import utils as _functorch_utils


def cache_forward_signature(function_cls):
    """Class decorator for an autograd.Function whose callers pass every argument positionally:
    computes forward's signature once and gives the class an `apply` without the per-call bind."""
    forward = function_cls.forward  # the plain function behind the staticmethod
    signature = inspect.signature(forward)
    if any(p.default is not p.empty or p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD)
           for p in signature.parameters.values()):
        raise TypeError(f"{function_cls.__name__}.forward: a positional-only apply needs a forward without "
                        "defaults or keyword-only arguments")
    forward.__signature__ = signature
    torch_apply = torch.autograd.Function.apply.__func__

    def apply(cls, *args):
        if torch._C._are_functorch_transforms_active():
            return torch_apply(cls, *args)
        args = _functorch_utils.unwrap_dead_wrappers(args)
        return super(torch.autograd.Function, cls).apply(*args)

    function_cls.apply = classmethod(apply)
    return function_cls
