"""KANLinear and KAN: efficient-kan's modules (constructor, parameter names, state_dict) on the fused
spline-KAN kernels, so that its users change one import and their checkpoints load.

Differences from efficient-kan, on purpose:
- update_grid refits the *unscaled* spline weights (efficient-kan fits the scaled output and then
  scales it again in forward, which changes the layer's function; see shared/research/kan.md 2.1);
- out_of_range="clamp" is available beside the default pykan semantics;
- edge_activations(x) and plot() expose the per-edge functions for plotting, pruning and symbolic fits.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from .. import _C
from ..kernels.kan import MODES
from ..ops.kan import bspline_basis, composite_edge_activations, composite_forward, kan_linear


def _is_silu(module) -> bool:
    return type(module) is nn.SiLU


class KANLinear(nn.Module):
    """One Kolmogorov-Arnold layer: y = base_activation(x) W_b^T + sum_i scaler * spline_{o,i}(x_i).

    Same arguments as efficient-kan's KANLinear, plus ``out_of_range`` ("pykan": the spline decays to
    0 over the k extension cells and is 0 beyond, as in pykan/efficient-kan; "clamp": the spline is
    evaluated at x clamped into grid_range), ``device`` and ``dtype``. Parameters: ``base_weight``
    (out, in), ``spline_weight`` (out, in, G+k), ``spline_scaler`` (out, in) when
    enable_standalone_scale_spline; buffer ``grid`` (in, G+2k+1). The fused kernels run when the
    base activation is SiLU (the default); any other base activation uses the materialised-basis
    path (same results, efficient-kan's speed).
    """

    def __init__(self, in_features: int, out_features: int, grid_size: int = 5, spline_order: int = 3,
                 scale_noise: float = 0.1, scale_base: float = 1.0, scale_spline: float = 1.0,
                 enable_standalone_scale_spline: bool = True, base_activation=torch.nn.SiLU, grid_eps: float = 0.02,
                 grid_range: Sequence[float] = (-1, 1), out_of_range: str = "pykan", device=None, dtype=None):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features), ("grid_size", grid_size)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        kmax = _C.KAN_MAX_SPLINE_ORDER
        if not isinstance(spline_order, int) or not 1 <= spline_order <= kmax:
            raise ValueError(f"spline_order: expected an integer in 1..{kmax}, got {spline_order!r}")
        lo, hi = float(grid_range[0]), float(grid_range[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"grid_range: expected finite (low, high) with low < high, got {tuple(grid_range)}")
        if out_of_range not in MODES:
            raise ValueError(f"out_of_range: expected one of {', '.join(MODES)}, got {out_of_range!r}")
        if not 0.0 <= grid_eps <= 1.0:
            raise ValueError(f"grid_eps: expected a number in [0, 1], got {grid_eps!r}")
        if dtype is not None and dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
        self.in_features, self.out_features = in_features, out_features
        self.grid_size, self.spline_order = grid_size, spline_order
        self.scale_noise, self.scale_base, self.scale_spline = scale_noise, scale_base, scale_spline
        self.enable_standalone_scale_spline = enable_standalone_scale_spline
        self.grid_eps = grid_eps
        self.out_of_range = out_of_range
        kw = dict(device=device, dtype=dtype)
        h = (hi - lo) / grid_size
        grid = torch.arange(-spline_order, grid_size + spline_order + 1, **kw) * h + lo
        self.register_buffer("grid", grid.expand(in_features, -1).contiguous())
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features, **kw))
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, grid_size + spline_order, **kw))
        if enable_standalone_scale_spline:
            self.spline_scaler = nn.Parameter(torch.empty(out_features, in_features, **kw))
        self.base_activation = base_activation() if isinstance(base_activation, type) else base_activation
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """efficient-kan's initialisation: kaiming-uniform base weight and scaler, spline weights fitted
        to small noise at the grid points."""
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5) * self.scale_base)
        G, k = self.grid_size, self.spline_order
        noise = ((torch.rand(G + 1, self.in_features, self.out_features, device=self.grid.device,
                             dtype=self.grid.dtype) - 0.5) * self.scale_noise / G)
        scale = 1.0 if self.enable_standalone_scale_spline else self.scale_spline
        self.spline_weight.copy_(scale * self.curve2coeff(self.grid.T[k:-k], noise))
        if self.enable_standalone_scale_spline:
            nn.init.kaiming_uniform_(self.spline_scaler, a=math.sqrt(5) * self.scale_spline)

    # ---- efficient-kan's helpers ---------------------------------------------------------------

    def b_splines(self, x: torch.Tensor) -> torch.Tensor:
        """The materialised basis (batch, in, G+k) (efficient-kan's method; the fused path never builds it)."""
        return bspline_basis(x, self.grid, self.spline_order, self.out_of_range)

    def curve2coeff(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Least-squares spline weights (out, in, G+k) with sum_c w[o,i,c] B_c(x[:, i]) ~= y[:, i, o]."""
        A = self.b_splines(x).transpose(0, 1)  # (in, batch, G+k)
        B = y.transpose(0, 1)                  # (in, batch, out)
        # gelsd (SVD) copes with rank-deficient systems (few distinct samples per cell).
        sol = torch.linalg.lstsq(A.cpu().double(), B.cpu().double(), driver="gelsd").solution
        return sol.permute(2, 0, 1).to(device=self.grid.device, dtype=self.grid.dtype).contiguous()

    @property
    def scaled_spline_weight(self) -> torch.Tensor:
        if self.enable_standalone_scale_spline:
            return self.spline_weight * self.spline_scaler.unsqueeze(-1)
        return self.spline_weight

    def _scaler(self) -> Optional[torch.Tensor]:
        return self.spline_scaler if self.enable_standalone_scale_spline else None

    # ---- forward --------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected last dimension in_features={self.in_features}, got {tuple(x.shape)}")
        if _is_silu(self.base_activation):
            return kan_linear(x, self.grid, self.base_weight, self.spline_weight, self._scaler(), self.spline_order,
                              self.out_of_range)
        lead = x.shape[:-1]
        y = composite_forward(x.reshape(-1, self.in_features), self.grid, self.base_weight, self.spline_weight,
                              self._scaler(), self.spline_order, self.out_of_range, self.base_activation)
        return y.reshape(*lead, self.out_features)

    def edge_activations(self, x: torch.Tensor) -> torch.Tensor:
        """phi_{o,i}(x_i) for every edge, (batch, out, in): y == edge_activations(x).sum(-1).
        The slow, materialised path, for plotting, pruning and symbolic fitting."""
        x2 = x.reshape(-1, self.in_features)
        return composite_edge_activations(x2, self.grid, self.base_weight, self.spline_weight, self._scaler(),
                                          self.spline_order, self.out_of_range, self.base_activation)

    # ---- grid update and regularisation ----------------------------------------------------------

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor, margin: float = 0.01):
        """Refits the grid to the samples x (batch, in) and the spline weights so that the layer's
        function on the samples is preserved (efficient-kan's algorithm, without its double scaling)."""
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x: expected shape (batch, {self.in_features}), got {tuple(x.shape)}")
        if x.shape[0] < 2:
            raise ValueError(f"x: update_grid needs at least 2 samples, got {x.shape[0]}")
        G, k = self.grid_size, self.spline_order
        batch = x.shape[0]
        splines = self.b_splines(x).permute(1, 0, 2)            # (in, batch, G+k)
        coeff = self.spline_weight.permute(1, 2, 0)             # (in, G+k, out), unscaled
        unreduced = torch.bmm(splines, coeff).permute(1, 0, 2)  # (batch, in, out)
        x_sorted = torch.sort(x, dim=0)[0]
        # Exact integer quantile positions j(B-1)//G (a float linspace cast to int64 loses one index at
        # some sizes); same as the numpy reference.
        idx = torch.arange(G + 1, device=x.device) * (batch - 1) // G
        grid_adaptive = x_sorted[idx]
        step = (x_sorted[-1] - x_sorted[0] + 2 * margin) / G
        grid_uniform = torch.arange(G + 1, dtype=x.dtype, device=x.device).unsqueeze(1) * step + x_sorted[0] - margin
        grid = self.grid_eps * grid_uniform + (1 - self.grid_eps) * grid_adaptive
        ext = torch.arange(1, k + 1, dtype=x.dtype, device=x.device).unsqueeze(1)
        grid = torch.cat([grid[:1] - step * ext.flip(0), grid, grid[-1:] + step * ext], dim=0)
        self.grid.copy_(grid.T)
        self.spline_weight.copy_(self.curve2coeff(x, unreduced))

    def regularization_loss(self, regularize_activation: float = 1.0, regularize_entropy: float = 1.0):
        """efficient-kan's weight-based stand-in for the paper's L1 + entropy regulariser."""
        l1_fake = self.spline_weight.abs().mean(-1)
        act = l1_fake.sum()
        p = l1_fake / act
        entropy = -torch.sum(p * p.log())
        return regularize_activation * act + regularize_entropy * entropy

    def plot(self, x: Optional[torch.Tensor] = None, n_points: int = 200, max_edges: int = 64, path=None):
        """Draws each edge's learned function phi_{o,i} over the grid range (and the samples' range if x
        is given). Needs matplotlib. Returns the figure; saves it to ``path`` if given."""
        try:
            import matplotlib
            if path is not None:
                matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as e:  # optional dependency
            raise ImportError("KANLinear.plot needs matplotlib: pip install matplotlib") from e
        k = self.spline_order
        lo = self.grid[:, k].min().item()
        hi = self.grid[:, -1 - k].max().item()
        if x is not None:
            lo, hi = min(lo, x.min().item()), max(hi, x.max().item())
        pad = 0.1 * (hi - lo)
        t = torch.linspace(lo - pad, hi + pad, n_points, dtype=self.grid.dtype, device=self.grid.device)
        with torch.no_grad():
            phi = self.edge_activations(t.unsqueeze(1).expand(-1, self.in_features)).cpu()  # (n, out, in)
        n_out = min(self.out_features, max(1, max_edges // self.in_features))
        n_in = min(self.in_features, max_edges)
        fig, axes = plt.subplots(n_out, n_in, figsize=(1.8 * n_in, 1.5 * n_out), squeeze=False, sharex=True)
        for o in range(n_out):
            for i in range(n_in):
                ax = axes[o][i]
                ax.plot(t.cpu(), phi[:, o, i])
                ax.set_title(f"{i}->{o}", fontsize=7)
                ax.tick_params(labelsize=6)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=100)
        return fig

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, grid_size={self.grid_size}, "
                f"spline_order={self.spline_order}, out_of_range={self.out_of_range!r}")


class KAN(nn.Module):
    """A stack of KANLinear layers (efficient-kan's KAN): layers_hidden = [in, hidden..., out]."""

    def __init__(self, layers_hidden: Sequence[int], grid_size: int = 5, spline_order: int = 3,
                 scale_noise: float = 0.1, scale_base: float = 1.0, scale_spline: float = 1.0,
                 base_activation=torch.nn.SiLU, grid_eps: float = 0.02, grid_range: Sequence[float] = (-1, 1),
                 out_of_range: str = "pykan", device=None, dtype=None):
        super().__init__()
        layers_hidden = list(layers_hidden)
        if len(layers_hidden) < 2:
            raise ValueError(f"layers_hidden: expected at least [in, out], got {layers_hidden}")
        self.grid_size, self.spline_order = grid_size, spline_order
        self.layers = nn.ModuleList(
            KANLinear(i, o, grid_size=grid_size, spline_order=spline_order, scale_noise=scale_noise,
                      scale_base=scale_base, scale_spline=scale_spline, base_activation=base_activation,
                      grid_eps=grid_eps, grid_range=grid_range, out_of_range=out_of_range, device=device, dtype=dtype)
            for i, o in zip(layers_hidden, layers_hidden[1:]))

    def forward(self, x: torch.Tensor, update_grid: bool = False) -> torch.Tensor:
        for layer in self.layers:
            if update_grid:
                layer.update_grid(x)
            x = layer(x)
        return x

    def regularization_loss(self, regularize_activation: float = 1.0, regularize_entropy: float = 1.0):
        return sum(layer.regularization_loss(regularize_activation, regularize_entropy) for layer in self.layers)
