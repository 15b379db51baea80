// CPU backend of the spline-KAN layer: checks arguments, allocates the workspace and runs the
// kernel unit of the active instruction set.
#include <cmath>

#include "common/cpu_isa.h"
#include "common/cpu_workspace.h"
#include "kan/kan.h"
#include "kan/kan_cpu_isa.h"
#include "kan/kan_cpu_layout.h"

namespace perceptrons {
namespace kan {

Status validate_config(const KanConfig& c) {
  if (c.in_features < 1 || c.out_features < 1 || c.grid_size < 1) return Status::BadShape;
  if (c.spline_order < 1 || c.spline_order > kMaxSplineOrder) return Status::BadShape;
  if (c.mode != OutOfRange::Extend && c.mode != OutOfRange::Clamp) return Status::BadShape;
  if (c.dtype != DType::Float32 && c.dtype != DType::Float64) return Status::BadDtype;
  return Status::Ok;
}

namespace {

template <typename T>
bool grid_ok(const KanConfig& c, const void* grid) {
  const T* g = static_cast<const T*>(grid);
  const int n = c.n_knots();
  for (int i = 0; i < c.in_features; ++i) {
    const T* t = g + long(i) * n;
    if (!std::isfinite(t[0]) || !(t[n - 1] > t[0])) return false;
    for (int m = 1; m < n; ++m)
      if (!std::isfinite(t[m]) || t[m] < t[m - 1]) return false;
  }
  return true;
}

Status check(const KanConfig& c, const KanParams& p) {
  Status s = validate_config(c);
  if (s != Status::Ok) return s;
  if (!p.grid || !p.base_weight || !p.spline_weight) return Status::NullPointer;
  const bool ok = c.dtype == DType::Float32 ? grid_ok<float>(c, p.grid) : grid_ok<double>(c, p.grid);
  return ok ? Status::Ok : Status::BadGrid;
}

template <typename Args>
Status run_on_active_isa(const Args& a, bool backward, int threads) {
  const cpu::Layout layout = cpu::make_layout(a.cfg, threads, backward);
  Workspace ws(size_t(layout.total) * dtype_size(a.cfg.dtype));
  if (layout.total && !ws.ptr) return Status::OutOfMemory;
  switch (cpu_isa_active()) {
#ifdef PERCEPTRONS_HAVE_ISA_AVX512
    case CpuIsa::AVX512: isa_avx512::run(a, layout, ws.ptr); break;
#endif
#ifdef PERCEPTRONS_HAVE_ISA_AVX2
    case CpuIsa::AVX2: isa_avx2::run(a, layout, ws.ptr); break;
#endif
    default: isa_generic::run(a, layout, ws.ptr); break;
  }
  return Status::Ok;
}

}  // namespace

Status kan_forward_cpu(const KanForwardArgs& a) {
  Status s = check(a.cfg, a.params);
  if (s != Status::Ok) return s;
  if (a.batch < 0) return Status::BadShape;
  if (a.batch == 0) return Status::Ok;
  if (!a.x || !a.y) return Status::NullPointer;
  return run_on_active_isa(a, false, threads_for((a.batch + 15) / 16));
}

Status kan_backward_cpu(const KanBackwardArgs& a) {
  Status s = check(a.cfg, a.params);
  if (s != Status::Ok) return s;
  if (a.batch < 0) return Status::BadShape;
  if (a.batch > 0 && (!a.x || !a.dy)) return Status::NullPointer;
  const long long blocks = (a.cfg.in_features + cpu::kFeatureBlock - 1) / cpu::kFeatureBlock;
  const long long rows = (a.batch + 15) / 16;
  return run_on_active_isa(a, true, threads_for(rows > blocks ? rows : blocks));
}

}  // namespace kan
}  // namespace perceptrons
