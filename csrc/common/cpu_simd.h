// SIMD building blocks for the CPU kernels, written with GCC/Clang vector extensions so one source
// compiles to SSE2, AVX2+FMA or AVX-512 depending on the flags of the translation unit.
//
// Include this ONLY inside the per-ISA namespace of a kernel unit (see CMakeLists.txt): every
// function here must end up with a distinct symbol per ISA. It includes no system header.
#pragma once

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
constexpr int kAccRegs = 24;  // of 32 zmm: 24 accumulators, the rest for B rows
constexpr int kMaxNV = 4;     // vectors of C per micro-tile row
#elif defined(__AVX2__)
constexpr int kVecBytes = 32;
constexpr int kAccRegs = 12;  // of 16 ymm
constexpr int kMaxNV = 2;
#else
constexpr int kVecBytes = 16;
constexpr int kAccRegs = 12;  // of 16 xmm
constexpr int kMaxNV = 2;
#endif
constexpr int kMaxMB = 12;

template <typename T>
struct Simd {
  typedef T V __attribute__((vector_size(kVecBytes)));
  static constexpr int L = kVecBytes / int(sizeof(T));
  static inline __attribute__((always_inline)) V load(const T* p) {
    V v;
    __builtin_memcpy(&v, p, sizeof(V));
    return v;
  }
  static inline __attribute__((always_inline)) void store(T* p, V v) { __builtin_memcpy(p, &v, sizeof(V)); }
  static inline void store_partial(T* p, V v, int n) {
    T tmp[L];
    __builtin_memcpy(tmp, &v, sizeof(V));
    for (int i = 0; i < n; ++i) p[i] = tmp[i];
  }
  static inline __attribute__((always_inline)) V splat(T s) { return V{} + s; }
};

// Compile-time index lists for __builtin_shufflevector (hand-made: this header includes nothing).
template <int... I>
struct IndexList {};
template <int N, int... I>
struct MakeIndexList : MakeIndexList<N - 1, N - 1, I...> {};
template <int... I>
struct MakeIndexList<0, I...> {
  using type = IndexList<I...>;
};

// Lanes 0..L/2-1 (Hi = false) or L/2..L-1 (Hi = true) of a and b, interleaved: a_j b_j a_j+1 b_j+1 ...
template <bool Hi, typename V, int... I>
inline __attribute__((always_inline)) V interleave(V a, V b, IndexList<I...>) {
  constexpr int L = sizeof...(I);
  return __builtin_shufflevector(a, b, ((I % 2 == 0 ? 0 : L) + (Hi ? L / 2 : 0) + I / 2)...);
}

// Transposes one L x L block (L = the vector length): row c of the result goes to dst_row(c0 + c)
// + r0 and holds src_row(r0 + r)[c0 + c] for r < L. log2(L) rounds of L interleaves, each round
// pairing row k with row k + L/2 (after the last round row c holds column c), instead of L * L
// scalar moves with a strided side: weight packing transposes W this way on every call, and at small
// batches the element-wise transpose cost as much as the layer's arithmetic. Rows are given by
// functions (row index -> pointer) so that a routed model's rows can come from different copies.
template <typename T, typename SrcRow, typename DstRow>
inline void transpose_block(SrcRow src_row, DstRow dst_row, int r0, int c0) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::L;
  using Idx = typename MakeIndexList<L>::type;
  V r[L], t[L];
#pragma GCC unroll 16
  for (int i = 0; i < L; ++i) r[i] = S::load(src_row(r0 + i) + c0);
#pragma GCC unroll 4
  for (int round = 1; round < L; round *= 2) {
#pragma GCC unroll 8
    for (int k = 0; k < L / 2; ++k) {
      t[2 * k] = interleave<false>(r[k], r[k + L / 2], Idx{});
      t[2 * k + 1] = interleave<true>(r[k], r[k + L / 2], Idx{});
    }
#pragma GCC unroll 16
    for (int i = 0; i < L; ++i) r[i] = t[i];
  }
#pragma GCC unroll 16
  for (int i = 0; i < L; ++i) S::store(dst_row(c0 + i) + r0, r[i]);
}

// dst_row(c)[r] = src_row(r)[c] for r < rows, c < cols: whole L x L blocks in registers, the edges
// element by element.
template <typename T, typename SrcRow, typename DstRow>
void transpose_rows(SrcRow src_row, DstRow dst_row, int rows, int cols) {
  constexpr int L = Simd<T>::L;
  const int rb = rows / L * L, cb = cols / L * L;  // the part covered by whole blocks
  for (int r0 = 0; r0 < rb; r0 += L)
    for (int c0 = 0; c0 < cb; c0 += L) transpose_block<T>(src_row, dst_row, r0, c0);
  for (int c = 0; c < cols; ++c) {
    T* d = dst_row(c);
    for (int r = c < cb ? rb : 0; r < rows; ++r) d[r] = src_row(r)[c];
  }
}

// Sum of a vector's lanes by halving (a log2(L)-deep tree instead of an L-deep chain of adds).
template <typename T>
inline T hsum(typename Simd<T>::V v) {
  constexpr int L = Simd<T>::L;
  T b[L];
  Simd<T>::store(b, v);
#pragma GCC unroll 8
  for (int w = L / 2; w >= 1; w /= 2)
#pragma GCC unroll 16
    for (int l = 0; l < w; ++l) b[l] += b[l + w];
  return b[0];
}

// Rows per micro-tile for nv vectors of C. One vector wide with a run-time row stride of A, the cap is
// 8 rows, not kAccRegs: each row of A then needs its own address register, and 12 rows spill the
// general-purpose registers inside the k loop (measured on AVX-512, K = 64, data in L1: 8 rows 70-72%
// of the FMA peak, 12 rows 59-63%). With the stride known at compile time (const_stride) every row is
// one base register plus a constant offset, and 12 rows run best (see kConstStrides).
constexpr int mb_max_for(int nv, bool const_stride = false) {
  return nv == 1 && !const_stride ? 8 : kAccRegs / nv < kMaxMB ? kAccRegs / nv : kMaxMB;
}

// Where a GEMM's B rows are. Row k at b + k * ld: packed weights, tiles, saved activations.
template <typename T>
struct StridedRows {
  const T* b;
  long ld;
  const T* row(int k) const { return b + k * ld; }
  StridedRows shifted(int cols) const { return {b + cols, ld}; }
};
// Row k wherever a table says: a routed model's weight rows, which live in different copies (read in
// place instead of copied into a strided buffer first; at unit granularity that copy cost more than
// the backward's arithmetic).
template <typename T>
struct RowTable {
  const T* const* rows;
  long col;
  const T* row(int k) const { return rows[k] + col; }
  RowTable shifted(int cols) const { return {rows, col + cols}; }
};

// Where a GEMM's C rows are (stored, and read first with Init::Load). Row m at c + m * ldc: tiles,
// saved layers, the user's arrays.
template <typename T>
struct StridedOut {
  T* c;
  long ldc;
  T* row(int m) const { return c + m * ldc; }
  StridedOut from_row(int m0) const { return {c + m0 * ldc, ldc}; }
  StridedOut shifted(int cols) const { return {c + cols, ldc}; }
};
// Row m wherever a table says: a unit-routed model's weight-gradient rows, which belong to different
// copies (written in place instead of through a buffer and a copy).
template <typename T>
struct OutRowTable {
  T* const* rows;
  long col;
  T* row(int m) const { return rows[m] + col; }
  OutRowTable from_row(int m0) const { return {rows + m0, col}; }
  OutRowTable shifted(int cols) const { return {rows, col + cols}; }
};

// How a micro-tile's accumulators start.
// Row: a row vector down every row (the bias, batch-major); Col: init_row[m] along row m (the bias,
// feature-major); Load: C += A B.
enum class Init { Zero, Row, Col, Load };
// What is applied in registers before the store. Other activations run as a separate pass.
enum class Epi { Store, ReLU, Leaky };

// C[m][n] (Init) + sum_k A(m, k) * B[k][n] for an MB x (NV vectors) micro-tile. A is read as
// broadcast scalars: at a[m*sam + k*sak], so the same kernel serves W x, W^T g and the weight-gradient
// outer products; or, with TableA, at rows[m][k] where `a` carries the row table `rows` (a layer's
// weight rows, the A operand of the feature-major forward; a unit-routed model's rows live in
// different copies). The table travels in `a` rather than in an operand struct because a struct
// argument of this size is passed through memory, and the kernel measured 10-20% slower so (fused
// forward tile loop, AVX-512). Each B row is contiguous (BRows says where row k starts), and so is
// each C row (CRows). Stores at most n_store columns.
// kSam: A's row stride fixed at compile time (sam is then ignored; 0: sam at run time).
template <typename T, int MB, int NV, bool TableA, typename BRows, typename CRows, long kSam = 0>
void gemm_micro(int K, const T* __restrict a, long sam, long sak, BRows b, CRows c, int n_store, Init init,
                const T* __restrict init_row, Epi epi, T ep) {
  if constexpr (kSam != 0) sam = kSam;
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int VL = S::L;
  V acc[MB][NV];
  if (init == Init::Row) {
#pragma GCC unroll 16
    for (int j = 0; j < NV; ++j) {
      V r = S::load(init_row + j * VL);
#pragma GCC unroll 16
      for (int m = 0; m < MB; ++m) acc[m][j] = r;
    }
  } else if (init == Init::Col) {
#pragma GCC unroll 16
    for (int m = 0; m < MB; ++m)
#pragma GCC unroll 16
      for (int j = 0; j < NV; ++j) acc[m][j] = S::splat(init_row[m]);
  } else if (init == Init::Load) {
#pragma GCC unroll 16
    for (int m = 0; m < MB; ++m)
#pragma GCC unroll 16
      for (int j = 0; j < NV; ++j) acc[m][j] = S::load(c.row(m) + j * VL);
  } else {
#pragma GCC unroll 16
    for (int m = 0; m < MB; ++m)
#pragma GCC unroll 16
      for (int j = 0; j < NV; ++j) acc[m][j] = V{};
  }
  // A row table's rows are loaded once, before the k loop.
  const T* arow[TableA ? MB : 1];
  if constexpr (TableA) {
#pragma GCC unroll 16
    for (int m = 0; m < MB; ++m) arow[m] = reinterpret_cast<const T* const*>(a)[m];
  }
  for (int k = 0; k < K; ++k) {
    V bv[NV];
    const T* __restrict bk = b.row(k);
#pragma GCC unroll 16
    for (int j = 0; j < NV; ++j) bv[j] = S::load(bk + j * VL);
    const T* ak = a + k * sak;
#pragma GCC unroll 16
    for (int m = 0; m < MB; ++m) {
      T s;
      if constexpr (TableA) s = arow[m][k];
      else s = ak[m * sam];
#pragma GCC unroll 16
      for (int j = 0; j < NV; ++j) acc[m][j] += bv[j] * s;
    }
  }
  if (epi == Epi::ReLU) {
#pragma GCC unroll 16
    for (int m = 0; m < MB; ++m)
#pragma GCC unroll 16
      // NaN compares false and is kept; -0 compares true and becomes +0, as the scalar relu gives.
      // One compare and one masked move (the former compare, select and + 0 took a third more of the
      // FMA ports' time in the epilogue: forward layer 0, K = 32, 3.6% faster standalone).
      for (int j = 0; j < NV; ++j) acc[m][j] = acc[m][j] <= T(0) ? T(0) : acc[m][j];
  } else if (epi == Epi::Leaky) {
#pragma GCC unroll 16
    for (int m = 0; m < MB; ++m)
#pragma GCC unroll 16
      for (int j = 0; j < NV; ++j) acc[m][j] = acc[m][j] > T(0) ? acc[m][j] : acc[m][j] * ep;
  }
  if (n_store >= NV * VL) {
#pragma GCC unroll 16
    for (int m = 0; m < MB; ++m)
#pragma GCC unroll 16
      for (int j = 0; j < NV; ++j) S::store(c.row(m) + j * VL, acc[m][j]);
  } else {
    // Unrolled like every other use of acc: one runtime index would force acc out of registers.
#pragma GCC unroll 16
    for (int m = 0; m < MB; ++m)
#pragma GCC unroll 16
      for (int j = 0; j < NV; ++j) {
        const int left = n_store - j * VL;
        if (left >= VL) S::store(c.row(m) + j * VL, acc[m][j]);
        else if (left > 0) S::store_partial(c.row(m) + j * VL, acc[m][j], left);
      }
  }
}

template <typename T, typename BRows, typename CRows>
using GemmMicroFn = void (*)(int, const T*, long, long, BRows, CRows, int, Init, const T*, Epi, T);

template <typename T, bool TableA, typename BRows, typename CRows, int NV, long kSam = 0>
GemmMicroFn<T, BRows, CRows> pick_micro(int mb) {
  constexpr int X = mb_max_for(NV, kSam != 0);
#define PCT_MB_CASE(k) \
  case k: return &gemm_micro<T, (k < X ? k : X), NV, TableA, BRows, CRows, kSam>;
  switch (mb) {
    PCT_MB_CASE(1) PCT_MB_CASE(2) PCT_MB_CASE(3) PCT_MB_CASE(4) PCT_MB_CASE(5) PCT_MB_CASE(6)
    PCT_MB_CASE(7) PCT_MB_CASE(8) PCT_MB_CASE(9) PCT_MB_CASE(10) PCT_MB_CASE(11) PCT_MB_CASE(12)
  }
#undef PCT_MB_CASE
  return nullptr;
}

template <typename T, bool TableA, typename BRows, typename CRows>
GemmMicroFn<T, BRows, CRows> pick_micro(int nv, int mb) {
  switch (nv) {
    case 1: return pick_micro<T, TableA, BRows, CRows, 1>(mb);
    case 2: return pick_micro<T, TableA, BRows, CRows, (2 <= kMaxNV ? 2 : kMaxNV)>(mb);
    case 3: return pick_micro<T, TableA, BRows, CRows, (3 <= kMaxNV ? 3 : kMaxNV)>(mb);
    default: return pick_micro<T, TableA, BRows, CRows, kMaxNV>(mb);
  }
}

// The row strides of A that one-vector micro-tiles get at compile time. C is one vector wide for a
// layer of at most 16 floats on AVX-512 (8 on AVX2; the headline MLP 32-64-64-16 ends in one); A is
// then the layer's input: the user's x for layer 0 (stride: its width), else the tile, whose stride
// is the widest layer padded to 16 elements, so 16, 32, 64 or 128 for hidden widths 16, 32, 64 and
// 128. Any other stride (48, 80, 256, ...) runs the run-time kernel. With a run-time stride
// each of the micro-tile's rows needs an address register, so the tile stops at 8 rows and still runs
// slower. Measured on AVX-512, data in L1, 72 x 16 outputs, K = 64: 73-74% of the FMA peak at 8 rows
// with a run-time stride, 84-87% with a compile-time one (12 rows best of 8/12/18/24); whole forward,
// 2^16 rows, 1 thread, interleaved: 32-64-64-16 relu 1.7% faster, 32-16-16-16 5.8%.
constexpr long kConstStrides[] = {16, 32, 64, 128};

inline bool is_const_stride(long sam) {
  for (long s : kConstStrides)
    if (s == sam) return true;
  return false;
}

// The one-vector micro-tile for A's row stride sam when is_const_stride(sam); null otherwise.
template <typename T, typename BRows, typename CRows>
GemmMicroFn<T, BRows, CRows> pick_micro_const_stride(long sam, int mb) {
  switch (sam) {
    case kConstStrides[0]: return pick_micro<T, false, BRows, CRows, 1, kConstStrides[0]>(mb);
    case kConstStrides[1]: return pick_micro<T, false, BRows, CRows, 1, kConstStrides[1]>(mb);
    case kConstStrides[2]: return pick_micro<T, false, BRows, CRows, 1, kConstStrides[2]>(mb);
    case kConstStrides[3]: return pick_micro<T, false, BRows, CRows, 1, kConstStrides[3]>(mb);
    default: return nullptr;
  }
}

// What gemm_ops runs after each micro-tile: nothing, or (the backward) a few prefetches of the next
// tile's rows, spread over the arithmetic instead of issued in one burst.
struct NoHook {
  void operator()() const {}
};

// C (M x N) = Init + A (M x K) B (K x N), cut into register micro-tiles. B rows must be readable up
// to N rounded up to the vector length (tiles and packed weights are padded for this); C gets at
// most n_store columns per row (n_store >= N for padded buffers, N for the user's arrays).
// Init::Row reads init_row[n] (n < N), Init::Col init_row[m] (m < M). TableA: `a` is a row table
// (const T* const*, row m of A at a[m]); sam and sak are then unused.
template <typename T, bool TableA, typename BRows, typename CRows, typename Hook = NoHook>
void gemm_ops(int M, int N, int K, const T* a, long sam, long sak, BRows b, CRows c, int n_store, Init init,
              const T* init_row, Epi epi, T ep, Hook after_micro_tile = {}) {
  constexpr int VL = Simd<T>::L;
  const int nvec = (N + VL - 1) / VL;
  for (int j0 = 0; j0 < nvec; j0 += kMaxNV) {
    const int nv = nvec - j0 < kMaxNV ? nvec - j0 : kMaxNV;
    const bool const_stride = !TableA && nv == 1 && is_const_stride(sam);
    const int mbx = mb_max_for(nv, const_stride);
    const int store_here = n_store - j0 * VL;
    const T* row = init_row && init == Init::Row ? init_row + j0 * VL : init_row;
    auto row_at = [&](int m0) { return init == Init::Col ? row + m0 : row; };
    const BRows bj = b.shifted(j0 * VL);
    const CRows cj = c.shifted(j0 * VL);
    auto a_at = [&](int m0) {
      return TableA ? reinterpret_cast<const T*>(reinterpret_cast<const T* const*>(a) + m0) : a + m0 * sam;
    };
    auto pick = [&](int mb) {
      if constexpr (!TableA) {
        if (const_stride) return pick_micro_const_stride<T, BRows, CRows>(sam, mb);
      }
      return pick_micro<T, TableA, BRows, CRows>(nv, mb);
    };
    const GemmMicroFn<T, BRows, CRows> full = pick(mbx);
    int m0 = 0;
    for (; m0 + mbx <= M; m0 += mbx) {
      full(K, a_at(m0), sam, sak, bj, cj.from_row(m0), store_here, init, row_at(m0), epi, ep);
      after_micro_tile();
    }
    if (m0 < M) {
      pick(M - m0)(K, a_at(m0), sam, sak, bj, cj.from_row(m0), store_here, init, row_at(m0), epi, ep);
      after_micro_tile();
    }
  }
}

// The same with A(m, k) at a[m * sam + k * sak].
template <typename T, typename BRows, typename CRows, typename Hook = NoHook>
void gemm_rows(int M, int N, int K, const T* a, long sam, long sak, BRows b, CRows c, int n_store, Init init,
               const T* init_row, Epi epi, T ep, Hook after_micro_tile = {}) {
  gemm_ops<T, false>(M, N, K, a, sam, sak, b, c, n_store, init, init_row, epi, ep, after_micro_tile);
}

// The same with B rows at b + k * ldb and C rows at c + m * ldc.
template <typename T, typename Hook = NoHook>
void gemm(int M, int N, int K, const T* a, long sam, long sak, const T* b, long ldb, T* c, long ldc,
          int n_store, Init init, const T* init_row, Epi epi, T ep, Hook after_micro_tile = {}) {
  gemm_rows<T>(M, N, K, a, sam, sak, StridedRows<T>{b, ldb}, StridedOut<T>{c, ldc}, n_store, init, init_row, epi,
               ep, after_micro_tile);
}

inline typename Simd<float>::V sigmoid_v(typename Simd<float>::V x) {
  using S = Simd<float>;
  using V = S::V;
  typedef int VI __attribute__((vector_size(kVecBytes)));
  const V log2e = S::splat(1.44269504088896341f), ln2_hi = S::splat(0.693359375f), ln2_lo = S::splat(-2.12194440e-4f);
  const V magic = S::splat(12582912.0f);  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  V t = -x;  // sigmoid(x) = 1 / (1 + exp(-x))
  t = t > S::splat(88.0f) ? S::splat(88.0f) : t;
  t = t < S::splat(-88.0f) ? S::splat(-88.0f) : t;
  const V nf = (t * log2e + magic) - magic;
  const V r = (t - nf * ln2_hi) - nf * ln2_lo;
  V p = S::splat(1.0f / 720);
  p = p * r + S::splat(1.0f / 120);
  p = p * r + S::splat(1.0f / 24);
  p = p * r + S::splat(1.0f / 6);
  p = p * r + S::splat(0.5f);
  p = p * r + S::splat(1.0f);
  p = p * r + S::splat(1.0f);
  const VI bits = (__builtin_convertvector(nf, VI) + 127) << 23;
  const V e = p * (V)bits;
  V sg = S::splat(1.0f) / (S::splat(1.0f) + e);
  sg = -x > S::splat(88.0f) ? S::splat(0.0f) : sg;  // exp(-x) overflows: sigmoid is 0
  sg = -x < S::splat(-88.0f) ? S::splat(1.0f) : sg;
  return x == x ? sg : x;                            // NaN stays NaN
}

// Logistic sigmoid of n values (in and out may alias). float: a vector exp (Cody-Waite reduction and a
// degree-6 polynomial, relative error ~2e-7, IEEE special values kept), since scalar expf per element
// would dominate the KAN kernels; the tail of fewer than a vector's values goes through the same
// vector code, so a value's result does not depend on where it sits (the batch-major and the
// feature-major forward put the same value at different places); double: the scalar libm path.
inline void sigmoid_n(const float* in, float* out, int n) {
  using S = Simd<float>;
  int i = 0;
  for (; i + S::L <= n; i += S::L) S::store(out + i, sigmoid_v(S::load(in + i)));
  if (i < n) {
    float tmp[S::L] = {};
    for (int j = 0; i + j < n; ++j) tmp[j] = in[i + j];
    S::store_partial(out + i, sigmoid_v(S::load(tmp)), n - i);
  }
}

inline void sigmoid_n(const double* in, double* out, int n) {
  for (int i = 0; i < n; ++i) {
    const double x = in[i];
    out[i] = x >= 0. ? 1. / (1. + __builtin_exp(-x)) : __builtin_exp(x) / (1. + __builtin_exp(x));
  }
}
