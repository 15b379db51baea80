// Per-ISA inner loops of the committee epoch's edge blocks (routed_edges_isa.h). Straight loops
// without calls or branches, so the compiler vectorises them for the unit's instruction set.
#include "routed/routed_edges_isa.h"

#include "common/philox.h"

#if defined(__AVX512F__) && defined(__AVX512DQ__)
#include <immintrin.h>
#endif

namespace perceptrons {
namespace routed {
namespace PERCEPTRONS_ISA_NS {
namespace {

// All M streams over weights [i0, i1), one entry at a time.
template <typename T>
inline void fields_scalar(const T* __restrict h, const int64_t* const* __restrict off, const int8_t* __restrict xi,
                          int M, int i0, int i1, int32_t* __restrict field) {
  for (int i = i0; i < i1; ++i) {
    const int64_t* __restrict o = off[i];
    const int32_t x = xi[i];
    for (int m = 0; m < M; ++m) field[m] += h[o[m] + i] >= T(0) ? x : -x;  // NaN: -x
  }
}

#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
// Up to 8 streams' sign tests of one weight: one masked load of the copies' offsets, one gather, one
// compare (GCC does not emit gathers for the scalar loop on its own under generic tuning; it loads one
// entry at a time). The offsets come premultiplied (copy * ld), so no 64-bit multiply per weight.
inline __mmask8 ge0_8(const double* h, const int64_t* o, __mmask8 lanes) {
  const __m512i idx = _mm512_maskz_loadu_epi64(lanes, o);
  const __m512d v = _mm512_mask_i64gather_pd(_mm512_setzero_pd(), lanes, idx, h, 8);
  return _mm512_mask_cmp_pd_mask(lanes, v, _mm512_setzero_pd(), _CMP_GE_OQ);
}
inline __mmask8 ge0_8(const float* h, const int64_t* o, __mmask8 lanes) {
  const __m512i idx = _mm512_maskz_loadu_epi64(lanes, o);
  const __m256 v = _mm512_mask_i64gather_ps(_mm256_setzero_ps(), lanes, idx, h, 4);
  return _mm256_mask_cmp_ps_mask(lanes, v, _mm256_setzero_ps(), _CMP_GE_OQ);
}

// M <= 8 streams: their fields stay in a register over the whole run of weights.
template <typename T>
void fields_one_block(const T* h, const int64_t* const* off, const int8_t* xi, int M, int i0, int i1, int32_t* field) {
  const __mmask8 lanes = __mmask8((1u << M) - 1u);
  __m256i acc = _mm256_setzero_si256();
  for (int i = i0; i < i1; ++i) {
    const __m256i vx = _mm256_set1_epi32(xi[i]);
    const __mmask8 ge = ge0_8(h + i, off[i], lanes);
    acc = _mm256_add_epi32(acc, _mm256_mask_blend_epi32(ge, _mm256_sub_epi32(_mm256_setzero_si256(), vx), vx));
  }
  _mm256_mask_storeu_epi32(field, lanes, acc);
}
#endif

template <typename T>
void fields(const T* __restrict H, const int64_t* const* __restrict off, const int8_t* __restrict xi, int M,
            int64_t k_off, int i0, int i1, int32_t* __restrict field) {
  for (int m = 0; m < M; ++m) field[m] = 0;
  const T* h = H + k_off;
#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
  if (M <= 8) {
    fields_one_block(h, off, xi, M, i0, i1, field);
  } else {
    // More than one block: weight by weight, all blocks (one pass over the weights' lines of H; the
    // block-by-block order measured 5-20% slower at M = 16), fields in memory.
    for (int i = i0; i < i1; ++i) {
      const __m256i vx = _mm256_set1_epi32(xi[i]), vmx = _mm256_set1_epi32(-xi[i]);
      for (int m0 = 0; m0 < M; m0 += 8) {
        const int n = M - m0 < 8 ? M - m0 : 8;
        const __mmask8 lanes = __mmask8((1u << n) - 1u);
        const __mmask8 ge = ge0_8(h + i, off[i] + m0, lanes);
        const __m256i f = _mm256_maskz_loadu_epi32(lanes, field + m0);
        _mm256_mask_storeu_epi32(field + m0, lanes, _mm256_add_epi32(f, _mm256_mask_blend_epi32(ge, vmx, vx)));
      }
    }
  }
#else
  fields_scalar(h, off, xi, M, i0, i1, field);
#endif
}

}  // namespace

void edge_uniforms(uint32_t seed, uint32_t step, uint32_t example, uint32_t unit, int i0, int i1, double* u) {
  double* __restrict out = u;
  for (int i = i0; i < i1; ++i)
    out[i - i0] = philox::routed_uniform(seed, step, example, 0u, unit, uint32_t(i), 0u);
}

void edge_fields(const float* H, const int64_t* const* off, const int8_t* xi, int M, int64_t k_off, int i0, int i1,
                 int32_t* field) {
  fields(H, off, xi, M, k_off, i0, i1, field);
}

void edge_fields(const double* H, const int64_t* const* off, const int8_t* xi, int M, int64_t k_off, int i0, int i1,
                 int32_t* field) {
  fields(H, off, xi, M, k_off, i0, i1, field);
}

}  // namespace PERCEPTRONS_ISA_NS
}  // namespace routed
}  // namespace perceptrons
