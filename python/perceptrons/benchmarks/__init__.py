"""Side-by-side benchmarks of the perceptrons kernels against what users would run instead.

The protocol (interleaved timing, validation first, thread counts, load average) is described in the
project's docs/BENCHMARKS.md. Modules:

    timing    interleaved A B A B timing with medians and per-pair ratios (any family, CPU or GPU)
    machine   what the results were measured on: CPU, peak FLOP/s, versions, git commit, BLAS threads
    report    markdown tables and JSON/markdown files
    mlp_cpu   FusedMLP vs nn.Sequential eager, torch.compile and numpy on the CPU
              (`python -m perceptrons bench`)
    kan_baselines  the materialised-basis (efficient-kan) KAN layer and pykan's KANLayer with KANLinear's
              parameters; memory estimates; saved-for-backward bytes and peak RSS measurement
    kan_cpu   KANLinear vs those baselines on the CPU (`python -m perceptrons bench --family kan`)
"""
