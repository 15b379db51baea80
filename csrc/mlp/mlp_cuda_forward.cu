// Fused MLP forward on tensor cores: inference (only y touches global memory) and the training
// forward (also each hidden layer's saved fragments). A persistent grid; each warp walks tiles of
// 16 * MT rows and carries them through every layer in registers. Weight fragments come from the
// repacked buffer through the read-only cache: every warp of every block reads the same few KB.
// When x allows it (p.x_async: in % 8 == 0, in <= kMaxAsyncIn, 16-byte aligned), each warp copies its
// next tile's rows of x into shared memory (cp.async, two buffers per warp) while it computes the
// current one, so the few warps per SM do not stall on global loads at the start of every tile.
#include <algorithm>

#include "mlp/mlp_cuda_async.cuh"
#include "mlp/mlp_cuda_io.cuh"
#include "mlp/mlp_cuda_kernels.cuh"

namespace perceptrons {
namespace mlp {
namespace cuda {
namespace {

using cuda_layout::kFwdWarps;

// Shared memory per warp: two x buffers when x is prefetched (the tile computed and the next one),
// else one when y is staged; a buffer holds a tile's rows of x and, once layer 0 has read them, of y.
PCT_HD int io_buffers(const FwdParams& p) { return p.x_async ? 2 : p.y_stage ? 1 : 0; }
PCT_HD int io_buffer_elems(const FwdParams& p, int rows) {
  return rows * std::max(p.x_async ? async_row_stride(p.in) : 0, p.y_stage ? async_row_stride(p.out) : 0);
}

// A warp's fragments of one 16-row tile (tt) into layer l's saved buffer (fragment order).
template <int KT>
__device__ __forceinline__ void save_fragments(const FwdParams& p, int l, int64_t tt, const uint32_t (&a)[KT][4],
                                               int lane) {
#pragma unroll
  for (int kk = 0; kk < KT; ++kk)
    p.saved[l][(tt * KT + kk) * 32 + lane] = make_uint4(a[kk][0], a[kk][1], a[kk][2], a[kk][3]);
}

// Hidden layer epilogue: activation, optional save, and C -> A conversion for the next layer. ReLU
// (known at compile time) and the rounding to 16 bits are one cvt per pair (H100, w64x4, 2^21 rows,
// fp16: inference kernel 0.332-0.336 -> 0.329-0.332 ms, bench/results/h100 run 18) instead of a compare
// and select per value and a cvt per pair.
template <typename T, int W, int MT, bool TRAIN, bool RELU>
__device__ __forceinline__ void finish_hidden(float (&acc)[MT][W / 8][4], uint32_t (&a)[MT][W / 16][4],
                                              const FwdParams& p, Activation act, int l, int64_t tile, int lane) {
  constexpr int KT = W / 16;
  const bool save_z = !RELU && TRAIN && activation_needs_preactivation(act);
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    const int64_t tt = tile * MT + m;  // 16-row tile index
    const bool store = TRAIN && tt * 16 < p.batch;
    if constexpr (RELU) {
#pragma unroll
      for (int kk = 0; kk < KT; ++kk) c_to_a<T, true>(a[m][kk], acc[m][2 * kk], acc[m][2 * kk + 1]);
    } else {
      if (save_z) {
#pragma unroll
        for (int kk = 0; kk < KT; ++kk) c_to_a<T>(a[m][kk], acc[m][2 * kk], acc[m][2 * kk + 1]);
        if (store) save_fragments<KT>(p, l, tt, a[m], lane);
      }
      activate<(W / 8) * 4>(&acc[m][0][0], act, p.act_p);
#pragma unroll
      for (int kk = 0; kk < KT; ++kk) c_to_a<T>(a[m][kk], acc[m][2 * kk], acc[m][2 * kk + 1]);
    }
    if (store && !save_z) save_fragments<KT>(p, l, tt, a[m], lane);
  }
}

// Layer 0 with x read as 16-byte row segments, two 32-column blocks at a time: lane (g, t) reads
// columns 8t .. 8t + 7 of rows g and g + 8, the A fragments of both k-tiles of the block in layer 0's
// k-permuted packing (mlp_cuda_layout.h). From the tile's prefetched rows in shared memory (xs, row
// stride async_row_stride(in), rows past the batch already zeros) when FROM_SMEM, else straight from
// global memory, streamed once (evict-first loads).
template <typename T, int W, int MT, bool FROM_SMEM>
__device__ __forceinline__ void layer0_from_row_segments(float (&acc)[MT][W / 8][4], const FwdParams& p, int64_t row0,
                                                         const uint16_t* xs, int g, int t, int lane) {
  constexpr int NP = W / 16;
  const uint4* xr = static_cast<const uint4*>(p.x);
  const int in_v = p.in / 8;  // 16-byte segments per row
  const int ld_v = async_row_stride(p.in) / 8;
  for (int c0 = 0; c0 < in_v; c0 += 8) {
    uint4 xv[2][MT][2];
#pragma unroll
    for (int q = 0; q < 2; ++q)
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = 16 * m + g + 8 * h;
          const int c = c0 + 4 * q + t;
          if constexpr (FROM_SMEM)
            xv[q][m][h] = c < in_v ? reinterpret_cast<const uint4*>(xs)[r * ld_v + c] : make_uint4(0, 0, 0, 0);
          else
            xv[q][m][h] =
                (row0 + r < p.batch && c < in_v) ? __ldcs(xr + (row0 + r) * in_v + c) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      if (c0 + 4 * q >= in_v) break;
#pragma unroll
      for (int kt = 0; kt < 2; ++kt) {
        const uint4* wf = p.wfrag[0] + int64_t(c0 / 2 + 2 * q + kt) * NP * 32 + lane;
        uint32_t xa[MT][4];
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          const uint4 lo = xv[q][m][0], hi = xv[q][m][1];
          xa[m][0] = kt ? lo.z : lo.x;
          xa[m][1] = kt ? hi.z : hi.x;
          xa[m][2] = kt ? lo.w : lo.y;
          xa[m][3] = kt ? hi.w : hi.y;
        }
#pragma unroll
        for (int jp = 0; jp < NP; ++jp) {
          const uint4 b = __ldg(wf + jp * 32);
#pragma unroll
          for (int m = 0; m < MT; ++m) {
            mma_16816<T>(acc[m][2 * jp], xa[m], b.x, b.y);
            mma_16816<T>(acc[m][2 * jp + 1], xa[m], b.z, b.w);
          }
        }
      }
    }
  }
}

// RELU: the hidden activation is ReLU, known at compile time (see the backward: the run-time switch
// over every activation, unrolled, makes the generic kernel several times larger than its hot loop).
template <typename T, int W, int MT, bool TRAIN, bool RELU>
__global__ void __launch_bounds__(kFwdWarps * 32) mlp_forward_kernel(const __grid_constant__ FwdParams p) {
  constexpr int NT = W / 8, KT = W / 16, NP = W / 16;
  const Activation act = RELU ? Activation::ReLU : p.act;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int64_t n_tiles = cuda_layout::ceil_div(p.batch, 16 * MT);
  const int in_kt = (p.in + 15) / 16, out_np = (p.out + 15) / 16;
  const int last = p.n_layers - 1;
  extern __shared__ __align__(16) uint16_t x_smem[];
  const int x_buf = io_buffer_elems(p, 16 * MT);  // elements per buffer
  uint16_t* my_x = x_smem + warp * io_buffers(p) * x_buf;
  const int64_t step = int64_t(gridDim.x) * kFwdWarps;
  int64_t tile = int64_t(blockIdx.x) * kFwdWarps + warp;
  const RowSegments x_seg(p.x_async ? p.in : 8, lane), y_seg(p.y_stage ? p.out : 8, lane);
  if (p.x_async) {
    if (tile < n_tiles) async_copy_rows(my_x, p.x, p.batch, p.in, tile * 16 * MT, 16 * MT, x_seg);
    cp_async_commit();
  }

  for (int buf = 0; tile < n_tiles; tile += step, buf ^= 1) {
    const int64_t row0 = tile * 16 * MT;
    float acc[MT][NT][4];
    uint32_t a[MT][KT][4];
    const uint16_t* xs = my_x + buf * x_buf;
    if (p.x_async) {
      __syncwarp();  // every lane is done with the other buffer (the previous tile) before it refills
      if (tile + step < n_tiles)
        async_copy_rows(my_x + (buf ^ 1) * x_buf, p.x, p.batch, p.in, (tile + step) * 16 * MT, 16 * MT, x_seg);
      cp_async_commit();
      cp_async_wait(1);  // this tile's rows have landed (the next tile's may still be in flight)
      __syncwarp();      // ... for every lane's copies, not only this lane's
    }

    // Layer 0: any input width, streamed k-tile by k-tile from x.
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int j = 0; j < NT; ++j) bias_c(acc[m][j], p.bias[0], j * 8, t);
    // x as 16-byte row segments where it allows, else kXGroup k-tiles at a time (all loads of a group
    // in flight together), from the prefetched rows or straight from global memory.
    constexpr int kXGroup = 4;
    if (p.x_vec) {
      if (p.x_async) layer0_from_row_segments<T, W, MT, true>(acc, p, row0, xs, g, t, lane);
      else layer0_from_row_segments<T, W, MT, false>(acc, p, row0, xs, g, t, lane);
    } else
      for (int k0 = 0; k0 < in_kt; k0 += kXGroup) {
        uint32_t xa[kXGroup][MT][4];
#pragma unroll
        for (int q = 0; q < kXGroup; ++q)
#pragma unroll
          for (int m = 0; m < MT; ++m) {
            if (p.x_async) load_a_smem(xa[q][m], xs, p.in, 16 * m, (k0 + q) * 16, g, t);
            else load_a(xa[q][m], p.x, p.batch, p.in, row0 + 16 * m, (k0 + q) * 16, g, t, p.x_pairs);
          }
#pragma unroll
        for (int q = 0; q < kXGroup; ++q) {
          if (k0 + q >= in_kt) break;
          const uint4* wf = p.wfrag[0] + int64_t(k0 + q) * NP * 32 + lane;
#pragma unroll
          for (int jp = 0; jp < NP; ++jp) {
            const uint4 b = __ldg(wf + jp * 32);
#pragma unroll
            for (int m = 0; m < MT; ++m) {
              mma_16816<T>(acc[m][2 * jp], xa[q][m], b.x, b.y);
              mma_16816<T>(acc[m][2 * jp + 1], xa[q][m], b.z, b.w);
            }
          }
        }
      }
    finish_hidden<T, W, MT, TRAIN, RELU>(acc, a, p, act, 0, tile, lane);

    // Hidden layers W -> W.
    for (int l = 1; l < last; ++l) {
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int j = 0; j < NT; ++j) bias_c(acc[m][j], p.bias[l], j * 8, t);
      const uint4* wf = p.wfrag[l] + lane;
#pragma unroll
      for (int kk = 0; kk < KT; ++kk) {
#pragma unroll
        for (int jp = 0; jp < NP; ++jp) {
          const uint4 b = __ldg(wf + (kk * NP + jp) * 32);
#pragma unroll
          for (int m = 0; m < MT; ++m) {
            mma_16816<T>(acc[m][2 * jp], a[m][kk], b.x, b.y);
            mma_16816<T>(acc[m][2 * jp + 1], a[m][kk], b.z, b.w);
          }
        }
      }
      finish_hidden<T, W, MT, TRAIN, RELU>(acc, a, p, act, l, tile, lane);
    }

    // Output layer: any output width, 16 columns at a time. With p.y_stage the rounded tile goes
    // through shared memory (the current x buffer, free since layer 0, or the warp's own buffer) and
    // out in 16-byte row segments: 8 coalesced stores per lane instead of 32 scattered 4-byte ones.
    uint16_t* ys = my_x + (p.x_async ? buf : 0) * x_buf;
    if (p.y_stage) __syncwarp();  // every lane has read its x fragments from that buffer
    for (int jp = 0; jp < out_np; ++jp) {
      float o[MT][2][4];
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        bias_c(o[m][0], p.bias[last], jp * 16, t);
        bias_c(o[m][1], p.bias[last], jp * 16 + 8, t);
      }
      const uint4* wf = p.wfrag[last] + int64_t(jp) * 32 + lane;
#pragma unroll
      for (int kk = 0; kk < KT; ++kk) {
        const uint4 b = __ldg(wf + int64_t(kk) * out_np * 32);
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          mma_16816<T>(o[m][0], a[m][kk], b.x, b.y);
          mma_16816<T>(o[m][1], a[m][kk], b.z, b.w);
        }
      }
      activate<MT * 8>(&o[0][0][0], p.out_act, p.out_p);
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        if (p.y_stage) {
          uint32_t h[4];
          c_to_a<T>(h, o[m][0], o[m][1]);
          stage_frag<uint16_t>(ys, async_row_stride(p.out), 16 * m, jp * 16, h, g, t, true, true);
        } else {
          store_c<T>(p.y, p.batch, p.out, row0 + 16 * m, jp * 16, o[m][0], g, t, p.y_pairs);
          store_c<T>(p.y, p.batch, p.out, row0 + 16 * m, jp * 16 + 8, o[m][1], g, t, p.y_pairs);
        }
      }
    }
    if (p.y_stage) {
      __syncwarp();  // the whole tile is staged
      store_rows(p.y, p.batch, p.out, row0, 16 * MT, ys, y_seg);
      __syncwarp();  // read out before the buffer is refilled (next tile's x or y)
    }
  }
}

// Rows per warp tile: two m-tiles share each weight fragment load up to width 64; at 128 the
// accumulators of one m-tile already take 64 registers.
template <int W>
constexpr int rows_tiles() { return W <= 64 ? 2 : 1; }

// Whether ReLU gets its own kernel (RELU = true) at this width and task. Everywhere but at width-128
// inference, where the generic kernel (ReLU through the run-time switch, same bits) is faster: H100,
// w128x4, 2^21 rows, fp16, inference kernel 1.553 ms generic against 1.712 ms ReLU kernel (run 24,
// six alternated rounds; the ReLU kernel with a compare and select per value instead of the one cvt:
// 1.795). The width-128 training forward keeps its ReLU kernel (3.345 ms against 3.601 generic).
template <int W, bool TRAIN>
constexpr bool relu_kernel() { return TRAIN || W < 128; }

template <typename T, int W, bool TRAIN>
cudaError_t launch(const FwdParams& p, int sm_count, cudaStream_t stream) {
  constexpr int MT = rows_tiles<W>();
  const bool relu = relu_kernel<W, TRAIN>() && p.act == Activation::ReLU;
  auto kernel = mlp_forward_kernel<T, W, MT, TRAIN, false>;
  if constexpr (relu_kernel<W, TRAIN>())
    if (relu) kernel = mlp_forward_kernel<T, W, MT, TRAIN, true>;
  // Two x buffers per warp when x is copied asynchronously, one when only y is staged (at most
  // kMaxAsyncIn columns each: 70 KB per block at 128, still two blocks per SM at width 128 and three
  // below).
  const int smem = kFwdWarps * io_buffers(p) * io_buffer_elems(p, 16 * MT) * 2;
  // Per device (the shared-memory attribute belongs to the device's context), per instantiation
  // and shared-memory size (slot: buffers per warp x 18 + row stride / 8, the stride being 0 or
  // 16 .. kMaxAsyncIn + 8): the kernel's shared-memory limit, set once to the most any widths need,
  // and its occupancy (the query is not free).
  constexpr int kStrides = cuda_layout::kMaxAsyncIn / 8 + 2, kSlots = 3 * kStrides, kDevices = 16;
  static int per_sm_cache[kDevices][2][kSlots] = {};
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  int uncached = 0;
  const int slot = io_buffers(p) * kStrides + io_buffer_elems(p, 1) / 8;
  int& per_sm = dev < kDevices ? per_sm_cache[dev][relu][slot] : uncached;
  if (per_sm == 0) {
    e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             kFwdWarps * 2 * 16 * MT * async_row_stride(cuda_layout::kMaxAsyncIn) * 2);
    if (e != cudaSuccess) return e;
    int n = 0;
    e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kFwdWarps * 32, smem);
    if (e != cudaSuccess) return e;
    per_sm = std::max(n, 1);
  }
  const int64_t tiles = cuda_layout::ceil_div(p.batch, 16 * MT);
  const int64_t blocks = std::min<int64_t>(cuda_layout::ceil_div(tiles, kFwdWarps), int64_t(sm_count) * per_sm);
  kernel<<<unsigned(blocks), kFwdWarps * 32, smem, stream>>>(p);
  return cudaGetLastError();
}

template <typename T, bool TRAIN>
cudaError_t launch_width(int width, const FwdParams& p, int sm_count, cudaStream_t stream) {
  switch (width) {
    case 16: return launch<T, 16, TRAIN>(p, sm_count, stream);
    case 32: return launch<T, 32, TRAIN>(p, sm_count, stream);
    case 64: return launch<T, 64, TRAIN>(p, sm_count, stream);
    case 128: return launch<T, 128, TRAIN>(p, sm_count, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_forward(DType dtype, int width, bool training, const FwdParams& p, int sm_count,
                           cudaStream_t stream) {
  if (dtype == DType::Float16)
    return training ? launch_width<__half, true>(width, p, sm_count, stream)
                    : launch_width<__half, false>(width, p, sm_count, stream);
  return training ? launch_width<__nv_bfloat16, true>(width, p, sm_count, stream)
                  : launch_width<__nv_bfloat16, false>(width, p, sm_count, stream);
}

}  // namespace cuda
}  // namespace mlp
}  // namespace perceptrons
