// Routed blocks of an MLP layer and the permutations drawn for them: shared by the routed MLP's
// forward and backward (routed_mlp_cpu.cpp) so both read the same copies.
#pragma once
#include <cstdint>
#include <vector>

#include "mlp/mlp.h"
#include "routed/routed.h"

namespace perceptrons {
namespace routed {

// Blocks of a layer with `out` rows and `in` inputs; an edge block per weight and per bias entry.
inline int64_t n_blocks(Granularity g, int out, int in) {
  return g == Granularity::Layer ? 1 : g == Granularity::Unit ? out : int64_t(out) * (in + 1);
}

inline BlockKey block_key(const RoutingArgs& r, uint32_t example, int layer, Granularity g, int in, int64_t b) {
  BlockKey k{r.seed, r.step, example, uint32_t(layer), 0u, 0u};
  if (g == Granularity::Unit) k.unit = uint32_t(b);
  if (g == Granularity::Edge) {
    k.unit = uint32_t(b / (in + 1));
    k.weight = uint32_t(b % (in + 1));
  }
  return k;
}

Status check_routing(const RoutingArgs& r);

// The permutations of every block of every layer for one example key: perms(l, b) is M int32s.
class OwnerMap {
 public:
  OwnerMap(const mlp::MlpConfig& cfg, const RoutingArgs& r) : cfg_(cfg), r_(r) {
    int64_t off = 0;
    for (int l = 0; l < cfg.n_layers; ++l) {
      offset_[l] = off;
      off += n_blocks(r.granularity, cfg.widths[l + 1], cfg.widths[l]);
    }
    offset_[cfg.n_layers] = off;
    perms_.resize(size_t(off) * r.M);
  }
  // Draws every block's permutation for this example key; parallel over blocks when `parallel`.
  void fill(uint32_t example, bool parallel);
  // Copy that stream m reads for entry (j, i) of layer l (i == in: the bias).
  int owner(int l, int j, int i, int m) const {
    const int in = cfg_.widths[l];
    const int64_t b = r_.granularity == Granularity::Layer ? 0
                      : r_.granularity == Granularity::Unit ? j : int64_t(j) * (in + 1) + i;
    return perms_[size_t((offset_[l] + b) * r_.M + m)];
  }
  int layer_owner(int l, int m) const { return perms_[size_t(offset_[l] * r_.M + m)]; }

 private:
  const mlp::MlpConfig& cfg_;
  const RoutingArgs& r_;
  int64_t offset_[mlp::kMaxLayers + 1] = {};  // first block of each layer; [n_layers]: all blocks
  std::vector<int32_t> perms_;
};

}  // namespace routed
}  // namespace perceptrons
