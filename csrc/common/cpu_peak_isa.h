#pragma once
// Per-ISA FMA throughput loop; returns the number of flops it executed.
namespace perceptrons {
namespace isa_generic { double fma_loop_f32(long iterations, float seed); }
namespace isa_avx2 { double fma_loop_f32(long iterations, float seed); }
namespace isa_avx512 { double fma_loop_f32(long iterations, float seed); }
}  // namespace perceptrons
