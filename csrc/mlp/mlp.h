// C++ API of the fused MLP: plain structs of pointers and sizes, no torch, no Python.
// A backend (CPU now, CUDA later) implements mlp_forward_* / mlp_backward_* on these structs.
//
// Network: y = f_out(W_{L-1} ... f(W_0 e(x) + b_0) ... + b_{L-1}), nn.Linear layout: W_l is
// (widths[l+1], widths[l]) row-major, b_l is (widths[l+1]) or null. e is the optional input encoding
// (identity when cfg.encoding has no parts). x is (batch, mlp_n_inputs(cfg)) and y is
// (batch, widths[L]), both row-major and contiguous.
#pragma once
#include <cstddef>
#include <cstdint>

#include "common/activations.h"
#include "common/dtype.h"
#include "common/status.h"
#include "encodings/encodings.h"

namespace perceptrons {
namespace mlp {

constexpr int kMaxLayers = 64;          // weight matrices
constexpr int kMaxHiddenWidth = 1024;   // keeps a tile of activations cache-resident
constexpr int kSavedAlign = 16;         // saved rows are padded to this many elements

using perceptrons::DType;

struct MlpConfig {
  int n_layers = 0;                     // L >= 1 weight matrices
  int widths[kMaxLayers + 1] = {};      // widths[0] = in, widths[L] = out
  Activation activation = Activation::ReLU;
  double activation_param = 0.0;
  Activation output_activation = Activation::None;
  double output_activation_param = 0.0;
  DType dtype = DType::Float32;
  // Optional input encoding (csrc/encodings/encodings.h), run in the kernel's input stage: x is then
  // (batch, n_inputs(encoding)) and widths[0] = n_outputs(encoding). n_parts = 0: x is the layer input.
  enc::EncodingConfig encoding;
};

inline bool has_encoding(const MlpConfig& c) { return c.encoding.n_parts > 0; }
// Width of the rows of x (and dx): the raw inputs when an encoding runs first.
inline int mlp_n_inputs(const MlpConfig& c) { return has_encoding(c) ? enc::n_inputs(c.encoding) : c.widths[0]; }

struct MlpParams {
  const void* weights[kMaxLayers] = {};  // required, (out, in) row-major
  const void* biases[kMaxLayers] = {};   // null: that layer has no bias
  // Optional, CPU kernels only (the CUDA ones return Unsupported): row o of W_l is read at
  // weight_rows[l][o] instead of weights[l] + o * in, so a model whose rows come from different
  // arrays (a routed model at unit granularity) runs without being copied together first.
  // weights[l] must still be non-null.
  const void* const* weight_rows[kMaxLayers] = {};
};

struct MlpForwardArgs {
  MlpConfig cfg;
  MlpParams params;
  int64_t batch = 0;
  const void* x = nullptr;
  void* y = nullptr;
  // Training forward: saved[l] receives layer l's saved rows (saved_layer_numel elements) for every
  // layer_is_saved(l); inference: all null, and nothing but y is written.
  bool training = false;
  void* saved[kMaxLayers] = {};
  void* stream = nullptr; // device backends launch on this stream (a cudaStream_t); the CPU ignores it
};

struct MlpBackwardArgs {
  MlpConfig cfg;
  MlpParams params;
  int64_t batch = 0;
  const void* x = nullptr;
  const void* y = nullptr;      // needed when the output activation's derivative is taken from y
  const void* saved[kMaxLayers] = {};  // from the training forward
  const void* dy = nullptr;
  void* dx = nullptr;                       // null: dL/dx not wanted
  void* dweights[kMaxLayers] = {};          // null entries: that gradient not wanted
  void* dbiases[kMaxLayers] = {};
  // Optional, CPU kernels only: row o of dW_l is written at dweight_rows[l][o] instead of dweights[l]
  // + o * in (dweights[l] must still be non-null to ask for the gradient).
  void* const* dweight_rows[kMaxLayers] = {};
  void* stream = nullptr;
};

// ---- What the training forward saves for backward -------------------------------------------
// Layer l (0-based) produces widths[l+1] values per row. For each hidden layer (l < L-1) we save
// its post-activation (or its pre-activation for silu/sine); for the output layer we save the
// pre-activation only when the output activation needs it (silu/sine). Rows are padded to
// kSavedAlign elements. One buffer per layer: a single buffer for all layers is larger than glibc's
// largest mmap threshold at training batch sizes and would be page-faulted in anew on every call.
// This layout is shared by every backend.
inline int64_t saved_row_stride(int width) {
  return (int64_t(width) + kSavedAlign - 1) / kSavedAlign * kSavedAlign;
}
inline bool layer_is_saved(const MlpConfig& c, int l) {
  return l < c.n_layers - 1 || activation_needs_preactivation(c.output_activation);
}
inline int64_t saved_layer_numel(const MlpConfig& c, int64_t batch, int l) {
  return layer_is_saved(c, l) ? batch * saved_row_stride(c.widths[l + 1]) : 0;
}
inline int64_t mlp_saved_numel(const MlpConfig& c, int64_t batch) {  // all layers together
  int64_t n = 0;
  for (int l = 0; l < c.n_layers; ++l) n += saved_layer_numel(c, batch, l);
  return n;
}
// Backward reads y only when the output activation's derivative is written from the output.
inline bool backward_needs_output(const MlpConfig& c) {
  return c.output_activation != Activation::None && !activation_needs_preactivation(c.output_activation);
}

// Checks what every backend needs; the Python layer has already given the user a better message.
Status validate_config(const MlpConfig& c);

// ---- CPU backend (csrc/mlp/mlp_cpu.cpp) ------------------------------------------------------
Status mlp_forward_cpu(const MlpForwardArgs& args);
Status mlp_backward_cpu(const MlpBackwardArgs& args);

// ---- CUDA backend (csrc/mlp/mlp_cuda.cu; without nvcc, mlp_cuda_stub.cpp returns NotCompiled) --
// Tensor-core kernels (mma.sync m16n8k16) for float16/bfloat16 storage with float32 accumulation.
// What they take (mlp_cuda_layout.h: cuda_supported) and what the training forward saves (a
// tile-native layout, cuda_saved_layer_numel) differ from the CPU backend. The caller allocates the
// workspace (mlp_cuda_workspace_bytes, which asks the current device for its size) and passes the
// stream; the kernels never allocate, never synchronise and never touch stream 0 unless given it.
// The backward also reads params.biases (it recomputes the output layer's pre-activation).
int64_t mlp_cuda_workspace_bytes(const MlpConfig& c, int64_t batch, bool backward);  // < 0: no device
Status mlp_forward_cuda(const MlpForwardArgs& args, void* workspace, int64_t workspace_bytes);
Status mlp_backward_cuda(const MlpBackwardArgs& args, void* workspace, int64_t workspace_bytes);

// How the backward would run on a device with sm_count SMs and smem_optin bytes of opt-in shared
// memory per block (no device needed: for tests and tools; mlp_backward_cuda plans for its device).
struct MlpCudaBackwardPlan {
  int warps = 0;            // per block (16 rows each)
  int depth = 0;            // prefetch stream items in flight per warp (0: loads straight from global)
  int grid = 0;             // blocks (= weight-gradient slabs)
  int64_t smem_bytes = 0;   // dynamic shared memory per block
  bool acc_in_smem = false; // weight-gradient accumulators in shared memory (else the global slab)
  bool x_prefetched = false, dy_prefetched = false;
  int reduce_unit_tiles = 0; // n-tiles per unit of the weight-gradient reduction (cuda_layout::reduce_unit_tiles)
};
// Unsupported when the configuration is not a CUDA one or no plan fits the limits.
Status mlp_cuda_plan_backward(const MlpConfig& c, int64_t batch, int sm_count, int smem_optin, bool x_prefetchable,
                              bool dy_prefetchable, MlpCudaBackwardPlan* out);

}  // namespace mlp
}  // namespace perceptrons
