// Error codes returned by every kernel entry point; csrc/bindings.cpp turns them into Python
// exceptions. The Python layer validates first with better messages; these are the cheap
// second line of defence that keeps bad arguments from touching memory.
#pragma once

namespace perceptrons {

enum class Status : int {
  Ok = 0,
  NullPointer,         // a required pointer was null
  BadShape,            // a size was negative, zero where it must not be, or too large
  BadActivation,       // unknown activation code
  BadDtype,            // dtype code not supported by this kernel
  UnsupportedWidth,    // a hidden width above the kernel's limit
  TooManyLayers,       // more layers than the kernel's limit
  OutOfMemory,         // workspace allocation failed
  NotCompiled,         // the requested backend was not built into this module
  BadGrid,             // KAN knots not finite or decreasing
  Unsupported,         // a configuration this backend has no kernel for (the Python layer falls back)
  CudaError,           // a CUDA call failed; cuda_error_detail() (common/cuda_device.h) says which
  WorkspaceTooSmall,   // the caller's workspace is smaller than the backend's *_workspace_bytes
};

inline const char* status_message(Status s) {
  switch (s) {
    case Status::Ok: return "ok";
    case Status::NullPointer: return "a required data pointer is null";
    case Status::BadShape: return "invalid size (negative, zero where a positive size is required, or too large)";
    case Status::BadActivation: return "unknown activation code";
    case Status::BadDtype: return "unsupported dtype";
    case Status::UnsupportedWidth: return "unsupported layer width";
    case Status::TooManyLayers: return "too many layers";
    case Status::OutOfMemory: return "could not allocate the kernel workspace";
    case Status::NotCompiled: return "backend not compiled into this build";
    case Status::Unsupported: return "configuration not supported by this backend";
    case Status::CudaError: return "CUDA error";
    case Status::WorkspaceTooSmall: return "workspace smaller than the size the backend asked for";
    case Status::BadGrid: return "grid: every feature's knots must be finite and non-decreasing, first < last";
  }
  return "unknown error";
}

}  // namespace perceptrons
