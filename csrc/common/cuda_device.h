// Probe of the CUDA runtime and devices. Never throws and never aborts: on a machine without a
// driver it reports the error string instead (the CUDA runtime is linked statically, so the module
// itself always imports).
#pragma once

namespace perceptrons {

constexpr int kMaxProbedDevices = 16;

struct CudaDeviceProbe {
  bool compiled = false;        // this module was built with nvcc
  int runtime_version = 0;      // cudaRuntimeGetVersion
  int driver_version = 0;       // cudaDriverGetVersion (0: no driver)
  int device_count = 0;
  char error[256] = {};         // why no device is usable, if none is
  struct Device {
    char name[256];
    int major, minor, multiprocessors;
    unsigned long long total_memory;
  } devices[kMaxProbedDevices];
};

// Defined in cuda_device.cu when CUDA is compiled, else in build_info.cpp.
void probe_cuda(CudaDeviceProbe* out);

// The last failed CUDA call of this thread, as "where: cudaErrorName: message" (empty if none):
// kernels return Status::CudaError and the bindings append this text to the exception.
void set_cuda_error_detail(int cuda_error, const char* where);
const char* cuda_error_detail();

}  // namespace perceptrons
