// Routing checks and permutation draws shared by the routed kernels.
#include "routed/routed_blocks.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace perceptrons {
namespace routed {

Status check_routing(const RoutingArgs& r) {
  if (r.M < 1 || r.M > kMaxCopies) return Status::BadShape;
  if (int(r.granularity) < 0 || int(r.granularity) > 2) return Status::BadShape;
  const Sampler& s = r.sampler;
  if (s.M != r.M) return Status::BadShape;
  if (s.kind == SamplerKind::Table) {
    if (s.K < 1 || !s.perms || !s.cdf) return Status::NullPointer;
    for (int64_t e = 0; e < int64_t(s.K) * s.M; ++e)
      if (s.perms[e] < 0 || s.perms[e] >= s.M) return Status::BadShape;
  } else if (s.kind == SamplerKind::Permanental) {
    if (s.M > kMaxPermanentalCopies) return Status::BadShape;
    if (!s.Q || !s.subperm) return Status::NullPointer;
  } else {
    return Status::Unsupported;
  }
  return Status::Ok;
}

void OwnerMap::fill(uint32_t example, bool parallel) {
  const int64_t* off = offset_;
  const int64_t total = offset_[cfg_.n_layers];
#pragma omp parallel for schedule(static) if (parallel && total >= 256)
  for (int64_t g = 0; g < total; ++g) {
    int l = 0;
    while (off[l + 1] <= g) ++l;
    const BlockKey k = block_key(r_, example, l, r_.granularity, cfg_.widths[l], g - off[l]);
    sample_permutation(r_.sampler, k, perms_.data() + g * r_.M);
  }
}

Status routed_permutations_cpu(const RoutingArgs& r, uint32_t example, uint32_t layer, int64_t n, const int64_t* units,
                               const int64_t* weights, int32_t* out) {
  Status s = check_routing(r);
  if (s != Status::Ok) return s;
  if (n < 0) return Status::BadShape;
  if (n > 0 && (!units || !weights || !out)) return Status::NullPointer;
  for (int64_t b = 0; b < n; ++b) {
    const BlockKey k{r.seed, r.step, example, layer, uint32_t(units[b]), uint32_t(weights[b])};
    sample_permutation(r.sampler, k, out + b * r.M);
  }
  return Status::Ok;
}

}  // namespace routed
}  // namespace perceptrons
