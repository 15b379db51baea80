// Per-ISA batches of routed-block uniforms (Philox-4x32-10, the same bits as philox::routed_uniform
// one at a time). routed_uniforms_isa.cpp is compiled once per instruction set: on AVX-512 the
// rounds' 32x32 -> 64-bit products run 8 to a vector, twice as fast as the baseline build
// (measured: 11.5 -> 5.0 ns per uniform), and at edge granularity the draws are a third of the
// committee epoch's time for a few copies.
#pragma once
#include <cstdint>

#define PERCEPTRONS_DECLARE_ROUTED_UNIFORMS_ISA(NS)                                                      \
  namespace perceptrons {                                                                              \
  namespace routed {                                                                                   \
  namespace NS {                                                                                       \
  void edge_uniforms(uint32_t seed, uint32_t step, uint32_t example, uint32_t unit, int i0, int i1, double* u); \
  }                                                                                                    \
  }                                                                                                    \
  }

PERCEPTRONS_DECLARE_ROUTED_UNIFORMS_ISA(isa_generic)
PERCEPTRONS_DECLARE_ROUTED_UNIFORMS_ISA(isa_avx2)
PERCEPTRONS_DECLARE_ROUTED_UNIFORMS_ISA(isa_avx512)

namespace perceptrons {
namespace routed {
// u[i - i0] = the first uniform of edge block (unit, weight i) of layer 0, for i in [i0, i1): the
// active ISA's build.
using EdgeUniformsFn = void (*)(uint32_t, uint32_t, uint32_t, uint32_t, int, int, double*);
EdgeUniformsFn edge_uniforms_for_active_isa();
}  // namespace routed
}  // namespace perceptrons
