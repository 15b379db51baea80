// Per-ISA inner loops of the routed committee epoch's edge blocks. routed_edges_isa.cpp is compiled
// once per instruction set (own namespace per ISA, like the MLP and KAN kernels); the epoch takes the
// active ISA's build through edge_kernels_for_active_isa().
//   edge_uniforms: the first Philox uniform of edge blocks (unit, weights [i0, i1)), u[i - i0], the
//     same bits as philox::routed_uniform one at a time. On AVX-512 the rounds' 32x32 -> 64-bit
//     products run 8 to a vector (measured: 11.5 -> 5.0 ns per uniform).
//   edge_fields: every stream's share of its field over a run of weights of one unit,
//     field[m] = sum_i sign(H[off[i][m] + k_off + i]) * xi[i] (sign(h) = +1 for h >= 0, -1
//     otherwise, NaN included; off[i][m] = the copy stream m reads weight i from, times the copy
//     stride), summed as it is gathered. On AVX-512 the gathers run 8 streams to an instruction (a
//     4-lane gather for M <= 4 measured no faster), and up to 8 streams keep their fields in a
//     register over the run; the baseline build gathers, tests and adds one entry at a time. Integer
//     sums: any order, same bits.
#pragma once
#include <cstdint>

#define PERCEPTRONS_DECLARE_ROUTED_EDGES_ISA(NS)                                                          \
  namespace perceptrons {                                                                               \
  namespace routed {                                                                                    \
  namespace NS {                                                                                        \
  void edge_uniforms(uint32_t seed, uint32_t step, uint32_t example, uint32_t unit, int i0, int i1, double* u); \
  void edge_fields(const float* H, const int64_t* const* off, const int8_t* xi, int M, int64_t k_off, int i0,  \
                   int i1, int32_t* field);                                                             \
  void edge_fields(const double* H, const int64_t* const* off, const int8_t* xi, int M, int64_t k_off, int i0, \
                   int i1, int32_t* field);                                                             \
  }                                                                                                     \
  }                                                                                                     \
  }

PERCEPTRONS_DECLARE_ROUTED_EDGES_ISA(isa_generic)
PERCEPTRONS_DECLARE_ROUTED_EDGES_ISA(isa_avx2)
PERCEPTRONS_DECLARE_ROUTED_EDGES_ISA(isa_avx512)

namespace perceptrons {
namespace routed {
using EdgeUniformsFn = void (*)(uint32_t, uint32_t, uint32_t, uint32_t, int, int, double*);
template <typename T>
struct EdgeKernels {
  EdgeUniformsFn uniforms;
  void (*fields)(const T*, const int64_t* const*, const int8_t*, int, int64_t, int, int, int32_t*);
};
EdgeKernels<float> edge_kernels_for_active_isa(float);
EdgeKernels<double> edge_kernels_for_active_isa(double);
}  // namespace routed
}  // namespace perceptrons
