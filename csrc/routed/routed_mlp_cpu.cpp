// Routed MLP on the CPU. Every stream runs the fused MLP kernel (mlp_cpu.cpp) on its routed model:
// at layer granularity the routed model is a table of pointers into the copies (nothing is copied);
// at unit granularity per batch, a table of row pointers (MlpParams::weight_rows; the gradients are
// written through one too); at edge granularity, and per example, its weights are gathered into a
// scratch model first. Gradients go back to the copies they were read from: per batch by assignment
// (pi is a bijection, so every copy entry has exactly one writer), per example by accumulation in
// gradient slots that are summed in slot order at the end (a fixed number of slots, so the sum does
// not depend on the thread count).
#include <algorithm>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/cpu_workspace.h"
#include "routed/routed_blocks.h"

namespace perceptrons {
namespace routed {
namespace {

using mlp::MlpConfig;

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Offsets of one stream's gathered parameters (W_l then b_l per layer), in elements.
struct StreamLayout {
  int64_t w[mlp::kMaxLayers] = {}, b[mlp::kMaxLayers] = {}, total = 0;
};

StreamLayout stream_layout(const MlpConfig& c) {
  StreamLayout L;
  for (int l = 0; l < c.n_layers; ++l) {
    L.w[l] = L.total;
    L.total += int64_t(c.widths[l + 1]) * c.widths[l];
    L.b[l] = L.total;
    L.total += c.widths[l + 1];
  }
  return L;
}

// Copy-major parameters or gradients of all M copies: base pointers per layer.
template <typename T>
struct Copies {
  T* w[mlp::kMaxLayers] = {};
  T* b[mlp::kMaxLayers] = {};
};

// Stream m's routed parameters into `dst` (unit and edge granularity).
template <typename T>
void gather_stream(const MlpConfig& c, const OwnerMap& own, Granularity g, int m, const Copies<const T>& src,
                   const StreamLayout& L, T* dst) {
  for (int l = 0; l < c.n_layers; ++l) {
    const int out = c.widths[l + 1], in = c.widths[l];
    T* d = dst + L.w[l];
    for (int j = 0; j < out; ++j) {
      if (g == Granularity::Unit) {
        std::memcpy(d + int64_t(j) * in, src.w[l] + (int64_t(own.owner(l, j, 0, m)) * out + j) * in, sizeof(T) * in);
      } else {
        for (int i = 0; i < in; ++i) d[int64_t(j) * in + i] = src.w[l][(int64_t(own.owner(l, j, i, m)) * out + j) * in + i];
      }
      if (src.b[l]) dst[L.b[l] + j] = src.b[l][int64_t(own.owner(l, j, in, m)) * out + j];
    }
  }
}

// Sends stream m's routed gradient `g` back to the copies it was read from: dst = g (Add = false) or
// dst += g (Add = true).
template <bool Add, typename T>
void scatter_stream(const MlpConfig& c, const OwnerMap& own, Granularity gran, int m, const T* g,
                    const StreamLayout& L, const Copies<T>& dst) {
  for (int l = 0; l < c.n_layers; ++l) {
    const int out = c.widths[l + 1], in = c.widths[l];
    for (int j = 0; j < out; ++j) {
      const T* gr = g + L.w[l] + int64_t(j) * in;
      if (gran == Granularity::Unit) {  // the whole row has one owner: no per-entry lookup
        T* d = dst.w[l] + (int64_t(own.owner(l, j, 0, m)) * out + j) * in;
        for (int i = 0; i < in; ++i) d[i] = Add ? d[i] + gr[i] : gr[i];
      } else {
        for (int i = 0; i < in; ++i) {
          T& d = dst.w[l][(int64_t(own.owner(l, j, i, m)) * out + j) * in + i];
          d = Add ? d + gr[i] : gr[i];
        }
      }
      if (dst.b[l]) {
        T& d = dst.b[l][int64_t(own.owner(l, j, in, m)) * out + j];
        d = Add ? d + g[L.b[l] + j] : g[L.b[l] + j];
      }
    }
  }
}

// Stream m's routed parameters: pointers into the copies (layer granularity) or into `gathered`.
template <typename T>
mlp::MlpParams stream_params(const MlpConfig& c, const OwnerMap& own, Granularity g, int m, const Copies<const T>& src,
                             const StreamLayout& L, const T* gathered) {
  mlp::MlpParams p;
  for (int l = 0; l < c.n_layers; ++l) {
    const int64_t out = c.widths[l + 1], in = c.widths[l];
    if (g == Granularity::Layer) {
      const int64_t a = own.layer_owner(l, m);
      p.weights[l] = src.w[l] + a * out * in;
      p.biases[l] = src.b[l] ? src.b[l] + a * out : nullptr;
    } else {
      p.weights[l] = gathered + L.w[l];
      p.biases[l] = src.b[l] ? gathered + L.b[l] : nullptr;
    }
  }
  return p;
}

// Unit granularity without copying weights: stream m's rows of W_l are rows of the copies, listed in a
// table the fused kernel reads them through (MlpParams::weight_rows): the forward's weight packing
// reads them (the small-batch feature-major forward reads them in place), and the backward reads them
// in place (or packs them where the input width is not a multiple of kPad). Biases (one entry per row)
// are gathered into a small buffer.
struct UnitLayout {
  int64_t row[mlp::kMaxLayers] = {}, bias[mlp::kMaxLayers] = {}, rows = 0, biases = 0;
};

UnitLayout unit_layout(const MlpConfig& c) {
  UnitLayout U;
  for (int l = 0; l < c.n_layers; ++l) {
    U.row[l] = U.rows;
    U.bias[l] = U.biases;
    U.rows += c.widths[l + 1];
    U.biases += c.widths[l + 1];
  }
  return U;
}

// Stream m's unit-routed rows: pointers to the copies' rows it reads (weights) or writes (their
// gradients).
template <typename P>
void unit_rows(const MlpConfig& c, const OwnerMap& own, int m, P* const* copies_w, const UnitLayout& U, P** rows) {
  for (int l = 0; l < c.n_layers; ++l) {
    const int out = c.widths[l + 1], in = c.widths[l];
    for (int j = 0; j < out; ++j) rows[U.row[l] + j] = copies_w[l] + (int64_t(own.owner(l, j, 0, m)) * out + j) * in;
  }
}

template <typename T>
mlp::MlpParams unit_stream_params(const MlpConfig& c, const OwnerMap& own, int m, const Copies<const T>& src,
                                  const UnitLayout& U, const T** rows, T* biases) {
  unit_rows<const T>(c, own, m, src.w, U, rows);
  mlp::MlpParams p;
  for (int l = 0; l < c.n_layers; ++l) {
    const int out = c.widths[l + 1];
    p.weights[l] = src.w[l];
    p.weight_rows[l] = reinterpret_cast<const void* const*>(rows + U.row[l]);
    if (src.b[l]) {
      for (int j = 0; j < out; ++j) biases[U.bias[l] + j] = src.b[l][int64_t(own.owner(l, j, 0, m)) * out + j];
      p.biases[l] = biases + U.bias[l];
    }
  }
  return p;
}

template <typename T, typename Args>
Copies<const T> param_copies(const Args& a) {
  Copies<const T> c;
  for (int l = 0; l < a.cfg.n_layers; ++l) {
    c.w[l] = static_cast<const T*>(a.weights[l]);
    c.b[l] = static_cast<const T*>(a.biases[l]);
  }
  return c;
}

uint32_t example_key(const RoutingArgs& r, int64_t s) {
  return r.example_ids ? uint32_t(r.example_ids[s]) : uint32_t(s);
}

Status first_failure(const std::vector<Status>& st) {
  for (Status s : st)
    if (s != Status::Ok) return s;
  return Status::Ok;
}

// Runs f(m) for every stream: in parallel over streams when there are enough of them, else one after
// another with each fused call using the threads itself. Returns the first failure.
template <typename F>
Status for_streams(int M, int64_t rows, F&& f) {
  std::vector<Status> st(size_t(M), Status::Ok);
  const bool parallel = M > 1 && max_threads() > 1 && (M >= max_threads() || rows <= 256);
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
  for (int m = 0; m < M; ++m) st[size_t(m)] = f(m);
  return first_failure(st);
}

// ---- forward ------------------------------------------------------------------------------------

template <typename T>
mlp::MlpForwardArgs stream_forward_args(const RoutedMlpForwardArgs& a, int m, int64_t row0, int64_t rows,
                                        const mlp::MlpParams& p) {
  const MlpConfig& c = a.cfg;
  mlp::MlpForwardArgs f;
  f.cfg = c;
  f.params = p;
  f.batch = rows;
  f.x = static_cast<const T*>(a.x) + m * a.x_stream_stride + row0 * c.widths[0];
  f.y = static_cast<T*>(a.y) + (int64_t(m) * a.batch + row0) * c.widths[c.n_layers];
  f.training = a.training;
  for (int l = 0; l < c.n_layers; ++l)
    if (a.training && mlp::layer_is_saved(c, l))
      f.saved[l] = static_cast<T*>(a.saved[l]) + m * mlp::saved_layer_numel(c, a.batch, l) +
                   row0 * mlp::saved_row_stride(c.widths[l + 1]);
  return f;
}

template <typename T>
Status forward(const RoutedMlpForwardArgs& a) {
  const MlpConfig& c = a.cfg;
  const RoutingArgs& r = a.routing;
  const Granularity g = r.granularity;
  const StreamLayout L = stream_layout(c);
  const Copies<const T> src = param_copies<T>(a);
  if (!r.per_example) {
    OwnerMap own(c, r);
    own.fill(r.batch_id, true);
    if (g == Granularity::Unit) {
      const UnitLayout U = unit_layout(c);
      std::vector<const T*> rows(size_t(r.M) * U.rows);
      std::vector<T> biases(size_t(r.M) * U.biases);
      return for_streams(r.M, a.batch, [&](int m) {
        const mlp::MlpParams p = unit_stream_params(c, own, m, src, U, rows.data() + int64_t(m) * U.rows,
                                                    biases.data() + int64_t(m) * U.biases);
        return mlp::mlp_forward_cpu(stream_forward_args<T>(a, m, 0, a.batch, p));
      });
    }
    // Every stream's gathered model; fully written before it is read (cached: no page faults per call).
    const size_t gathered_bytes = g == Granularity::Layer ? 0 : size_t(r.M) * L.total * sizeof(T);
    Workspace gathered(gathered_bytes, kOuterWorkspaceSlot);
    if (gathered_bytes && !gathered.ptr) return Status::OutOfMemory;
    return for_streams(r.M, a.batch, [&](int m) {
      T* mine = static_cast<T*>(gathered.ptr) + int64_t(m) * L.total;
      if (g != Granularity::Layer) gather_stream(c, own, g, m, src, L, mine);
      return mlp::mlp_forward_cpu(stream_forward_args<T>(a, m, 0, a.batch, stream_params(c, own, g, m, src, L, mine)));
    });
  }
  std::vector<Status> st(size_t(a.batch), Status::Ok);
#pragma omp parallel
  {
    OwnerMap own(c, r);
    std::vector<T> mine(g == Granularity::Layer ? 0 : size_t(L.total));
#pragma omp for schedule(dynamic, 1)
    for (int64_t s = 0; s < a.batch; ++s) {
      own.fill(example_key(r, s), false);
      for (int m = 0; m < r.M && st[size_t(s)] == Status::Ok; ++m) {
        if (g != Granularity::Layer) gather_stream(c, own, g, m, src, L, mine.data());
        st[size_t(s)] = mlp::mlp_forward_cpu(
            stream_forward_args<T>(a, m, s, 1, stream_params(c, own, g, m, src, L, mine.data())));
      }
    }
  }
  return first_failure(st);
}

// ---- backward -----------------------------------------------------------------------------------

template <typename T>
mlp::MlpBackwardArgs stream_backward_args(const RoutedMlpBackwardArgs& a, int m, int64_t row0, int64_t rows,
                                          const mlp::MlpParams& p) {
  const MlpConfig& c = a.cfg;
  const int in = c.widths[0], out = c.widths[c.n_layers];
  mlp::MlpBackwardArgs b;
  b.cfg = c;
  b.params = p;
  b.batch = rows;
  b.x = static_cast<const T*>(a.x) + m * a.x_stream_stride + row0 * in;
  const int64_t yrow = int64_t(m) * a.batch + row0;
  b.y = a.y ? static_cast<const T*>(a.y) + yrow * out : nullptr;
  b.dy = static_cast<const T*>(a.dy) + yrow * out;
  b.dx = a.dx ? static_cast<T*>(a.dx) + yrow * in : nullptr;
  for (int l = 0; l < c.n_layers; ++l)
    if (mlp::layer_is_saved(c, l))
      b.saved[l] = static_cast<const T*>(a.saved[l]) + m * mlp::saved_layer_numel(c, a.batch, l) +
                   row0 * mlp::saved_row_stride(c.widths[l + 1]);
  return b;
}

// Gradient slots of the per-example backward: a fixed function of the problem size.
int n_gradient_slots(int64_t batch, int64_t slot_elems) {
  constexpr int64_t kMaxSlots = 16, kBudgetElems = int64_t(1) << 24;
  int64_t s = std::min<int64_t>(batch, kMaxSlots);
  s = std::min<int64_t>(s, std::max<int64_t>(1, kBudgetElems / std::max<int64_t>(1, slot_elems)));
  return int(std::max<int64_t>(1, s));
}

template <typename T>
Copies<T> grad_copies(const RoutedMlpBackwardArgs& a) {
  Copies<T> d;
  for (int l = 0; l < a.cfg.n_layers; ++l) {
    d.w[l] = static_cast<T*>(a.dweights[l]);
    d.b[l] = static_cast<T*>(a.dbiases[l]);
  }
  return d;
}

template <typename T>
Status backward_per_batch(const RoutedMlpBackwardArgs& a) {
  const MlpConfig& c = a.cfg;
  const RoutingArgs& r = a.routing;
  const Granularity g = r.granularity;
  const StreamLayout L = stream_layout(c);
  const Copies<const T> src = param_copies<T>(a);
  const Copies<T> dst = grad_copies<T>(a);
  OwnerMap own(c, r);
  own.fill(r.batch_id, true);
  if (g == Granularity::Unit) {
    // Rows read from and their gradients written straight to the owner copies' rows (a block's
    // permutation is a bijection: no two streams write the same row); bias gradients go through a
    // small per-stream buffer.
    const UnitLayout U = unit_layout(c);
    std::vector<const T*> rows(size_t(r.M) * U.rows);
    std::vector<T*> drows(size_t(r.M) * U.rows);
    std::vector<T> biases(size_t(r.M) * U.biases), dbiases(size_t(r.M) * U.biases);
    return for_streams(r.M, a.batch, [&](int m) {
      const int64_t ro = int64_t(m) * U.rows, bo = int64_t(m) * U.biases;
      mlp::MlpBackwardArgs b = stream_backward_args<T>(
          a, m, 0, a.batch, unit_stream_params(c, own, m, src, U, rows.data() + ro, biases.data() + bo));
      unit_rows<T>(c, own, m, dst.w, U, drows.data() + ro);
      for (int l = 0; l < c.n_layers; ++l) {
        b.dweights[l] = dst.w[l];
        b.dweight_rows[l] = reinterpret_cast<void* const*>(drows.data() + ro + U.row[l]);
        b.dbiases[l] = dst.b[l] ? dbiases.data() + bo + U.bias[l] : nullptr;
      }
      const Status st = mlp::mlp_backward_cpu(b);
      if (st != Status::Ok) return st;
      for (int l = 0; l < c.n_layers; ++l) {
        if (!dst.b[l]) continue;
        const int out = c.widths[l + 1];
        for (int j = 0; j < out; ++j)
          dst.b[l][int64_t(own.owner(l, j, 0, m)) * out + j] = dbiases[size_t(bo + U.bias[l] + j)];
      }
      return Status::Ok;
    });
  }
  const bool direct = g == Granularity::Layer;  // gradients straight into the owner copy
  // Every stream's gathered model, then its routed gradient; both fully written before they are read.
  const size_t buffer_bytes = direct ? 0 : 2 * size_t(r.M) * L.total * sizeof(T);
  Workspace buffers(buffer_bytes, kOuterWorkspaceSlot);
  if (buffer_bytes && !buffers.ptr) return Status::OutOfMemory;
  return for_streams(r.M, a.batch, [&](int m) {
    T* mine = static_cast<T*>(buffers.ptr) + int64_t(m) * L.total;
    T* dmine = static_cast<T*>(buffers.ptr) + (int64_t(r.M) + m) * L.total;
    if (!direct) gather_stream(c, own, g, m, src, L, mine);
    mlp::MlpBackwardArgs b = stream_backward_args<T>(a, m, 0, a.batch, stream_params(c, own, g, m, src, L, mine));
    for (int l = 0; l < c.n_layers; ++l) {
      const int64_t out = c.widths[l + 1], in = c.widths[l], owner = own.layer_owner(l, m);
      b.dweights[l] = direct ? dst.w[l] + owner * out * in : dmine + L.w[l];
      b.dbiases[l] = !dst.b[l] ? nullptr : direct ? dst.b[l] + owner * out : dmine + L.b[l];
    }
    Status s = mlp::mlp_backward_cpu(b);
    if (s == Status::Ok && !direct) scatter_stream<false>(c, own, g, m, dmine, L, dst);
    return s;
  });
}

template <typename T>
Status backward_per_example(const RoutedMlpBackwardArgs& a) {
  const MlpConfig& c = a.cfg;
  const RoutingArgs& r = a.routing;
  const Granularity g = r.granularity;
  const StreamLayout L = stream_layout(c);
  const Copies<const T> src = param_copies<T>(a);
  const Copies<T> dst = grad_copies<T>(a);
  // Slot layout: every copy's gradient, layer by layer (W then b), like dst.
  const int64_t copy_elems = int64_t(r.M) * L.total;
  const int S = n_gradient_slots(a.batch, copy_elems);
  std::vector<T> slots(size_t(S) * copy_elems, T(0));
  auto slot_copies = [&](int s) {
    Copies<T> d;
    T* base = slots.data() + int64_t(s) * copy_elems;
    for (int l = 0; l < c.n_layers; ++l) {
      d.w[l] = base + int64_t(r.M) * L.w[l];
      d.b[l] = dst.b[l] ? base + int64_t(r.M) * L.b[l] : nullptr;
    }
    return d;
  };
  std::vector<Status> st(size_t(S), Status::Ok);
#pragma omp parallel
  {
    OwnerMap own(c, r);
    std::vector<T> mine(g == Granularity::Layer ? 0 : size_t(L.total)), dmine(size_t(L.total));
#pragma omp for schedule(dynamic, 1)
    for (int s = 0; s < S; ++s) {
      const Copies<T> acc = slot_copies(s);
      const int64_t e0 = a.batch * s / S, e1 = a.batch * (s + 1) / S;
      for (int64_t e = e0; e < e1 && st[size_t(s)] == Status::Ok; ++e) {
        own.fill(example_key(r, e), false);
        for (int m = 0; m < r.M; ++m) {
          if (g != Granularity::Layer) gather_stream(c, own, g, m, src, L, mine.data());
          mlp::MlpBackwardArgs b = stream_backward_args<T>(a, m, e, 1, stream_params(c, own, g, m, src, L, mine.data()));
          for (int l = 0; l < c.n_layers; ++l) {
            b.dweights[l] = dmine.data() + L.w[l];
            b.dbiases[l] = dst.b[l] ? dmine.data() + L.b[l] : nullptr;
          }
          st[size_t(s)] = mlp::mlp_backward_cpu(b);
          if (st[size_t(s)] != Status::Ok) break;
          scatter_stream<true>(c, own, g, m, dmine.data(), L, acc);
        }
      }
    }
  }
  Status s = first_failure(st);
  if (s != Status::Ok) return s;
  // Sum the slots in slot order into the caller's gradients.
  for (int l = 0; l < c.n_layers; ++l) {
    const int64_t nw = int64_t(r.M) * c.widths[l + 1] * c.widths[l], nb = int64_t(r.M) * c.widths[l + 1];
    for (int part = 0; part < (dst.b[l] ? 2 : 1); ++part) {
      const int64_t n = part ? nb : nw;
      const int64_t off = int64_t(r.M) * (part ? L.b[l] : L.w[l]);
      T* out = part ? dst.b[l] : dst.w[l];
#pragma omp parallel for schedule(static) if (n >= 4096)
      for (int64_t e = 0; e < n; ++e) {
        T sum = slots[size_t(off + e)];
        for (int k = 1; k < S; ++k) sum += slots[size_t(int64_t(k) * copy_elems + off + e)];
        out[e] = sum;
      }
    }
  }
  return Status::Ok;
}

template <typename Args>
Status check_common(const Args& a) {
  Status s = mlp::validate_config(a.cfg);
  if (s != Status::Ok) return s;
  s = check_routing(a.routing);
  if (s != Status::Ok) return s;
  if (a.batch < 0 || a.x_stream_stride < 0) return Status::BadShape;
  const bool has_bias = a.biases[0] != nullptr;
  for (int l = 0; l < a.cfg.n_layers; ++l) {
    if (!a.weights[l]) return Status::NullPointer;
    if ((a.biases[l] != nullptr) != has_bias) return Status::NullPointer;
  }
  if (a.routing.per_example && a.routing.example_ids)
    for (int64_t e = 0; e < a.batch; ++e)
      if (a.routing.example_ids[e] < 0 || a.routing.example_ids[e] > int64_t(UINT32_MAX)) return Status::BadShape;
  return Status::Ok;
}

}  // namespace

Status routed_mlp_forward_cpu(const RoutedMlpForwardArgs& a) {
  Status s = check_common(a);
  if (s != Status::Ok) return s;
  if (a.batch == 0) return Status::Ok;
  if (!a.x || !a.y) return Status::NullPointer;
  if (a.training)
    for (int l = 0; l < a.cfg.n_layers; ++l)
      if (mlp::layer_is_saved(a.cfg, l) && !a.saved[l]) return Status::NullPointer;
  return a.cfg.dtype == DType::Float64 ? forward<double>(a) : forward<float>(a);
}

Status routed_mlp_backward_cpu(const RoutedMlpBackwardArgs& a) {
  Status s = check_common(a);
  if (s != Status::Ok) return s;
  for (int l = 0; l < a.cfg.n_layers; ++l) {
    if (!a.dweights[l]) return Status::NullPointer;
    if ((a.dbiases[l] != nullptr) != (a.biases[l] != nullptr)) return Status::NullPointer;
  }
  if (a.batch == 0) {  // no messages: every copy's gradient is zero
    const size_t es = dtype_size(a.cfg.dtype);
    for (int l = 0; l < a.cfg.n_layers; ++l) {
      const size_t nb = size_t(a.routing.M) * a.cfg.widths[l + 1];
      std::memset(a.dweights[l], 0, nb * a.cfg.widths[l] * es);
      if (a.dbiases[l]) std::memset(a.dbiases[l], 0, nb * es);
    }
    return Status::Ok;
  }
  if (!a.x || !a.dy) return Status::NullPointer;
  for (int l = 0; l < a.cfg.n_layers; ++l)
    if (mlp::layer_is_saved(a.cfg, l) && !a.saved[l]) return Status::NullPointer;
  if (mlp::backward_needs_output(a.cfg) && !a.y) return Status::NullPointer;
  const bool f64 = a.cfg.dtype == DType::Float64;
  if (a.routing.per_example) return f64 ? backward_per_example<double>(a) : backward_per_example<float>(a);
  return f64 ? backward_per_batch<double>(a) : backward_per_batch<float>(a);
}

}  // namespace routed
}  // namespace perceptrons
