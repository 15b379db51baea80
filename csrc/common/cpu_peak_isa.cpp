// A loop of independent vector FMAs, compiled once per ISA: what one core can do at best.
#include "common/cpu_peak_isa.h"

namespace perceptrons {
namespace PERCEPTRONS_ISA_NS {
namespace {
#include "common/cpu_simd.h"
}  // namespace

double fma_loop_f32(long iterations, float seed) {
  using S = Simd<float>;
  using V = S::V;
  constexpr int kChains = kAccRegs;  // enough independent chains to cover the FMA latency
  V acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = S::splat(seed + float(i));
  const V m = S::splat(0.999999f), a = S::splat(1e-7f);
  for (long it = 0; it < iterations; ++it) {
#pragma GCC unroll 32
    for (int i = 0; i < kChains; ++i) acc[i] = acc[i] * m + a;
  }
  V s = acc[0];
  for (int i = 1; i < kChains; ++i) s += acc[i];
  float out[S::L];
  S::store(out, s);
  float r = 0.f;
  for (int i = 0; i < S::L; ++i) r += out[i];
  // Keep the loop alive: the caller checks the value is finite.
  return double(r) * 0.0 + double(iterations) * kChains * S::L * 2.0;
}

}  // namespace PERCEPTRONS_ISA_NS
}  // namespace perceptrons
