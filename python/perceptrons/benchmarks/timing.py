"""Interleaved timing: ours and every baseline measured in the same rounds, side by side.

Absolute times drift on a shared machine (frequency, other processes, page cache), so every round
times each candidate once, back to back, and the ratio between two candidates is taken within a
round. The median of those per-round ratios is what a speedup means here; it is far steadier than
the ratio of two medians measured minutes apart.
"""
from __future__ import annotations

import math
import statistics
import time

try:  # POSIX only; without it the page-fault counts are None
    import resource
except ImportError:  # pragma: no cover
    resource = None
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional


@dataclass
class Timing:
    """Seconds per call of one candidate, one value per round, and the minor page faults per call
    the process took during each round's sample (fresh memory the call touched for the first time:
    on glibc, a large tensor freed and allocated again may or may not come back as new pages,
    depending on malloc's dynamic mmap threshold, and each new page costs a fault)."""
    name: str
    calls_per_sample: int
    seconds: List[float] = field(default_factory=list)
    minor_faults: List[Optional[float]] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def max(self) -> float:
        return max(self.seconds)

    @property
    def median_minor_faults(self) -> Optional[float]:
        known = [f for f in self.minor_faults if f is not None]
        return statistics.median(known) if known else None

    def as_dict(self) -> dict:
        return {"median_s": self.median, "min_s": self.min, "max_s": self.max,
                "calls_per_sample": self.calls_per_sample, "samples_s": list(self.seconds),
                "minor_faults_per_call": self.median_minor_faults}


@dataclass
class Ratio:
    """other / reference per round: > 1 means the reference is faster."""
    seconds_ratios: List[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds_ratios)

    @property
    def min(self) -> float:
        return min(self.seconds_ratios)

    @property
    def max(self) -> float:
        return max(self.seconds_ratios)

    def as_dict(self) -> dict:
        return {"median": self.median, "min": self.min, "max": self.max}


@dataclass
class Comparison:
    reference: str
    timings: Dict[str, Timing]
    rounds: int

    def speedup(self, other: str) -> Ratio:
        """How many times faster the reference is than `other`, round by round."""
        ref, oth = self.timings[self.reference].seconds, self.timings[other].seconds
        return Ratio([o / r for r, o in zip(ref, oth)])

    def as_dict(self) -> dict:
        return {"reference": self.reference, "rounds": self.rounds,
                "timings": {k: t.as_dict() for k, t in self.timings.items()},
                "speedup_of_reference": {k: self.speedup(k).as_dict() for k in self.timings if k != self.reference}}


def _minor_faults() -> Optional[int]:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else None


def _sample(fn: Callable[[], object], calls: int, sync: Optional[Callable[[], None]]):
    """(seconds per call, minor page faults per call or None)."""
    if sync:
        sync()
    f0 = _minor_faults()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    if sync:
        sync()  # asynchronous devices: the clock stops when the work is done, not when it is queued
    seconds = (time.perf_counter() - t0) / calls
    f1 = _minor_faults()
    return seconds, (None if f0 is None else (f1 - f0) / calls)


def interleaved(candidates: Dict[str, Callable[[], object]], *, reference: Optional[str] = None,
                warmup: int = 2, min_rounds: int = 5, max_rounds: int = 25, budget_s: float = 5.0,
                min_sample_s: float = 0.02, sync: Optional[Callable[[], None]] = None,
                settle_s: Optional[Dict[str, float]] = None) -> Comparison:
    """Times every candidate in rounds A B C A B C ... and returns per-call seconds for each round.

    warmup: untimed calls of each candidate, interleaved too (first-call allocations, caches,
        thread-pool start-up, lazy compilation).
    min_sample_s: a sample repeats the call until it lasts about this long, so that sub-millisecond
        calls are not dominated by clock resolution and Python overhead; each candidate gets its own
        repeat count, the result is always seconds per call.
    min_rounds / max_rounds / budget_s: the number of rounds is what fits in budget_s after
        calibration, clamped to [min_rounds, max_rounds]; slow configurations get min_rounds.
    reference: the candidate ratios are taken against (default: the first).
    sync: called before and after each sample (e.g. torch.cuda.synchronize).
    settle_s: seconds to sleep, untimed, after a candidate's sample. A candidate with its own
        thread pool can leave it spinning after returning (OpenBLAS's workers busy-wait ~0.13 s
        after each call), which steals the cores from whichever candidate runs next; the sleep
        lets that pool go idle, so the next candidate is not charged for it.
    """
    settle_s = settle_s or {}
    names = list(candidates)
    reference = reference or names[0]
    for _ in range(warmup):
        for n in names:
            candidates[n]()
    # Calibration: one timed call each (after warm-up) decides the repeat count per sample.
    per_call = {n: _sample(candidates[n], 1, sync)[0] for n in names}
    calls = {n: max(1, math.ceil(min_sample_s / max(per_call[n], 1e-9))) for n in names}
    round_s = sum(calls[n] * per_call[n] for n in names)
    rounds = int(min(max_rounds, max(min_rounds, budget_s // max(round_s, 1e-9))))
    timings = {n: Timing(n, calls[n]) for n in names}
    for r in range(rounds):
        # Rotate who goes first: the first call of a round can pay for what the previous candidate
        # left behind (cache contents, a clock ramp), and no candidate should always pay it.
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            seconds, faults = _sample(candidates[n], calls[n], sync)
            timings[n].seconds.append(seconds)
            timings[n].minor_faults.append(faults)
            if settle_s.get(n):
                time.sleep(settle_s[n])
    return Comparison(reference, timings, rounds)
