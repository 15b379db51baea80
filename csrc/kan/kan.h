// C++ API of the spline-KAN layer: plain structs of pointers and sizes, no torch, no Python.
//
// Layer (pykan's definition in efficient-kan's layout, see DESIGN.md):
//   y[b,o] = sum_i base_weight[o,i] silu(x[b,i])
//          + sum_i scaler[o,i] sum_c spline_weight[o,i,c] B_c(x[b,i]; grid[i,:])
// grid (in, G+2k+1) per-feature knots (uniform or not), spline_weight (out, in, G+k),
// scaler (out, in) or null (= 1). All arrays row-major and contiguous.
#pragma once
#include <cstdint>

#include "common/bspline.h"
#include "common/dtype.h"
#include "common/status.h"

namespace perceptrons {
namespace kan {

// What the spline does outside the grid range [grid[i,k], grid[i,G+k]]:
//   Extend: pykan/efficient-kan semantics: decays to 0 over the k extension cells, 0 beyond.
//   Clamp:  the spline is evaluated at x clamped into the range (d/dx = 0 outside it).
// The base branch always sees the raw x.
enum class OutOfRange : int { Extend = 0, Clamp = 1 };

struct KanConfig {
  int in_features = 0;
  int out_features = 0;
  int grid_size = 0;     // G >= 1
  int spline_order = 3;  // k in 1..kMaxSplineOrder
  OutOfRange mode = OutOfRange::Extend;
  DType dtype = DType::Float32;
  int n_knots() const { return grid_size + 2 * spline_order + 1; }
  int n_basis() const { return grid_size + spline_order; }
};

struct KanParams {
  const void* grid = nullptr;
  const void* base_weight = nullptr;
  const void* spline_weight = nullptr;
  const void* spline_scaler = nullptr;  // null: no standalone scaler
};

struct KanForwardArgs {
  KanConfig cfg;
  KanParams params;
  int64_t batch = 0;
  const void* x = nullptr;
  void* y = nullptr;
  void* stream = nullptr;  // device backends only
};

// Backward saves nothing but x: the k+1 local basis values are recomputed (cheaper than storing them).
struct KanBackwardArgs {
  KanConfig cfg;
  KanParams params;
  int64_t batch = 0;
  const void* x = nullptr;
  const void* dy = nullptr;
  void* dx = nullptr;                  // null: not wanted
  void* d_base_weight = nullptr;       // null: not wanted
  void* d_spline_weight = nullptr;     // null: not wanted
  void* d_spline_scaler = nullptr;     // null: not wanted (or no scaler)
  void* stream = nullptr;
};

Status validate_config(const KanConfig& c);

Status kan_forward_cpu(const KanForwardArgs& args);
Status kan_backward_cpu(const KanBackwardArgs& args);

}  // namespace kan
}  // namespace perceptrons
