"""One fused-MLP training step (forward + backward) for a profiler to look at, e.g.
    ncu -k regex:mlp_backward_kernel -c 1 --section WarpStateStats python3 bench/profile_mlp_cuda.py
Width 64, 4 hidden layers, in = out = 64, batch 2^21, float16: the configuration of issue 6's figures."""
import torch

from perceptrons.nn import FusedMLP

model = FusedMLP(64, 64, hidden_features=64, hidden_layers=4).cuda().half()
x = torch.rand(2 ** 21, 64, device="cuda", dtype=torch.float16)
dy = torch.rand(2 ** 21, 64, device="cuda", dtype=torch.float16)
params = list(model.parameters())
for _ in range(3):
    torch.autograd.grad(model(x), params, dy)
torch.cuda.synchronize()
