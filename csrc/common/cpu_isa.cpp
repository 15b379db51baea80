#include "common/cpu_isa.h"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <strings.h>

#include "common/cpu_peak_isa.h"

namespace perceptrons {

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Generic: return "generic";
    case CpuIsa::AVX2: return "avx2";
    case CpuIsa::AVX512: return "avx512";
  }
  return "unknown";
}

bool cpu_isa_compiled(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Generic: return true;
#ifdef PERCEPTRONS_HAVE_ISA_AVX2
    case CpuIsa::AVX2: return true;
#endif
#ifdef PERCEPTRONS_HAVE_ISA_AVX512
    case CpuIsa::AVX512: return true;
#endif
    default: return false;
  }
}

bool cpu_isa_supported(CpuIsa isa) {
  if (!cpu_isa_compiled(isa)) return false;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  switch (isa) {
    case CpuIsa::Generic: return true;
    case CpuIsa::AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case CpuIsa::AVX512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
  return false;
#else
  return isa == CpuIsa::Generic;
#endif
}

CpuIsa cpu_isa_best() {
  for (int i = kNumCpuIsas - 1; i > 0; --i)
    if (cpu_isa_supported(CpuIsa(i))) return CpuIsa(i);
  return CpuIsa::Generic;
}

bool parse_cpu_isa(const char* name, CpuIsa* out) {
  for (int i = 0; i < kNumCpuIsas; ++i)
    if (name && strcasecmp(name, cpu_isa_name(CpuIsa(i))) == 0) {
      *out = CpuIsa(i);
      return true;
    }
  return false;
}

namespace {
std::atomic<int> g_active{-1};

int initial_isa() {
  // PERCEPTRONS_CPU_ISA forces a path (tests cover them all); unknown or unsupported values fall
  // back to the best one (the Python layer warns about them).
  CpuIsa isa;
  const char* env = std::getenv("PERCEPTRONS_CPU_ISA");
  if (env && parse_cpu_isa(env, &isa) && cpu_isa_supported(isa)) return int(isa);
  return int(cpu_isa_best());
}
}  // namespace

CpuIsa cpu_isa_active() {
  int v = g_active.load(std::memory_order_relaxed);
  if (v < 0) {
    v = initial_isa();
    g_active.store(v, std::memory_order_relaxed);
  }
  return CpuIsa(v);
}

bool set_cpu_isa(CpuIsa isa) {
  if (!cpu_isa_supported(isa)) return false;
  g_active.store(int(isa), std::memory_order_relaxed);
  return true;
}

double cpu_fma_peak_gflops(CpuIsa isa, double seconds) {
  if (!cpu_isa_supported(isa)) return 0.0;
  double (*loop)(long, float) = nullptr;
  switch (isa) {
    case CpuIsa::Generic: loop = &isa_generic::fma_loop_f32; break;
#ifdef PERCEPTRONS_HAVE_ISA_AVX2
    case CpuIsa::AVX2: loop = &isa_avx2::fma_loop_f32; break;
#endif
#ifdef PERCEPTRONS_HAVE_ISA_AVX512
    case CpuIsa::AVX512: loop = &isa_avx512::fma_loop_f32; break;
#endif
    default: return 0.0;
  }
  using clock = std::chrono::steady_clock;
  loop(1L << 16, 1.0f);  // warm up (and let the core reach its vector clock)
  long iters = 1L << 16;
  double best = 0.0;
  const auto deadline = clock::now() + std::chrono::duration<double>(seconds);
  while (clock::now() < deadline) {
    const auto t0 = clock::now();
    const double flops = loop(iters, 1.0f);
    const double dt = std::chrono::duration<double>(clock::now() - t0).count();
    if (dt < 0.01) {
      iters *= 2;
      continue;
    }
    const double g = flops / dt * 1e-9;
    best = g > best ? g : best;
  }
  return best;
}

}  // namespace perceptrons
