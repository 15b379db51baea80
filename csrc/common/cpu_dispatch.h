// Runs a kernel family's per-ISA entry point for the active instruction set, with a workspace.
#pragma once
#include <cstddef>

#include "common/cpu_isa.h"
#include "common/cpu_workspace.h"
#include "common/status.h"

// The per-ISA entry points exist only where their unit was compiled (see CMakeLists.txt).
#ifdef PERCEPTRONS_HAVE_ISA_AVX2
#define PERCEPTRONS_IF_AVX2(fn) (fn)
#else
#define PERCEPTRONS_IF_AVX2(fn) nullptr
#endif
#ifdef PERCEPTRONS_HAVE_ISA_AVX512
#define PERCEPTRONS_IF_AVX512(fn) (fn)
#else
#define PERCEPTRONS_IF_AVX512(fn) nullptr
#endif

namespace perceptrons {

template <typename Fn>
struct IsaKernels {
  Fn generic, avx2, avx512;  // avx2/avx512 may be null (not compiled)
};

// Allocates layout.total elements of the args' dtype and calls the kernel of the active ISA.
template <typename Args, typename Layout, typename Fn>
Status run_on_active_isa(const Args& a, const Layout& layout, const IsaKernels<Fn>& k) {
  Workspace ws(size_t(layout.total) * dtype_size(a.cfg.dtype));
  if (layout.total && !ws.ptr) return Status::OutOfMemory;
  Fn fn = k.generic;
  const CpuIsa isa = cpu_isa_active();
  if (isa == CpuIsa::AVX512 && k.avx512) fn = k.avx512;
  else if (isa == CpuIsa::AVX2 && k.avx2) fn = k.avx2;
  fn(a, layout, ws.ptr);
  return Status::Ok;
}

}  // namespace perceptrons
