// Fused MLP backward on tensor cores, weight gradients included.
//
// A block of kBwdWarps warps takes a chunk of kBwdChunkRows rows at a time (persistent grid). Each
// warp carries its 16 rows' gradient g from the output layer down in registers (g_l = (g_{l+1} W_{l+1})
// * f'(saved_l)); at each layer the block stages g_l and the layer's input h_{l-1} (with a column of
// ones, whose product is the bias gradient) in shared memory, and the warps reduce
// dW_l += g_l^T [h_{l-1}, 1] over the chunk with tensor cores (ldmatrix.trans gives both operands
// their transposed fragments). Each warp owns fixed 32 x 32 tiles of the accumulators, kept in
// shared memory (or, when they do not fit, in the block's global slab), so no float atomics: every
// sum runs in a fixed order, and a second kernel adds the blocks' slabs in block order. Activations
// are read once (the saved fragments) and x twice (recomputing nothing but the output layer's z
// when its activation needs it).
#include <algorithm>

#include "mlp/mlp_cuda_io.cuh"
#include "mlp/mlp_cuda_kernels.cuh"

namespace perceptrons {
namespace mlp {
namespace cuda {
namespace {

using cuda_layout::kBwdChunkRows;
using cuda_layout::kBwdWarps;

template <int KT>
__device__ __forceinline__ void load_saved(uint32_t (&s)[KT][4], const uint4* saved, int64_t tile16, int lane,
                                           bool live) {
#pragma unroll
  for (int kk = 0; kk < KT; ++kk) {
    const uint4 v = live ? saved[(tile16 * KT + kk) * 32 + lane] : make_uint4(0, 0, 0, 0);
    s[kk][0] = v.x; s[kk][1] = v.y; s[kk][2] = v.z; s[kk][3] = v.w;
  }
}

// h = f(z) fragment by fragment, for activations that save z; a copy otherwise.
template <typename T, int KT>
__device__ __forceinline__ void saved_to_input(uint32_t (&h)[KT][4], const uint32_t (&s)[KT][4], Activation a,
                                               float p) {
  const bool pre = activation_needs_preactivation(a);
#pragma unroll
  for (int kk = 0; kk < KT; ++kk)
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      if (pre) {
        float2 v = unpack2<T>(s[kk][r]);
        float w[2] = {v.x, v.y};
        activate<2>(w, a, p);
        h[kk][r] = pack2<T>(w[0], w[1]);
      } else {
        h[kk][r] = s[kk][r];
      }
    }
}

// Writes a warp's A fragments (16 rows, KT * 16 columns) into a row-major staging buffer; rows past
// the batch become zeros.
template <typename T>
__device__ __forceinline__ void stage_frag(T* s, int ld, int srow, int col0, const uint32_t (&a)[4], int g, int t,
                                           bool ok0, bool ok1) {
  uint32_t* r0 = reinterpret_cast<uint32_t*>(s + (srow + g) * ld + col0 + 2 * t);
  uint32_t* r1 = reinterpret_cast<uint32_t*>(s + (srow + g + 8) * ld + col0 + 2 * t);
  r0[0] = ok0 ? a[0] : 0u;
  r1[0] = ok1 ? a[1] : 0u;
  r0[4] = ok0 ? a[2] : 0u;
  r1[4] = ok1 ? a[3] : 0u;
}

template <typename T, int KT>
__device__ __forceinline__ void stage_a(T* s, int ld, int srow, const uint32_t (&a)[KT][4], int g, int t, bool ok0,
                                        bool ok1) {
#pragma unroll
  for (int kk = 0; kk < KT; ++kk) stage_frag<T>(s, ld, srow, kk * 16, a[kk], g, t, ok0, ok1);
}

// Columns [c_from, c_to) of the warp's 16 staging rows: the ones column (bias) at c_from, zeros after.
template <typename T>
__device__ __forceinline__ void stage_tail(T* s, int ld, int srow, int c_from, int c_to, int64_t r0, int64_t batch,
                                           int lane) {
  const int cols = c_to - c_from;
  for (int e = lane; e < 16 * cols; e += 32) {
    const int r = e / cols, c = c_from + e % cols;
    s[(srow + r) * ld + c] = from_float<T>(c == c_from && r0 + r < batch ? 1.f : 0.f);
  }
}

// acc(mt_n * 16 x nt_n * 8, C-fragment order) += sG^T * sH over the chunk's rows. Warp w takes the
// units (2 m-tiles x 4 n-tiles) w, w + kBwdWarps, ...: each accumulator has one owner.
template <typename T>
__device__ __forceinline__ void reduce_chunk(float* acc, int mt_n, int nt_n, const T* sG, int sg_ld, const T* sH,
                                             int sh_ld, int warp, int lane) {
  const int units_m = (mt_n + 1) / 2, units_n = (nt_n + 3) / 4;
  const int q = lane >> 3, r8 = lane & 7;
  for (int u = warp; u < units_m * units_n; u += kBwdWarps) {
    const int um = u / units_n, un = u % units_n;
    bool mv[2], nv[4];
#pragma unroll
    for (int i = 0; i < 2; ++i) mv[i] = um * 2 + i < mt_n;
#pragma unroll
    for (int j = 0; j < 4; ++j) nv[j] = un * 4 + j < nt_n;
    float c[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (mv[i] && nv[j])
          v = *reinterpret_cast<const float4*>(acc + ((int64_t(um * 2 + i) * nt_n + un * 4 + j) * 32 + lane) * 4);
        c[i][j][0] = v.x; c[i][j][1] = v.y; c[i][j][2] = v.z; c[i][j][3] = v.w;
      }
#pragma unroll 2
    for (int ks = 0; ks < kBwdChunkRows / 16; ++ks) {
      uint32_t a[2][4], b[2][4];
#pragma unroll
      for (int i = 0; i < 2; ++i)  // g^T: matrices (rows 0-7, o 0-7), (0-7, 8-15), (8-15, 0-7), (8-15, 8-15)
        if (mv[i]) ldmatrix_x4_trans(a[i], sG + (ks * 16 + (q >> 1) * 8 + r8) * sg_ld + (um * 2 + i) * 16 + (q & 1) * 8);
#pragma unroll
      for (int pp = 0; pp < 2; ++pp)  // h: matrices (rows 0-7, n 2pp), (8-15, 2pp), (0-7, 2pp+1), (8-15, 2pp+1)
        if (nv[2 * pp]) ldmatrix_x4_trans(b[pp], sH + (ks * 16 + (q & 1) * 8 + r8) * sh_ld + (un * 4 + 2 * pp + (q >> 1)) * 8);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
          if (mv[i] && nv[j]) mma_16816<T>(c[i][j], a[i], b[j / 2][2 * (j & 1)], b[j / 2][2 * (j & 1) + 1]);
    }
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (mv[i] && nv[j])
          *reinterpret_cast<float4*>(acc + ((int64_t(um * 2 + i) * nt_n + un * 4 + j) * 32 + lane) * 4) =
              make_float4(c[i][j][0], c[i][j][1], c[i][j][2], c[i][j][3]);
  }
}

template <typename T, int W>
__global__ void __launch_bounds__(kBwdWarps * 32, 1) mlp_backward_kernel(const __grid_constant__ BwdParams p) {
  constexpr int NT = W / 8, KT = W / 16, NP = W / 16;
  extern __shared__ __align__(16) unsigned char smem[];
  T* sG = reinterpret_cast<T*>(smem);
  T* sH = sG + kBwdChunkRows * p.sg_ld;
  float* acc = p.acc_in_smem ? reinterpret_cast<float*>(sH + kBwdChunkRows * p.sh_ld)
                             : p.partials + int64_t(blockIdx.x) * p.acc_total;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int last = p.n_layers - 1;
  const int out_np = (p.out + 15) / 16, in_np = (p.in + 15) / 16;
  const int srow = warp * 16;

  for (int64_t i = threadIdx.x; i < p.acc_total; i += blockDim.x) acc[i] = 0.f;
  __syncthreads();

  const int64_t n_chunks = cuda_layout::ceil_div(p.batch, kBwdChunkRows);
  for (int64_t chunk = blockIdx.x; chunk < n_chunks; chunk += gridDim.x) {
    const int64_t r0 = chunk * kBwdChunkRows + srow;
    const bool live = r0 < p.batch;
    const bool ok0 = r0 + g < p.batch, ok1 = r0 + g + 8 < p.batch;

    uint32_t s[KT][4], h[KT][4];  // what layer last-1 saved, and its output
    load_saved<KT>(s, p.saved[last - 1], r0 / 16, lane, live);
    saved_to_input<T, KT>(h, s, p.act, p.act_p);

    // ---- Output layer: g = dy * f_out'(z), 16 output columns at a time.
    float accg[NT][4];
#pragma unroll
    for (int j = 0; j < NT; ++j) accg[j][0] = accg[j][1] = accg[j][2] = accg[j][3] = 0.f;
    float dn[2][4];  // dy of the next 16 columns, loaded one step ahead
    load_c<T>(dn[0], p.dy, p.batch, p.out, r0, 0, g, t, p.dy_pairs);
    load_c<T>(dn[1], p.dy, p.batch, p.out, r0, 8, g, t, p.dy_pairs);
    for (int jp = 0; jp < out_np; ++jp) {
      float d[2][4];
#pragma unroll
      for (int h2 = 0; h2 < 2; ++h2)
#pragma unroll
        for (int e = 0; e < 4; ++e) d[h2][e] = dn[h2][e];
      if (jp + 1 < out_np) {
        load_c<T>(dn[0], p.dy, p.batch, p.out, r0, jp * 16 + 16, g, t, p.dy_pairs);
        load_c<T>(dn[1], p.dy, p.batch, p.out, r0, jp * 16 + 24, g, t, p.dy_pairs);
      }
      if (p.out_act != Activation::None) {
        float z[2][4];
        bias_c(z[0], p.bias_last, jp * 16, t);
        bias_c(z[1], p.bias_last, jp * 16 + 8, t);
        const uint4* wf = p.wfrag_last + int64_t(jp) * 32 + lane;
#pragma unroll
        for (int kk = 0; kk < KT; ++kk) {
          const uint4 b = __ldg(wf + int64_t(kk) * out_np * 32);
          mma_16816<T>(z[0], h[kk], b.x, b.y);
          mma_16816<T>(z[1], h[kk], b.z, b.w);
        }
        scale_by_grad_from_input<8>(&d[0][0], &z[0][0], p.out_act, p.out_p);
      }
      uint32_t ga[4];
      c_to_a<T>(ga, d[0], d[1]);
      uint32_t* r0p = reinterpret_cast<uint32_t*>(sG + (srow + g) * p.sg_ld + jp * 16 + 2 * t);
      uint32_t* r1p = reinterpret_cast<uint32_t*>(sG + (srow + g + 8) * p.sg_ld + jp * 16 + 2 * t);
      r0p[0] = ga[0]; r1p[0] = ga[1]; r0p[4] = ga[2]; r1p[4] = ga[3];
      const uint4* wb = p.wbfrag[last] + int64_t(jp) * NP * 32 + lane;
#pragma unroll
      for (int jn = 0; jn < NP; ++jn) {
        const uint4 b = __ldg(wb + jn * 32);
        mma_16816<T>(accg[2 * jn], ga, b.x, b.y);
        mma_16816<T>(accg[2 * jn + 1], ga, b.z, b.w);
      }
    }
    stage_a<T, KT>(sH, p.sh_ld, srow, h, g, t, ok0, ok1);
    stage_tail<T>(sH, p.sh_ld, srow, W, p.acc_nt[last] * 8, r0, p.batch, lane);
    __syncthreads();
    reduce_chunk<T>(acc + p.acc_off[last], p.acc_mt[last], p.acc_nt[last], sG, p.sg_ld, sH, p.sh_ld, warp, lane);
    __syncthreads();

    // ---- Hidden layers, top down: layer l maps h_{l-1} (x for l = 0) to h_l, which saved s.
    for (int l = last - 1; l >= 0; --l) {
      uint32_t s2[KT][4];  // the layer below's saved fragments, in flight while this layer computes
      if (l >= 1) load_saved<KT>(s2, p.saved[l - 1], r0 / 16, lane, live);
      float sv[NT][4];
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const float2 lo = unpack2<T>(s[j / 2][2 * (j & 1)]), hi = unpack2<T>(s[j / 2][2 * (j & 1) + 1]);
        sv[j][0] = lo.x; sv[j][1] = lo.y; sv[j][2] = hi.x; sv[j][3] = hi.y;
      }
      scale_by_grad<NT * 4>(&accg[0][0], &sv[0][0], p.act, p.act_p);
      uint32_t ga[KT][4];
#pragma unroll
      for (int kk = 0; kk < KT; ++kk) c_to_a<T>(ga[kk], accg[2 * kk], accg[2 * kk + 1]);
      stage_a<T, KT>(sG, p.sg_ld, srow, ga, g, t, ok0, ok1);
      if (l >= 1) {
        // g_l W_l: K = W (this layer's outputs), N = W.
#pragma unroll
        for (int j = 0; j < NT; ++j) accg[j][0] = accg[j][1] = accg[j][2] = accg[j][3] = 0.f;
        const uint4* wb = p.wbfrag[l] + lane;
#pragma unroll
        for (int kk = 0; kk < KT; ++kk)
#pragma unroll
          for (int jn = 0; jn < NP; ++jn) {
            const uint4 b = __ldg(wb + (kk * NP + jn) * 32);
            mma_16816<T>(accg[2 * jn], ga[kk], b.x, b.y);
            mma_16816<T>(accg[2 * jn + 1], ga[kk], b.z, b.w);
          }
#pragma unroll
        for (int kk = 0; kk < KT; ++kk)
#pragma unroll
          for (int r = 0; r < 4; ++r) s[kk][r] = s2[kk][r];
        saved_to_input<T, KT>(h, s, p.act, p.act_p);
        stage_a<T, KT>(sH, p.sh_ld, srow, h, g, t, ok0, ok1);
        stage_tail<T>(sH, p.sh_ld, srow, W, p.acc_nt[l] * 8, r0, p.batch, lane);
      } else {
        // x, kXGroup k-tiles of fragments in flight at a time, then the ones column.
        constexpr int kXGroup = 4;
        for (int k0 = 0; k0 < in_np; k0 += kXGroup) {
          uint32_t xa[kXGroup][4];
#pragma unroll
          for (int q = 0; q < kXGroup; ++q) load_a(xa[q], p.x, p.batch, p.in, r0, (k0 + q) * 16, g, t, p.x_pairs);
#pragma unroll
          for (int q = 0; q < kXGroup; ++q)
            if (k0 + q < in_np) stage_frag<T>(sH, p.sh_ld, srow, (k0 + q) * 16, xa[q], g, t, true, true);
        }
        __syncwarp();
        stage_tail<T>(sH, p.sh_ld, srow, p.in, p.acc_nt[0] * 8, r0, p.batch, lane);
        if (p.dx) {  // dx = g_0 W_0, any input width, 16 columns at a time
          for (int jp = 0; jp < in_np; ++jp) {
            float o[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
            const uint4* wb = p.wbfrag[0] + int64_t(jp) * 32 + lane;
#pragma unroll
            for (int kk = 0; kk < KT; ++kk) {
              const uint4 b = __ldg(wb + int64_t(kk) * in_np * 32);
              mma_16816<T>(o[0], ga[kk], b.x, b.y);
              mma_16816<T>(o[1], ga[kk], b.z, b.w);
            }
            store_c<T>(p.dx, p.batch, p.in, r0, jp * 16, o[0], g, t, p.dx_pairs);
            store_c<T>(p.dx, p.batch, p.in, r0, jp * 16 + 8, o[1], g, t, p.dx_pairs);
          }
        }
      }
      __syncthreads();
      reduce_chunk<T>(acc + p.acc_off[l], p.acc_mt[l], p.acc_nt[l], sG, p.sg_ld, sH, p.sh_ld, warp, lane);
      __syncthreads();
    }
  }

  if (p.acc_in_smem) {
    float* slab = p.partials + int64_t(blockIdx.x) * p.acc_total;
    for (int64_t i = threadIdx.x; i < p.acc_total; i += blockDim.x) slab[i] = acc[i];
  }
}

// Adds the blocks' slabs in block order and writes dW and db in the parameters' dtype.
template <typename T>
__global__ void reduce_kernel(const __grid_constant__ ReduceParams p) {
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < p.acc_total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    int l = 0;
    while (l + 1 < p.n_layers && p.acc_off[l + 1] <= idx) ++l;
    float sum = 0.f;
    for (int b = 0; b < p.n_slabs; ++b) sum += p.partials[int64_t(b) * p.acc_total + idx];
    const int64_t w = idx - p.acc_off[l];
    const int64_t tile = w / 128;
    const int lane = int(w % 128) / 4, e = int(w % 4);
    const int mt = int(tile / p.acc_nt[l]), nt = int(tile % p.acc_nt[l]);
    const int o = mt * 16 + (lane >> 2) + 8 * (e >> 1);
    const int i = nt * 8 + 2 * (lane & 3) + (e & 1);
    if (o >= p.out[l]) continue;
    if (i < p.in[l]) {
      if (p.dw[l]) static_cast<T*>(p.dw[l])[int64_t(o) * p.in[l] + i] = from_float<T>(sum);
    } else if (i == p.in[l] && p.db[l]) {
      static_cast<T*>(p.db[l])[o] = from_float<T>(sum);
    }
  }
}

template <typename T, int W>
cudaError_t launch(const BwdParams& p, const BwdLaunch& plan, cudaStream_t stream) {
  auto kernel = mlp_backward_kernel<T, W>;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(plan.smem));
  if (e != cudaSuccess) return e;
  kernel<<<plan.grid, kBwdWarps * 32, plan.smem, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_width(int width, const BwdParams& p, const BwdLaunch& plan, cudaStream_t stream) {
  switch (width) {
    case 16: return launch<T, 16>(p, plan, stream);
    case 32: return launch<T, 32>(p, plan, stream);
    case 64: return launch<T, 64>(p, plan, stream);
    case 128: return launch<T, 128>(p, plan, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t plan_backward(const MlpConfig& c, const cuda_layout::Layout& lay, int64_t batch, BwdLaunch* out) {
  int sm_count = 0, optin = 0;
  cudaError_t e = device_limits(&sm_count, &optin);
  if (e != cudaSuccess) return e;
  const int width = c.widths[1], outw = c.widths[c.n_layers];
  BwdLaunch b;
  b.sg_ld = cuda_layout::staging_stride(std::max<int>(width, int(cuda_layout::round_up(outw, 16))));
  int sh_cols = 0;
  for (int l = 0; l < c.n_layers; ++l) sh_cols = std::max(sh_cols, lay.acc_nt[l] * 8);
  b.sh_ld = cuda_layout::staging_stride(sh_cols);
  const size_t staging = size_t(kBwdChunkRows) * (b.sg_ld + b.sh_ld) * 2;
  const size_t with_acc = staging + size_t(lay.acc_total) * 4;
  b.acc_in_smem = with_acc <= size_t(optin);
  b.smem = b.acc_in_smem ? with_acc : staging;
  if (b.smem > size_t(optin)) return cudaErrorInvalidConfiguration;
  // One block per SM (the block uses most of the SM's shared memory or registers); never more
  // blocks than chunks, so each slab sums at least one chunk.
  const int64_t chunks = cuda_layout::ceil_div(batch, kBwdChunkRows);
  b.grid = int(std::max<int64_t>(std::min<int64_t>(chunks, sm_count), 0));
  *out = b;
  return cudaSuccess;
}

cudaError_t launch_backward(DType dtype, int width, const BwdParams& p, const BwdLaunch& plan, cudaStream_t stream) {
  if (plan.grid == 0) return cudaSuccess;
  if (dtype == DType::Float16) return launch_width<__half>(width, p, plan, stream);
  return launch_width<__nv_bfloat16>(width, p, plan, stream);
}

cudaError_t launch_reduce(DType dtype, const ReduceParams& p, int sm_count, cudaStream_t stream) {
  const int threads = 256;
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(cuda_layout::ceil_div(p.acc_total, threads), 4 * int64_t(sm_count)));
  if (dtype == DType::Float16) reduce_kernel<__half><<<unsigned(blocks), threads, 0, stream>>>(p);
  else reduce_kernel<__nv_bfloat16><<<unsigned(blocks), threads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace mlp
}  // namespace perceptrons
