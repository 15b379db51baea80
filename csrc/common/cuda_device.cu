#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>

#include "common/cuda_device.h"

namespace perceptrons {

void probe_cuda(CudaDeviceProbe* out) {
  *out = CudaDeviceProbe{};
  out->compiled = true;
  cudaRuntimeGetVersion(&out->runtime_version);
  if (cudaDriverGetVersion(&out->driver_version) != cudaSuccess) out->driver_version = 0;
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    std::snprintf(out->error, sizeof(out->error), "%s: %s", cudaGetErrorName(err), cudaGetErrorString(err));
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return;
  }
  out->device_count = n;
  for (int i = 0; i < n && i < kMaxProbedDevices; ++i) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    auto& d = out->devices[i];
    std::strncpy(d.name, p.name, sizeof(d.name) - 1);
    d.name[sizeof(d.name) - 1] = 0;
    d.major = p.major;
    d.minor = p.minor;
    d.multiprocessors = p.multiProcessorCount;
    d.total_memory = p.totalGlobalMem;
  }
}

namespace {
thread_local char g_error_detail[512] = {};
}

void set_cuda_error_detail(int cuda_error, const char* where) {
  const cudaError_t e = static_cast<cudaError_t>(cuda_error);
  std::snprintf(g_error_detail, sizeof(g_error_detail), "%s: %s: %s", where, cudaGetErrorName(e), cudaGetErrorString(e));
  cudaGetLastError();  // launch errors are not sticky; leave the runtime clean for the next call
}

const char* cuda_error_detail() { return g_error_detail; }

}  // namespace perceptrons
