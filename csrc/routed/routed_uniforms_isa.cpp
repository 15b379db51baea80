// Batches of routed-block uniforms, compiled once per ISA (routed_uniforms_isa.h). A straight loop
// without calls or branches, so the compiler vectorises the Philox rounds over the weights.
#include "routed/routed_uniforms_isa.h"

#include "common/philox.h"

namespace perceptrons {
namespace routed {
namespace PERCEPTRONS_ISA_NS {

void edge_uniforms(uint32_t seed, uint32_t step, uint32_t example, uint32_t unit, int i0, int i1, double* u) {
  double* __restrict out = u;
  for (int i = i0; i < i1; ++i)
    out[i - i0] = philox::routed_uniform(seed, step, example, 0u, unit, uint32_t(i), 0u);
}

}  // namespace PERCEPTRONS_ISA_NS
}  // namespace routed
}  // namespace perceptrons
