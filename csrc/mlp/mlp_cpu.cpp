// CPU backend of the fused MLP: checks arguments, allocates the workspace and hands the work to
// the kernel unit of the active instruction set.
#include "common/cpu_dispatch.h"
#include "mlp/mlp.h"
#include "mlp/mlp_cpu_isa.h"
#include "mlp/mlp_cpu_layout.h"

namespace perceptrons {
namespace mlp {

Status validate_config(const MlpConfig& c) {
  if (c.n_layers < 1) return Status::BadShape;
  if (c.n_layers > kMaxLayers) return Status::TooManyLayers;
  for (int l = 0; l <= c.n_layers; ++l)
    if (c.widths[l] < 1) return Status::BadShape;
  for (int l = 1; l < c.n_layers; ++l)
    if (c.widths[l] > kMaxHiddenWidth) return Status::UnsupportedWidth;
  if (!activation_valid(int(c.activation)) || !activation_valid(int(c.output_activation)))
    return Status::BadActivation;
  if (c.dtype != DType::Float32 && c.dtype != DType::Float64) return Status::BadDtype;
  if (has_encoding(c)) {
    const Status s = enc::validate_encoding(c.encoding);
    if (s != Status::Ok) return s;
    if (enc::n_outputs(c.encoding) != c.widths[0]) return Status::BadShape;
  }
  return Status::Ok;
}

namespace {

template <typename Args>
Status check_params(const Args& a) {
  Status s = validate_config(a.cfg);
  if (s != Status::Ok) return s;
  if (a.batch < 0) return Status::BadShape;
  for (int l = 0; l < a.cfg.n_layers; ++l)
    if (!a.params.weights[l]) return Status::NullPointer;
  return Status::Ok;
}

// Lays out and allocates the workspace, then runs the kernel unit of the active ISA.
// No more threads than units of work (tiles forward, slots backward): a small batch then runs on
// the calling thread without waking a team, and the workspace is sized for the threads used.
template <typename Args>
Status run_kernel(const Args& a, bool backward) {
  using Fn = void (*)(const Args&, const cpu::Layout&, void*);
  const IsaKernels<Fn> k{static_cast<Fn>(&isa_generic::run), PERCEPTRONS_IF_AVX2(static_cast<Fn>(&isa_avx2::run)),
                         PERCEPTRONS_IF_AVX512(static_cast<Fn>(&isa_avx512::run))};
  const int threads = threads_for(backward ? cpu::n_slots(a.batch) : cpu::n_tiles(a.batch));
  return run_on_active_isa(a, cpu::make_layout(a.cfg, a.batch, threads, backward), k);
}

}  // namespace

Status mlp_forward_cpu(const MlpForwardArgs& a) {
  Status s = check_params(a);
  if (s != Status::Ok) return s;
  if (a.batch == 0) return Status::Ok;
  if (!a.x || !a.y) return Status::NullPointer;
  if (a.training)
    for (int l = 0; l < a.cfg.n_layers; ++l)
      if (layer_is_saved(a.cfg, l) && !a.saved[l]) return Status::NullPointer;
  return run_kernel(a, false);
}

Status mlp_backward_cpu(const MlpBackwardArgs& a) {
  Status s = check_params(a);
  if (s != Status::Ok) return s;
  if (a.batch > 0) {  // with an empty batch only the (zero) weight gradients are written
    if (!a.x || !a.dy) return Status::NullPointer;
    for (int l = 0; l < a.cfg.n_layers; ++l)
      if (layer_is_saved(a.cfg, l) && !a.saved[l]) return Status::NullPointer;
    if (backward_needs_output(a.cfg) && !a.y) return Status::NullPointer;
  }
  return run_kernel(a, true);
}

}  // namespace mlp
}  // namespace perceptrons
