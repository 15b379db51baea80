// What one core can reach when FMAs are fed from memory, next to what the CPU kernels' register-blocked
// GEMM (csrc/common/cpu_simd.h) reaches on the layer shapes of the headline MLP, data in L1. It puts
// a number on the gap between the register-only FMA peak (the denominator of "% peak/thread") and
// what any GEMM can do on this machine. AVX-512 only (the ISA of the 2-core CI/dev VM).
//
//   g++ -O3 -fno-math-errno -mavx512f -mavx512vl -mavx512dq -mavx512bw -mfma -mavx2
//       -mprefer-vector-width=512 -Icsrc bench/cpu_gemm_ceiling.cpp -o /tmp/cpu_gemm_ceiling
//   /tmp/cpu_gemm_ceiling
// (the flags of the library's AVX-512 unit, CMakeLists.txt)
//
// Part 1: 24 independent FMA chains (as cpu_fma_peak_gflops), where L of each 24 FMAs take one
// operand from an aligned 64-byte load instead of a register. Part 2: the k loop of gemm_micro's 6 x 4
// vector micro-tile alone (the layers' loop: 4 B rows and 6 broadcasts per 24 FMAs), without the
// accumulator set-up, the epilogue and the call that every micro-tile of a GEMM also pays. Part 3:
// gemm() with the forward's operands (a 72-row tile, packed W^T, bias, fused ReLU) and the backward's
// (dW: g^T h with accumulation; dX: g W), best of 20 repetitions, as a fraction of part 1's
// register-only rate. Every buffer is 64-byte aligned, as the library's workspace and packed weights
// are (cpu_workspace.h): with malloc's 16-byte alignment every B row load splits two cache lines, and
// the GEMMs measured several percent below what the kernels see.
#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace bench {
#include "common/cpu_simd.h"
}
using bench::Epi;
using bench::Init;
using bench::Simd;

namespace {

using V = Simd<float>::V;

template <typename F>
double best_seconds(F&& f, int calls, int reps = 20) {
  for (int i = 0; i < calls; ++i) f();
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < calls; ++i) f();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / calls;
    best = s < best ? s : best;
  }
  return best;
}

// 24 chains acc = acc * m + a; the first `loads` chains read m from buf (two alternating aligned rows
// so the loads stay in the loop).
template <int kLoads>
__attribute__((noinline)) float fma_chains(long iterations, const float* buf) {
  V acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = Simd<float>::splat(float(i));
  volatile float m_value = 0.999999f, a_value = 1e-7f;  // not constants: the loop must not fold away
  const V m = Simd<float>::splat(m_value), a = Simd<float>::splat(a_value);
  for (long t = 0; t < iterations; ++t) {
    const float* row = buf + (t & 1) * 24 * 16;
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) acc[i] = acc[i] * (i < kLoads ? Simd<float>::load(row + 16 * i) : m) + a;
  }
  V s = acc[0];
  for (int i = 1; i < 24; ++i) s += acc[i];
  float lanes[16];
  Simd<float>::store(lanes, s);
  float r = 0.f;
  for (float v : lanes) r += v;
  return r;
}

template <int kLoads>
double fma_gflops() {
  alignas(64) static float buf[2 * 24 * 16];
  for (float& v : buf) v = 0.999999f;
  const long it = 1000000;
  volatile float sink = 0.f;
  const double s = best_seconds([&] { sink = fma_chains<kLoads>(it, buf); }, 1, 7);
  return double(it) * 24 * 16 * 2 / s / 1e9;
}

// The 6 x 4 micro-tile's k loop, K = 64 (B: 64 rows of 64 floats, 16 KB; A: 6 rows of 64), repeated
// over the same accumulators: what a micro-tile's arithmetic costs when nothing else is in the call.
__attribute__((noinline)) float micro_tile_k_loop(long repetitions, const float* a, const float* b) {
  constexpr int MB = 6, NV = 4, K = 64;
  V acc[MB][NV] = {};
  for (long r = 0; r < repetitions; ++r) {
    for (int k = 0; k < K; ++k) {
      V bv[NV];
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) bv[j] = Simd<float>::load(b + k * 64 + j * 16);
#pragma GCC unroll 6
      for (int m = 0; m < MB; ++m) {
        const float s = a[m * 64 + k];
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) acc[m][j] += bv[j] * s;
      }
    }
    asm volatile("" ::: "memory");  // a and b may have changed: the loads stay in the loop
  }
  V s = {};
  for (int m = 0; m < MB; ++m)
    for (int j = 0; j < NV; ++j) s += acc[m][j];
  return bench::hsum<float>(s);
}

double micro_tile_k_loop_gflops(const float* a, const float* b) {
  const long reps = 100000;
  volatile float sink = 0.f;
  const double s = best_seconds([&] { sink = micro_tile_k_loop(reps, a, b); }, 1, 7);
  return double(reps) * 64 * 24 * 16 * 2 / s / 1e9;
}

// n floats, 64-byte aligned, every element `value`.
struct AlignedFloats {
  float* p;
  AlignedFloats(long n, float value) : p(static_cast<float*>(std::aligned_alloc(64, (n * 4 + 63) / 64 * 64))) {
    for (long i = 0; i < n; ++i) p[i] = value;
  }
  ~AlignedFloats() { std::free(p); }
  AlignedFloats(const AlignedFloats&) = delete;
  AlignedFloats& operator=(const AlignedFloats&) = delete;
};

enum class Kind { Forward, WeightGradient, InputGradient };

struct Shape {
  const char* name;
  int M, N, K;
  Kind kind;
};

}  // namespace

int main() {
  const double peak = fma_gflops<0>();
  std::printf("FMA chains, one core (GFLOP/s and fraction of the register-only rate)\n");
  std::printf("  loads per 24 FMAs  0: %6.1f\n", peak);
  const double l4 = fma_gflops<4>(), l10 = fma_gflops<10>(), l24 = fma_gflops<24>();
  std::printf("  loads per 24 FMAs  4: %6.1f  %3.0f%%\n", l4, 100 * l4 / peak);
  std::printf("  loads per 24 FMAs 10: %6.1f  %3.0f%%  (the 6x64 GEMM micro-tile: 4 B rows + 6 broadcasts)\n", l10,
              100 * l10 / peak);
  std::printf("  loads per 24 FMAs 24: %6.1f  %3.0f%%\n", l24, 100 * l24 / peak);

  {
    const AlignedFloats a(6 * 64, 0.5f), b(64 * 64, 0.01f);
    const double gf = micro_tile_k_loop_gflops(a.p, b.p);
    std::printf("6 x 4 micro-tile, k loop alone (K 64, data in L1)\n  %6.1f  %3.0f%%\n", gf, 100 * gf / peak);
  }

  // The headline MLP 32 -> 64 -> 64 -> 16, one 72-row tile (kTileRows), tile rows of 64 floats.
  const Shape shapes[] = {{"forward  layer 0 (72 x 64, K 32)", 72, 64, 32, Kind::Forward},
                          {"forward  layer 1 (72 x 64, K 64)", 72, 64, 64, Kind::Forward},
                          {"forward  layer 2 (72 x 16, K 64)", 72, 16, 64, Kind::Forward},
                          {"backward dW 2    (16 x 64, K 72)", 16, 64, 72, Kind::WeightGradient},
                          {"backward dW 1    (64 x 64, K 72)", 64, 64, 72, Kind::WeightGradient},
                          {"backward dX 2    (72 x 64, K 16)", 72, 64, 16, Kind::InputGradient},
                          {"backward dX 1    (72 x 64, K 64)", 72, 64, 64, Kind::InputGradient}};
  std::printf("cpu_simd.h gemm, data in L1 (GFLOP/s and fraction of the register-only rate)\n");
  const long ld = 64;
  for (const Shape& s : shapes) {
    const AlignedFloats a(128 * ld, 0.5f), b(128 * ld, 0.01f), c(128 * ld, 0.f), bias(ld, 0.1f);
    const long ldb = (s.N + 15) / 16 * 16;
    auto call = [&] {
      if (s.kind == Kind::WeightGradient)  // dW (M x N) += g^T (M x K) h (K x N): A(m, k) at g[k * ld + m]
        bench::gemm<float>(s.M, s.N, s.K, a.p, 1, ld, b.p, ld, c.p, ldb, int(ldb), Init::Load,
                           nullptr, Epi::Store, 0.f);
      else if (s.kind == Kind::InputGradient)  // dX = g W
        bench::gemm<float>(s.M, s.N, s.K, a.p, ld, 1, b.p, ldb, c.p, ld, int(ldb), Init::Zero,
                           nullptr, Epi::Store, 0.f);
      else  // z = bias + h W^T, ReLU in the epilogue
        bench::gemm<float>(s.M, s.N, s.K, a.p, ld, 1, b.p, ldb, c.p, ld, int(ldb), Init::Row,
                           bias.p, Epi::ReLU, 0.f);
    };
    const double sec = best_seconds(call, 2000);
    const double gf = 2.0 * s.M * s.N * s.K / sec / 1e9;
    std::printf("  %s: %6.1f  %3.0f%%\n", s.name, gf, 100 * gf / peak);
  }
  return 0;
}
