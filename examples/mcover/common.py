"""What the M-cover experiment scripts share: their command line and where results go."""
from __future__ import annotations

import argparse
import os
import tempfile

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def parser(doc: str, N: int, epochs: int, quick_help: str) -> argparse.ArgumentParser:
    """The options every binary experiment takes; the defaults of N and epochs are the script's."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--seeds", type=int, default=10, help="evaluation seeds per point (default 10)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    p.add_argument("--N", type=int, default=N, help=f"inputs, odd (default {N})")
    p.add_argument("--epochs", type=int, default=epochs, help=f"epoch budget (default {epochs})")
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--out", default=None, help="result folder (default examples/mcover/results; with --quick a "
                                               "folder under the system's temp dir)")
    return p


def parse(p: argparse.ArgumentParser, argv):
    a = p.parse_args(argv)
    if a.seeds < 2:
        p.error(f"--seeds: expected at least 2 (a standard error needs two), got {a.seeds}")
    if a.N < 1 or a.N % 2 == 0:
        p.error(f"--N: expected an odd positive number of inputs, got {a.N}")
    if a.jobs < 1 or a.epochs < 1:
        p.error(f"--jobs, --epochs: expected positive integers, got {a.jobs}, {a.epochs}")
    return a


def out_dir(a) -> str:
    """--out, else the committed results folder, else (--quick) a scratch folder: a smoke run never
    overwrites the committed results."""
    if a.out:
        return a.out
    return os.path.join(tempfile.gettempdir(), "perceptrons-mcover-quick") if a.quick else RESULTS
