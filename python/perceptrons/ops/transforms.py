"""When the kernels' autograd.Functions cannot serve a call, so the torch-op composites must.

The Functions have backward rules but no jvp rule: Dynamo cannot trace an autograd.Function with a
custom jvp, so adding one would break torch.compile(fullgraph=True). Under forward-mode AD (torch.func.jvp,
jacfwd, hessian, or torch.autograd.forward_ad dual tensors) the ops therefore run their composites,
which every transform understands. Without this, a call whose tensors do not require grad would take
the bare custom op and silently drop the tangents (zeros), and one that does would raise.
"""
import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor
from torch._C._functorch import TransformType


def forward_mode_active(*tensors) -> bool:
    """Whether tangents may flow through this call: a torch.func jvp level is active, or one of the
    tensors is a forward-AD dual tensor. Always False while torch.compile traces."""
    if torch.compiler.is_compiling():
        return False
    stack = torch._C._functorch.get_interpreter_stack()
    if stack and any(level.key() == TransformType.Jvp for level in stack):
        return True
    if fwAD._current_level < 0:  # no dual level is open: no tensor can carry a tangent
        return False
    return any(isinstance(t, Tensor) and fwAD.unpack_dual(t).tangent is not None for t in tensors)


def in_functorch_transform(x: Tensor) -> bool:
    """Whether x lives inside any torch.func transform (grad, vmap, jvp) or carries a tangent."""
    if torch.compiler.is_compiling():
        return False
    return torch._C._functorch.is_functorch_wrapped_tensor(x) or forward_mode_active(x)
