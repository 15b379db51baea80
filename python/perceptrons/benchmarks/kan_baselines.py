"""The KAN layers a user would run instead of KANLinear, set up to compute the same function.

MaterialisedKANLinear is the efficient-kan algorithm (Blealtan/efficient-kan, `KANLinear`), written
here from its description rather than copied: the Cox-de Boor basis is materialised as a
(batch, in, G+k) tensor with the recursion in plain torch ops, then the layer is two matmuls,

    y = silu(x) @ base_weight^T + basis.view(B, in*(G+k)) @ (spline_weight * spline_scaler[..., None]).view(out, -1)^T

Autograd keeps every recursion level for backward, which is where its memory goes (research/kan.md
§4.4). pykan's KANLayer (kan.KANLayer, when installed) is the second baseline: its forward builds
several (batch, in, out) tensors, so it only runs at small sizes.

Both copy the parameters of a given perceptrons.nn.KANLinear, so their outputs and gradients can be
checked against ours before anything is timed. Memory and time estimates below decide which sizes
are run at all: a size whose estimate is over the caller's limit is skipped, never attempted.
"""
from __future__ import annotations

import os
import threading
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

FLOAT_BYTES = {torch.float32: 4, torch.float64: 8}


class MaterialisedKANLinear(nn.Module):
    """efficient-kan's KANLinear forward (SiLU base activation, standalone spline scaler), with the
    parameters of `layer` (a perceptrons.nn.KANLinear) copied."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        if not getattr(layer, "enable_standalone_scale_spline", True):
            raise ValueError("MaterialisedKANLinear mirrors efficient-kan's default enable_standalone_scale_spline=True")
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.grid_size, self.spline_order = layer.grid_size, layer.spline_order
        self.register_buffer("grid", layer.grid.detach().clone())
        self.base_weight = nn.Parameter(layer.base_weight.detach().clone())
        self.spline_weight = nn.Parameter(layer.spline_weight.detach().clone())
        self.spline_scaler = nn.Parameter(layer.spline_scaler.detach().clone())

    def b_splines(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in, G+k): order-0 indicator of the half-open knot cell, then k levels of the
        two-term Cox-de Boor recursion, each level one basis function shorter."""
        g = self.grid                       # (in, G+2k+1)
        x = x.unsqueeze(-1)                 # (batch, in, 1)
        bases = ((x >= g[:, :-1]) & (x < g[:, 1:])).to(x.dtype)
        for p in range(1, self.spline_order + 1):
            left = (x - g[:, :-(p + 1)]) / (g[:, p:-1] - g[:, :-(p + 1)])
            right = (g[:, p + 1:] - x) / (g[:, p + 1:] - g[:, 1:-p])
            bases = left * bases[:, :, :-1] + right * bases[:, :, 1:]
        return bases.contiguous()

    @property
    def scaled_spline_weight(self) -> torch.Tensor:
        return self.spline_weight * self.spline_scaler.unsqueeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, self.in_features)
        base = F.linear(F.silu(x), self.base_weight)
        spline = F.linear(self.b_splines(x).view(x.size(0), -1),
                          self.scaled_spline_weight.view(self.out_features, -1))
        return (base + spline).reshape(*lead, self.out_features)

    def grads_like_ours(self) -> List[torch.Tensor]:
        """[d base_weight, d spline_weight, d spline_scaler] in KANLinear's layouts."""
        return [self.base_weight.grad, self.spline_weight.grad, self.spline_scaler.grad]


def pykan_available() -> Optional[str]:
    """None if pykan's KANLayer imports, else why not."""
    try:
        from kan.KANLayer import KANLayer  # noqa: F401
    except Exception as e:  # ImportError, or pykan's own import-time failures
        return f"{type(e).__name__}: {str(e)[:200]}"
    return None


class PykanKANLinear(nn.Module):
    """pykan's KANLayer with the parameters of `layer` mapped onto its layouts:
    coef (in, out, G+k) = spline_weight.permute(1, 0, 2), scale_base (in, out) = base_weight^T,
    scale_sp (in, out) = spline_scaler^T, the same grid, mask all ones. Returns only y (pykan's
    forward also returns preacts, postacts and postspline)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        from kan.KANLayer import KANLayer
        G, k = layer.grid_size, layer.spline_order
        dtype = layer.base_weight.dtype
        prev = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # pykan creates its tensors in the default dtype
        try:
            kl = KANLayer(in_dim=layer.in_features, out_dim=layer.out_features, num=G, k=k,
                          base_fun=torch.nn.SiLU())
        finally:
            torch.set_default_dtype(prev)
        with torch.no_grad():
            kl.grid.copy_(layer.grid)
            kl.coef.copy_(layer.spline_weight.permute(1, 0, 2))
            kl.scale_base.copy_(layer.base_weight.T)
            kl.scale_sp.copy_(layer.spline_scaler.T)
            kl.mask.fill_(1.0)
        self.layer = kl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)[0]

    def parameters_like_ours(self) -> List[torch.Tensor]:
        return [self.layer.scale_base, self.layer.coef, self.layer.scale_sp]

    def grads_like_ours(self) -> List[torch.Tensor]:
        """[d base_weight, d spline_weight, d spline_scaler] in KANLinear's layouts."""
        kl = self.layer
        return [kl.scale_base.grad.T, kl.coef.grad.permute(1, 0, 2), kl.scale_sp.grad.T]


# ---- estimates that decide what runs ------------------------------------------------------------

def materialised_bytes(batch: int, width_in: int, width_out: int, G: int, k: int, dtype=torch.float32) -> int:
    """Peak memory of one forward+backward of MaterialisedKANLinear, estimated with some margin.
    Autograd keeps every recursion level (the two factors of each level's two products, each about
    (B, in, G+2k) elements), backward holds a few basis-sized gradients at once; measured on the
    2-core VM (peak RSS growth): 9-10x B*in*(G+2k) floats at G=5 and G=50. Estimate: (3k+3)x that
    (12x at k=3), plus the (B, out) output and its gradient."""
    basis = batch * width_in * (G + 2 * k) * FLOAT_BYTES[dtype]
    return int((3 * k + 3) * basis + 4 * batch * width_out * FLOAT_BYTES[dtype])


def pykan_bytes(batch: int, width_in: int, width_out: int, G: int, k: int, dtype=torch.float32) -> int:
    """Peak memory of one forward+backward of pykan's KANLayer: its forward makes several (B, in, out)
    tensors (einsum output, postspline clone, the two scaled branches, their sum, the mask product,
    postacts clone), backward more; measured: 5-6.5x B*in*out floats plus the basis recursion.
    Estimate: 7x, plus materialised_bytes for the recursion."""
    edge = batch * width_in * width_out * FLOAT_BYTES[dtype]
    return int(7 * edge + materialised_bytes(batch, width_in, width_out, G, k, dtype))


def materialised_seconds(batch: int, width_in: int, width_out: int, G: int, k: int, threads: int) -> float:
    """Rough seconds for one forward+backward on the 2-core AVX-512 VM: the basis recursion is
    memory-bound (~30 passes' worth of the basis at ~1 GB/s effective, page faults on fresh
    allocations included), the matmuls (3 x 2*B*in*out*(G+k+1) flops) at ~50 GFLOP/s per thread.
    Checked against single calls at 2 threads: within 0.5-2x."""
    basis_bytes = batch * width_in * (G + 2 * k) * 4
    flops = 3 * 2 * batch * width_in * width_out * (G + k + 1)
    return 30 * basis_bytes / 1e9 + flops / (50e9 * threads)


def pykan_seconds(batch: int, width_in: int, width_out: int, G: int, k: int, threads: int) -> float:
    """As materialised_seconds, plus ~8 s per GB of (B, in, out) edge tensor (its elementwise passes)."""
    edge_bytes = batch * width_in * width_out * 4
    return 8 * edge_bytes / 1e9 + materialised_seconds(batch, width_in, width_out, G, k, threads)


# ---- bytes saved for backward ---------------------------------------------------------------------

class SavedTensors:
    """with SavedTensors(exclude) as s: y = f(x); then s.report(): the storages autograd saved for
    backward while the block ran, deduplicated by storage (a view saves its whole storage), split
    into those that are module state (parameters, buffers: `exclude`), the input x, and the rest."""

    def __init__(self, params: Dict[str, torch.Tensor], x: torch.Tensor):
        self._params = {t.untyped_storage().data_ptr(): name for name, t in params.items()}
        self._x = x.untyped_storage().data_ptr()
        self._storages: Dict[int, int] = {}
        self._hooks = None

    def _pack(self, t: torch.Tensor):
        st = t.untyped_storage()
        self._storages[st.data_ptr()] = st.nbytes()
        return t

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        return False

    def report(self) -> dict:
        params = sum(n for p, n in self._storages.items() if p in self._params)
        x = sum(n for p, n in self._storages.items() if p == self._x)
        total = sum(self._storages.values())
        return {"all_bytes": total, "parameters_bytes": params, "input_bytes": x,
                "excluding_parameters_bytes": total - params, "other_bytes": total - params - x,
                "storages": len(self._storages)}


class PeakRss:
    """with PeakRss() as p: ...; p.peak_bytes is the highest resident-set size of this process seen
    while the block ran, minus the size at entry, sampled every `interval_s` by a thread (torch ops
    release the GIL, so it samples during them). None where /proc/self/statm is unavailable. It is an
    approximation: short peaks between samples are missed, and memory the allocator keeps after a
    free (small blocks on the heap) counts as in use. Large tensors are mmapped and returned on free
    under glibc's default state; under the benchmarks' warm state (machine.pin_malloc) they come from
    the heap and a freed block's pages are reused by the next one, so the peak is what was live at
    once either way. At entry glibc's free heap pages are returned to the system (malloc_trim), so that
    blocks reused from earlier calls are not hidden in the starting size."""

    def __init__(self, interval_s: float = 0.001):
        self.interval_s = interval_s
        self.peak_bytes = None

    @staticmethod
    def _rss():
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def _run(self):
        while not self._stop.is_set():
            r = self._rss()
            if r is not None and r > self._max:
                self._max = r
            self._stop.wait(self.interval_s)

    @staticmethod
    def _trim():
        try:
            import ctypes
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):
            pass

    def __enter__(self):
        self._trim()
        self._start = self._rss()
        if self._start is None:
            return self
        self._max = self._start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._start is None:
            return False
        self._stop.set()
        self._thread.join()
        end = self._rss()
        self.peak_bytes = max(self._max, end or 0) - self._start
        return False
