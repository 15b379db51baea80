// Routed committee machine / binary perceptron (K = 1): one online epoch of the clipped,
// least-action perceptron rule on the M-cover of the pattern/weight factor graph (routed.h says the
// rule). Per pattern: draw the blocks' permutations, compute every stream's K integer
// pre-activations from the copies it is routed to, choose each stream's update, apply them. Streams
// of one pattern write disjoint entries (a permutation per block), so the updates need no atomics and
// the result does not depend on the thread count.
#include <cmath>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/cpu_isa.h"
#include "routed/routed_blocks.h"
#include "routed/routed_edges_isa.h"

namespace perceptrons {
namespace routed {
namespace {

// The loops below are out of line with restrict pointers and a by-value length: inside the OpenMP
// region an int8 store may alias any captured variable, which stops vectorisation, and a branch on
// the sign of a random weight mispredicts half the time.
template <typename T>
void signs(const T* __restrict h, int8_t* __restrict w, int n) {
  for (int i = 0; i < n; ++i) w[i] = int8_t(1 - 2 * int(!(h[i] >= T(0))));  // NaN reads as -1, like numpy's
}

int32_t dot_pm1(const int8_t* __restrict a, const int8_t* __restrict b, int n) {
  int32_t sum = 0;
  for (int i = 0; i < n; ++i) sum += int32_t(a[i]) * int32_t(b[i]);
  return sum;
}

// h += delta, then clipped to [-clip, clip] when clip > 0: the rule's update of one hidden weight.
template <typename T>
inline void clipped_add(T& h, T delta, T clip) {
  h += delta;
  if (clip > T(0)) h = h > clip ? clip : (h < -clip ? -clip : h);
}

// Edge blocks are visited weight-major over groups of kStreamGroup streams: for one weight the
// streams read distinct copies (perm[i] is a permutation), so a block of weights touches one line
// of H per stream and 8 weights, where stream-major order jumps to a random copy's line (and page)
// at every weight. Groups bound the lines and pages open at once when M is large.
constexpr int kStreamGroup = 16;

// Edge blocks, weights [i0, i1) of unit k: stream m reads weight (k, i) from copy perm[i][m]
// (perm: the K*N blocks from unit k).
template <typename T>
void signs_routed(const T* __restrict H, const int32_t* const* __restrict perm, int8_t* __restrict seen, int M,
                  int K, int k, int n, int i0, int i1) {
  const int64_t ld = int64_t(K) * n;
  for (int m0 = 0; m0 < M; m0 += kStreamGroup) {
    const int m1 = m0 + kStreamGroup < M ? m0 + kStreamGroup : M;
    for (int i = i0; i < i1; ++i) {
      const int32_t* __restrict p = perm[i];
      for (int m = m0; m < m1; ++m) {
        const T h = H[p[m] * ld + int64_t(k) * n + i];
        seen[(int64_t(m) * K + k) * n + i] = int8_t(1 - 2 * int(!(h >= T(0))));  // NaN reads as -1
      }
    }
  }
}

// Edge blocks, weights [i0, i1): adds eta * y * xi[i] to weight (chosen[m], i) at the copy stream m
// read it from, for every stream that updates, and clips. Entries of one weight are distinct
// copies, so no two streams write the same entry.
template <typename T>
void update_routed_edges(T* __restrict H, const int32_t* const* __restrict perm_all, const int* __restrict chosen,
                         const int8_t* __restrict xi, T step, T clip, int M, int K, int n, int i0, int i1) {
  const int64_t ld = int64_t(K) * n;
  for (int m0 = 0; m0 < M; m0 += kStreamGroup) {
    const int m1 = m0 + kStreamGroup < M ? m0 + kStreamGroup : M;
    for (int i = i0; i < i1; ++i)
      for (int m = m0; m < m1; ++m) {
        const int k = chosen[m];
        if (k < 0) continue;
        clipped_add(H[perm_all[int64_t(k) * n + i][m] * ld + int64_t(k) * n + i], step * T(xi[i]), clip);
      }
  }
}

// Adds eta * y * xi to the weights (k, i) that stream m read, at their copies, and clips them.
template <typename T>
void update_routed(T* __restrict H, const int32_t* __restrict perm, const int8_t* __restrict xi,
                   T step, T clip, int m, int K, int k, int n) {
  const int64_t ld = int64_t(K) * n;
  for (int i = 0; i < n; ++i) {
    clipped_add(H[int64_t(perm[m]) * ld + int64_t(k) * n + i], step * T(xi[i]), clip);
  }
}

constexpr int kEdgeBlock = 64;  // weights per work item of the edge loops

// The table permutation of every edge block of one run (unit k, weights [i0, i1)) of pattern mu, as
// f(i, table row): the blocks' uniforms first (Philox, per-ISA loop), then the table lookups.
template <typename F>
void for_edge_table_rows(EdgeUniformsFn uniforms, const RoutingArgs& r, int64_t mu, int k, int i0, int i1, F&& f) {
  double u[kEdgeBlock];
  uniforms(r.seed, r.step, uint32_t(mu), uint32_t(k), i0, i1, u);
  for (int i = i0; i < i1; ++i) f(i, table_index(r.sampler, u[i - i0]));
}

// Stream m's field of unit k from the runs' shares, laid out (K, n_eblk, M).
int64_t summed_field(const std::vector<int32_t>& shares, int k, int n_eblk, int M, int m) {
  int64_t field = 0;
  for (int eb = 0; eb < n_eblk; ++eb) field += shares[size_t((int64_t(k) * n_eblk + eb) * M + m)];
  return field;
}

// The rule's choice for one stream from its K stabilities: -1 when more than half of the units
// agree (stability above the threshold), else the disagreeing unit with the largest stability (the
// lowest k on ties).
int least_action_unit(const int64_t* stab, int K, double threshold) {
  int agree = 0, best = -1;
  for (int k = 0; k < K; ++k) {
    if (double(stab[k]) > threshold) ++agree;
    else if (best < 0 || stab[k] > stab[best]) best = k;
  }
  return 2 * agree > K ? -1 : best;
}

// ---- edge blocks, weight-major -------------------------------------------------------------------
//
// Per-edge routing reads weight (k, i) of stream m from copy pi_ki(m): in H's copy-major layout
// (M, K, N) that is one entry from each of M copies K*N entries apart, a gather that costs more
// instructions than the rule's arithmetic. For an epoch of many patterns H is turned weight-major
// for the epoch, Hw[(k N + i) M + c] = H[c][k][i], so each weight's M copies are adjacent. When every
// permutation of the sampler's table is a rotation (circulant Q: pi(m) = (m + s) mod M), a weight's
// streams then read and write two contiguous runs of its copies, which vectorise; other tables index
// within the weight's M entries. Same reads, same updates, same order of operations per entry as
// the copy-major loop: the same bits.
constexpr int64_t kWeightMajorMinPatterns = 8;  // two transposes of H per call: worth it from here
// Below this many copies a weight's runs are a few entries long and their lengths change at random
// from weight to weight (mispredicted loop exits): the copy-major loop is faster there. Measured, 2
// threads, N = 1001, ring Q: M = 4 and 16 weight-major 0.65-0.8x copy-major, M = 32 1.0-1.8x, M = 64
// 2.0x.
constexpr int kWeightMajorMinCopies = 32;

// Shift s_t of every table permutation t when all of them are rotations, perm_t(m) = (m + s_t) mod M;
// empty otherwise.
std::vector<int> rotation_shifts(const Sampler& s) {
  std::vector<int> shift(size_t(s.K));
  for (int t = 0; t < s.K; ++t) {
    const int32_t* p = s.perms + int64_t(t) * s.M;
    shift[size_t(t)] = p[0];
    for (int m = 0; m < s.M; ++m)
      if (p[m] != (m + p[0]) % s.M) return {};
  }
  return shift;
}

// field[m] += sign(h[pi(m)]) * x for the M copies h of one weight (NaN reads as -1, like numpy's
// sign test h >= 0). pi: rotation by s when s >= 0, else the table row p.
template <typename T>
void add_weight_field(const T* __restrict h, int s, const int32_t* __restrict p, int32_t x, int M,
                      int32_t* __restrict field) {
  if (s >= 0) {
    const int run = M - s;  // streams [0, run) read copies [s, M); streams [run, M) read [0, s)
    for (int m = 0; m < run; ++m) field[m] += h[m + s] >= T(0) ? x : -x;
    for (int m = run; m < M; ++m) field[m] += h[m - run] >= T(0) ? x : -x;
  } else {
    for (int m = 0; m < M; ++m) field[m] += h[p[m]] >= T(0) ? x : -x;
  }
}

// The rule's update of one weight's copies: the copy stream m read gets h += delta (clipped) where
// stream m updates this weight's unit (updates[m] != 0).
template <typename T>
void update_weight(T* __restrict h, int s, const int32_t* __restrict p, const int8_t* __restrict updates, T delta,
                   T clip, int M) {
  if (s >= 0) {
    const int run = M - s;
    for (int m = 0; m < run; ++m)
      if (updates[m]) clipped_add(h[m + s], delta, clip);
    for (int m = run; m < M; ++m)
      if (updates[m]) clipped_add(h[m - run], delta, clip);
  } else {
    for (int m = 0; m < M; ++m)
      if (updates[m]) clipped_add(h[p[m]], delta, clip);
  }
}

template <typename T>
Status epoch_edge_weight_major(const CommitteeEpochArgs& a) {
  const RoutingArgs& r = a.routing;
  const auto edge_uniforms = edge_kernels_for_active_isa(T()).uniforms;
  const Sampler& smp = r.sampler;
  const int M = r.M, K = a.K, N = a.N;
  const int64_t W = int64_t(K) * N;
  T* H = static_cast<T*>(a.H);
  std::vector<T> Hw(size_t(W * M));
  const std::vector<int> shifts = rotation_shifts(smp);
  const int n_eblk = (N + kEdgeBlock - 1) / kEdgeBlock;
  std::vector<int32_t> table_row(static_cast<size_t>(W));       // each weight's table permutation
  std::vector<int32_t> fields(size_t(K) * n_eblk * M);          // (K, n_eblk, M) partial fields
  std::vector<int64_t> stab(size_t(M) * K);
  std::vector<int> chosen(size_t(M), -1);
  std::vector<int8_t> updates(size_t(K) * M);                   // (K, M): stream m updates unit k
  const double threshold = a.margin * std::sqrt(double(N));
  const T clip = T(a.h_max), eta = T(a.eta);
  int64_t n_updates = 0;
#pragma omp parallel if (int64_t(M) * K * N >= 4096 || W >= 512)
  {
#pragma omp for schedule(static)
    for (int64_t w = 0; w < W; ++w)
      for (int c = 0; c < M; ++c) Hw[size_t(w * M + c)] = H[c * W + w];
    for (int64_t t = 0; t < a.n_order; ++t) {
      const int64_t mu = a.order[t];
      const int8_t* xi = a.patterns + mu * N;
      const int y = a.labels[mu];
#pragma omp for schedule(static) collapse(2)
      for (int k = 0; k < K; ++k)
        for (int eb = 0; eb < n_eblk; ++eb) {
          const int i0 = eb * kEdgeBlock, i1 = i0 + kEdgeBlock < N ? i0 + kEdgeBlock : N;
          int32_t* f = fields.data() + (int64_t(k) * n_eblk + eb) * M;
          for (int m = 0; m < M; ++m) f[m] = 0;
          for_edge_table_rows(edge_uniforms, r, mu, k, i0, i1, [&](int i, int tr) {
            const int64_t w = int64_t(k) * N + i;
            table_row[size_t(w)] = tr;
            add_weight_field(Hw.data() + w * M, shifts.empty() ? -1 : shifts[size_t(tr)],
                             smp.perms + int64_t(tr) * M, int32_t(xi[i]), M, f);
          });
        }
#pragma omp single
      {
        for (int m = 0; m < M; ++m) {
          for (int k = 0; k < K; ++k) stab[size_t(m) * K + k] = int64_t(y) * summed_field(fields, k, n_eblk, M, m);
          chosen[size_t(m)] = least_action_unit(stab.data() + size_t(m) * K, K, threshold);
          n_updates += chosen[size_t(m)] >= 0;
        }
        for (int k = 0; k < K; ++k)
          for (int m = 0; m < M; ++m) updates[size_t(k) * M + m] = int8_t(chosen[size_t(m)] == k);
      }
#pragma omp for schedule(static) collapse(2)
      for (int k = 0; k < K; ++k)
        for (int eb = 0; eb < n_eblk; ++eb) {
          const int i0 = eb * kEdgeBlock, i1 = i0 + kEdgeBlock < N ? i0 + kEdgeBlock : N;
          const int8_t* upd = updates.data() + int64_t(k) * M;
          for (int i = i0; i < i1; ++i) {
            const int64_t w = int64_t(k) * N + i;
            const int tr = table_row[size_t(w)];
            update_weight(Hw.data() + w * M, shifts.empty() ? -1 : shifts[size_t(tr)], smp.perms + int64_t(tr) * M,
                          upd, eta * T(y) * T(xi[i]), clip, M);
          }
        }
    }
#pragma omp for schedule(static)
    for (int c = 0; c < M; ++c)
      for (int64_t w = 0; w < W; ++w) H[c * W + w] = Hw[size_t(w * M + c)];
  }
  if (a.n_updates) *a.n_updates = n_updates;
  return Status::Ok;
}

template <typename T>
Status epoch(const CommitteeEpochArgs& a) {
  const RoutingArgs& r = a.routing;
  const EdgeKernels<T> edge_isa = edge_kernels_for_active_isa(T());
  const int M = r.M, K = a.K, N = a.N;
  const Granularity g = r.granularity;
  if (g == Granularity::Edge && r.sampler.kind == SamplerKind::Table && a.n_order >= kWeightMajorMinPatterns &&
      M >= kWeightMajorMinCopies)
    return epoch_edge_weight_major<T>(a);
  const int64_t n_blk = g == Granularity::Layer ? 1 : g == Granularity::Unit ? K : int64_t(K) * N;
  // Each block's permutation: table samplers point into their (small, cache-resident) table, the
  // permanental sampler writes whole permutations.
  const bool table = r.sampler.kind == SamplerKind::Table;
  std::vector<int32_t> perms(size_t(table ? 0 : n_blk * M));
  std::vector<const int32_t*> perm_of(static_cast<size_t>(n_blk));
  // Edge blocks from a table: each run of weights' share of every stream's fields, (K, n_eblk, M),
  // summed as they are gathered. Otherwise the binary weights each stream reads, (M, K, N).
  const bool edge_table = g == Granularity::Edge && table;
  const int n_eblk = (N + kEdgeBlock - 1) / kEdgeBlock;
  std::vector<int32_t> edge_fields(edge_table ? size_t(K) * n_eblk * M : 0);
  // Edge blocks from a table: each table permutation's copies as offsets into H (copy * K * N), and
  // every weight's row of them, which the fields loop reads instead of multiplying per weight.
  std::vector<int64_t> table_offsets(edge_table ? size_t(r.sampler.K) * M : 0);
  for (size_t j = 0; j < table_offsets.size(); ++j) table_offsets[j] = int64_t(r.sampler.perms[j]) * K * N;
  std::vector<const int64_t*> offsets_of(edge_table ? size_t(n_blk) : 0);
  std::vector<int8_t> seen(edge_table ? 0 : size_t(M) * K * N);
  std::vector<int64_t> stab(size_t(M) * K);
  std::vector<int> chosen(size_t(M), -1);
  T* H = static_cast<T*>(a.H);
  const double threshold = a.margin * std::sqrt(double(N));
  const T clip = T(a.h_max), eta = T(a.eta);
  int64_t updates = 0;
  auto row = [&](int64_t c, int k) { return H + (c * K + k) * int64_t(N); };  // copy c, unit k
#pragma omp parallel if (int64_t(M) * K * N >= 4096 || (g == Granularity::Edge && n_blk >= 512))
  {
  for (int64_t t = 0; t < a.n_order; ++t) {
    const int64_t mu = a.order[t];
    const int8_t* xi = a.patterns + mu * N;
    const int y = a.labels[mu];
    auto draw = [&](int64_t b, int k, int i) {
      const BlockKey key{r.seed, r.step, uint32_t(mu), 0u, uint32_t(k), uint32_t(i)};
      if (table) {
        perm_of[size_t(b)] = r.sampler.perms + int64_t(table_choice(r.sampler, key)) * M;
      } else {
        sample_permutation(r.sampler, key, perms.data() + b * M);
        perm_of[size_t(b)] = perms.data() + b * M;
      }
    };
    if (edge_table) {
      // One work item per run of weights: every block's uniform (Philox), the table lookups, then
      // every stream's share of its field over the run (per-ISA loops, routed_edges_isa.h).
#pragma omp for schedule(static) collapse(2)
      for (int k = 0; k < K; ++k)
        for (int eb = 0; eb < n_eblk; ++eb) {
          const int i0 = eb * kEdgeBlock, i1 = i0 + kEdgeBlock < N ? i0 + kEdgeBlock : N;
          for_edge_table_rows(edge_isa.uniforms, r, mu, k, i0, i1, [&](int i, int tr) {
            perm_of[size_t(int64_t(k) * N + i)] = r.sampler.perms + int64_t(tr) * M;
            offsets_of[size_t(int64_t(k) * N + i)] = table_offsets.data() + int64_t(tr) * M;
          });
          edge_isa.fields(H, offsets_of.data() + int64_t(k) * N, xi, M, int64_t(k) * N, i0, i1,
                          edge_fields.data() + (int64_t(k) * n_eblk + eb) * M);
        }
    } else if (g == Granularity::Edge) {  // nested, so the block's (unit, weight) needs no division
#pragma omp for schedule(static) collapse(2)
      for (int k = 0; k < K; ++k)
        for (int i = 0; i < N; ++i) draw(int64_t(k) * N + i, k, i);
    } else {
#pragma omp for schedule(static)
      for (int64_t b = 0; b < n_blk; ++b) draw(b, g == Granularity::Layer ? 0 : int(b), 0);
    }
    // What every stream sees: layer and unit blocks read whole rows of one copy, edge blocks gather
    // entry i from copy perm[i][m] (from a table: summed above).
    if (!edge_table) {
      if (g != Granularity::Edge) {
#pragma omp for schedule(static) collapse(2)
        for (int m = 0; m < M; ++m)
          for (int k = 0; k < K; ++k) {
            signs(row(perm_of[g == Granularity::Layer ? 0 : size_t(k)][m], k), seen.data() + (int64_t(m) * K + k) * N,
                  N);
          }
      } else {
#pragma omp for schedule(static) collapse(2)
        for (int k = 0; k < K; ++k)
          for (int eb = 0; eb < n_eblk; ++eb) {
            const int i0 = eb * kEdgeBlock, i1 = i0 + kEdgeBlock < N ? i0 + kEdgeBlock : N;
            signs_routed(H, perm_of.data() + int64_t(k) * N, seen.data(), M, K, k, N, i0, i1);
          }
      }
#pragma omp for schedule(static) collapse(2)
      for (int m = 0; m < M; ++m)
        for (int k = 0; k < K; ++k) {
          stab[size_t(m) * K + k] = int64_t(y) * dot_pm1(seen.data() + (int64_t(m) * K + k) * N, xi, N);
        }
    }
#pragma omp single
    for (int m = 0; m < M; ++m) {
      if (edge_table)
        for (int k = 0; k < K; ++k) stab[size_t(m) * K + k] = int64_t(y) * summed_field(edge_fields, k, n_eblk, M, m);
      chosen[size_t(m)] = least_action_unit(stab.data() + size_t(m) * K, K, threshold);
      updates += chosen[size_t(m)] >= 0;
    }
    // Messages back to the copies they were read from: streams write disjoint entries.
    if (g == Granularity::Edge) {
#pragma omp for schedule(static)
      for (int eb = 0; eb < n_eblk; ++eb) {
        const int i0 = eb * kEdgeBlock, i1 = i0 + kEdgeBlock < N ? i0 + kEdgeBlock : N;
        update_routed_edges(H, perm_of.data(), chosen.data(), xi, eta * T(y), clip, M, K, N, i0, i1);
      }
      continue;
    }
#pragma omp for schedule(static)
    for (int m = 0; m < M; ++m) {
      const int k = chosen[size_t(m)];
      if (k < 0) continue;
      const int32_t* perm = perm_of[g == Granularity::Layer ? 0 : size_t(k)];
      update_routed(H, perm, xi, eta * T(y), clip, m, K, k, N);
    }
  }
  }
  if (a.n_updates) *a.n_updates = updates;
  return Status::Ok;
}

}  // namespace

namespace {
template <typename T>
EdgeKernels<T> edge_kernels() {
  using Fields = void (*)(const T*, const int64_t* const*, const int8_t*, int, int64_t, int, int, int32_t*);
  const CpuIsa isa = cpu_isa_active();
#ifdef PERCEPTRONS_HAVE_ISA_AVX512
  if (isa == CpuIsa::AVX512) return {&isa_avx512::edge_uniforms, static_cast<Fields>(&isa_avx512::edge_fields)};
#endif
#ifdef PERCEPTRONS_HAVE_ISA_AVX2
  if (isa == CpuIsa::AVX2) return {&isa_avx2::edge_uniforms, static_cast<Fields>(&isa_avx2::edge_fields)};
#endif
  return {&isa_generic::edge_uniforms, static_cast<Fields>(&isa_generic::edge_fields)};
}
}  // namespace

EdgeKernels<float> edge_kernels_for_active_isa(float) { return edge_kernels<float>(); }
EdgeKernels<double> edge_kernels_for_active_isa(double) { return edge_kernels<double>(); }

Status routed_committee_epoch_cpu(const CommitteeEpochArgs& a) {
  Status s = check_routing(a.routing);
  if (s != Status::Ok) return s;
  if (a.K < 1 || a.N < 1 || a.n_patterns < 0 || a.n_order < 0) return Status::BadShape;
  if (a.dtype != DType::Float32 && a.dtype != DType::Float64) return Status::BadDtype;
  if (!a.H) return Status::NullPointer;
  if (a.n_order > 0 && (!a.patterns || !a.labels || !a.order)) return Status::NullPointer;
  for (int64_t t = 0; t < a.n_order; ++t)
    if (a.order[t] < 0 || a.order[t] >= a.n_patterns || a.order[t] > int64_t(UINT32_MAX)) return Status::BadShape;
  return a.dtype == DType::Float64 ? epoch<double>(a) : epoch<float>(a);
}

}  // namespace routed
}  // namespace perceptrons
