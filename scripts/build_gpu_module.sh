#!/usr/bin/env bash
# Builds the extension module for the GPU machine here, so that a device call spends no minutes
# compiling: CPython 3.12 (the GPU image's Python), CUDA kernels for sm_90 only, into .gpubuild/.
# With -lineinfo (no effect on the code; ncu's source page then maps SASS to csrc lines: run ncu with
# --import-source yes). Usage: bash scripts/build_gpu_module.sh [python3.12 executable]
# On the GPU machine: cp .gpubuild/_C*.so python/perceptrons/ && export PYTHONPATH=$PWD/python
set -euo pipefail
PY=${1:-$(pyenv root 2>/dev/null)/versions/3.12.1/bin/python3.12}
mkdir -p build  # a fresh clone has none: the configure log below goes there
PYBIND=$(python -c "import pybind11; print(pybind11.get_cmake_dir())")
cmake -S . -B build/gpu-cp312 -G Ninja -DCMAKE_BUILD_TYPE=Release -DSKBUILD_PROJECT_VERSION=0.1.0 \
  -DPython_EXECUTABLE="$PY" -Dpybind11_DIR="$PYBIND" -DPERCEPTRONS_CUDA=ON \
  -DPERCEPTRONS_CUDA_ARCHS="${PERCEPTRONS_CUDA_ARCHS:-90a-real}" -DCMAKE_CUDA_FLAGS="-lineinfo" > build/gpu-cp312.log
cmake --build build/gpu-cp312 -j "${JOBS:-2}"
mkdir -p .gpubuild && cp build/gpu-cp312/_C*.so .gpubuild/
ls -la .gpubuild/_C*.so
