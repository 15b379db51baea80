// Run-time choice of the CPU instruction set. The hot kernels are compiled once per ISA; this
// picks the best one the CPU supports, or the one forced by PERCEPTRONS_CPU_ISA (read at first use)
// or by set_cpu_isa (so one test process can cover every path).
#pragma once

namespace perceptrons {

enum class CpuIsa : int { Generic = 0, AVX2 = 1, AVX512 = 2 };
constexpr int kNumCpuIsas = 3;

const char* cpu_isa_name(CpuIsa isa);
bool cpu_isa_compiled(CpuIsa isa);    // a kernel unit for this ISA is in the module
bool cpu_isa_supported(CpuIsa isa);   // compiled and this CPU (and OS) can run it
CpuIsa cpu_isa_best();
CpuIsa cpu_isa_active();
// Returns false (and changes nothing) when the ISA is not supported here.
bool set_cpu_isa(CpuIsa isa);
// Parses "generic", "avx2", "avx512" (case-insensitive); returns false on anything else.
bool parse_cpu_isa(const char* name, CpuIsa* out);

// Measured FP32 FMA throughput of one core with the given ISA, in GFLOP/s (a short timed loop of
// independent vector FMAs; the denominator of the benchmarks' "fraction of peak").
double cpu_fma_peak_gflops(CpuIsa isa, double seconds);

}  // namespace perceptrons
