// CUDA backend of the fused MLP: checks the call, lays out the caller's workspace, repacks the
// weights and launches the kernels on the caller's stream. Never allocates, never synchronises.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "common/cuda_device.h"
#include "mlp/mlp.h"
#include "mlp/mlp_cuda_async.cuh"
#include "mlp/mlp_cuda_kernels.cuh"
#include "mlp/mlp_cuda_layout.h"

namespace perceptrons {
namespace mlp {

namespace {

using cuda_layout::Layout;

Status fail(cudaError_t e, const char* where) {
  set_cuda_error_detail(int(e), where);
  return Status::CudaError;
}

cudaError_t sm_count(int* n) {
  int optin = 0;
  return cuda::device_limits(n, &optin);
}

bool aligned_pairs(const void* p, int cols) { return cols % 2 == 0 && reinterpret_cast<uintptr_t>(p) % 4 == 0; }

template <typename Args>
Status check(const Args& a) {
  Status s = cuda_layout::cuda_supported(a.cfg);
  if (s != Status::Ok) return s;
  if (a.batch < 0) return Status::BadShape;
  for (int l = 0; l < a.cfg.n_layers; ++l) {
    if (!a.params.weights[l]) return Status::NullPointer;
    if (a.params.weight_rows[l]) return Status::Unsupported;  // row tables: CPU kernels only
  }
  return Status::Ok;
}

// Fragments (forward always, backward too when asked) and padded float biases into the workspace;
// x_vec: layer 0's forward fragments k-permuted for the forward's 16-byte reads of x.
cudaError_t pack(const MlpConfig& c, const MlpParams& params, const Layout& lay, char* ws, bool backward,
                 bool x_vec, cudaStream_t stream) {
  cuda::PackParams pp;
  uint4* words = reinterpret_cast<uint4*>(ws);
  float* floats = reinterpret_cast<float*>(ws);
  for (int l = 0; l < c.n_layers; ++l) {
    const int in = c.widths[l], out = c.widths[l + 1];
    pp.job[pp.n_jobs++] = cuda::PackJob{params.weights[l], in, out, 1, in, words + lay.fwd_frag[l], x_vec && l == 0};
    if (backward) pp.job[pp.n_jobs++] = cuda::PackJob{params.weights[l], out, in, in, 1, words + lay.bwd_frag[l]};
    pp.bias[pp.n_bias++] = cuda::BiasJob{params.biases[l], out, int(cuda_layout::round_up(out, 16)), floats + lay.bias[l]};
  }
  return cuda::launch_pack(c.dtype, pp, stream);
}

}  // namespace

namespace cuda {

cudaError_t device_limits(int* sm_count, int* smem_optin) {
  constexpr int kMaxDevices = 64;
  static int cached_sms[kMaxDevices] = {}, cached_optin[kMaxDevices] = {};  // 0: not read yet
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  if (dev >= kMaxDevices || cached_sms[dev] == 0) {
    int sms = 0, optin = 0;
    e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (e != cudaSuccess) return e;
    if (dev >= kMaxDevices) {
      *sm_count = sms;
      *smem_optin = optin;
      return cudaSuccess;
    }
    cached_optin[dev] = optin;  // both written before the flag (sms) that says they are there
    cached_sms[dev] = sms;
  }
  *sm_count = cached_sms[dev];
  *smem_optin = cached_optin[dev];
  return cudaSuccess;
}

}  // namespace cuda

int64_t mlp_cuda_workspace_bytes(const MlpConfig& c, int64_t batch, bool backward) {
  if (cuda_layout::cuda_supported(c) != Status::Ok || batch < 0) return -1;
  if (!backward) return cuda_layout::make_layout(c, false, 0).bytes;
  cuda::BwdLaunch plan;
  const cudaError_t e = cuda::plan_backward(c, cuda_layout::make_layout(c, true, 0), batch, nullptr, nullptr, &plan);
  if (e != cudaSuccess) {
    set_cuda_error_detail(int(e), e == cudaErrorInvalidConfiguration
                                      ? "mlp_cuda_workspace_bytes: no backward plan fits this device's shared memory"
                                      : "mlp_cuda_workspace_bytes: device query");
    return -1;
  }
  return cuda_layout::make_layout(c, true, plan.grid).bytes;
}

Status mlp_cuda_plan_backward(const MlpConfig& c, int64_t batch, int sm_count, int smem_optin, bool x_prefetchable,
                              bool dy_prefetchable, MlpCudaBackwardPlan* out) {
  Status s = cuda_layout::cuda_supported(c);
  if (s != Status::Ok) return s;
  if (batch < 0 || sm_count < 1 || smem_optin < 0 || !out) return Status::BadShape;
  cuda::BwdLaunch plan;
  if (cuda::plan_backward_for(c, cuda_layout::make_layout(c, true, 0), batch, x_prefetchable, dy_prefetchable,
                              sm_count, smem_optin, &plan) != cudaSuccess)
    return Status::Unsupported;
  out->warps = plan.warps;
  out->depth = plan.depth;
  out->grid = plan.grid;
  out->smem_bytes = int64_t(plan.smem);
  out->acc_in_smem = plan.acc_in_smem;
  out->x_prefetched = plan.x_async;
  out->dy_prefetched = plan.dy_async;
  out->reduce_unit_tiles = cuda_layout::reduce_unit_tiles_for_width(c.widths[1], plan.warps);
  return Status::Ok;
}

Status mlp_forward_cuda(const MlpForwardArgs& a, void* workspace, int64_t workspace_bytes) {
  Status s = check(a);
  if (s != Status::Ok) return s;
  const MlpConfig& c = a.cfg;
  if (a.batch > 0 && (!a.x || !a.y)) return Status::NullPointer;
  const Layout lay = cuda_layout::make_layout(c, false, 0);
  if (workspace_bytes < lay.bytes) return Status::WorkspaceTooSmall;
  if (!workspace) return Status::NullPointer;
  if (a.training)
    for (int l = 0; l < c.n_layers - 1; ++l)
      if (!a.saved[l] && a.batch > 0) return Status::NullPointer;
  if (a.batch == 0) return Status::Ok;
  cudaStream_t stream = static_cast<cudaStream_t>(a.stream);
  char* ws = static_cast<char*>(workspace);
  cuda::FwdParams p{};
  p.n_layers = c.n_layers;
  p.in = c.widths[0];
  p.out = c.widths[c.n_layers];
  p.batch = a.batch;
  p.x = a.x;
  p.y = a.y;
  p.x_pairs = aligned_pairs(a.x, p.in);
  p.y_pairs = aligned_pairs(a.y, p.out);
  // x is prefetched (cp.async, the next tile's rows while the warp computes the current one) where its
  // width and alignment allow; up to hidden width 64 the prefetched rows are read as 16-byte row
  // segments straight into fragments (x_vec: layer 0 packed k-permuted), at 128 fragment by fragment.
  // Without the prefetch, x is read as row segments straight from global memory where it allows, else
  // fragment by fragment. H100, 2^21 rows, fp16, inference kernel (bench/results/h100): w64x4 row
  // segments from global 0.345 ms, prefetched and read fragment by fragment 0.329-0.331 (run 17); with
  // the one-cvt ReLU, prefetched fragment by fragment 0.325-0.329, prefetched row segments 0.317-0.320
  // (run 19). w128x4 (one m-tile per warp): prefetched row segments 1.734-1.740 ms against 1.725
  // fragment by fragment (run 22): a lane's 16-byte reads take four times the shared-memory wavefronts
  // of its 4-byte ones (two-way bank conflicts at the padded stride), which one m-tile does not repay.
  // Before the ReLU kernels prefetching lost at inference up to width 64 (0.414 -> 0.431 ms, run 8).
  p.x_async = cuda::async_rows_ok(a.x, p.in, cuda_layout::kMaxAsyncIn);
  p.x_vec = cuda::async_rows_ok(a.x, p.in, cuda_layout::kMaxIoWidth) && (!p.x_async || c.widths[1] <= 64);
  cudaError_t e = pack(c, a.params, lay, ws, false, p.x_vec, stream);
  if (e != cudaSuccess) return fail(e, "mlp_forward_cuda: weight repacking");
  // y through shared memory in 16-byte row segments where its width and alignment allow it (H100,
  // w64x4, 2^21 rows, fp16, against the kernels before it: inference 0.384 -> 0.367 ms, training
  // forward 0.677 -> 0.616 ms).
  p.y_stage = cuda::async_rows_ok(a.y, p.out, cuda_layout::kMaxAsyncIn);
  p.act = c.activation;
  p.out_act = c.output_activation;
  p.act_p = float(c.activation_param);
  p.out_p = float(c.output_activation_param);
  for (int l = 0; l < c.n_layers; ++l) {
    p.wfrag[l] = reinterpret_cast<const uint4*>(ws) + lay.fwd_frag[l];
    p.bias[l] = reinterpret_cast<const float*>(ws) + lay.bias[l];
    p.saved[l] = a.training ? static_cast<uint4*>(a.saved[l]) : nullptr;
  }
  int sms = 0;
  if ((e = sm_count(&sms)) != cudaSuccess) return fail(e, "mlp_forward_cuda: device query");
  e = cuda::launch_forward(c.dtype, c.widths[1], a.training, p, sms, stream);
  if (e != cudaSuccess) return fail(e, "mlp_forward_cuda: forward kernel");
  return Status::Ok;
}

Status mlp_backward_cuda(const MlpBackwardArgs& a, void* workspace, int64_t workspace_bytes) {
  Status s = check(a);
  if (s != Status::Ok) return s;
  const MlpConfig& c = a.cfg;
  if (a.batch > 0 && (!a.x || !a.dy)) return Status::NullPointer;
  for (int l = 0; l < c.n_layers - 1; ++l)
    if (!a.saved[l] && a.batch > 0) return Status::NullPointer;
  for (int l = 0; l < c.n_layers; ++l)
    if (a.dweight_rows[l]) return Status::Unsupported;  // row tables: CPU kernels only
  cudaStream_t stream = static_cast<cudaStream_t>(a.stream);
  cuda::BwdLaunch plan;
  cudaError_t e = cuda::plan_backward(c, cuda_layout::make_layout(c, true, 0), a.batch, a.x, a.dy, &plan);
  if (e == cudaErrorInvalidConfiguration)
    return fail(e, "mlp_backward_cuda: this device has too little shared memory per block for the backward of "
                   "these input/output widths (staging 128 rows of both needs it; at most about 99 KB on sm_86/89)");
  if (e != cudaSuccess) return fail(e, "mlp_backward_cuda: launch planning");
  const Layout lay = cuda_layout::make_layout(c, true, plan.grid);
  if (workspace_bytes < lay.bytes) return Status::WorkspaceTooSmall;
  if (!workspace) return Status::NullPointer;
  char* ws = static_cast<char*>(workspace);
  float* floats = reinterpret_cast<float*>(ws);
  e = pack(c, a.params, lay, ws, true, false, stream);
  if (e != cudaSuccess) return fail(e, "mlp_backward_cuda: weight repacking");

  const int last = c.n_layers - 1;
  cuda::BwdParams p{};
  p.n_layers = c.n_layers;
  p.in = c.widths[0];
  p.out = c.widths[c.n_layers];
  p.batch = a.batch;
  p.x = a.x;
  p.dy = a.dy;
  p.dx = a.dx;
  p.x_pairs = aligned_pairs(a.x, p.in);
  p.dy_pairs = aligned_pairs(a.dy, p.out);
  p.dx_pairs = aligned_pairs(a.dx, p.in);
  p.act = c.activation;
  p.out_act = c.output_activation;
  p.act_p = float(c.activation_param);
  p.out_p = float(c.output_activation_param);
  for (int l = 0; l < c.n_layers; ++l) {
    p.saved[l] = static_cast<const uint4*>(a.saved[l]);
    p.wbfrag[l] = reinterpret_cast<const uint4*>(ws) + lay.bwd_frag[l];
    p.acc_off[l] = lay.acc[l];
    p.acc_mt[l] = lay.acc_mt[l];
    p.acc_nt[l] = lay.acc_nt[l];
  }
  p.wfrag_last = reinterpret_cast<const uint4*>(ws) + lay.fwd_frag[last];
  p.bias_last = floats + lay.bias[last];
  p.partials = floats + lay.partials;
  p.acc_total = lay.acc_total;
  static_cast<cuda::BwdSmemLayout&>(p) = plan;
  e = cuda::launch_backward(c.dtype, c.widths[1], p, plan, stream);
  if (e != cudaSuccess) return fail(e, "mlp_backward_cuda: backward kernel");

  cuda::ReduceParams r{};
  r.n_layers = c.n_layers;
  r.n_slabs = plan.grid;
  r.acc_total = lay.acc_total;
  r.partials = p.partials;
  for (int l = 0; l < c.n_layers; ++l) {
    r.acc_off[l] = lay.acc[l];
    r.acc_nt[l] = lay.acc_nt[l];
    r.in[l] = c.widths[l];
    r.out[l] = c.widths[l + 1];
    r.dw[l] = a.dweights[l];
    r.db[l] = a.dbiases[l];
  }
  int sms = 0;
  if ((e = sm_count(&sms)) != cudaSuccess) return fail(e, "mlp_backward_cuda: device query");
  e = cuda::launch_reduce(c.dtype, r, sms, stream);
  if (e != cudaSuccess) return fail(e, "mlp_backward_cuda: gradient reduction");
  return Status::Ok;
}

}  // namespace mlp
}  // namespace perceptrons
