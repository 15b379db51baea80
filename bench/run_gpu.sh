#!/usr/bin/env bash
# One call on the GPU machine: build for its architecture, run the CUDA tests, run the benchmark.
# Usage (repo root, on the GPU machine): OUT=dir bash bench/run_gpu.sh [test|bench|profile|all] [pytest -k expr]
# all = test + bench; profile (ncu sections of the two kernels) only when asked.
# With .gpubuild/ carried (scripts/build_gpu_module.sh run here first) it uses that module instead of
# building there.
set -uo pipefail
export PYTHONUNBUFFERED=1
what=${1:-all}
OUT=${OUT:-bench/results/h100}
mkdir -p "$OUT"
log="$OUT/gpu_${what}.log"
{
  date -u
  nvidia-smi
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  nvcc --version | tail -2
  if ls .gpubuild/_C.cpython-*.so > /dev/null 2>&1; then
    # Built ahead by scripts/build_gpu_module.sh (carried in .gpubuild): no device minutes compiling.
    cp .gpubuild/_C.cpython-*.so python/perceptrons/ && export PYTHONPATH=$PWD/python
    echo "prebuilt module: $(ls .gpubuild/_C.cpython-*.so)"
  else
    arch=$(python3 -c "import torch; c = torch.cuda.get_device_capability(); print(f'{c[0]}{c[1]}')")
    t0=$(date +%s)
    PERCEPTRONS_CUDA=ON PERCEPTRONS_CUDA_ARCHS="$arch" \
      python3 -m pip install --no-build-isolation --no-deps -q . || exit 1
    echo "build: $(( $(date +%s) - t0 )) s (sm_$arch)"
  fi
  cd /tmp && python3 -m perceptrons info && cd - > /dev/null
  if [ "$what" = test ] || [ "$what" = all ]; then
    python3 -m pytest -q -rfs --tb=short --maxfail=25 --durations=5 tests/mlp/test_fused_mlp_cuda.py ${2:+-k "$2"} -p no:cacheprovider 2>&1 | tail -60
    # The CUDA paths of the encodings, EncodedMLP, the tcnn front, the NeRF example (torch-op
    # encodings feeding the fused float16 kernels) and the eager shortcut past the dispatcher; they
    # skip without a GPU.
    python3 -m pytest -q -rfs --tb=short -k "cuda or CUDA" -p no:cacheprovider tests/encodings tests/tcnn \
      tests/test_nerf_example.py tests/test_direct_call.py 2>&1 | tail -30
  fi
  if [ "$what" = profile ]; then
    python3 bench/profile_mlp_cuda.py --breakdown
    # The inference forward, the training forward and the backward of the headline configuration.
    for spec in "inference mlp_forward_kernel" "training mlp_forward_kernel" "training mlp_backward_kernel"; do
      read -r task kern <<< "$spec"
      echo "== ncu: $kern ($task)"
      ncu -k regex:$kern -s 2 -c 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
        --section SchedulerStats --section WarpStateStats --section LaunchStats --section ComputeWorkloadAnalysis \
        python3 bench/profile_mlp_cuda.py --task $task 2>&1 | grep -v "^==PROF=="
    done
  fi
  if [ "$what" = bench ] || [ "$what" = all ]; then
    python3 bench/profile_mlp_cuda.py --breakdown
    timeout ${BENCH_TIMEOUT:-480} python3 bench/mlp_cuda.py ${BENCH_ARGS:-} --out "$OUT"
    timeout 120 python3 examples/nerf_inference.py --device cuda --out "$OUT/nerf"
  fi
} 2>&1 | tee "$log"
