"""Seed statistics and result files shared by the M-cover experiments."""
from __future__ import annotations

import json
import math
import os
import platform
import time
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np


def mean_se(values: Iterable[float]) -> Dict[str, float]:
    """Mean and standard error of the mean (sample std / sqrt(n)) over seeds; NaNs are dropped and
    counted. se is NaN with fewer than two values."""
    v = np.asarray([float(x) for x in values], dtype=np.float64)
    finite = v[np.isfinite(v)]
    n = int(finite.size)
    mean = float(finite.mean()) if n else math.nan
    se = float(finite.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return {"mean": mean, "se": se, "n": n, "dropped": int(v.size - n)}


def summarise(runs: Sequence[dict], keys: Sequence[str]) -> Dict[str, dict]:
    """{key: mean_se over runs of run[key]} for every key present in the runs."""
    return {k: mean_se(r[k] for r in runs if r.get(k) is not None) for k in keys}


def difference(a: Sequence[float], b: Sequence[float], paired: bool = True) -> Dict[str, float]:
    """mean(a - b) with its standard error. paired=True: a[i] and b[i] share seed i (same data and
    teacher), so the seed-to-seed variation of the task cancels; otherwise Welch's se."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if paired:
        if a.shape != b.shape:
            raise ValueError(f"paired difference: expected equal lengths, got {a.shape} and {b.shape}")
        return mean_se(a - b)
    ma, mb = mean_se(a), mean_se(b)
    return {"mean": ma["mean"] - mb["mean"], "se": math.sqrt(ma["se"] ** 2 + mb["se"] ** 2), "n": min(ma["n"], mb["n"]),
            "dropped": ma["dropped"] + mb["dropped"]}


def verdict(diff: Dict[str, float], lower_is_better: bool = True, z: float = 2.0) -> str:
    """'better' / 'worse' when the difference (arm - baseline) is more than z standard errors from 0,
    else 'no difference'."""
    m, se = diff["mean"], diff["se"]
    if not (math.isfinite(m) and math.isfinite(se)) or abs(m) <= z * se:
        return "no difference"
    return "better" if (m < 0) == lower_is_better else "worse"


def fmt(ms: Dict[str, float], digits: int = 3) -> str:
    """'0.123 ± 0.004' (mean ± s.e.)."""
    if not math.isfinite(ms["mean"]):
        return "n/a"
    if not math.isfinite(ms["se"]):
        return f"{ms['mean']:.{digits}f}"
    return f"{ms['mean']:.{digits}f} ± {ms['se']:.{digits}f}"


def markdown_table(header: List[str], rows: List[List[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def environment() -> dict:
    """What produced a result file: versions, machine, threads, date."""
    import numpy
    from .. import __version__
    env = {"perceptrons": __version__, "numpy": numpy.__version__, "python": platform.python_version(),
           "machine": platform.machine(), "processor": platform.processor() or None, "cpus": os.cpu_count(),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        import torch
        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return env


def write_json(path: str, payload: dict) -> str:
    """Writes payload (plus an 'environment' entry) as indented JSON; NaN becomes null."""
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, np.generic):
            return clean(x.item())
        if isinstance(x, np.ndarray):
            return clean(x.tolist())
        return x
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    body = dict(payload)
    body.setdefault("environment", environment())
    with open(path, "w") as f:
        json.dump(clean(body), f, indent=1, allow_nan=False)
        f.write("\n")
    return path


def seeds(n: int, offset: int = 0) -> List[int]:
    """Evaluation seeds 0..n-1 (offset for the disjoint tuning seeds)."""
    if n < 1:
        raise ValueError(f"seeds: expected at least one seed, got n = {n}")
    return list(range(offset, offset + n))


TUNING_SEED_OFFSET = 1000  # tuning runs use seeds 1000.., never the evaluation seeds 0..


def lambda2_of(Q: Optional[np.ndarray]) -> float:
    """lambda2(Q) (second largest eigenvalue modulus), 0 for M = 1 and 1 for the identity."""
    from ..routing import lambda2
    if Q is None:
        return 1.0
    Q = np.asarray(Q, dtype=np.float64)
    return 0.0 if Q.shape[0] == 1 else float(lambda2(Q))
