"""Full CPU sweep of KANLinear vs the materialised-basis (efficient-kan) algorithm and pykan; writes
bench/results/cpu/kan_cpu.{json,md} and the speedup plot.

    python bench/kan_cpu.py [--threads 1 2] [--no-pykan] [--no-plot] [--resume]

Batch 100 / 1,000 / 10,000 x width (in = out) 100 / 1,000 x G = 5 / 50, k = 3, float32, at 1 and 2
threads. Takes about 15-20 minutes on an idle 2-core machine (more while it waits for other processes
to go quiet) and up to ~5 GB of memory (the materialised baseline at 10,000 x 1,000, G=5); keep the
machine otherwise idle while it runs.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "cpu")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default: 1 and 2)")
    parser.add_argument("--no-pykan", action="store_true", help="skip the pykan KANLayer baseline")
    parser.add_argument("--no-plot", action="store_true", help="do not draw kan_cpu_speedup.png")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted sweep from results/cpu/kan_cpu.partial.json")
    from perceptrons.benchmarks import machine
    machine.add_malloc_argument(parser)
    args = parser.parse_args(argv)
    from perceptrons.benchmarks.kan_cpu import main as bench
    rc = bench(quick=False, threads=args.threads, out=RESULTS, pykan=not args.no_pykan, resume=args.resume,
                malloc=args.malloc)
    if rc == 0 and not args.no_plot:
        sys.path.insert(0, HERE)
        from plot_kan_cpu import plot
        print("wrote", plot(os.path.join(RESULTS, "kan_cpu.json")), file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
