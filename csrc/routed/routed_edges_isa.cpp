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

// Streams [m0, M) of one weight, one at a time.
template <typename T>
inline void fields_tail(const T* __restrict h, const int32_t* __restrict p, int32_t x, int m0, int M, int64_t ld,
                        int32_t* __restrict field) {
  for (int m = m0; m < M; ++m) field[m] += h[int64_t(p[m]) * ld] >= T(0) ? x : -x;  // NaN: -x
}

#if defined(__AVX512F__) && defined(__AVX512DQ__)
// 8 streams at a time (the last few under a lane mask): their copies' entries in one gather (GCC
// does not emit gathers for this loop on its own under generic tuning; it extracts the indices and
// loads one entry at a time).
inline __m256i signed_x(__mmask8 ge, __m256i x, __m256i minus_x) { return _mm256_mask_blend_epi32(ge, minus_x, x); }

// Lanes outside `lanes` are neither loaded nor set in the result.
inline __mmask8 gather_ge0(const double* h, __m512i idx, __mmask8 lanes) {
  const __m512d v = _mm512_mask_i64gather_pd(_mm512_setzero_pd(), lanes, idx, h, 8);
  return _mm512_mask_cmp_pd_mask(lanes, v, _mm512_setzero_pd(), _CMP_GE_OQ);
}
inline __mmask8 gather_ge0(const float* h, __m512i idx, __mmask8 lanes) {
  const __m256 v = _mm512_mask_i64gather_ps(_mm256_setzero_ps(), lanes, idx, h, 4);
  return _mm256_mask_cmp_ps_mask(lanes, v, _mm256_setzero_ps(), _CMP_GE_OQ);
}

// field[m0 + j] += sign(h[p[m0 + j] * ld]) * x for the lanes j set in `lanes`.
template <typename T>
inline void add_fields8(const T* h, const int32_t* p, __m512i vld, __m256i vx, __m256i vmx, __mmask8 lanes,
                        int32_t* field) {
  const __m512i idx = _mm512_mullo_epi64(_mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(lanes, p)), vld);
  const __m256i f = _mm256_maskz_loadu_epi32(lanes, field);
  _mm256_mask_storeu_epi32(field, lanes, _mm256_add_epi32(f, signed_x(gather_ge0(h, idx, lanes), vx, vmx)));
}
#endif

template <typename T>
void fields(const T* __restrict H, const int32_t* const* __restrict perm, const int8_t* __restrict xi, int M,
            int64_t ld, int64_t k_off, int i0, int i1, int32_t* __restrict field) {
  for (int m = 0; m < M; ++m) field[m] = 0;
  for (int i = i0; i < i1; ++i) {
    const int32_t* __restrict p = perm[i];
    const T* __restrict h = H + k_off + i;
    const int32_t x = xi[i];
    int m = 0;
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    const __m512i vld = _mm512_set1_epi64(ld);
    const __m256i vx = _mm256_set1_epi32(x), vmx = _mm256_set1_epi32(-x);
    for (; m + 8 <= M; m += 8) add_fields8(h, p + m, vld, vx, vmx, __mmask8(0xFF), field + m);
    if (m < M) add_fields8(h, p + m, vld, vx, vmx, __mmask8((1u << (M - m)) - 1u), field + m);
    m = M;
#endif
    fields_tail(h, p, x, m, M, ld, field);
  }
}

}  // namespace

void edge_uniforms(uint32_t seed, uint32_t step, uint32_t example, uint32_t unit, int i0, int i1, double* u) {
  double* __restrict out = u;
  for (int i = i0; i < i1; ++i)
    out[i - i0] = philox::routed_uniform(seed, step, example, 0u, unit, uint32_t(i), 0u);
}

void edge_fields(const float* H, const int32_t* const* perm, const int8_t* xi, int M, int64_t ld, int64_t k_off,
                 int i0, int i1, int32_t* field) {
  fields(H, perm, xi, M, ld, k_off, i0, i1, field);
}

void edge_fields(const double* H, const int32_t* const* perm, const int8_t* xi, int M, int64_t ld, int64_t k_off,
                 int i0, int i1, int32_t* field) {
  fields(H, perm, xi, M, ld, k_off, i0, i1, field);
}

}  // namespace PERCEPTRONS_ISA_NS
}  // namespace routed
}  // namespace perceptrons
