"""Command line: `python -m perceptrons info | bench | demo | mcover`."""
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
    p_bench = sub.add_parser("bench", help="side-by-side benchmark of FusedMLP (or KANLinear) vs torch on this machine")
    p_bench.add_argument("--family", choices=("mlp", "kan"), default="mlp",
                         help="mlp: FusedMLP vs nn.Sequential/torch.compile/numpy; kan: KANLinear vs the "
                              "materialised-basis (efficient-kan) algorithm and pykan")
    p_bench.add_argument("--quick", action="store_true",
                         help="only the headline configuration (mlp: 2^16 rows, 32-64-64-16 relu; kan: 10,000 "
                              "rows, KANLinear(100, 100), G=5 and 50, k=3; float32)")
    p_bench.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default: 1 and 2)")
    p_bench.add_argument("--out", default=None, help="folder for the JSON and markdown results")
    p_bench.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline (mlp)")
    from .benchmarks.machine import add_malloc_argument
    add_malloc_argument(p_bench)
    p_demo = sub.add_parser("demo", help="fit an image with an INR (frequency encoding + FusedMLP), side by side "
                                         "with plain torch; writes a comparison PNG and JSON")
    p_demo.add_argument("--image", default=None, help="PNG to fit instead of the built-in procedural image")
    p_demo.add_argument("--steps", type=int, default=None, help="training steps (default 500)")
    p_demo.add_argument("--size", type=int, default=None, help="longer image side in pixels (default 256)")
    p_demo.add_argument("--out", default=None, help="folder for demo_inr.png and demo_inr.json "
                                                    "(default ./perceptrons-demo)")
    p_demo.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's default)")
    p_demo.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p_mcover = sub.add_parser("mcover", help="M-cover experiment 1 (binary perceptron, routed copies vs independent "
                                             "and replicated): prints the table")
    p_mcover.add_argument("--quick", action="store_true", help="N = 201, 4 seeds, 100 epochs: under a minute")
    p_mcover.add_argument("--seeds", type=int, default=None, help="seeds per point (default 10, quick 4)")
    p_mcover.add_argument("--N", type=int, default=None, help="inputs, odd (default 301, quick 201)")
    p_mcover.add_argument("--M", type=int, default=None, help="copies (default 16)")
    p_mcover.add_argument("--epochs", type=int, default=None, help="epoch budget (default 200, quick 100)")
    p_mcover.add_argument("--jobs", type=int, default=None, help="worker processes (default: the CPU count)")
    args = parser.parse_args(argv)
    if args.command == "info":
        from .info import collect, format_info
        info = collect()
        print(json.dumps(info, indent=2) if args.json else format_info(info))
        return 0
    if args.command == "bench" and args.family == "kan":
        from .benchmarks.kan_cpu import main as kan_main
        return kan_main(quick=args.quick, threads=args.threads, out=args.out, malloc=args.malloc)
    if args.command == "bench":
        from .benchmarks.mlp_cpu import main as bench_main
        return bench_main(quick=args.quick, threads=args.threads, out=args.out, compile_baseline=not args.no_compile,
                          malloc=args.malloc)
    if args.command == "demo":
        from .demo import main as demo_main
        return demo_main(image=args.image, steps=args.steps, size=args.size, out=args.out, threads=args.threads,
                         seed=args.seed)
    if args.command == "mcover":
        from .mcover.quick import main as mcover_main
        try:
            return mcover_main(quick=args.quick, seeds=args.seeds, jobs=args.jobs, N=args.N, M=args.M,
                               epochs=args.epochs)
        except ValueError as e:
            parser.error(f"mcover: {e}")
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
