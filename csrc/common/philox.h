// Philox4x32-10, the counter-based RNG of Salmon, Moraes, Dror and Shaw, "Parallel random numbers:
// as easy as 1, 2, 3" (SC'11), with the round constants of their Random123 library. A (key, counter)
// pair maps to four 32-bit words with no state, so every routed block can regenerate its own
// permutation in the forward and again in the backward, on any thread or device, with nothing stored.
// python/perceptrons/routing/philox.py computes the same words with numpy; tests check they agree.
//
// Routing keys (see routed_key below): key = (seed, step), counter = (example, layer | block << 16,
// unit, weight). Quenched routing passes step = 0 (the cover is fixed per example); annealed routing
// passes the training step. `block` numbers successive draws for one routed block (the permanental
// sampler needs M - 1 uniforms).
#pragma once
#include <cstdint>

#include "common/hd.h"

namespace perceptrons {
namespace philox {

struct Words {
  uint32_t v[4];
};

PCT_HD void mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t p = uint64_t(a) * uint64_t(b);
  *hi = uint32_t(p >> 32);
  *lo = uint32_t(p);
}

PCT_HD Words philox4x32_10(Words c, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(0xD2511F53u, c.v[0], &hi0, &lo0);
    mulhilo(0xCD9E8D57u, c.v[2], &hi1, &lo1);
    c = Words{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
  }
  return c;
}

// A double in [0, 1) from two words: the top 53 of their 64 bits.
PCT_HD double uniform53(uint32_t hi, uint32_t lo) {
  return double(((uint64_t(hi) << 32) | uint64_t(lo)) >> 11) * (1.0 / 9007199254740992.0);
}

// Draw `draw` (0, 1, 2, ...) of the routed block (layer, unit, weight) for (seed, step, example).
// Two uniforms come from each Philox call.
PCT_HD double routed_uniform(uint32_t seed, uint32_t step, uint32_t example, uint32_t layer, uint32_t unit,
                             uint32_t weight, uint32_t draw) {
  const Words w = philox4x32_10(Words{{example, (layer & 0xFFFFu) | ((draw >> 1) << 16), unit, weight}}, seed, step);
  return (draw & 1u) ? uniform53(w.v[2], w.v[3]) : uniform53(w.v[0], w.v[1]);
}

}  // namespace philox
}  // namespace perceptrons
