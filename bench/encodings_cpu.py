"""Input encodings in front of a FusedMLP on the CPU: mlp only / fused (EncodedMLP) / separate / plain
torch, inference and training. Writes bench/results/cpu/encodings_cpu.{json,md}.

    python bench/encodings_cpu.py [--quick] [--threads N] [--batch B]
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "cpu")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short timing budget, nothing written")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    parser.add_argument("--batch", type=int, default=2 ** 16, help="rows (default 65536)")
    args = parser.parse_args(argv)
    from perceptrons.benchmarks.encodings_cpu import run
    run(batch=args.batch, threads=args.threads, quick=args.quick, out=None if args.quick else RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
