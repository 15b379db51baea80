"""The main demo: fit an image with an INR (frequency encoding + FusedMLP), side by side with plain torch.

    python -m perceptrons demo [--image PATH] [--steps N] [--size S] [--out DIR] [--threads T] [--seed K]

A network maps pixel coordinates (x, y) in [0, 1]^2 to RGB. The same encoding, the same architecture
and the same initial weights are trained twice on the same batches: once as an EncodedMLP (the
frequency encoding runs inside the fused kernel's input stage), once as plain torch eager (the encoding
in torch ops, then the FusedMLP's ``to_sequential()`` copy: nn.Linear + activations). Steps alternate
(ours, then torch), so both see the same machine state; each step (encoding, forward, loss, backward,
Adam) is timed on its own, and the speedup is the median of the per-step ratios. Evaluations of the
whole image (PSNR) are not timed. Writes ``demo_inr.png`` (target | FusedMLP fit | plain-torch fit |
|error| of the FusedMLP fit) and ``demo_inr.json`` (every number) into the output folder.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from typing import Optional

import numpy as np

DEFAULTS = dict(size=256, steps=500, batch=2 ** 15, lr=1e-2, n_frequencies=8, hidden=64, hidden_layers=3,
                seed=0)
DEFAULT_OUT = "perceptrons-demo"


# ---- target images ---------------------------------------------------------------------------------

def procedural_image(size: int = 256) -> np.ndarray:
    """A (size, size, 3) float32 RGB image in [0, 1]: a colour ramp, a checker region, rings, hard shapes.

    Smooth gradients (easy for an MLP), sharp edges and a chirp of rings whose frequency rises
    outwards (hard: this is what the frequency encoding is for). Pure numpy, no download.
    """
    c = (np.arange(size, dtype=np.float64) + 0.5) / size
    y, x = np.meshgrid(c, c, indexing="ij")
    # Background: hue ramp along x, brightness ramp along y.
    hue = x
    img = np.stack([0.5 + 0.5 * np.cos(2 * np.pi * (hue + k / 3.0)) for k in range(3)], axis=-1)
    img *= (0.35 + 0.65 * (1.0 - y))[..., None]
    # Checker region (top right): 8x8 cells, two colours.
    region = (x > 0.55) & (x < 0.95) & (y > 0.05) & (y < 0.45)
    cell = (np.floor((x - 0.55) / 0.05).astype(int) + np.floor((y - 0.05) / 0.05).astype(int)) % 2 == 0
    img[region & cell] = (0.95, 0.92, 0.85)
    img[region & ~cell] = (0.10, 0.12, 0.20)
    # Rings (bottom left): a chirp, smooth in the centre and ever finer outwards; hard rim.
    r = np.hypot(x - 0.3, y - 0.7)
    disk = r < 0.25
    ring = 0.5 + 0.5 * np.cos(2 * np.pi * 48.0 * r ** 2)  # 24 cycles per image width at the rim
    img[disk] = np.stack([ring, 0.3 + 0.4 * ring, 1.0 - 0.8 * ring], axis=-1)[disk]
    # Hard-edged shapes: a red disk and a yellow triangle (bottom right), a thin dark bar (top left).
    img[np.hypot(x - 0.72, y - 0.72) < 0.1] = (0.85, 0.1, 0.1)
    tri = (y > 0.62) & (y < 0.92) & (np.abs(x - 0.86) < (y - 0.62) * 0.35)
    img[tri] = (0.98, 0.85, 0.15)
    img[(x > 0.05) & (x < 0.45) & (np.abs(y - 0.2) < 0.012)] = (0.05, 0.05, 0.05)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """Resizes so that the longer side is `size` (aspect kept): box averaging by an integer factor, then
    nearest-neighbour sampling to the exact shape (plain numpy)."""
    h, w = img.shape[:2]
    scale = size / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    k = max(1, min(h // th, w // tw))
    if k > 1:
        hh, ww = (h // k) * k, (w // k) * k
        img = img[:hh, :ww].reshape(hh // k, k, ww // k, k, -1).mean(axis=(1, 3))
        h, w = img.shape[:2]
    rows = np.minimum(((np.arange(th) + 0.5) * h / th).astype(int), h - 1)
    cols = np.minimum(((np.arange(tw) + 0.5) * w / tw).astype(int), w - 1)
    return img[rows][:, cols]


def load_image(path: str, size: int) -> np.ndarray:
    """An image file as (h, w, 3) float32 in [0, 1], longer side `size` (matplotlib's imread: PNG
    natively, other formats through Pillow when it is installed)."""
    import matplotlib.pyplot as plt
    img = np.asarray(plt.imread(path))
    if img.dtype.kind in "ui":
        img = img.astype(np.float64) / np.iinfo(img.dtype).max
    img = img.astype(np.float64)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    elif img.ndim == 3 and img.shape[-1] == 4:  # composite onto white
        img = img[..., :3] * img[..., 3:] + (1.0 - img[..., 3:])
    elif img.ndim == 3 and img.shape[-1] == 2:  # grey + alpha
        g = img[..., :1] * img[..., 1:] + (1.0 - img[..., 1:])
        img = np.repeat(g, 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"{path}: expected a greyscale, RGB or RGBA image, got shape {img.shape}")
    return np.clip(resize(img, size), 0.0, 1.0).astype(np.float32)


# ---- helpers ---------------------------------------------------------------------------------------

def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB for values in [0, 1]."""
    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)


class Progress:
    """A one-line progress bar on stderr (\\r updates on a terminal, a line every 10% otherwise)."""

    def __init__(self, total: int, enabled: bool = True, stream=None):
        self.total, self.enabled = total, enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()
        self.last, self.last_decile = 0.0, -1

    def update(self, step: int, text: str, force: bool = False):
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.tty:
            if not force and now - self.last < 0.1 and step < self.total:
                return
            self.last = now
            width = 24
            filled = int(width * step / max(self.total, 1))
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {step:>{len(str(self.total))}}/{self.total} {text} "
                              f"{now - self.t0:5.1f}s")
            self.stream.flush()
        else:
            decile = 10 * step // max(self.total, 1)
            if decile > self.last_decile or force:
                self.last_decile = decile
                self.stream.write(f"{step}/{self.total} {text} {now - self.t0:.1f}s\n")
                self.stream.flush()

    def close(self):
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


# ---- the demo --------------------------------------------------------------------------------------

def run_demo(image: Optional[str] = None, steps: int = DEFAULTS["steps"], size: int = DEFAULTS["size"],
             out: Optional[str] = None, threads: Optional[int] = None, seed: int = DEFAULTS["seed"],
             batch: Optional[int] = DEFAULTS["batch"], lr: float = DEFAULTS["lr"],
             n_frequencies: int = DEFAULTS["n_frequencies"], hidden: int = DEFAULTS["hidden"],
             hidden_layers: int = DEFAULTS["hidden_layers"], eval_every: Optional[int] = None,
             progress: bool = True, log=print) -> dict:
    """Trains the FusedMLP INR and its plain-torch twin side by side; returns (and writes) the results.

    batch: pixels per step, drawn at random (the same for both models); None or >= the pixel count
        trains on the whole image every step.
    eval_every: steps between whole-image PSNR evaluations (default: about 10 per run).
    """
    import torch
    from torch import nn

    from . import __version__, cpu_isa, set_num_threads
    from .nn import EncodedMLP, FrequencyEncoding, FusedMLP
    from .ops.encodings import composite_encode

    class TorchOpsEncoding(nn.Module):
        """An encoding module's formula in plain torch ops (the baseline's encoding)."""

        def __init__(self, encoding):
            super().__init__()
            self.spec = encoding.spec

        def forward(self, x):
            return composite_encode(x, self.spec)

    if steps < 1:
        raise ValueError(f"steps: expected >= 1, got {steps}")
    if size < 2:
        raise ValueError(f"size: expected >= 2, got {size}")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads: expected >= 1, got {threads}")
        set_num_threads(threads)  # our kernels' and torch's OpenMP pools
    out = out if out is not None else os.path.join(os.getcwd(), DEFAULT_OUT)
    os.makedirs(out, exist_ok=True)
    t_start = time.perf_counter()

    target_np = load_image(image, size) if image else procedural_image(size)
    h, w = target_np.shape[:2]
    n_pix = h * w
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    coords = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)  # (h*w, 2): (x, y)
    target = torch.from_numpy(target_np).reshape(-1, 3)
    full_batch = batch is None or batch >= n_pix
    batch = n_pix if full_batch else int(batch)
    eval_every = eval_every or max(1, steps // 10)

    torch.manual_seed(seed)
    encoding = FrequencyEncoding(2, n_frequencies=n_frequencies)
    ours = FusedMLP(encoding.out_features, 3, hidden_features=hidden, hidden_layers=hidden_layers,
                    activation="relu", output_activation="sigmoid")
    theirs = ours.to_sequential()  # the same initial weights, as nn.Linear + nn.ReLU + nn.Sigmoid
    # Ours: the encoding runs inside the fused kernel's input stage. Plain torch: the same encoding
    # written in torch ops (sin/cos of the scaled coordinates), as a torch user would.
    models = {"fused": EncodedMLP(encoding, ours), "torch": nn.Sequential(TorchOpsEncoding(encoding), theirs)}
    opts = {k: torch.optim.Adam(m.parameters(), lr=lr) for k, m in models.items()}
    gen = torch.Generator().manual_seed(seed)

    def train_step(name, x, y):
        opt = opts[name]
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((models[name](x) - y) ** 2)
        loss.backward()
        opt.step()
        return loss.detach()

    @torch.no_grad()
    def predict(name):
        return torch.cat([models[name](c) for c in coords.split(2 ** 16)]).reshape(h, w, 3)

    def evaluate(name):
        return psnr(float(torch.mean((predict(name) - target.reshape(h, w, 3)) ** 2)))

    names = list(models)
    losses = {k: [] for k in names}
    step_s = {k: [] for k in names}
    train_s = {k: 0.0 for k in names}
    checkpoints = [{"step": 0, "psnr": {k: evaluate(k) for k in names}, "train_s": dict(train_s)}]
    log(f"perceptrons {__version__} demo: INR fit of {'the built-in image' if not image else image} "
        f"({w}x{h}), {steps} steps of {batch} pixels{' (full batch)' if full_batch else ''}, "
        f"Frequency({n_frequencies}) + MLP {encoding.out_features}-{'-'.join([str(hidden)] * hidden_layers)}-3 "
        f"relu/sigmoid, Adam lr {lr:g}, float32, {torch.get_num_threads()} thread(s), CPU ISA {cpu_isa()}")
    bar = Progress(steps, enabled=progress)
    for step in range(1, steps + 1):
        if full_batch:
            x, y = coords, target
        else:
            idx = torch.randint(0, n_pix, (batch,), generator=gen)
            x, y = coords[idx], target[idx]
        # Alternate who goes first, so that neither always inherits the other's cache state.
        for name in (names if step % 2 else names[::-1]):
            t0 = time.perf_counter()
            loss = float(train_step(name, x, y))
            dt = time.perf_counter() - t0
            step_s[name].append(dt)
            train_s[name] += dt
            losses[name].append(loss)
        if step % eval_every == 0 or step == steps:
            checkpoints.append({"step": step, "psnr": {k: evaluate(k) for k in names}, "train_s": dict(train_s)})
        bar.update(step, f"loss {losses['fused'][-1]:.5f} / {losses['torch'][-1]:.5f}  "
                         f"PSNR {psnr(losses['fused'][-1]):5.2f} / {psnr(losses['torch'][-1]):5.2f} dB "
                         f"(FusedMLP / torch)", force=step == steps)
    bar.close()

    ratios = [t / f for f, t in zip(step_s["fused"], step_s["torch"])]
    med = {k: statistics.median(v) for k, v in step_s.items()}
    final = checkpoints[-1]["psnr"]
    preds = {k: predict(k).numpy() for k in names}
    results = {
        "config": {"image": image or "built-in", "width": w, "height": h, "steps": steps, "batch": batch,
                   "full_batch": full_batch, "lr": lr, "seed": seed, "n_frequencies": n_frequencies,
                   "widths": ours.widths, "activation": "relu", "output_activation": "sigmoid",
                   "dtype": "float32", "eval_every": eval_every},
        "machine": {"threads": torch.get_num_threads(), "cpu_isa": cpu_isa(), "perceptrons": __version__,
                    "torch": torch.__version__, "logical_cpus": os.cpu_count()},
        "step_time_s": {k: {"median": med[k], "min": min(v), "max": max(v), "total": sum(v)}
                        for k, v in step_s.items()},
        "speedup": {"median_of_step_ratios": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                    "ratio_of_medians": med["torch"] / med["fused"]},
        "steps_per_s": {k: 1.0 / med[k] for k in names},
        "final_psnr_db": final,
        "checkpoints": checkpoints,
        "losses": losses,
        "wall_s": None,
    }
    png = os.path.join(out, "demo_inr.png")
    _plot(target_np, preds, final, results, png)
    results["png"] = png
    results["wall_s"] = time.perf_counter() - t_start
    path = os.path.join(out, "demo_inr.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    results["json"] = path
    log(format_results(results))
    log(f"wrote {png}\nwrote {path}")
    return results


def _plot(target, preds, final, results, path):
    # The object-oriented API with the Agg canvas: no pyplot, no global backend switch, no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    err = np.abs(preds["fused"] - target).mean(axis=-1)
    fig = Figure(figsize=(16, 4.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 4)
    sp = results["speedup"]["median_of_step_ratios"]
    ms = {k: 1e3 * v["median"] for k, v in results["step_time_s"].items()}
    panels = [(target, "target"),
              (preds["fused"], f"FusedMLP: {final['fused']:.2f} dB, {ms['fused']:.1f} ms/step"),
              (preds["torch"], f"plain torch: {final['torch']:.2f} dB, {ms['torch']:.1f} ms/step"),
              (err, "|error| of the FusedMLP fit (mean over RGB)")]
    for ax, (im, title) in zip(axes, panels):
        if im.ndim == 2:
            shown = ax.imshow(im, cmap="inferno", vmin=0.0, vmax=max(float(im.max()), 1e-6),
                              interpolation="nearest")
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        else:
            ax.imshow(np.clip(im, 0, 1), interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    c = results["config"]
    fig.suptitle(f"INR fit, {c['width']}x{c['height']}, {c['steps']} steps of {c['batch']} pixels: "
                 f"FusedMLP {sp:.2f}x faster per step than plain torch "
                 f"({results['machine']['threads']} thread(s), {results['machine']['cpu_isa']})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)


def format_results(r: dict) -> str:
    ms = {k: 1e3 * v["median"] for k, v in r["step_time_s"].items()}
    sp = r["speedup"]
    lines = ["",
             f"time per step (median)   FusedMLP {ms['fused']:8.2f} ms   plain torch {ms['torch']:8.2f} ms   "
             f"ratio {sp['median_of_step_ratios']:.2f}x (median of per-step ratios; range "
             f"{sp['min']:.2f}-{sp['max']:.2f})",
             f"steps/s                  FusedMLP {r['steps_per_s']['fused']:8.1f}      plain torch "
             f"{r['steps_per_s']['torch']:8.1f}",
             "",
             f"{'step':>6}  {'PSNR FusedMLP':>13}  {'PSNR torch':>10}  {'train s FusedMLP':>16}  {'train s torch':>13}"]
    for c in r["checkpoints"]:
        lines.append(f"{c['step']:>6}  {c['psnr']['fused']:>10.2f} dB  {c['psnr']['torch']:>7.2f} dB  "
                     f"{c['train_s']['fused']:>16.2f}  {c['train_s']['torch']:>13.2f}")
    f = r["final_psnr_db"]
    lines += ["", f"final PSNR (whole image)  FusedMLP {f['fused']:.2f} dB   plain torch {f['torch']:.2f} dB   "
                  f"(wall time {r['wall_s']:.1f} s)"]
    return "\n".join(lines)


def main(image=None, steps=None, size=None, out=None, threads=None, seed=None) -> int:
    run_demo(image=image, steps=steps or DEFAULTS["steps"], size=size or DEFAULTS["size"], out=out,
             threads=threads, seed=DEFAULTS["seed"] if seed is None else seed)
    return 0
