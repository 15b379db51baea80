"""Command line: `python -m perceptrons info | bench`."""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perceptrons",
                                     description="perceptrons: fused kernels for perceptron-family networks")
    sub = parser.add_subparsers(dest="command")
    p_info = sub.add_parser("info", help="what this build contains and what the machine offers")
    p_info.add_argument("--json", action="store_true", help="print JSON instead of text")
    p_bench = sub.add_parser("bench", help="side-by-side benchmark of FusedMLP vs torch on this machine")
    p_bench.add_argument("--quick", action="store_true",
                         help="only the headline configuration (2^16 rows, 32-64-64-16 relu, float32)")
    p_bench.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default: 1 and 2)")
    p_bench.add_argument("--out", default=None, help="folder for the JSON and markdown results")
    p_bench.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    args = parser.parse_args(argv)
    if args.command == "info":
        from .info import collect, format_info
        info = collect()
        print(json.dumps(info, indent=2) if args.json else format_info(info))
        return 0
    if args.command == "bench":
        from .benchmarks.mlp_cpu import main as bench_main
        return bench_main(quick=args.quick, threads=args.threads, out=args.out, compile_baseline=not args.no_compile)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
