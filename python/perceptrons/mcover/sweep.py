"""Runs a grid of (alpha, M, arm, seed) trainings of binary perceptrons or committees, in parallel
processes, and summarises them against the independent-copies arm (paired by seed: arms at the same
seed share the data, the teacher and the initial hidden states)."""
from __future__ import annotations

import contextlib
import itertools
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Dict, List, Sequence

from .. import set_num_threads
from . import binary, stats

PERCEPTRON_METRICS = ("eps_mean", "eps_best", "eps_center", "eps_vote", "train_error", "train_error_center",
                      "overlap", "cover_train_error", "last_epoch_updates", "epochs")
COMMITTEE_METRICS = ("solved_any", "solved_center", "solved_fraction", "train_error", "train_error_best",
                     "train_error_center", "cover_train_error", "epochs")


def perceptron_job(job: dict) -> dict:
    """Experiment 1: one teacher-student run."""
    problem = binary.teacher_student(job["N"], job["alpha"], job["seed"], job.get("n_test", 10000))
    result = binary.train(job["arm"], problem, job["M"], 1, job["rule"], job["seed"])
    out = binary.perceptron_metrics(result["H"], problem)
    out.update({k: result[k] for k in ("epochs", "last_epoch_updates", "cover_train_error")})
    return out


def committee_job(job: dict) -> dict:
    """Experiment 2: one storage run of a K-unit committee, stopped when a copy classifies every pattern."""
    problem = binary.random_patterns(job["N"], job["K"], job["alpha"], job["seed"])
    result = binary.train(job["arm"], problem, job["M"], job["K"], job["rule"], job["seed"], stop_when_solved=True)
    out = binary.committee_metrics(result["H"], problem)
    out.update({k: result[k] for k in ("epochs", "last_epoch_updates", "cover_train_error")})
    return out


def _run_one(args):
    fn, job, threads = args
    if threads:
        set_num_threads(threads)
    record = {k: (v.name if isinstance(v, binary.Arm) else v) for k, v in job.items() if k != "rule"}
    record.update(fn(job))
    return record


def run_grid(job_fn: Callable[[dict], dict], grid: Dict[str, Sequence], arms: Sequence[binary.Arm],
             seeds: Sequence[int], rule: binary.Rule, jobs: int = 1, threads: int = 0, progress: bool = False,
             **fixed) -> List[dict]:
    """Every combination of the grid's values (e.g. alpha, M) x arms x seeds; `fixed` entries (N, K,
    ...) go to every job. jobs > 1 runs that many worker processes with one kernel thread each; one job
    runs in this process on `threads` kernel threads (default: all)."""
    if jobs < 1:
        raise ValueError(f"jobs: expected at least 1 worker, got {jobs}")
    keys = list(grid)
    work = []
    for values in itertools.product(*(grid[k] for k in keys)):
        for arm in arms:
            for seed in seeds:
                work.append((job_fn, dict(zip(keys, values), arm=arm, seed=seed, rule=rule, **fixed),
                             1 if jobs > 1 else threads))
    # One process: map in place; several: a pool whose map yields results in the order of `work`.
    pool = ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else None
    with pool or contextlib.nullcontext():
        results = pool.map(_run_one, work, chunksize=4) if pool else map(_run_one, work)
        out = []
        for i, r in enumerate(results):
            out.append(r)
            if progress and (i + 1) % 50 == 0:
                print(f"  {i + 1}/{len(work)} runs", flush=True)
        return out


def summarise(runs: List[dict], point_keys: Sequence[str], metrics: Sequence[str], baseline: str = "independent",
              compare: Sequence[str] = (), lower_is_better: Dict[str, bool] = None) -> List[dict]:
    """One row per (point, arm): mean ± s.e. of each metric over seeds, and for the `compare` metrics
    the paired difference to the baseline arm at the same point with its verdict."""
    lower_is_better = lower_is_better or {}
    groups: Dict[tuple, List[dict]] = {}
    for r in runs:
        groups.setdefault(tuple(r[k] for k in point_keys) + (r["arm"],), []).append(r)
    rows = []
    for key, members in groups.items():
        members = sorted(members, key=lambda r: r["seed"])
        row = dict(zip(point_keys, key[:-1]), arm=key[-1], seeds=[r["seed"] for r in members])
        row["stats"] = stats.summarise(members, [m for m in metrics if any(r.get(m) is not None for r in members)])
        base = groups.get(key[:-1] + (baseline,))
        if base is not None and key[-1] != baseline:
            base = {r["seed"]: r for r in base}
            shared = [r for r in members if r["seed"] in base]
            row["vs_" + baseline] = {}
            for m in compare:
                d = stats.difference([r[m] for r in shared], [base[r["seed"]][m] for r in shared])
                d["verdict"] = stats.verdict(d, lower_is_better.get(m, True))
                row["vs_" + baseline][m] = d
        rows.append(row)
    return rows
