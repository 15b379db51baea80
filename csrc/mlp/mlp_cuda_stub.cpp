// The CUDA entry points of the fused MLP in a build without nvcc: they say so.
#include "mlp/mlp.h"

namespace perceptrons {
namespace mlp {

int64_t mlp_cuda_workspace_bytes(const MlpConfig&, int64_t, bool) { return -1; }
Status mlp_forward_cuda(const MlpForwardArgs&, void*, int64_t) { return Status::NotCompiled; }
Status mlp_backward_cuda(const MlpBackwardArgs&, void*, int64_t) { return Status::NotCompiled; }
Status mlp_cuda_plan_backward(const MlpConfig&, int64_t, int, int, bool, bool, MlpCudaBackwardPlan*) {
  return Status::NotCompiled;
}

}  // namespace mlp
}  // namespace perceptrons
