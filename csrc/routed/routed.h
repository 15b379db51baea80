// C++ API of the routed-replica (M-cover) kernels: plain structs of pointers and sizes.
//
// M copies of a model are stored copy-major (W_l: (M, out, in), b_l: (M, out)). Stream m of a routed
// call evaluates the model whose every routed block is read from copy pi(m), pi a permutation drawn
// for that block (routed_sampler.h), and sends the block's gradient (or perceptron message) back to
// copy pi(m). Blocks: a whole layer ([W_l | b_l]), a unit (row j of W_l with b_l[j]) or an edge
// (W_l[j, i]; b_l[j] is column i = in). Per batch, a block has one permutation for the whole minibatch
// (example key = batch id); per example, one per example (key = the example's id). Because pi is a
// bijection each copy gets exactly one message per block and example: the weight gradients have a
// single writer per copy, are written without atomics and do not depend on the thread count.
#pragma once
#include <cstdint>

#include "common/status.h"
#include "mlp/mlp.h"
#include "routed/routed_sampler.h"

namespace perceptrons {
namespace routed {

enum class Granularity : int { Layer = 0, Unit = 1, Edge = 2 };

struct RoutingArgs {
  int M = 1;
  Granularity granularity = Granularity::Layer;
  bool per_example = false;
  uint32_t seed = 0;
  uint32_t step = 0;                    // 0 for quenched routing
  uint32_t batch_id = 0;                // per batch: the example key
  const int64_t* example_ids = nullptr; // per example: (batch,) keys in [0, 2^32); null: 0..batch-1
  Sampler sampler;
};

// Routed MLP. x is (M, batch, in) with stream stride x_stream_stride elements (0: the same batch
// for every stream); y is (M, batch, out); saved[l] holds M blocks of mlp::saved_layer_numel(cfg,
// batch, l) elements (stream-major).
struct RoutedMlpForwardArgs {
  mlp::MlpConfig cfg;
  RoutingArgs routing;
  const void* weights[mlp::kMaxLayers] = {};
  const void* biases[mlp::kMaxLayers] = {};  // null: no biases anywhere (all or none)
  int64_t batch = 0;
  const void* x = nullptr;
  int64_t x_stream_stride = 0;
  void* y = nullptr;
  bool training = false;
  void* saved[mlp::kMaxLayers] = {};
};

// dx is (M, batch, in) (per stream, also when x is shared) or null; dweights/dbiases are copy-major
// like the parameters and are overwritten.
struct RoutedMlpBackwardArgs {
  mlp::MlpConfig cfg;
  RoutingArgs routing;
  const void* weights[mlp::kMaxLayers] = {};
  const void* biases[mlp::kMaxLayers] = {};
  int64_t batch = 0;
  const void* x = nullptr;
  int64_t x_stream_stride = 0;
  const void* y = nullptr;
  const void* saved[mlp::kMaxLayers] = {};
  const void* dy = nullptr;
  void* dx = nullptr;
  void* dweights[mlp::kMaxLayers] = {};
  void* dbiases[mlp::kMaxLayers] = {};
};

Status routed_mlp_forward_cpu(const RoutedMlpForwardArgs& args);
Status routed_mlp_backward_cpu(const RoutedMlpBackwardArgs& args);

// Permutations of `n_blocks` blocks (unit/weight indices given) for tests: out is (n_blocks, M).
Status routed_permutations_cpu(const RoutingArgs& r, uint32_t example, uint32_t layer, int64_t n_blocks,
                               const int64_t* units, const int64_t* weights, int32_t* out);

// Routed committee machine with binary weights sign(H) (sign(0) = +1), K hidden units of N inputs,
// output sign(sum_k sign(stability_k)); K = 1 is the binary perceptron. One online epoch over
// `order`: for pattern mu = order[t] every stream m reads each routed block from copy pi(m) (blocks:
// layer = the whole machine, unit = a hidden unit's N weights, edge = one weight; example key mu),
// computes integer pre-activations S_k = sum_i w_ki xi_i and stabilities y S_k. Unit k agrees when
// y S_k > margin * sqrt(N). If at most K/2 units agree, the stream updates the disagreeing unit with
// the largest y S_k (least action; the lowest k on ties): H[pi(m)][k][i] += eta * y * xi_i, clipped
// to [-h_max, h_max] when h_max > 0. All streams of a pattern see the state before the pattern.
struct CommitteeEpochArgs {
  RoutingArgs routing;        // per_example is implied; example_ids unused (the key is mu)
  int K = 1;
  int N = 0;
  DType dtype = DType::Float64;  // of H
  void* H = nullptr;             // (M, K, N)
  int64_t n_patterns = 0;
  const int8_t* patterns = nullptr;  // (n_patterns, N), entries +-1
  const int8_t* labels = nullptr;    // (n_patterns,), +-1
  const int64_t* order = nullptr;    // (n_order,) pattern indices
  int64_t n_order = 0;
  double eta = 1.0, margin = 0.0, h_max = 0.0;
  int64_t* n_updates = nullptr;      // out: number of (pattern, stream) updates
};

Status routed_committee_epoch_cpu(const CommitteeEpochArgs& args);

}  // namespace routed
}  // namespace perceptrons
