"""Routed replicas on the CPU: RoutedMLP training step vs batched/vmap/loop copies, and the routed
perceptron kernel vs its numpy reference. Writes bench/results/cpu/routed_cpu.{json,md}.

    python bench/routed_cpu.py [--quick] [--threads N]
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "cpu")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small grid (about a minute)")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    from perceptrons.benchmarks import machine
    machine.add_malloc_argument(parser)
    args = parser.parse_args(argv)
    from perceptrons.benchmarks.routed_cpu import main as bench
    return bench(quick=args.quick, threads=args.threads, out=None if args.quick else RESULTS,
                 malloc=args.malloc)


if __name__ == "__main__":
    sys.exit(main())
