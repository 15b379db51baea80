"""Full CPU sweep of FusedMLP vs eager, torch.compile and numpy; writes bench/results/cpu/ and the plot.

    python bench/mlp_cpu.py [--threads 1 2] [--no-compile] [--no-plot]

Takes about 7 minutes on an idle 2-core machine (up to 5 more while it waits for other processes to
go quiet); keep the machine otherwise idle while it runs.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "cpu")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default: 1 and 2)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--no-plot", action="store_true", help="do not draw mlp_cpu_throughput.png")
    from perceptrons.benchmarks import machine
    machine.add_malloc_argument(parser)
    args = parser.parse_args(argv)
    from perceptrons.benchmarks.mlp_cpu import main as bench
    rc = bench(quick=False, threads=args.threads, out=RESULTS, compile_baseline=not args.no_compile,
               malloc=args.malloc)
    if rc == 0 and not args.no_plot:
        sys.path.insert(0, HERE)
        from plot_mlp_cpu import plot
        print("wrote", plot(os.path.join(RESULTS, "mlp_cpu.json")), file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
