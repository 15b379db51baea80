// Permutation samplers of the routed kernels: the C++ twin of python/perceptrons/routing/samplers.py.
// Given the Philox key of a routed block, they return the permutation pi (stream m reads copy pi[m])
// that the numpy sampler returns for the same key, bit for bit. The permanental sampler's sums must
// be added in the order numpy adds them, without fused multiply-adds: the .cpp files that include
// this header are compiled with -ffp-contract=off (CMakeLists.txt).
#pragma once
#include <cstdint>

#include "common/hd.h"
#include "common/philox.h"

namespace perceptrons {
namespace routed {

constexpr int kMaxCopies = 4096;            // M
constexpr int kMaxPermanentalCopies = 12;   // 2^M sub-permanents
enum class SamplerKind : int { Table = 0, Permanental = 1 };

struct Sampler {
  SamplerKind kind = SamplerKind::Table;
  int M = 1;
  int K = 0;                        // table: number of permutations
  const int32_t* perms = nullptr;   // table: (K, M)
  const double* cdf = nullptr;      // table: (K,), cdf[K-1] = 1
  const double* Q = nullptr;        // permanental: (M, M)
  const double* subperm = nullptr;  // permanental: (2^M,), see samplers.subset_permanents
};

// Key of one routed block (everything but the draw number).
struct BlockKey {
  uint32_t seed, step, example, layer, unit, weight;
};

PCT_HD double block_uniform(const BlockKey& k, uint32_t draw) {
  return philox::routed_uniform(k.seed, k.step, k.example, k.layer, k.unit, k.weight, draw);
}

// Table sampler: the index of the permutation that uniform u draws (first k with u < cdf[k], at most
// K-1). Branch-free (a comparison picks the half by a conditional move): u is uniform, so a branch on
// it would mispredict half the time, at every routed block. Up to 16 entries the index is the count
// of entries <= u (the cdf is non-decreasing, so that count is the same first k): no loop-carried
// dependence, where the bisection waits for each step's load.
PCT_HD int table_index(const Sampler& s, double u) {
  if (s.K <= 16) {
    int idx = 0;
    for (int j = 0; j < s.K - 1; ++j) idx += s.cdf[j] <= u ? 1 : 0;
    return idx;  // at most K - 1 by construction
  }
  const double* base = s.cdf;  // the answer lies in [base, base + n); everything before is <= u
  int n = s.K;
  while (n > 1) {
    const int half = n >> 1;
    base = base[half - 1] <= u ? base + half : base;
    n -= half;
  }
  const int idx = int(base - s.cdf) + (*base <= u ? 1 : 0);
  return idx < s.K ? idx : s.K - 1;
}

PCT_HD int table_choice(const Sampler& s, const BlockKey& k) { return table_index(s, block_uniform(k, 0)); }

PCT_HD void permanental_sample(const Sampler& s, const BlockKey& k, int32_t* perm) {
  const int M = s.M;
  uint32_t used = 0;
  for (int r = 0; r < M - 1; ++r) {
    const double u = block_uniform(k, uint32_t(r));
    double w[kMaxPermanentalCopies];
    double total = 0.0;
    for (int j = 0; j < M; ++j) {
      w[j] = ((used >> j) & 1u) ? 0.0 : s.Q[r * M + j] * s.subperm[used | (1u << j)];
      total = total + w[j];
    }
    const double target = u * total;
    int choice = -1, last_pos = -1;
    double cum = 0.0;
    for (int j = 0; j < M; ++j) {
      cum = cum + w[j];
      if (choice < 0 && w[j] > 0.0 && target < cum) choice = j;
      if (w[j] > 0.0) last_pos = j;
    }
    if (choice < 0) choice = last_pos;
    perm[r] = choice;
    used |= 1u << choice;
  }
  for (int j = 0; j < M; ++j)
    if (!((used >> j) & 1u)) perm[M - 1] = j;
}

// The whole permutation of one block.
PCT_HD void sample_permutation(const Sampler& s, const BlockKey& k, int32_t* perm) {
  if (s.kind == SamplerKind::Table) {
    const int32_t* p = s.perms + int64_t(table_choice(s, k)) * s.M;
    for (int m = 0; m < s.M; ++m) perm[m] = p[m];
  } else {
    permanental_sample(s, k, perm);
  }
}

}  // namespace routed
}  // namespace perceptrons
