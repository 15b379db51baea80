// Fused MLP backward on tensor cores, weight gradients included.
//
// A block of WARPS warps takes a chunk of WARPS * 16 rows at a time (persistent grid). Each
// warp carries its 16 rows' gradient g from the output layer down in registers (g_l = (g_{l+1} W_{l+1})
// * f'(saved_l)); at each layer the block stages g_l and the layer's input h_{l-1} (with a column of
// ones, whose product is the bias gradient) in shared memory, and the warps reduce
// dW_l += g_l^T [h_{l-1}, 1] over the chunk with tensor cores (ldmatrix.trans gives both operands
// their transposed fragments). Each warp owns fixed 16 x 32 tiles of the accumulators, kept in
// shared memory (or, when they do not fit, in the block's global slab), so no float atomics: every
// sum runs in a fixed order, and a second kernel adds the blocks' slabs in block order. Activations
// are read once (the saved fragments) and x twice (recomputing nothing but the output layer's z
// when its activation needs it).
//
// Prefetch stream. With one block of 8 warps per SM, a global load issued when its layer starts
// stalls the warp for most of its latency. So each warp reads everything it takes from global memory
// (dy, the saved tiles of each layer top down, x) as one stream of items, copied with cp.async into
// its own shared-memory slots `depth` items ahead of the one it consumes (one commit group per item,
// so waiting for an item is cp.async.wait_group depth - 1). All items rotate through the same `depth`
// slots, dy and x (when in / out <= kMaxAsyncBwdIo, a multiple of 8, 16-byte aligned) included: each
// is read (dy copied into the warp's rows of the g staging) before its slot is refilled. Separate dy
// and x slots did not fit next to the 12-warp ReLU plan's accumulators on the H100, which then read dy
// and x straight from global memory at the start and end of every chunk: their latency was 17% of the
// backward's stall samples (ncu, bench/results/h100 run 11). Depth 0 (too little shared memory for
// one slot per warp, e.g. width 128 on sm_86 / sm_89's 99 KB) has no stream: everything is read
// straight from global memory.
#include <algorithm>

#include "mlp/mlp_cuda_async.cuh"
#include "mlp/mlp_cuda_io.cuh"
#include "mlp/mlp_cuda_kernels.cuh"

namespace perceptrons {
namespace mlp {
namespace cuda {
namespace {

using cuda_layout::kBwdWarps;
using cuda_layout::kBwdWarpsWide;

// g * f'(z) for ReLU on a pair of rounded 16-bit gradients, from the pair of saved outputs: f'(z) is
// 1 where the output is > 0 (as activation_grad_from_output, used everywhere else: a NaN output
// blocks the gradient), applied as a bit mask, so a masked gradient is exactly 0 even where rounding
// g to 16 bits overflowed to inf, as rounding g * 0 in float32 gives. Two instructions per pair.
template <typename T>
__device__ __forceinline__ uint32_t relu_grad(uint32_t g_pair, uint32_t saved_pair) {
  if constexpr (std::is_same<T, __half>::value)
    return g_pair & __hgt2_mask(*reinterpret_cast<__half2*>(&saved_pair), __float2half2_rn(0.f));
  else
    return g_pair & __hgt2_mask(*reinterpret_cast<__nv_bfloat162*>(&saved_pair), __float2bfloat162_rn(0.f));
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

// Which of a warp's 16 rows are in the batch: all (full, warp-uniform), else row g (ok0) and g + 8 (ok1).
struct RowsLive {
  bool full, ok0, ok1;
};

// A warp's fragments of KT k-tiles into its 16 staging rows, rows past the batch as zeros. A full tile
// (every tile but the batch's last) stages without the per-register selects.
template <typename T, int KT>
__device__ __forceinline__ void stage_a(T* s, int ld, int srow, const uint32_t (&a)[KT][4], int g, int t,
                                        const RowsLive& live) {
  if (live.full) {
#pragma unroll
    for (int kk = 0; kk < KT; ++kk) stage_frag<T>(s, ld, srow, kk * 16, a[kk], g, t, true, true);
  } else {
#pragma unroll
    for (int kk = 0; kk < KT; ++kk) stage_frag<T>(s, ld, srow, kk * 16, a[kk], g, t, live.ok0, live.ok1);
  }
}

// Columns [c_from, c_to) of the warp's 16 staging rows: the ones column (bias) at c_from, zeros after
// (c_to - c_from <= 8: the columns up to the next multiple of 8). Lane -> (row lane % 16, half of the
// columns), no division: this runs every layer.
template <typename T>
__device__ __forceinline__ void stage_tail(T* s, int ld, int srow, int c_from, int c_to, int64_t r0, int64_t batch,
                                           int lane) {
  const int r = lane & 15, c0 = c_from + (lane >> 4) * 4;
  const T one = from_float<T>(r0 + r < batch ? 1.f : 0.f), zero = from_float<T>(0.f);
  T* row = s + (srow + r) * ld;
#pragma unroll
  for (int j = 0; j < 4; ++j)
    if (c0 + j < c_to) row[c0 + j] = c0 + j == c_from ? one : zero;
}

// acc(mt_n * 16 x nt_n * 8, C-fragment order) += sG^T * sH over the chunk's rows. Units are one m-tile
// by U n-tiles (cuda_layout::reduce_unit_tiles), numbered n-group-major so that the short last n-group
// (the bias column's tile, when the input width is a multiple of 8) comes last: warp w takes units
// w, w + WARPS, ..., and each accumulator has one owner. At width 64 with 12 warps, units of 3 give
// every warp 3 tiles of the 4 x 9; units of 4 gave eight warps 4 and four warps the lone bias tile,
// and the layer waited for the busiest.
template <typename T, int WARPS, int U>
__device__ __forceinline__ void reduce_chunk(float* acc, int mt_n, int nt_n, const T* sG, int sg_ld, const T* sH,
                                             int sh_ld, int warp, int lane) {
  static_assert(U >= 1 && U <= 4, "a unit is 1 to 4 n-tiles");
  constexpr int BP = (U + 1) / 2;  // B loads per k-step: x4 for each pair of n-tiles, x2 for an odd last one
  const int units_n = (nt_n + U - 1) / U;
  const int q = lane >> 3, r8 = lane & 7;
  for (int u = warp; u < mt_n * units_n; u += WARPS) {
    const int un = u / mt_n, um = u - un * mt_n;
    const int nt0 = un * U;
    bool nv[U];
#pragma unroll
    for (int j = 0; j < U; ++j) nv[j] = nt0 + j < nt_n;
    float* unit_acc = acc + ((int64_t(um) * nt_n + nt0) * 32 + lane) * 4;
    float c[U][4];
#pragma unroll
    for (int j = 0; j < U; ++j) {
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (nv[j]) v = *reinterpret_cast<const float4*>(unit_acc + j * 128);
      c[j][0] = v.x; c[j][1] = v.y; c[j][2] = v.z; c[j][3] = v.w;
    }
    const T* ga = sG + ((q >> 1) * 8 + r8) * sg_ld + um * 16 + (q & 1) * 8;
    const T* hb = sH + ((q & 1) * 8 + r8) * sh_ld + (nt0 + (q >> 1)) * 8;
    // g^T: matrices (rows 0-7, o 0-7), (0-7, 8-15), (8-15, 0-7), (8-15, 8-15);
    // h: matrices (rows 0-7, n 2pp), (8-15, 2pp), (0-7, 2pp+1), (8-15, 2pp+1) (x2: the first two).
    // Full units run without predicates: the compiler puts a WARPSYNC before every predicated
    // ldmatrix / mma.sync, which nearly doubled the instructions of this loop.
    if (nt0 + U <= nt_n) {
#pragma unroll 4
      for (int ks = 0; ks < WARPS; ++ks) {
        uint32_t a[4], b[BP][4];
        ldmatrix_x4_trans(a, ga + ks * 16 * sg_ld);
#pragma unroll
        for (int pp = 0; pp < U / 2; ++pp) ldmatrix_x4_trans(b[pp], hb + ks * 16 * sh_ld + pp * 16);
        if constexpr (U % 2 == 1) ldmatrix_x2_trans(b[U / 2], hb + ks * 16 * sh_ld + (U / 2) * 16);
#pragma unroll
        for (int j = 0; j < U; ++j) mma_16816<T>(c[j], a, b[j / 2][2 * (j & 1)], b[j / 2][2 * (j & 1) + 1]);
      }
    } else {
#pragma unroll 2
      for (int ks = 0; ks < WARPS; ++ks) {
        uint32_t a[4], b[BP][4];
        ldmatrix_x4_trans(a, ga + ks * 16 * sg_ld);
#pragma unroll
        for (int pp = 0; pp < BP; ++pp) {
          if (!nv[2 * pp]) continue;
          if (2 * pp + 1 < U && nv[2 * pp + 1]) ldmatrix_x4_trans(b[pp], hb + ks * 16 * sh_ld + pp * 16);
          else ldmatrix_x2_trans(b[pp], hb + ks * 16 * sh_ld + pp * 16);
        }
#pragma unroll
        for (int j = 0; j < U; ++j)
          if (nv[j]) mma_16816<T>(c[j], a, b[j / 2][2 * (j & 1)], b[j / 2][2 * (j & 1) + 1]);
      }
    }
#pragma unroll
    for (int j = 0; j < U; ++j)
      if (nv[j]) *reinterpret_cast<float4*>(unit_acc + j * 128) = make_float4(c[j][0], c[j][1], c[j][2], c[j][3]);
  }
}

// One warp's prefetch stream. Items come P = last + 2 per chunk: position 0 is dy, 1 .. last the
// saved tiles of layers last - 1 .. 0, last + 1 is x. Every item lands in the next of `depth` slots
// (slot_bytes each: a saved tile, or 16 padded rows of dy or x, whichever is larger), so an item's
// slot is refilled by the refill() that follows its consume(): whatever reads a slot does so before
// that. Positions, chunks and slots are stepped, not divided: the kernel issues few instructions per
// mma as it is (its warps are few), and 64-bit divisions per item showed up as a 10% slowdown.
template <int KT, int WARPS>
struct BwdStream {
  const BwdParams& p;
  unsigned char* base;  // this warp's area
  int lane, last, srow;
  int64_t n_chunks;
  RowSegments dy_seg, x_seg;
  int64_t issue_chunk;      // chunk of the next item to issue
  int issue_pos = 0, issue_slot = 0, read_slot = 0;

  __device__ BwdStream(const BwdParams& p_, unsigned char* smem, int warp, int lane_, int64_t n_chunks_)
      : p(p_), base(smem + p_.stream_off + warp * p_.stream_warp_bytes), lane(lane_), last(p_.n_layers - 1),
        srow(warp * 16), n_chunks(n_chunks_), dy_seg(p_.dy_async ? p_.out : 8, lane_),
        x_seg(p_.x_async ? p_.in : 8, lane_), issue_chunk(blockIdx.x) {}

  __device__ unsigned char* slot(int i) const { return base + i * p.slot_bytes; }

  // Issues the next item (an empty group past the warp's last chunk or for a synchronous x / dy).
  __device__ void issue_next() {
    const int64_t r0 = issue_chunk * (WARPS * 16) + srow;
    unsigned char* dst = slot(issue_slot);
    if (issue_chunk < n_chunks) {
      // dy and x rows past the batch land as zeros (the output layer stages g unmasked, the x staging
      // too); a saved tile past the batch does not exist, and read_saved_tile gives zeros for it.
      if (issue_pos == 0) {
        if (p.dy_async) async_copy_rows(reinterpret_cast<uint16_t*>(dst), p.dy, p.batch, p.out, r0, 16, dy_seg);
      } else if (issue_pos <= last) {
        if (r0 < p.batch) {
          const uint4* src = p.saved[last - issue_pos] + (r0 / 16) * KT * 32 + lane;
          uint4* d = reinterpret_cast<uint4*>(dst) + lane;
#pragma unroll
          for (int kk = 0; kk < KT; ++kk) cp_async_16(d + kk * 32, src + kk * 32, 16);
        }
      } else if (p.x_async) {
        async_copy_rows(reinterpret_cast<uint16_t*>(dst), p.x, p.batch, p.in, r0, 16, x_seg);
      }
    }
    cp_async_commit();
    if (++issue_slot == p.depth) issue_slot = 0;
    if (++issue_pos == last + 2) {
      issue_pos = 0;
      issue_chunk += gridDim.x;
    }
  }

  // Waits until the oldest item not yet consumed has landed for every lane of the warp (the
  // `depth` items issued ahead of it may stay in flight) and returns its slot. Depth 0: no stream,
  // nothing to wait for (null).
  __device__ const unsigned char* consume() {
    if (p.depth == 0) return nullptr;
    cp_async_wait(p.depth - 1);
    __syncwarp();
    const unsigned char* s = slot(read_slot);
    if (++read_slot == p.depth) read_slot = 0;
    return s;
  }
  // The saved tile of `layer` for the warp's 16 rows at r0 from its consumed slot, or with depth 0
  // straight from global memory. Zeros past the batch.
  template <int KT_>
  __device__ void read_saved_tile(uint32_t (&s)[KT_][4], const unsigned char* slot_p, int layer, int64_t r0,
                                  bool live) {
    const uint4* src = p.depth == 0 ? p.saved[layer] + (r0 / 16) * KT_ * 32 : reinterpret_cast<const uint4*>(slot_p);
#pragma unroll
    for (int kk = 0; kk < KT_; ++kk) {
      const uint4 v = live ? src[kk * 32 + lane] : make_uint4(0, 0, 0, 0);
      s[kk][0] = v.x; s[kk][1] = v.y; s[kk][2] = v.z; s[kk][3] = v.w;
    }
  }
  // After the consumed item's slot has been read: issues the item `depth` ahead into it.
  __device__ void refill() {
    if (p.depth == 0) return;
    __syncwarp();  // every lane has read the slot that the next item reuses
    issue_next();
  }
};

// RELU: the hidden activation is ReLU, known at compile time. The generic kernel switches on the
// activation at run time, and its unrolled switch cases (exp, tanh, sine ...) make it several times
// larger than its hot loop: ReLU, the usual choice, gets a kernel without them.
template <typename T, int W, bool RELU, int WARPS>
__global__ void __launch_bounds__(WARPS * 32, 1) mlp_backward_kernel(const __grid_constant__ BwdParams p) {
  constexpr int kChunkRows = WARPS * 16;
  constexpr int NT = W / 8, KT = W / 16, NP = W / 16;
  const Activation act = RELU ? Activation::ReLU : p.act;
  extern __shared__ __align__(16) unsigned char smem[];
  T* sG = reinterpret_cast<T*>(smem);
  T* sH = sG + kChunkRows * p.sg_ld;
  float* acc = p.acc_in_smem ? reinterpret_cast<float*>(smem + p.acc_off_smem)
                             : p.partials + int64_t(blockIdx.x) * p.acc_total;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int last = p.n_layers - 1;
  const int out_np = (p.out + 15) / 16, in_np = (p.in + 15) / 16;
  const int srow = warp * 16;
  constexpr int kUnit = cuda_layout::reduce_unit_tiles_for_width(W, WARPS);

  for (int64_t i = threadIdx.x; i < p.acc_total; i += blockDim.x) acc[i] = 0.f;
  __syncthreads();

  const int64_t n_chunks = cuda_layout::ceil_div(p.batch, kChunkRows);
  BwdStream<KT, WARPS> stream(p, smem, warp, lane, n_chunks);
  for (int i = 0; i < p.depth; ++i) stream.issue_next();
  for (int64_t chunk = blockIdx.x; chunk < n_chunks; chunk += gridDim.x) {
    const int64_t r0 = chunk * kChunkRows + srow;
    const bool live = r0 < p.batch;
    const RowsLive rows{r0 + 16 <= p.batch, r0 + g < p.batch, r0 + g + 8 < p.batch};

    // dy: from its slot into this warp's rows of sG (free since the last reduce), where the output
    // layer reads it and overwrites it, position by position, with g; the slot goes back at once.
    const uint16_t* dys = reinterpret_cast<const uint16_t*>(stream.consume());
    if (p.dy_async) {
      copy_rows_shared(reinterpret_cast<uint16_t*>(sG + srow * p.sg_ld), p.sg_ld, dys, p.out, 16, stream.dy_seg);
      __syncwarp();
    }
    stream.refill();
    const uint16_t* dyg = reinterpret_cast<const uint16_t*>(sG) + srow * p.sg_ld;  // this warp's dy rows
    uint32_t s[KT][4], h[KT][4];  // what layer last-1 saved, and its output
    stream.read_saved_tile(s, stream.consume(), last - 1, r0, live);
    stream.refill();
    saved_to_input<T, KT>(h, s, act, p.act_p);

    // ---- Output layer: g = dy * f_out'(z), 16 output columns at a time.
    float accg[NT][4];
#pragma unroll
    for (int j = 0; j < NT; ++j) accg[j][0] = accg[j][1] = accg[j][2] = accg[j][3] = 0.f;
    float dn[2][4];  // dy of the next 16 columns, loaded one step ahead
    if (p.dy_async) {
      load_c_rows<T>(dn[0], dyg, p.sg_ld, p.out, 0, g, t);
      load_c_rows<T>(dn[1], dyg, p.sg_ld, p.out, 8, g, t);
    } else {
      load_c<T>(dn[0], p.dy, p.batch, p.out, r0, 0, g, t, p.dy_pairs);
      load_c<T>(dn[1], p.dy, p.batch, p.out, r0, 8, g, t, p.dy_pairs);
    }
    for (int jp = 0; jp < out_np; ++jp) {
      float d[2][4];
#pragma unroll
      for (int h2 = 0; h2 < 2; ++h2)
#pragma unroll
        for (int e = 0; e < 4; ++e) d[h2][e] = dn[h2][e];
      if (jp + 1 < out_np) {
        if (p.dy_async) {
          load_c_rows<T>(dn[0], dyg, p.sg_ld, p.out, jp * 16 + 16, g, t);
          load_c_rows<T>(dn[1], dyg, p.sg_ld, p.out, jp * 16 + 24, g, t);
        } else {
          load_c<T>(dn[0], p.dy, p.batch, p.out, r0, jp * 16 + 16, g, t, p.dy_pairs);
          load_c<T>(dn[1], p.dy, p.batch, p.out, r0, jp * 16 + 24, g, t, p.dy_pairs);
        }
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
    stage_a<T, KT>(sH, p.sh_ld, srow, h, g, t, rows);
    stage_tail<T>(sH, p.sh_ld, srow, W, p.acc_nt[last] * 8, r0, p.batch, lane);
    __syncthreads();
    reduce_chunk<T, WARPS, kUnit>(acc + p.acc_off[last], p.acc_mt[last], p.acc_nt[last], sG, p.sg_ld, sH, p.sh_ld,
                                  warp, lane);
    __syncthreads();

    // ---- Hidden layers, top down: layer l maps h_{l-1} (x for l = 0) to h_l, which saved s.
    for (int l = last - 1; l >= 0; --l) {
      uint32_t s2[KT][4];  // the layer below's saved fragments (landed in shared memory already)
      const unsigned char* item = stream.consume();
      if (l >= 1) stream.read_saved_tile(s2, item, l - 1, r0, live);
      // l == 0: this chunk's x, read below before this layer's refill.
      const uint16_t* xs = reinterpret_cast<const uint16_t*>(item);
      uint32_t ga[KT][4];
      if (act == Activation::ReLU) {
#pragma unroll
        for (int kk = 0; kk < KT; ++kk) {
          c_to_a<T>(ga[kk], accg[2 * kk], accg[2 * kk + 1]);
#pragma unroll
          for (int r = 0; r < 4; ++r) ga[kk][r] = relu_grad<T>(ga[kk][r], s[kk][r]);
        }
      } else {
        float sv[NT][4];
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          const float2 lo = unpack2<T>(s[j / 2][2 * (j & 1)]), hi = unpack2<T>(s[j / 2][2 * (j & 1) + 1]);
          sv[j][0] = lo.x; sv[j][1] = lo.y; sv[j][2] = hi.x; sv[j][3] = hi.y;
        }
        scale_by_grad<NT * 4>(&accg[0][0], &sv[0][0], act, p.act_p);
#pragma unroll
        for (int kk = 0; kk < KT; ++kk) c_to_a<T>(ga[kk], accg[2 * kk], accg[2 * kk + 1]);
      }
      stage_a<T, KT>(sG, p.sg_ld, srow, ga, g, t, rows);
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
        saved_to_input<T, KT>(h, s, act, p.act_p);
        stage_a<T, KT>(sH, p.sh_ld, srow, h, g, t, rows);
        stage_tail<T>(sH, p.sh_ld, srow, W, p.acc_nt[l] * 8, r0, p.batch, lane);
      } else {
        // x, kXGroup k-tiles of fragments in flight at a time, then the ones column.
        constexpr int kXGroup = 4;
        for (int k0 = 0; k0 < in_np; k0 += kXGroup) {
          uint32_t xa[kXGroup][4];
#pragma unroll
          for (int u = 0; u < kXGroup; ++u) {
            if (p.x_async) load_a_smem(xa[u], xs, p.in, 0, (k0 + u) * 16, g, t);
            else load_a(xa[u], p.x, p.batch, p.in, r0, (k0 + u) * 16, g, t, p.x_pairs);
          }
#pragma unroll
          for (int u = 0; u < kXGroup; ++u)
            if (k0 + u < in_np) stage_frag<T>(sH, p.sh_ld, srow, (k0 + u) * 16, xa[u], g, t, true, true);
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
      stream.refill();
      __syncthreads();
      reduce_chunk<T, WARPS, kUnit>(acc + p.acc_off[l], p.acc_mt[l], p.acc_nt[l], sG, p.sg_ld, sH, p.sh_ld, warp, lane);
      __syncthreads();
    }
  }
  cp_async_wait(0);  // the empty groups past the last chunk

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
  // The instantiations plan_backward chooses from: kBwdWarps for every activation, and kBwdWarpsWide
  // for ReLU up to kBwdWideMaxWidth.
  const bool relu = p.act == Activation::ReLU;
  auto kernel = relu ? mlp_backward_kernel<T, W, true, kBwdWarps> : mlp_backward_kernel<T, W, false, kBwdWarps>;
  if (plan.warps == kBwdWarpsWide) {
    if constexpr (W <= cuda_layout::kBwdWideMaxWidth) {
      if (!relu) return cudaErrorInvalidConfiguration;
      kernel = mlp_backward_kernel<T, W, true, kBwdWarpsWide>;
    } else {
      return cudaErrorInvalidConfiguration;  // plan_backward and the instantiations disagree
    }
  } else if (plan.warps != kBwdWarps) {
    return cudaErrorInvalidConfiguration;
  }
  // The device's opt-in maximum, not this plan's size: another host thread launching the same kernel
  // with a larger plan must not find the limit lowered between its own set and launch.
  int sm_count = 0, optin = 0;
  cudaError_t e = device_limits(&sm_count, &optin);
  if (e == cudaSuccess) e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, optin);
  if (e != cudaSuccess) return e;
  kernel<<<plan.grid, plan.warps * 32, plan.smem, stream>>>(p);
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

cudaError_t plan_backward_for(const MlpConfig& c, const cuda_layout::Layout& lay, int64_t batch, bool x_prefetchable,
                              bool dy_prefetchable, int sm_count, int optin, BwdLaunch* out) {
  const int width = c.widths[1], inw = c.widths[0], outw = c.widths[c.n_layers];
  BwdLaunch b;
  b.sg_ld = cuda_layout::staging_stride(std::max<int>(width, int(cuda_layout::round_up(outw, 16))));
  int sh_cols = 0;
  for (int l = 0; l < c.n_layers; ++l) sh_cols = std::max(sh_cols, lay.acc_nt[l] * 8);
  b.sh_ld = cuda_layout::staging_stride(sh_cols);
  const size_t acc_bytes = size_t(lay.acc_total) * 4;
  // ReLU networks up to width 64 prefer 12 warps per block: their kernels fit 12 warps' registers
  // (<= 168 each), and the backward is latency-bound at 8 (2 warps per scheduler).
  const bool wide_ok = c.activation == Activation::ReLU && width <= cuda_layout::kBwdWideMaxWidth;
  const int warp_choices[2] = {wide_ok ? kBwdWarpsWide : kBwdWarps, kBwdWarps};
  // In order of preference: the accumulators in shared memory (in the global slab every chunk reads
  // and writes them through L2), more warps, a deeper stream, x / dy through it. Depth 0 (no stream)
  // and the accumulators in the global slab always fit the staging of 8 warps on sm_80+.
  const int max_depth = std::min(3, c.n_layers - 1);
  for (int pass = 0; pass < 2; ++pass) {
    for (int wi = 0; wi < 2; ++wi) {
      if (wi == 1 && warp_choices[1] == warp_choices[0]) continue;
      b.warps = warp_choices[wi];
      const size_t staging = size_t(b.warps) * 16 * (b.sg_ld + b.sh_ld) * 2;
      for (int depth = max_depth; depth >= 0; --depth) {
        for (int io = 1; io >= 0; --io) {
          b.depth = depth;
          b.x_async = depth > 0 && io && x_prefetchable;
          b.dy_async = depth > 0 && io && dy_prefetchable;
          if (io && !b.x_async && !b.dy_async) continue;  // the same plan as io = 0
          // One slot size for every item (dy, saved tiles, x rotate through the same slots).
          const int tile_bytes = (width / 16) * 512;
          const int dy_bytes = b.dy_async ? int(cuda_layout::round_up(16 * async_row_stride(outw) * 2, 16)) : 0;
          const int x_bytes = b.x_async ? int(cuda_layout::round_up(16 * async_row_stride(inw) * 2, 16)) : 0;
          b.slot_bytes = std::max(tile_bytes, std::max(dy_bytes, x_bytes));
          b.stream_warp_bytes = depth * b.slot_bytes;
          b.stream_off = int(staging);
          const size_t without_acc = staging + size_t(b.warps) * b.stream_warp_bytes;
          b.acc_off_smem = int(cuda_layout::round_up(int64_t(without_acc), 16));
          b.acc_in_smem = pass == 0;
          b.smem = b.acc_in_smem ? size_t(b.acc_off_smem) + acc_bytes : without_acc;
          if (b.smem > size_t(optin)) continue;
          // One block per SM (the block uses most of the SM's shared memory or registers); never more
          // blocks than chunks, so each slab sums at least one chunk.
          const int64_t chunks = cuda_layout::ceil_div(batch, int64_t(b.warps) * 16);
          b.grid = int(std::max<int64_t>(std::min<int64_t>(chunks, sm_count), 0));
          *out = b;
          return cudaSuccess;
        }
      }
    }
  }
  return cudaErrorInvalidConfiguration;
}

cudaError_t plan_backward(const MlpConfig& c, const cuda_layout::Layout& lay, int64_t batch, const void* x,
                          const void* dy, BwdLaunch* out) {
  int sm_count = 0, optin = 0;
  cudaError_t e = device_limits(&sm_count, &optin);
  if (e != cudaSuccess) return e;
  return plan_backward_for(c, lay, batch, async_rows_ok(x, c.widths[0], cuda_layout::kMaxAsyncBwdIo),
                           async_rows_ok(dy, c.widths[c.n_layers], cuda_layout::kMaxAsyncBwdIo), sm_count, optin,
                           out);
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
