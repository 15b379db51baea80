// What this module was built with (python -m perceptrons info reads it).
#include "common/build_info.h"

#include "common/cuda_device.h"

#ifndef PERCEPTRONS_VERSION
#define PERCEPTRONS_VERSION "unknown"
#endif

namespace perceptrons {

BuildInfo build_info() {
  BuildInfo b;
  b.version = PERCEPTRONS_VERSION;
#ifdef PERCEPTRONS_CXX_COMPILER
  b.cxx_compiler = PERCEPTRONS_CXX_COMPILER;
#endif
#ifdef PERCEPTRONS_WITH_OPENMP
  b.openmp = true;
#endif
#ifdef PERCEPTRONS_WITH_CUDA
  b.cuda = true;
  b.cuda_archs = PERCEPTRONS_CUDA_ARCHS_STR;
  b.cuda_compiler = PERCEPTRONS_CUDA_COMPILER;
#endif
  return b;
}

#ifndef PERCEPTRONS_WITH_CUDA
void probe_cuda(CudaDeviceProbe* out) {
  *out = CudaDeviceProbe{};
  const char msg[] = "CUDA kernels were not compiled into this build";
  for (unsigned i = 0; i < sizeof(msg); ++i) out->error[i] = msg[i];
}
void set_cuda_error_detail(int, const char*) {}
const char* cuda_error_detail() { return ""; }
#endif

}  // namespace perceptrons
