// CPU backend of the spline-KAN layer: checks arguments, allocates the workspace and runs the
// kernel unit of the active instruction set.
#include <cmath>

#include "common/cpu_dispatch.h"
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
Status run_kernel(const Args& a, bool backward, long long work_units) {
  using Fn = void (*)(const Args&, const cpu::Layout&, void*);
  const IsaKernels<Fn> k{static_cast<Fn>(&isa_generic::run), PERCEPTRONS_IF_AVX2(static_cast<Fn>(&isa_avx2::run)),
                         PERCEPTRONS_IF_AVX512(static_cast<Fn>(&isa_avx512::run))};
  return run_on_active_isa(a, cpu::make_layout(a.cfg, threads_for(work_units), backward), k);
}

}  // namespace

Status kan_forward_cpu(const KanForwardArgs& a) {
  Status s = check(a.cfg, a.params);
  if (s != Status::Ok) return s;
  if (a.batch < 0) return Status::BadShape;
  if (a.batch == 0) return Status::Ok;
  if (!a.x || !a.y) return Status::NullPointer;
  return run_kernel(a, false, (a.batch + 15) / 16);
}

Status kan_backward_cpu(const KanBackwardArgs& a) {
  Status s = check(a.cfg, a.params);
  if (s != Status::Ok) return s;
  if (a.batch < 0) return Status::BadShape;
  if (a.batch > 0 && (!a.x || !a.dy)) return Status::NullPointer;
  // Backward is parallel over blocks of input features (each owns its weight gradients).
  return run_kernel(a, true, a.cfg.in_features);
}

}  // namespace kan
}  // namespace perceptrons
