// Parameter blocks and launchers of the CUDA MLP kernels (one translation unit per kernel family,
// so nvcc builds them in parallel). Parameters travel by value (__grid_constant__): nothing is
// copied host-to-device, so every launch can be captured into a CUDA graph.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "mlp/mlp.h"
#include "mlp/mlp_cuda_layout.h"

namespace perceptrons {
namespace mlp {
namespace cuda {

// Multiprocessors and opt-in shared memory per block of the current device, read once per device
// (mlp_cuda.cu): every call needs them, twice for a backward (workspace size, then launch).
cudaError_t device_limits(int* sm_count, int* smem_optin);

// ---- weight repacking (mlp_cuda_pack.cu) ------------------------------------------------------
struct PackJob {              // B(k, n) = src[k * sk + n * sn], k < K, n < N; zero outside
  const void* src;
  int K, N;
  int64_t sk, sn;
  uint4* dst;                 // frag_words(K, N) words (mlp_cuda_layout.h); round_up(K, 32) rows if perm_k32
  bool perm_k32 = false;      // k-permuted within 32-row blocks (mlp_cuda_layout.h, layer 0 with x_vec)
};
// Rows of k a job packs: K, or whole 32-row blocks when k-permuted.
PCT_HD int pack_k_rows(const PackJob& j) { return j.perm_k32 ? int(cuda_layout::round_up(j.K, 32)) : j.K; }
struct BiasJob {
  const void* src;            // null: a layer without bias (zeros)
  int n, n_pad;
  float* dst;
};
struct PackParams {
  int n_jobs = 0, n_bias = 0;
  PackJob job[2 * kMaxLayers];
  BiasJob bias[kMaxLayers];
};
cudaError_t launch_pack(DType dtype, const PackParams& p, cudaStream_t stream);

// ---- forward (mlp_cuda_forward.cu) -------------------------------------------------------------
struct FwdParams {
  int n_layers, in, out;
  int64_t batch;
  const void* x;
  void* y;
  bool x_pairs, y_pairs;      // rows may be read/written as aligned 32-bit pairs
  bool x_async;               // x is prefetched with cp.async (mlp_cuda_async.cuh)
  bool y_stage;               // y goes out through shared memory in 16-byte row segments
  bool x_vec;                 // x read as 16-byte row segments (layer 0 packed k-permuted), from the
                              // prefetched rows with x_async, else from global memory
  Activation act, out_act;
  float act_p, out_p;
  const uint4* wfrag[kMaxLayers];
  const float* bias[kMaxLayers];
  uint4* saved[kMaxLayers];   // training: hidden layers; null: inference
};
cudaError_t launch_forward(DType dtype, int width, bool training, const FwdParams& p, int sm_count,
                           cudaStream_t stream);

// ---- backward (mlp_cuda_backward.cu) -----------------------------------------------------------
// How the backward lays out its shared memory (plan_backward decides it): the plan and the kernel
// parameters both carry it, so the host hands it over in one assignment.
struct BwdSmemLayout {
  bool acc_in_smem = false;   // accumulate in shared memory and flush once, or in the slab directly
  int sg_ld = 0, sh_ld = 0;   // staging row strides (elements)
  // The per-warp prefetch stream (mlp_cuda_backward.cu): offsets in bytes of shared memory.
  bool x_async = false, dy_async = false;  // x / dy rows come through the stream (else from global)
  int depth = 0;              // items in flight ahead of the one being consumed (= saved-tile slots)
  int stream_off = 0, stream_warp_bytes = 0, slot_bytes = 0;
  int acc_off_smem = 0;
};
struct BwdParams : BwdSmemLayout {
  int n_layers, in, out;
  int64_t batch;
  const void* x;
  const void* dy;
  void* dx;                   // null: not wanted
  bool x_pairs, dy_pairs, dx_pairs;
  Activation act, out_act;
  float act_p, out_p;
  const uint4* saved[kMaxLayers];
  const uint4* wfrag_last;    // forward fragments of the output layer (recomputes its z)
  const float* bias_last;
  const uint4* wbfrag[kMaxLayers];
  float* partials;            // one slab of acc_total floats per block
  int64_t acc_total;
  int64_t acc_off[kMaxLayers];
  int acc_mt[kMaxLayers], acc_nt[kMaxLayers];
};
struct BwdLaunch : BwdSmemLayout {
  int grid = 0;
  int warps = 0;              // per block; the chunk is warps * 16 rows
  size_t smem = 0;
};
// Grid, warps, prefetch depth and shared memory of the backward for this configuration on the
// current device. x and dy (may be null when only the workspace size is wanted) decide whether they
// can be prefetched.
cudaError_t plan_backward(const MlpConfig& c, const cuda_layout::Layout& lay_no_grid, int64_t batch,
                          const void* x, const void* dy, BwdLaunch* out);
// The same for a device of sm_count SMs and smem_optin bytes of opt-in shared memory per block
// (no device query: mlp_cuda_plan_backward exposes it to tests and tools).
cudaError_t plan_backward_for(const MlpConfig& c, const cuda_layout::Layout& lay_no_grid, int64_t batch,
                              bool x_prefetchable, bool dy_prefetchable, int sm_count, int smem_optin,
                              BwdLaunch* out);
cudaError_t launch_backward(DType dtype, int width, const BwdParams& p, const BwdLaunch& plan,
                            cudaStream_t stream);

struct ReduceParams {
  int n_layers, n_slabs;
  int64_t acc_total;
  const float* partials;
  int64_t acc_off[kMaxLayers];
  int acc_nt[kMaxLayers], in[kMaxLayers], out[kMaxLayers];
  void* dw[kMaxLayers];
  void* db[kMaxLayers];
};
cudaError_t launch_reduce(DType dtype, const ReduceParams& p, int sm_count, cudaStream_t stream);

}  // namespace cuda
}  // namespace mlp
}  // namespace perceptrons
