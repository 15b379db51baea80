// Repacks weight matrices into fragment order and biases into padded float32 (see
// mlp_cuda_layout.h). One launch for every layer: blockIdx.y picks the job.
#include "mlp/mlp_cuda_kernels.cuh"
#include "mlp/mlp_cuda_mma.cuh"

namespace perceptrons {
namespace mlp {
namespace cuda {
namespace {

__device__ __forceinline__ uint32_t bits16(const uint16_t* src, const PackJob& j, int k, int n) {
  return (k < j.K && n < j.N) ? uint32_t(src[k * j.sk + n * j.sn]) : 0u;
}

// The source row of logical row k of a k-permuted job (mlp_cuda_layout.h): k = 16 kt + 8 hi + 2 t + lo
// inside its 32-row block reads row 8 t + 4 kt + 2 hi + lo.
__device__ __forceinline__ int permuted_k(int k) {
  const int c = k & 31, kt = c >> 4, hi = (c >> 3) & 1, t = (c >> 1) & 3, lo = c & 1;
  return (k - c) + 8 * t + 4 * kt + 2 * hi + lo;
}

template <typename T>
__global__ void pack_kernel(const __grid_constant__ PackParams p) {
  const int y = blockIdx.y;
  if (y < p.n_jobs) {
    const PackJob& j = p.job[y];
    const uint16_t* src = static_cast<const uint16_t*>(j.src);
    const int np = (j.N + 15) / 16;
    const int64_t words = cuda_layout::frag_words(pack_k_rows(j), j.N);
    for (int64_t w = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; w < words; w += int64_t(gridDim.x) * blockDim.x) {
      const int lane = int(w % 32), jp = int((w / 32) % np), kk = int(w / (32 * int64_t(np)));
      const int g = lane >> 2, t = lane & 3;
      uint32_t v[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int n = (2 * jp + (q >> 1)) * 8 + g;     // n-tile 2jp (q = 0, 1) or 2jp + 1 (q = 2, 3)
        const int k = kk * 16 + 2 * t + 8 * (q & 1);   // b0 (q even) or b1 (q odd)
        const int ks = j.perm_k32 ? permuted_k(k) : k;  // k even: k + 1 reads ks + 1 either way
        v[q] = bits16(src, j, ks, n) | (bits16(src, j, ks + 1, n) << 16);
      }
      j.dst[w] = make_uint4(v[0], v[1], v[2], v[3]);
    }
  } else {
    for (int b = 0; b < p.n_bias; ++b) {
      const BiasJob& j = p.bias[b];
      const T* src = static_cast<const T*>(j.src);
      for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < j.n_pad; i += gridDim.x * blockDim.x)
        j.dst[i] = (src && i < j.n) ? to_float<T>(src[i]) : 0.f;
    }
  }
}

}  // namespace

cudaError_t launch_pack(DType dtype, const PackParams& p, cudaStream_t stream) {
  int64_t most = 0;
  for (int i = 0; i < p.n_jobs; ++i)
    most = std::max<int64_t>(most, cuda_layout::frag_words(pack_k_rows(p.job[i]), p.job[i].N));
  for (int i = 0; i < p.n_bias; ++i) most = std::max<int64_t>(most, p.bias[i].n_pad);
  const int threads = 256;
  dim3 grid(unsigned(std::min<int64_t>(std::max<int64_t>(cuda_layout::ceil_div(most, threads), 1), 1024)),
            unsigned(p.n_jobs + 1));
  if (dtype == DType::Float16) pack_kernel<__half><<<grid, threads, 0, stream>>>(p);
  else pack_kernel<__nv_bfloat16><<<grid, threads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace mlp
}  // namespace perceptrons
